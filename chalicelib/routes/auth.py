"""Sign-in: magic links by email, sessions, logout, the CLI device flow and API keys.

Sessions live in an HttpOnly cookie (browsers) or come as ``Authorization: Bearer`` (the same
JWT); API keys come only as Bearer. Only a signed-in session may mint or delete API keys.
"""

from __future__ import annotations

import time
from typing import Any

from chalice.app import Blueprint, Response

from chalicelib import errors
from chalicelib.config import get_settings
from chalicelib.deps import get_accounts, get_authenticator, get_claims, get_devices
from chalicelib.routes import requests
from chalicelib.service import iso

bp = Blueprint(__name__)

ANY_CONTENT_TYPE = ["*/*"]


@bp.route("/auth/email/start", methods=["POST"], content_types=ANY_CONTENT_TYPE)
def email_start() -> dict[str, Any]:
    body = requests.json_object(bp.current_request)
    get_claims().start_login(body.get("email"), body.get("next"))
    return {"ok": True}  # the same answer whether or not the address has an account


@bp.route("/auth/email/callback", methods=["GET"])
def email_callback() -> Response:
    from chalicelib.auth import session_cookie
    from chalicelib.claims import LinkRefused

    params = bp.current_request.query_params
    secret = str(params.get("token", "")) if params else ""
    signed_in = get_claims().follow(secret)
    if isinstance(signed_in, LinkRefused):  # the login page explains each one
        location = f"/login?error={signed_in.value}"
        return Response("", status_code=302, headers={"Location": location})
    cookie = session_cookie(signed_in.session_token, get_settings().secure_cookies)
    return Response(
        "",
        status_code=302,
        headers={
            "Location": signed_in.next_path,
            "Set-Cookie": cookie,
            "Cache-Control": "no-store",
        },
    )


@bp.route("/auth/me", methods=["GET"])
def me() -> dict[str, Any]:
    principal = get_authenticator().require(bp.current_request.headers)
    team = get_accounts().team(principal.team_id)
    if team is None:
        raise errors.UnauthorizedError("This credential's team no longer exists.")
    session = principal.session
    return {
        "ok": True,
        "user": {"id": principal.user_id, "email": session.email if session else None},
        "team": team.as_json(),
        "auth": {
            "via": "session" if session else "api_key",
            "scope": principal.scope.value,
            "expires_at": iso(session.expires_at) if session else None,
        },
    }


@bp.route("/auth/logout", methods=["POST"], content_types=ANY_CONTENT_TYPE)
def logout() -> Response:
    from chalicelib.auth import session_cookie

    principal = get_authenticator().require_session(bp.current_request.headers)
    assert principal.session is not None
    get_accounts().revoke(principal.session.jti, principal.session.expires_at)
    cleared = session_cookie("", get_settings().secure_cookies, max_age=0)
    return Response({"ok": True}, headers={"Set-Cookie": cleared})


# -- CLI device flow (chalicelib/devices.py) ---------------------------------------------------
@bp.route("/auth/cli", methods=["POST"], content_types=ANY_CONTENT_TYPE)
def cli_start() -> dict[str, Any]:
    return get_devices().start()


@bp.route("/auth/cli/{session_id}", methods=["GET"])
def cli_poll(session_id: str) -> dict[str, Any]:
    return get_devices().poll(session_id)


@bp.route("/auth/cli/{session_id}/approve", methods=["POST"], content_types=ANY_CONTENT_TYPE)
def cli_approve(session_id: str) -> dict[str, Any]:
    principal = get_authenticator().require_session(bp.current_request.headers)
    body = requests.json_object(bp.current_request)
    return get_devices().approve(principal, session_id, body.get("user_code"))


# -- API keys -----------------------------------------------------------------------------------
@bp.route("/api/v1/api-keys", methods=["POST"], content_types=ANY_CONTENT_TYPE)
def create_api_key() -> Response:
    from chalicelib.accounts import Scope
    from chalicelib.auth import new_api_key

    principal = get_authenticator().require_session(bp.current_request.headers)
    body = requests.json_object(bp.current_request)
    name = requests.resource_name(body.get("name"))
    try:
        scope = Scope(body.get("scope", Scope.READ.value))
    except ValueError as exc:
        raise errors.BadRequestError("'scope' must be one of read, write, admin.") from exc
    secret, key = new_api_key(principal, name, scope, int(time.time()))
    get_accounts().put_api_key(secret, key)
    return Response({"ok": True, **key.as_json(), "api_token": secret}, status_code=201)


@bp.route("/api/v1/api-keys", methods=["GET"])
def list_api_keys() -> dict[str, Any]:
    principal = get_authenticator().require(bp.current_request.headers)
    keys = get_accounts().api_keys_of(principal.team_id)
    return {"ok": True, "items": [k.as_json() for k in keys]}


@bp.route("/api/v1/api-keys/{key_id}", methods=["DELETE"])
def delete_api_key(key_id: str) -> dict[str, Any]:
    principal = get_authenticator().require_session(bp.current_request.headers)
    if not get_accounts().delete_api_key(principal.team_id, key_id):
        raise errors.NotFoundError(f"No API key {key_id} in this team.")
    return {"ok": True, "id": key_id, "deleted": True}
