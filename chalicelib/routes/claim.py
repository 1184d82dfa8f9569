"""The claim flow: ``GET /claim/preview`` (a dry run) and ``POST /claim`` (mails a sign-in link
that finishes the claim). The claim page itself is ``GET /start`` (routes/pages.py)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib import errors
from chalicelib.deps import get_claims
from chalicelib.routes import requests

bp = Blueprint(__name__)


@bp.route("/claim/preview", methods=["GET"])
def preview() -> dict[str, Any]:
    params = bp.current_request.query_params
    token = params.get("t") if params else None
    if not token:
        raise errors.BadRequestError(
            "Pass the resource's upgrade_jwt as the 't' query parameter.",
            agent_action="Call GET /claim/preview?t=<upgrade_jwt from the provisioning response>.",
        )
    return get_claims().preview(token)


@bp.route("/claim", methods=["POST"], content_types=["*/*"])
def claim() -> dict[str, Any]:
    body = requests.json_object(bp.current_request)
    token = body.get("token") or body.get("jwt")  # 'jwt' is the deprecated alias; token wins
    return get_claims().start_claim(token, body.get("email"), body.get("team_name"))
