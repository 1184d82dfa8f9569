"""Container deploys: ``POST /deploy/new`` (multipart, or JSON naming an uploaded context),
``POST /deploy/upload-url``, the ``/api/v1/deployments`` reads, logs, redeploy, env, deletion.

Who deploys: a session or API key (the team), or the spec's ``Authorization: Bearer
<upgrade_jwt>`` (the team that now owns that resource; an anonymous one gets 402: deploys need
a paid tier). Lambda's request cap is 6 MB and API Gateway base64-encodes binary bodies, so a
multipart body is capped (routes/requests.py MULTIPART_MAX_BYTES); bigger contexts go through a
presigned upload.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Request, Response

from chalicelib import errors
from chalicelib.deps import get_deploys
from chalicelib.routes import requests

if TYPE_CHECKING:  # the deploy modules load on the first deploy request, not at cold start
    from chalicelib.deploy.service import Caller, DeployRequest

bp = Blueprint(__name__)

_DIGITS = re.compile(r"[0-9]{1,9}")
FORM_FIELDS = ("tarball", "name", "port", "env", "env_vars", "redeploy", "ttl_policy", "ttl_hours")


def _caller(request: Request, *, by_upgrade_jwt: bool = False) -> Caller:
    """The deploying team: a session or API key (scope write). Only creating a deploy also
    takes the spec's ``Bearer <upgrade_jwt>``: a resource's token must not read, change or
    delete the team's apps."""
    from chalicelib.accounts import Scope
    from chalicelib.deploy.service import Caller
    from chalicelib.tiers import get_tier

    signed_in = requests.signed_in_team(request, Scope.WRITE, "Changing deployments")
    if signed_in is not None:
        principal, team = signed_in
        return Caller(
            principal.owner,
            get_tier(team.tier),
            principal.email,
            team.default_deployment_ttl_policy,
        )
    if by_upgrade_jwt:
        return _caller_by_upgrade_jwt(request)
    raise errors.UnauthorizedError(
        "Sign in first: send a session cookie or 'Authorization: Bearer <api key>'.",
        agent_action="Log in with the CLI device flow (POST /auth/cli) and send the api_token "
        "it returns as 'Authorization: Bearer <api_token>'.",
    )


def _reader(request: Request) -> str:
    """The team a read of its deployments is for (scope read is enough)."""
    from chalicelib.accounts import Scope
    from chalicelib.deps import get_authenticator

    return get_authenticator().require(request.headers, Scope.READ).owner


def _caller_by_upgrade_jwt(request: Request) -> Caller:
    from chalicelib.config import get_settings
    from chalicelib.deploy.service import Caller
    from chalicelib.deps import get_accounts, get_dynamo
    from chalicelib.store import ResourceStore
    from chalicelib.tiers import get_tier
    from chalicelib.tokens import InvalidTokenError, Signer

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.UnauthorizedError(
            "Deploys need 'Authorization: Bearer <upgrade_jwt>' (or an API key).",
            agent_action="Send the upgrade_jwt from a /db/new (or /claim) response as a Bearer "
            "token.",
        )
    settings = get_settings()
    try:
        claims = Signer(settings.jwt_keys).read_upgrade_token(token.strip(), None)
    except InvalidTokenError as exc:
        raise errors.UnauthorizedError("The upgrade_jwt is invalid or expired.") from exc
    resource = ResourceStore(get_dynamo(), settings).get(claims.resource_id)
    owner = resource.owner if resource else claims.owner
    if owner.startswith("team:"):
        team = get_accounts().team(owner.removeprefix("team:"))
        if team is not None:
            return Caller(owner, get_tier(team.tier), "", team.default_deployment_ttl_policy)
    return Caller(owner, get_tier("anonymous"), "")


def _form(request: Request) -> dict[str, bytes]:
    parts = requests.multipart_parts(
        request,
        f"A multipart deploy is capped at {requests.MULTIPART_MAX_BYTES // 1_000_000} MB here.",
        "Slim the tarball (leave out node_modules, .git, build outputs), or upload it with "
        "POST /deploy/upload-url and deploy by its upload_key.",
        "-F tarball=@app.tar.gz -F name=my-app",
    )
    return {name: content for name, content in parts if name in FORM_FIELDS}


def _request(form: dict[str, Any]) -> DeployRequest:
    from chalicelib.deploy.service import DeployRequest

    name = requests.resource_name(_text(form.get("name")) or None)
    port = _number(_text(form.get("port")) or "8080")
    if port is None or not 1 <= port <= 65535:
        raise errors.BadRequestError("'port' must be a number from 1 to 65535.")
    env: Any = {}
    if form.get("env_vars"):
        try:
            env = json.loads(form["env_vars"])
        except (ValueError, UnicodeDecodeError, TypeError) as exc:
            raise errors.BadRequestError("'env_vars' must be a JSON object of strings.") from exc
        if not isinstance(env, dict):
            raise errors.BadRequestError("'env_vars' must be a JSON object of strings.")
    tarball = form.get("tarball")
    if not tarball:
        raise errors.BadRequestError(
            "A 'tarball' (gzipped tar with a Dockerfile at its root) is required.",
            agent_action="Send -F tarball=@app.tar.gz (tar -czf app.tar.gz -C <dir> .).",
        )
    return DeployRequest(
        name=name,
        tarball=tarball if isinstance(tarball, bytes) else tarball.encode(),
        port=port,
        env=env,
        redeploy=_text(form.get("redeploy")).lower() in ("true", "1", "yes"),
        ttl_policy=_text(form.get("ttl_policy")) or None,
        ttl_hours=_number(_text(form.get("ttl_hours"))),
    )


