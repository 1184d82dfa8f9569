"""Who is calling: a 24h session (cookie or ``Authorization: Bearer <jwt>``) or an API key
(``Authorization: Bearer ink_...``), resolved to a ``Principal`` of one team.

Sessions are JWTs checked against the revocation list on every request (a logged-out session is
refused everywhere); API keys are looked up by the hash of their secret and carry a scope.
A session holds every scope; only a session may mint API keys.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

from chalicelib import errors
from chalicelib.accounts import AccountStore, ApiKey, Scope
from chalicelib.models import team_owner
from chalicelib.tokens import SESSION_TTL_SECONDS, InvalidTokenError, SessionClaims, Signer

SESSION_COOKIE = "instanode_session"
API_KEY_PREFIX = "ink_"


@dataclass(frozen=True)
class Principal:
    user_id: str
    team_id: str
    scope: Scope
    session: SessionClaims | None  # None when the caller used an API key
    email: str = ""

    @property
    def owner(self) -> str:
        return team_owner(self.team_id)


class Authenticator:
    def __init__(
        self, signer: Signer, accounts: AccountStore, clock: Callable[[], float] = time.time
    ) -> None:
        self._signer = signer
        self._accounts = accounts
        self._clock = clock

    def require(self, headers: Mapping[str, str], scope: Scope = Scope.READ) -> Principal:
        """The caller, who must hold ``scope``; 401 without a valid credential, 403 without
        the scope."""
        principal = self.optional(headers)
        if principal is None:
            raise errors.UnauthorizedError(
                "Sign in first: send a session cookie or 'Authorization: Bearer <api key>'.",
                agent_action="Log in with the CLI device flow (POST /auth/cli) and send the "
                "api_token it returns as 'Authorization: Bearer <api_token>'.",
            )
        if not principal.scope.covers(scope):
            raise errors.ForbiddenError(f"This API key lacks the '{scope.value}' scope.")
        return principal

    def require_session(self, headers: Mapping[str, str]) -> Principal:
        """A signed-in person (an API key cannot stand in: keys cannot mint keys)."""
        principal = self.require(headers)
        if principal.session is None:
            raise errors.ForbiddenError("Only a signed-in session can do this, not an API key.")
        return principal

    def optional(self, headers: Mapping[str, str]) -> Principal | None:
        """The caller if a credential came with the request; None when none did. An upgrade
        JWT sent as Bearer (the spec's deploy recipe) is not a login: the caller stays
        anonymous. Anything else that does not verify is a 401."""
        credential, from_cookie = _credential(headers)
        if credential is None:
            return None
        if credential.startswith(API_KEY_PREFIX):
            key = self._accounts.api_key(credential)
            if key is None:
                raise _rejected("The API key is unknown or was deleted.")
            return Principal(key.user_id, key.team_id, key.scope, None, key.email)
        now = int(self._clock())
        try:
            claims = self._signer.read_session_token(credential, now)
        except InvalidTokenError:
            if not from_cookie and self._is_upgrade_token(credential, now):
                return None
            raise _rejected("The session token is invalid or expired.") from None
        if self._accounts.is_revoked(claims.jti):
            raise _rejected("This session was logged out.")
        return Principal(claims.user_id, claims.team_id, Scope.ADMIN, claims, claims.email)

    def _is_upgrade_token(self, token: str, now: int) -> bool:
        try:
            self._signer.read_upgrade_token(token, now)
        except InvalidTokenError:
            return False
        return True


def new_api_key(owner: Principal, name: str, scope: Scope, now: int) -> tuple[str, ApiKey]:
    """A fresh secret and its key record for ``owner``'s team (the store keeps only the
    secret's hash)."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(8)
    return secret, ApiKey(key_id, owner.team_id, owner.user_id, name, scope, now, owner.email)


def session_cookie(token: str, secure: bool, max_age: int = SESSION_TTL_SECONDS) -> str:
    """The Set-Cookie value: HttpOnly, SameSite=Lax (no cross-site POST carries it)."""
    attributes = [f"{SESSION_COOKIE}={token}", "Path=/", "HttpOnly", "SameSite=Lax"]
    attributes.append(f"Max-Age={max_age}")
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes)


def _credential(headers: Mapping[str, str]) -> tuple[str | None, bool]:
    """The Bearer credential, else the session cookie; and whether it came from the cookie."""
    authorization = headers.get("authorization", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _rejected("Use 'Authorization: Bearer <token>'.")
        return value.strip(), False
    raw = headers.get("cookie", "")
    if not raw:
        return None, False
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(raw)
    except CookieError:
        return None, False
    morsel = cookies.get(SESSION_COOKIE)
    return (morsel.value, True) if morsel and morsel.value else (None, False)


def _rejected(message: str) -> errors.ApiError:
    return errors.UnauthorizedError(
        message,
        agent_action="Sign in again (POST /auth/cli for the CLI) and retry with the new token.",
    )
