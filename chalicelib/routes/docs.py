"""Machine-readable descriptions of this deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.config import get_settings

bp = Blueprint(__name__)
LLMS_TEMPLATE = Path(__file__).parent.parent / "llms.md"


@bp.route("/openapi.json", methods=["GET"])
def openapi_json() -> dict[str, Any]:
    from chalicelib import openapi  # built on request: no route needs it at cold start

    settings = get_settings()
    return openapi.document(settings.public_base_url, settings.version)


@bp.route("/llms.txt", methods=["GET"])
def llms_txt() -> Response:
    text = LLMS_TEMPLATE.read_text().format(base_url=get_settings().public_base_url)
    return Response(text, headers={"Content-Type": "text/plain; charset=utf-8"})
