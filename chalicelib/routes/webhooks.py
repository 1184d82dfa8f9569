"""Webhook inboxes: ``/webhook/receive/{token}`` (and any path below it) captures a request of
any method, and
``/api/v1/webhooks/{token}/requests`` lists what was captured, newest first.

The token in the URL is the only credential: unknown, expired or non-webhook tokens are 404. It
is found by its hash (no record holds it in clear), and a stored request keeps its path with
``{token}`` in the token's place (inbox.py). Received headers and bodies are customer data and
are never logged.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Request

from chalicelib import errors
from chalicelib.models import Kind, Resource
from chalicelib.routes.requests import caller
from chalicelib.tiers import get_tier

if TYPE_CHECKING:  # the inbox store loads on the first webhook request only
    from chalicelib.inbox import Inbox, Received

bp = Blueprint(__name__)

RECEIVE_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
STORED_GRACE_SECONDS = 86_400  # stored requests outlive an expiring inbox by a day at most


def _inbox() -> Inbox:
    from chalicelib.providers.webhook import open_inbox

    return open_inbox()


def _resource(token: str) -> Resource:
    """The live webhook resource of ``token``, or 404."""
    from chalicelib.config import get_settings
    from chalicelib.deps import get_dynamo
    from chalicelib.store import ResourceStore

    found = ResourceStore(get_dynamo(), get_settings()).live_by_token(
        token, Kind.WEBHOOK, time.time()
    )
    if found is None:
        raise errors.NotFoundError(
            "No webhook inbox has this token (it may have expired).",
            agent_action="Provision a new inbox with POST /webhook/new and use its receive_url.",
        )
    return found


def _raw_body(request: Request) -> bytes:
    raw = request.raw_body or b""
    return raw if isinstance(raw, bytes) else raw.encode()


def _received(request: Request, token: str, body: bytes) -> Received:
    params = request.query_params
    query = {k: params.getlist(k) for k in params} if params else {}
    context = request.context or {}
    from chalicelib.inbox import Received

    return Received(
        method=request.method,
        path=str(context.get("path") or f"/webhook/receive/{token}"),
        query=query,
        headers=dict(request.headers),
        body=body,
        source_ip=caller(request).source_ip,
        received_at_ms=int(time.time() * 1000),
    )


# ``{path+}`` is API Gateway's greedy segment (devstack/serve.py matches it locally too): a
# sender that appends its own path (``receive_url + "/github/push"``) is captured like any other;
# Chalice passes only ``token`` to the view, the stored request keeps the whole path.
@bp.route("/webhook/receive/{token}", methods=RECEIVE_METHODS, content_types=["*/*"])
@bp.route("/webhook/receive/{token}/{path+}", methods=RECEIVE_METHODS, content_types=["*/*"])
def receive(token: str) -> dict[str, Any]:
    request = bp.current_request
    resource = _resource(token)
    limits = get_tier(resource.tier).limits(Kind.WEBHOOK)
    body = _raw_body(request)
    if len(body) > limits.storage_bytes:
        raise errors.PayloadTooLargeError(
            f"The body is {len(body)} bytes; this inbox accepts at most {limits.storage_mb} MiB.",
            agent_action="Send a smaller body, or claim the inbox for a tier with a larger limit.",
        )
    ttl = None if resource.expires_at is None else resource.expires_at + STORED_GRACE_SECONDS
    seq = _inbox().record(
        resource.ref.namespace, limits.kept_requests or 100, _received(request, token, body), ttl
    )
    return {"ok": True, "received": True, "seq": seq}


def _int_param(params: dict[str, str], name: str, default: int | None, low: int, high: int) -> Any:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise errors.BadRequestError(
            f"'{name}' must be an integer from {low} to {high}.",
            agent_action=f"Retry with a valid '{name}' query parameter, or leave it out.",
        )
    return value


@bp.route("/api/v1/webhooks/{token}/requests", methods=["GET"])
def list_requests(token: str) -> dict[str, Any]:
    params = dict(bp.current_request.query_params or {})
    limit = _int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    before = _int_param(params, "before", None, 1, 2**62)
    resource = _resource(token)
    found, next_before = _inbox().newest(resource.ref.namespace, limit, before)
    return {"ok": True, "requests": found, "next_before": next_before}
