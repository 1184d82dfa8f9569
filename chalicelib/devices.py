"""The CLI device flow: the CLI starts a session and polls it; a signed-in person approves it in
the browser; the next poll hands the CLI an API key (scope write) exactly once.

The key's secret waits between approval and that poll sealed (AES-GCM, bound to the session) in
a record of its own, and the poll takes it with a conditional delete: a second poll, or anyone
reading the table, gets nothing. Approval, the key and the parked secret are one transaction.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from chalicelib import errors
from chalicelib.accounts import SEAL_LABEL, AccountStore, CliSession, Scope
from chalicelib.auth import Principal, new_api_key
from chalicelib.config import Settings
from chalicelib.sealing import Sealer
from chalicelib.service import iso

SESSION_SECONDS = 300
POLL_SECONDS = 2
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class DeviceFlow:
    def __init__(
        self, settings: Settings, accounts: AccountStore, clock: Callable[[], float] = time.time
    ) -> None:
        self._base_url = settings.public_base_url
        self._accounts = accounts
        self._sealer = Sealer(settings.jwt_secret, SEAL_LABEL)
        self._clock = clock

    def start(self) -> dict[str, Any]:
        session = CliSession(str(uuid.uuid4()), "pending", int(self._clock()) + SESSION_SECONDS)
        self._accounts.put_cli_session(session)
        return {
            "ok": True,
            "session_id": session.id,
            "auth_url": f"{self._base_url}/cli/approve?session={session.id}",
            "expires_at": iso(session.expires_at),
            "poll_interval_seconds": POLL_SECONDS,
        }

    def poll(self, session_id: str) -> dict[str, Any]:
        session = self._session(session_id)
        status = session.status
        if status == "pending" and session.expires_at <= self._clock():
            status = "expired"
        body: dict[str, Any] = {"ok": True, "status": status, "expires_at": iso(session.expires_at)}
        sealed = self._accounts.take_cli_token(session.id) if status == "approved" else None
        if sealed is not None:
            body["api_token"] = self._sealer.open(sealed, _bound(session.id)).decode()
        return body

    def approve(self, principal: Principal, session_id: str) -> dict[str, Any]:
        session = self._session(session_id)
        now = int(self._clock())
        secret, key = new_api_key(principal, "CLI", Scope.WRITE, now)
        sealed = self._sealer.seal(secret.encode(), _bound(session.id))
        key_item = self._accounts.api_key_item(secret, key)
        if not self._accounts.approve_cli_session(session.id, sealed, key_item, now):
            raise errors.SessionNotPendingError(
                "This CLI sign-in is no longer waiting for approval (expired or already approved).",
                agent_action="Start a new sign-in from the CLI.",
            )
        return {"ok": True, "status": "approved"}

    def _session(self, session_id: str) -> CliSession:
        found = self._accounts.cli_session(session_id) if _UUID.fullmatch(session_id) else None
        if found is None:
            raise errors.SessionNotFoundError(
                "No CLI sign-in session has this id.",
                agent_action="Start a new sign-in with POST /auth/cli and poll the session_id "
                "it returns.",
            )
        return found


def _bound(session_id: str) -> str:
    return f"clitoken#{session_id}"
