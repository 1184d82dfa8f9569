"""Signed JWTs (HS256, keys from config): upgrade tokens that name a resource for claim and
upgrade, and 24h session tokens that name a user and team.

Only HS256 is accepted when reading (``alg: none`` and every other algorithm are refused), and
each token carries its ``typ``, so one kind can never stand in for the other.
Rotation: new tokens are signed with the current secret; a token verifies under it or any
previous secret still configured (``Settings.jwt_keys``), and under no other.
PyJWT is imported on first use: it pulls in ``cryptography`` when installed, which would
otherwise add ~25 ms to every Lambda cold start, including routes that sign nothing.
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from functools import partial
from typing import Any

from chalicelib.sealing import Keys, ordered_keys

ALGORITHM = "HS256"
ISSUER = "instanode"
UPGRADE_TTL_SECONDS = 7 * 24 * 3600
SESSION_TTL_SECONDS = 24 * 3600


class InvalidTokenError(Exception):
    """The token is malformed, tampered with, expired or of another type."""


@dataclass(frozen=True)
class UpgradeClaims:
    resource_id: str
    owner: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True)
class SessionClaims:
    user_id: str
    team_id: str
    email: str
    jti: str
    issued_at: int
    expires_at: int


class Signer:
    def __init__(self, keys: Keys) -> None:
        self._keys = ordered_keys(keys)

    def upgrade_token(self, resource_id: str, owner: str, now: int) -> str:
        return self._encode(
            "upgrade", resource_id, now, UPGRADE_TTL_SECONDS, {"own": owner, "jti": _jti()}
        )

    def read_upgrade_token(self, token: str, now: int | None = None) -> UpgradeClaims:
        claims = self._decode(token, "upgrade", now)
        return UpgradeClaims(
            resource_id=str(claims["sub"]),
            owner=str(claims.get("own", "")),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
        )

    def session_token(self, user_id: str, team_id: str, email: str, now: int) -> str:
        extra = {"team": team_id, "email": email, "jti": _jti()}
        return self._encode("session", user_id, now, SESSION_TTL_SECONDS, extra)

    def read_session_token(self, token: str, now: int | None = None) -> SessionClaims:
        claims = self._decode(token, "session", now)
        if not claims.get("jti") or not claims.get("team"):
            raise InvalidTokenError("session token lacks jti or team")
        return SessionClaims(
            user_id=str(claims["sub"]),
            team_id=str(claims["team"]),
            email=str(claims.get("email", "")),
            jti=str(claims["jti"]),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
        )

    def _encode(self, typ: str, sub: str, now: int, ttl: int, extra: dict[str, Any]) -> str:
        import jwt

        claims = {"iss": ISSUER, "typ": typ, "sub": sub, "iat": now, "exp": now + ttl, **extra}
        return jwt.encode(claims, self._keys[0], algorithm=ALGORITHM)

    def _decode(self, token: str, typ: str, now: int | None) -> dict[str, Any]:
        """Verify signature (HS256 only), issuer, expiry and type. ``now`` lets a caller judge
        expiry on its own clock (tests, and the claim preview's dry run)."""
        import jwt

        options: Any = {"require": ["exp", "iat", "sub", "iss"]}
        if now is not None:
            options["verify_exp"] = False
        try:
            claims = self._verified(token, options)
        except jwt.InvalidTokenError as exc:
            raise InvalidTokenError(str(exc)) from exc
        if now is not None and int(claims["exp"]) <= now:
            raise InvalidTokenError("token expired")
        if claims.get("typ") != typ:
            raise InvalidTokenError(f"not a {typ} token")
        return claims

    def _verified(self, token: str, options: Any) -> dict[str, Any]:
        """The claims of a token whose signature one of the keys made (the current first);
        every other check is the same under each key."""
        import jwt

        decode = partial(jwt.decode, algorithms=[ALGORITHM], issuer=ISSUER, options=options)
        for key in self._keys[:-1]:
            with contextlib.suppress(jwt.InvalidSignatureError):
                return decode(token, key)
        return decode(token, self._keys[-1])


def _jti() -> str:
    return secrets.token_hex(8)
