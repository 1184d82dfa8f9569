"""Billing: the payment provider's webhook (Razorpay) moves a team to the tier its plan buys, and
promotion codes from config can be checked before checkout.

The webhook is authenticated by its HMAC-SHA256 signature over the raw body
(``X-Razorpay-Signature``, hex) with the webhook secret; anything unsigned or mis-signed is a
401 and changes nothing. Handling is idempotent (a tier change to the tier a team already has
only re-applies it), so the provider's retries are harmless.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime
from typing import Any

from chalicelib import errors
from chalicelib.config import Settings
from chalicelib.teams import TeamService

log = logging.getLogger(__name__)
CHARGED = "subscription.charged"


def razorpay_signature(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class BillingService:
    def __init__(self, settings: Settings, teams: TeamService) -> None:
        self._settings = settings
        self._teams = teams

    def razorpay_event(self, body: bytes, signature: str | None) -> dict[str, Any]:
        secret = self._settings.razorpay_webhook_secret
        if not secret:
            log.error("a billing webhook arrived but INSTANODE_RAZORPAY_WEBHOOK_SECRET is unset")
        if (
            not secret
            or not signature
            or not hmac.compare_digest(  # as bytes: a non-ASCII header is a mismatch, not a 500
                razorpay_signature(body, secret).encode(), signature.strip().lower().encode()
            )
        ):
            raise errors.InvalidSignatureError("The webhook signature does not verify.")
        try:
            event = json.loads(body)
            name = str(event.get("event", ""))
        except (ValueError, AttributeError) as exc:
            raise errors.InvalidJsonError("The webhook body is not a JSON object.") from exc
        if name != CHARGED:
            return {"ok": True, "skipped": True, "event": name}
        entity = _dig(event, "payload", "subscription", "entity")
        team_id, plan_id = str(_dig(entity, "notes", "team_id") or ""), _dig(entity, "plan_id")
        tier = self._settings.billing_plans.get(str(plan_id or ""))
        if tier is None or not team_id:
            log.error(
                "subscription.charged for plan %r / team %r: no match",
                plan_id,
                team_id,
            )
            return {"ok": True, "matched": False}
        try:
            change = self._teams.set_tier(team_id, tier)
        except errors.NotFoundError:
            log.error("subscription.charged for unknown team %s", team_id)
            return {"ok": True, "matched": False}
        return {"ok": True, "matched": True, **change.as_json()}

    def validate_promotion(self, code: Any, today: datetime | None = None) -> dict[str, Any]:
        if not isinstance(code, str) or not code.strip():
            raise errors.BadRequestError("Send the promotion code as 'code'.")
        promo = self._settings.promo_codes.get(code.strip().upper())
        date = (today or datetime.now(UTC)).date().isoformat()
        if promo is None or (promo.valid_until is not None and date >= promo.valid_until):
            raise errors.InvalidPromoCodeError(
                "This promotion code is unknown or has expired.",
                agent_action="Tell the user the code is not valid; check its spelling.",
            )
        off = (
            f"{promo.discount_percent}% off"
            if promo.discount_percent
            else f"INR {promo.discount_amount_inr} off"
        )
        return {
            "ok": True,
            "code": promo.code,
            "discount_percent": promo.discount_percent,
            "discount_amount_inr": promo.discount_amount_inr,
            "message": f"{promo.code}: {off} at checkout.",
        }


def _dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or None where the event does not have that shape."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value
