"""The CLI device flow (RFC 8628): the CLI starts a session and polls it; a signed-in person
approves it in the browser; the next poll hands the CLI an API key (scope write) exactly once.

Against phishing (someone starts a session and sends a victim its ``auth_url``), approval needs
the session's ``user_code``, 8 letters (``XXXX-XXXX``) that ``POST /auth/cli`` returns for the
CLI to print: the approve page asks the user to type the code their own terminal shows, and
``auth_url`` carries only the session id. The code is an HMAC of the session id under a key
derived from the platform secret, so it is never stored; it is compared in constant time with
the code under the current secret and under each previous one (a sign-in started just before a
rotation still approves). Every approval attempt is counted on the session record before its
code is looked at, and the fifth wrong code ends the session (polls then see ``expired``): at
most 5 guesses of 20^8 codes (one more valid code per previous secret during a rotation).

The key's secret waits between approval and that poll sealed (AES-GCM, bound to the session) in
a record of its own, and the poll takes it with a conditional delete: a second poll, or anyone
reading the table, gets nothing. Approval, the key and the parked secret are one transaction.
The session id is a bearer secret too (the poll hands the key to whoever holds it), so the
records are keyed by its hash (accounts.py), never by the id itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

from chalicelib import errors
from chalicelib.accounts import SEAL_LABEL, AccountStore, CliSession, Scope
from chalicelib.auth import Principal, new_api_key
from chalicelib.config import Settings
from chalicelib.sealing import Sealer
from chalicelib.service import iso

SESSION_SECONDS = 300
POLL_SECONDS = 2
MAX_CODE_ATTEMPTS = 5  # approval attempts per session; the last wrong one ends it
CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels (no words), no look-alikes (0/O, 1/I)
CODE_LENGTH = 8
CODE_LABEL = b"instanode/cli-user-code/v1"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class InvalidUserCodeError(errors.BadRequestError):
    """The code typed on the approve page is not the one the CLI printed."""

    code = "invalid_user_code"


class DeviceFlow:
    def __init__(
        self, settings: Settings, accounts: AccountStore, clock: Callable[[], float] = time.time
    ) -> None:
        self._base_url = settings.public_base_url
        self._accounts = accounts
        self._sealer = Sealer(settings.jwt_keys, SEAL_LABEL)
        # one per secret, the current first: a code made before a rotation still approves
        self._code_keys = tuple(
            hmac.new(k.encode(), CODE_LABEL, hashlib.sha256).digest() for k in settings.jwt_keys
        )
        self._clock = clock

    def start(self) -> dict[str, Any]:
        session = CliSession(str(uuid.uuid4()), "pending", int(self._clock()) + SESSION_SECONDS)
        self._accounts.put_cli_session(session)
        code = _user_code(self._code_keys[0], session.id)
        return {
            "ok": True,
            "session_id": session.id,
            "user_code": f"{code[:4]}-{code[4:]}",
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

    def approve(self, principal: Principal, session_id: str, user_code: Any) -> dict[str, Any]:
        """Approve with the code the CLI printed. The attempt is counted before the code is
        compared, so parallel guesses get no more than MAX_CODE_ATTEMPTS answers either."""
        session = self._session(session_id)
        if not isinstance(user_code, str) or not user_code.strip():
            raise errors.BadRequestError(
                "Send the code the terminal shows as 'user_code'.",
                agent_action="Ask the user for the code their CLI printed (like BCDF-GHJK) and "
                "send it as 'user_code'.",
            )
        now = int(self._clock())
        attempts = self._accounts.count_cli_attempt(session.id, now, MAX_CODE_ATTEMPTS)
        if attempts is None:
            raise _not_pending()
        if not self._code_matches(session.id, user_code):
            self._wrong_code(session.id, MAX_CODE_ATTEMPTS - attempts)
        secret, key = new_api_key(principal, "CLI", Scope.WRITE, now)
        sealed = self._sealer.seal(secret.encode(), _bound(session.id))
        key_item = self._accounts.api_key_item(secret, key)
        if not self._accounts.approve_cli_session(session.id, sealed, key_item, now):
            raise _not_pending()
        return {"ok": True, "status": "approved"}

    def _wrong_code(self, session_id: str, attempts_left: int) -> NoReturn:
        if attempts_left > 0:
            raise InvalidUserCodeError(
                "That code does not match this sign-in. Type the code your terminal shows "
                f"({attempts_left} attempt(s) left).",
                agent_action="Ask the user for the exact code their CLI printed. If they did "
                "not start this sign-in themselves, do not approve it.",
                attempts_left=attempts_left,
            )
        self._accounts.end_cli_session(session_id)
        raise InvalidUserCodeError(
            "That code does not match this sign-in, and it was the last attempt: this sign-in "
            "is closed.",
            agent_action="Start a new sign-in from the CLI and type the code it prints.",
            attempts_left=0,
        )

    def _code_matches(self, session_id: str, user_code: str) -> bool:
        """Whether ``user_code`` is the session's code under any key, compared in constant
        time against every one (no early exit tells which key, if any, was close)."""
        typed = re.sub(r"[\s-]", "", user_code).upper().encode()
        matches = [
            hmac.compare_digest(typed, _user_code(key, session_id).encode())
            for key in self._code_keys
        ]
        return any(matches)

    def _session(self, session_id: str) -> CliSession:
        found = self._accounts.cli_session(session_id) if _UUID.fullmatch(session_id) else None
        if found is None:
            raise errors.SessionNotFoundError(
                "No CLI sign-in session has this id.",
                agent_action="Start a new sign-in with POST /auth/cli and poll the session_id "
                "it returns.",
            )
        return found


def _user_code(key: bytes, session_id: str) -> str:
    """The session's 8-letter code (without the dash) under ``key``, derived, never stored."""
    digest = hmac.new(key, session_id.encode(), hashlib.sha256).digest()
    n = int.from_bytes(digest, "big")  # 256 bits: 8 base-20 digits are all but uniform
    letters = []
    for _ in range(CODE_LENGTH):
        n, i = divmod(n, len(CODE_ALPHABET))
        letters.append(CODE_ALPHABET[i])
    return "".join(letters)


def _not_pending() -> errors.ApiError:
    return errors.SessionNotPendingError(
        "This CLI sign-in is no longer waiting for approval (expired, already approved, or "
        "closed after too many wrong codes).",
        agent_action="Start a new sign-in from the CLI.",
    )


def _bound(session_id: str) -> str:
    return f"clitoken#{session_id}"
