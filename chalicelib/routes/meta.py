"""Health, readiness and the tier table (no auth)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.config import get_settings
from chalicelib.deps import get_dynamo, get_readiness
from chalicelib.tiers import all_tiers

bp = Blueprint(__name__)


@bp.route("/healthz", methods=["GET"])
def healthz() -> Response:
    """Liveness: the process is up and can reach its platform database."""
    settings = get_settings()
    body: dict[str, Any] = {
        "ok": True,
        "commit_id": settings.commit_id,
        "build_time": settings.build_time,
        "version": settings.version,
    }
    try:
        get_dynamo().get(settings.resources_table, {"id": "healthz"})
    except Exception:
        body["ok"] = False
        return Response(body, status_code=503)
    return Response(body)


@bp.route("/readyz", methods=["GET"])
def readyz() -> Response:
    body, healthy = get_readiness().report()
    settings = get_settings()
    return Response({**body, "commit_id": settings.commit_id}, status_code=200 if healthy else 503)


@bp.route("/api/v1/capabilities", methods=["GET"])
def capabilities() -> dict[str, Any]:
    tiers = all_tiers()
    return {
        "ok": True,
        "tiers": {name: tier.as_json() for name, tier in tiers.items()},
        "resource_count_limit": {
            name: {kind.value: lim.max_resources for kind, lim in tier.kinds.items()}
            for name, tier in tiers.items()
        },
    }
