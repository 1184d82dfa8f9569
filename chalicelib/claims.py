"""Claims and sign-in by email: a claim turns an anonymous network's resources into a team's.

``POST /claim`` checks the upgrade JWT and the email, then mails a single-use sign-in link (15
minutes). Following the link signs the user up (user and team) or in, moves every live resource
of the JWT's network to the team, lifts the network's recycle block, and starts a 24h session.
``POST /auth/email/start`` mails the same kind of link without a claim. Nothing is claimed until
the link is followed, so a typo in the address claims nothing.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chalicelib import errors
from chalicelib.accounts import AccountStore, Link, LinkPurpose, secret_hash
from chalicelib.config import Settings
from chalicelib.emails import valid_email
from chalicelib.mail import Message
from chalicelib.outbox import Outbox
from chalicelib.resources import resource_summary
from chalicelib.service import iso
from chalicelib.store import ResourceStore
from chalicelib.teams import TeamService
from chalicelib.tokens import InvalidTokenError, Signer, UpgradeClaims

log = logging.getLogger(__name__)
LINK_TTL_SECONDS = 15 * 60
LINK_LEASE_SECONDS = 60  # how long one follow holds a link: the Lambda timeout, so none outlives it
MAILS_PER_HOUR = 5  # sign-in links per address
TEAM_NAME_MAX = 64
TEAM_NAME = re.compile(rf"[^\W_][\w .,'&()-]{{0,{TEAM_NAME_MAX - 1}}}")
DEFAULT_NEXT = "/dashboard"


class LinkRefused(StrEnum):
    """Why following a sign-in link signed nobody in: the ``error`` of /login it lands on."""

    INVALID = "link_invalid"  # unknown, used or expired
    IN_USE = "link_in_use"  # another follow of it is running: open it again in a few seconds
    INCOMPLETE = "sign_in_incomplete"  # failed midway: opening it again finishes


@dataclass(frozen=True)
class SignedIn:
    session_token: str
    next_path: str
    claimed: int  # resources moved into the team by this sign-in


class ClaimService:
    def __init__(
        self,
        settings: Settings,
        accounts: AccountStore,
        store: ResourceStore,
        teams: TeamService,
        outbox: Callable[[], Outbox],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._accounts = accounts
        self._store = store
        self._teams = teams
        self._outbox = outbox
        self._signer = Signer(settings.jwt_keys)
        self._clock = clock

    def preview(self, token: str) -> dict[str, Any]:
        """What a claim with this token would take; no side effects."""
        try:
            claims = self._signer.read_upgrade_token(token, int(self._clock()))
        except InvalidTokenError:
            empty: dict[str, Any] = {"token_expires_at": None, "resource": None, "items": []}
            return {"ok": True, "token_valid": False, **empty, "recycle_blocked": False}
        named = self._store.get(claims.resource_id)
        items = self._store.active_owned(claims.owner)
        return {
            "ok": True,
            "token_valid": True,
            "token_expires_at": iso(claims.expires_at),
            "resource": resource_summary(named) if named and named.owner == claims.owner else None,
            "items": [resource_summary(r) for r in sorted(items, key=lambda r: r.created_at)],
            "recycle_blocked": self._store.recycle_blocker(claims.owner) is not None,
        }

    def start_claim(self, token: Any, email: Any, team_name: Any) -> dict[str, Any]:
        claims = self._read(token)
        address = valid_email(email)
        name = valid_team_name(team_name)
        link = Link(
            email=address,
            purpose=LinkPurpose.CLAIM,
            expires_at=int(self._clock()) + LINK_TTL_SECONDS,
            claim_owner=claims.owner,
            team_name=name,
        )
        if not self._send_link(link, "Confirm your instanode claim", "keep the resources you made"):
            raise errors.RateLimitedError(
                f"{address} was sent {MAILS_PER_HOUR} sign-in links this hour.",
                agent_action="Tell the user to use the newest link in their inbox, or retry "
                "in an hour.",
                headers={"Retry-After": str(3600 - int(self._clock()) % 3600)},
            )
        return {
            "ok": True,
            "email": address,
            "message": f"We sent a sign-in link to {address}. Open it within 15 minutes to "
            "finish the claim.",
            "link_expires_at": iso(link.expires_at),
        }

    def start_login(self, email: Any, next_path: Any) -> None:
        link = Link(
            email=valid_email(email),
            purpose=LinkPurpose.LOGIN,
            expires_at=int(self._clock()) + LINK_TTL_SECONDS,
            next_path=safe_next(next_path),
        )
        self._send_link(link, "Your instanode sign-in link", "sign in")  # quietly capped

    def follow(self, secret: str) -> SignedIn | LinkRefused:
        """Use a sign-in link: sign the user up or in and, for a claim, adopt the network.

        The link stays stored until this succeeds, then it is deleted (single use). Meanwhile
        this follow holds it for LINK_LEASE_SECONDS (a conditional update), so a second follow
        at the same time is refused (``IN_USE``) and two never adopt at once. If this one fails
        midway (a DynamoDB error), it lets go of the link and answers ``INCOMPLETE``; if the
        process dies instead (a crash, the Lambda timeout), the hold simply lapses. Either way
        following the link again finishes the claim, because every step repeats safely:
        signing up finds the user made the first time, adopting moves only what the network
        still owns (``TeamService.adopt``), and marking the network claimed is a plain set.
        """
        now = int(self._clock())
        link = self._accounts.link(secret) if secret else None
        if link is None or link.expires_at <= now:
            return LinkRefused.INVALID
        until = now + LINK_LEASE_SECONDS
        if link.leased_until > now or not self._accounts.lease_link(secret, now, until):
            return LinkRefused.IN_USE
        try:
            signed_in = self._sign_in(link, now)
            self._accounts.delete_link(secret)
        except Exception:
            log.exception("a sign-in link failed midway; following it again finishes")
            with contextlib.suppress(Exception):  # else the hold lapses at `until`
                self._accounts.release_link(secret, until)
            return LinkRefused.INCOMPLETE
        return signed_in

    def _sign_in(self, link: Link, now: int) -> SignedIn:
        default_team = f"{link.email.split('@')[0][:50]}'s team"
        user, team = self._accounts.sign_up(link.email, link.team_name or default_team, now)
        claimed = 0
        if link.purpose is LinkPurpose.CLAIM:
            claimed = len(self._teams.adopt(link.claim_owner, team))
            self._store.mark_claimed(link.claim_owner)
        token = self._signer.session_token(user.id, team.id, user.email, now)
        return SignedIn(token, link.next_path, claimed)

    def _read(self, token: Any) -> UpgradeClaims:
        if not isinstance(token, str) or not token:
            raise errors.BadRequestError(
                "Send the upgrade_jwt of a resource as 'token'.",
                agent_action="Pass the upgrade_jwt from the provisioning response as 'token'.",
            )
        try:
            return self._signer.read_upgrade_token(token, int(self._clock()))
        except InvalidTokenError as exc:
            raise errors.InvalidTokenError(
                "The claim token is invalid or expired.",
                agent_action="Use the upgrade_jwt of a resource made in the last 7 days.",
            ) from exc

    def _send_link(self, link: Link, subject: str, purpose: str) -> bool:
        """Mail a new link, unless the address had MAILS_PER_HOUR this hour (False): nobody can
        flood a mailbox through us."""
        now = int(self._clock())
        hour = f"mail#{secret_hash(link.email)[:24]}#{now // 3600}"
        if not self._store.take_slot(hour, MAILS_PER_HOUR, now + 7200):
            log.warning("sign-in mail cap reached for one address")
            return False
        secret = secrets.token_urlsafe(32)
        self._accounts.put_link(secret, link)
        url = f"{self._settings.public_base_url}/auth/email/callback?token={secret}"
        text = (
            f"Open this link to {purpose} on instanode:\n\n{url}\n\n"
            "It works once and expires in 15 minutes. If you did not ask for it, ignore this "
            "email.\n"
        )
        html = (
            f"<p>Open this link to {purpose} on instanode:</p>"
            f'<p><a href="{url}">Sign in to instanode</a></p>'
            "<p>It works once and expires in 15 minutes. If you did not ask for it, ignore "
            "this email.</p>"
        )
        self._outbox().send(Message(link.email, subject, text, html), int(self._clock()))
        return True


def valid_team_name(value: Any) -> str:
    """An optional team name ('' when not given): a letter or digit, then letters, digits,
    spaces and . , ' & ( ) _ -, at most 64 characters."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not TEAM_NAME.fullmatch(value.strip()):
        raise errors.InvalidNameError(
            f"'team_name' must be 1-{TEAM_NAME_MAX} characters: a letter or digit, then "
            "letters, digits, spaces or . , ' & ( ) _ -",
            agent_action="Pick a team name like 'Acme Labs' or leave team_name out.",
        )
    return value.strip()


def safe_next(value: Any) -> str:
    """A same-site path to land on after sign-in (never another host: no open redirect)."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return DEFAULT_NEXT
    if "\\" in value or any(ord(ch) < 33 for ch in value):
        return DEFAULT_NEXT
    return value
