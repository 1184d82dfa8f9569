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
        "deploy_base_images": _base_images(get_settings().deploy.backend),
    }


def _base_images(backend: str) -> dict[str, Any]:
    """What a deploy's Dockerfile may start FROM on this installation's deploy backend."""
    if backend != "local":
        return {
            "backend": backend,
            "images": None,
            "note": "Any image the cluster's registry serves (public images such as "
            "python:3.12-slim or node:20-alpine unless the operator restricts them).",
        }
    from chalicelib.deploy.baseimage import available

    return {
        "backend": backend,
        "images": [image.as_json() for image in available()],
        "note": "No image registry is reachable: FROM must name one of these (built on this "
        "machine from Debian packages; one that is not built yet is built by the first deploy "
        "using it, which adds about a minute), or an earlier stage of the same Dockerfile.",
    }
