"""Signed JWTs (HS256, one key from config) that name a resource for claim and upgrade.

PyJWT is imported on first use: it pulls in ``cryptography`` when installed, which would
otherwise add ~25 ms to every Lambda cold start, including routes that sign nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

ALGORITHM = "HS256"
ISSUER = "instanode"
UPGRADE_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class UpgradeClaims:
    resource_id: str
    owner: str
    issued_at: int
    expires_at: int


class Signer:
    def __init__(self, secret: str) -> None:
        self._secret = secret

    def upgrade_token(self, resource_id: str, owner: str, now: int) -> str:
        claims = {
            "iss": ISSUER,
            "typ": "upgrade",
            "sub": resource_id,
            "own": owner,
            "iat": now,
            "exp": now + UPGRADE_TTL_SECONDS,
            "jti": secrets.token_hex(8),
        }
        import jwt

        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def read_upgrade_token(self, token: str) -> UpgradeClaims:
        """Verify signature, issuer, type and expiry; raises ``jwt.InvalidTokenError``."""
        import jwt

        claims = jwt.decode(
            token,
            self._secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
        if claims.get("typ") != "upgrade":
            raise jwt.InvalidTokenError("not an upgrade token")
        return UpgradeClaims(
            resource_id=claims["sub"],
            owner=claims["own"],
            issued_at=claims["iat"],
            expires_at=claims["exp"],
        )
