"""POST /<kind>/new: one route per resource kind, all through the same handler."""

from __future__ import annotations

from chalice.app import Blueprint, Response

from chalicelib.config import get_settings
from chalicelib.deps import get_service
from chalicelib.idempotency import derive_key
from chalicelib.models import Kind, ProvisionRequest
from chalicelib.routes import requests
from chalicelib.service import Deadline

bp = Blueprint(__name__)

ANY_CONTENT_TYPE = ["*/*"]  # we answer a wrong content type with a 400 envelope ourselves
KNOWN_FIELDS = frozenset({"name"})
ROUTES: dict[str, Kind] = {
    "/db/new": Kind.POSTGRES,
    "/vector/new": Kind.VECTOR,
    "/cache/new": Kind.REDIS,
    "/queue/new": Kind.QUEUE,
    "/nosql/new": Kind.MONGODB,
    "/storage/new": Kind.STORAGE,
    "/webhook/new": Kind.WEBHOOK,
}


def _provision(route: str) -> Response:
    deadline = Deadline.of(get_settings(), bp.lambda_context)
    request = bp.current_request
    body = requests.json_object(request)
    req = ProvisionRequest(
        kind=ROUTES[route],
        name=requests.resource_name(body.get("name")),
        ignored_fields=tuple(sorted(set(body) - KNOWN_FIELDS)),
    )
    who = requests.provisioning_caller(request)
    key = derive_key(who.owner, route, body, requests.idempotency_header(request))
    outcome = get_service().provision(who, req, key, deadline)
    return Response(outcome.body, status_code=outcome.status_code, headers=dict(outcome.headers))


@bp.route("/db/new", methods=["POST"], content_types=ANY_CONTENT_TYPE)
@requests.creates(bp)
def new_db() -> Response:
    return _provision("/db/new")


@bp.route("/vector/new", methods=["POST"], content_types=ANY_CONTENT_TYPE)
@requests.creates(bp)
def new_vector() -> Response:
    return _provision("/vector/new")


@bp.route("/cache/new", methods=["POST"], content_types=ANY_CONTENT_TYPE)
@requests.creates(bp)
def new_cache() -> Response:
    return _provision("/cache/new")


@bp.route("/queue/new", methods=["POST"], content_types=ANY_CONTENT_TYPE)
@requests.creates(bp)
def new_queue() -> Response:
    return _provision("/queue/new")


@bp.route("/nosql/new", methods=["POST"], content_types=ANY_CONTENT_TYPE)
@requests.creates(bp)
def new_nosql() -> Response:
    return _provision("/nosql/new")


@bp.route("/storage/new", methods=["POST"], content_types=ANY_CONTENT_TYPE)
@requests.creates(bp)
def new_storage() -> Response:
    return _provision("/storage/new")


@bp.route("/webhook/new", methods=["POST"], content_types=ANY_CONTENT_TYPE)
@requests.creates(bp)
def new_webhook() -> Response:
    return _provision("/webhook/new")
