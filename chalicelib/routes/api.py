"""The team's API: its resources (list, read, delete, rotate credentials) and its settings.
Every route needs a session or an API key; reads need scope read, changes scope write."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib import errors
from chalicelib.accounts import TEAM_TTL_POLICIES
from chalicelib.deps import get_accounts, get_authenticator, get_resources
from chalicelib.routes import requests

bp = Blueprint(__name__)

ANY_CONTENT_TYPE = ["*/*"]


def _owner(write: bool = False) -> str:
    from chalicelib.accounts import Scope

    scope = Scope.WRITE if write else Scope.READ
    return get_authenticator().require(bp.current_request.headers, scope).owner


@bp.route("/api/v1/resources", methods=["GET"])
def list_resources() -> dict[str, Any]:
    params = bp.current_request.query_params
    limit, cursor = (params.get("limit"), params.get("cursor")) if params else (None, None)
    return get_resources().list(_owner(), limit, cursor)


@bp.route("/api/v1/resources/{resource_id}", methods=["GET"])
def get_resource(resource_id: str) -> dict[str, Any]:
    return get_resources().get(_owner(), resource_id)


@bp.route("/api/v1/resources/{resource_id}", methods=["DELETE"])
def delete_resource(resource_id: str) -> dict[str, Any]:
    return get_resources().delete(_owner(write=True), resource_id)


@bp.route(
    "/api/v1/resources/{resource_id}/rotate-credentials",
    methods=["POST"],
    content_types=ANY_CONTENT_TYPE,
)
def rotate_credentials(resource_id: str) -> dict[str, Any]:
    return get_resources().rotate(_owner(write=True), resource_id)


@bp.route("/api/v1/team/settings", methods=["PATCH"], content_types=ANY_CONTENT_TYPE)
def team_settings() -> dict[str, Any]:
    from chalicelib.accounts import Scope

    principal = get_authenticator().require(bp.current_request.headers, Scope.ADMIN)
    body = requests.json_object(bp.current_request)
    policy = body.get("default_deployment_ttl_policy")
    if policy not in TEAM_TTL_POLICIES:
        raise errors.BadRequestError(
            f"'default_deployment_ttl_policy' must be one of {', '.join(TEAM_TTL_POLICIES)}.",
            agent_action='Send {"default_deployment_ttl_policy": "auto_24h"} or "permanent".',
        )
    team = get_accounts().set_ttl_policy(principal.team_id, policy)
    if team is None:
        raise errors.UnauthorizedError("This credential's team no longer exists.")
    return {"ok": True, "team": team.as_json()}
