"""Billing: promotion code checks and the payment provider's webhook (signature-verified)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.deps import get_billing
from chalicelib.routes import requests

bp = Blueprint(__name__)


@bp.route("/api/v1/billing/promotion/validate", methods=["POST"], content_types=["*/*"])
def validate_promotion() -> dict[str, Any]:
    body = requests.json_object(bp.current_request)
    return get_billing().validate_promotion(body.get("code"))


@bp.route("/webhooks/razorpay", methods=["POST"], content_types=["*/*"])
def razorpay() -> dict[str, Any]:
    request = bp.current_request
    raw = request.raw_body or b""
    raw = raw if isinstance(raw, bytes) else raw.encode()
    return get_billing().razorpay_event(raw, request.headers.get("x-razorpay-signature"))