def _number(text: str) -> int | None:
    """A form field's non-negative integer: ASCII digits, at most 9 of them (``int()`` alone
    would take '٨٠' and choke on a 5,000-digit number)."""
    return int(text) if _DIGITS.fullmatch(text) else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else str(value)


@bp.route("/deploy/new", methods=["POST"], content_types=["*/*"])
@requests.creates(bp)
def deploy_new() -> Response:
    """Multipart with the tarball, or JSON naming an ``upload_key`` (POST /deploy/upload-url);
    idempotent (spec convention 7)."""
    request = bp.current_request
    caller = _caller(request, by_upgrade_jwt=True)
    mimetype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mimetype == "application/json":
        body = requests.json_object(request)
        fields = {k: v for k, v in body.items() if k in FORM_FIELDS}
        if isinstance(fields.get("env_vars"), dict):
            fields["env_vars"] = json.dumps(fields["env_vars"])

        def create() -> tuple[int, dict[str, Any]]:
            uploads = get_deploys().uploads
            fields["tarball"] = uploads.read(caller.owner, caller.tier, body.get("upload_key"))
            made = get_deploys().deploy(caller, _request(fields))
            uploads.discard(body["upload_key"])
            return 202, made

        return requests.once(request, caller.owner, "/deploy/new", body, create)
    form = dict(_form(request))
    return requests.once(
        request,
        caller.owner,
        "/deploy/new",
        form,
        lambda: (202, get_deploys().deploy(caller, _request(form))),
    )


@bp.route("/deploy/upload-url", methods=["POST"], content_types=["*/*"])
def upload_url() -> dict[str, Any]:
    caller = _caller(bp.current_request, by_upgrade_jwt=True)
    return get_deploys().uploads.url_for(caller.owner, caller.tier)


@bp.route("/api/v1/deployments", methods=["GET"])
def list_deployments() -> dict[str, Any]:
    return get_deploys().listing(_reader(bp.current_request))


@bp.route("/api/v1/deployments/{app_id}", methods=["GET"])
def get_deployment(app_id: str) -> dict[str, Any]:
    return get_deploys().get(_reader(bp.current_request), app_id)


@bp.route("/api/v1/deployments/{app_id}/events", methods=["GET"])
def deployment_events(app_id: str) -> dict[str, Any]:
    return get_deploys().events(_reader(bp.current_request), app_id)


@bp.route("/deploy/{app_id}/logs", methods=["GET"])
def deployment_logs(app_id: str) -> Response:
    """Server-sent events: one ``data:`` line per log line, ``id`` = its line number. Lambda
    cannot hold a stream open, so each response carries the lines so far and ``retry``: the
    client reconnects with ``Last-Event-ID`` and gets only what is new."""
    request = bp.current_request
    last = request.headers.get("last-event-id", "")
    since = int(last) + 1 if last.isdecimal() else 0
    app, lines = get_deploys().logs(_reader(request), app_id, since)
    events = [f"id: {since + i}\ndata: {line}\n\n" for i, line in enumerate(lines)]
    events.append(f"event: status\ndata: {app.status.value}\nretry: 2000\n\n")
    return Response(
        "".join(events),
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"},
    )


@bp.route("/deploy/{app_id}/redeploy", methods=["POST"], content_types=["*/*"])
def redeploy(app_id: str) -> Response:
    body = get_deploys().redeploy(_caller(bp.current_request), app_id)
    return Response(body, status_code=202)


@bp.route("/deploy/{app_id}/env", methods=["PATCH"], content_types=["*/*"])
def patch_env(app_id: str) -> Response:
    request = bp.current_request
    body = requests.json_object(request)
    result = get_deploys().set_env(_caller(request), app_id, body.get("env_vars"))
    return Response(result, status_code=202)


@bp.route("/api/v1/deployments/{app_id}", methods=["DELETE"])
def delete_deployment(app_id: str) -> Response:
    request = bp.current_request
    skip = request.headers.get("x-skip-email-confirmation", "").lower() == "yes"
    status, body = get_deploys().delete(_caller(request), app_id, skip)
    return Response(body, status_code=status)


@bp.route("/api/v1/deployments/{app_id}/confirm-deletion", methods=["POST"], content_types=["*/*"])
def confirm_deletion(app_id: str) -> dict[str, Any]:
    request = bp.current_request
    params = request.query_params
    token = str(params.get("token", "")) if params else ""
    return get_deploys().confirm_deletion(_caller(request).owner, app_id, token)


@bp.route("/api/v1/deployments/{app_id}/confirm-deletion", methods=["DELETE"])
def cancel_deletion(app_id: str) -> dict[str, Any]:
    return get_deploys().cancel_deletion(_caller(bp.current_request).owner, app_id)
