"""NATS nkeys and JWTs (v2), in the smallest form nats-server (>= 2.9) accepts: nkeys + stdlib.

A JWT is ``b64url(header) . b64url(claims) . b64url(ed25519 signature of the first two parts)``,
without padding, signed by the issuer's nkey. The server checks the signature, the issuer's place
in the trust chain (operator -> account -> user) and the claims; it does not check how ``jti`` is
made (here: SHA-256 of the claims; the Go library uses SHA-512/256).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import nkeys  # type: ignore[import-untyped]

Role = Literal["operator", "account", "user"]
_PREFIX: dict[Role, int] = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
}
_HEADER = b'{"typ":"JWT","alg":"ed25519-nkey"}'
UNLIMITED = -1
ALL_USERS = "*"  # a revocations key: every user issued at or before the timestamp
_USER_KEY_CONTEXT = b"instanode/nats/user/"


@dataclass(frozen=True)
class KeyPair:
    """An nkey: ``seed`` (secret, starts with ``S``) and ``public_key`` (``O…``, ``A…``, ``U…``)."""

    seed: str = field(repr=False)
    public_key: str

    @classmethod
    def new(cls, role: Role, raw: bytes | None = None) -> KeyPair:
        """A fresh random key, or the one made from 32 given bytes (a derived key)."""
        seed = nkeys.encode_seed(os.urandom(32) if raw is None else raw, _PREFIX[role])
        return cls.from_seed(seed.decode())

    @classmethod
    def from_seed(cls, seed: str) -> KeyPair:
        kp = nkeys.from_seed(seed.encode())
        return cls(seed=seed, public_key=kp.public_key.decode())

    def sign(self, data: bytes) -> bytes:
        signature: bytes = nkeys.from_seed(self.seed.encode()).sign(data)
        return signature


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode(claims: Mapping[str, Any], signer: KeyPair) -> str:
    """Sign ``claims`` (``sub``, ``name``, ``nats``, ...) with ``signer``, the issuer."""
    body: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": signer.public_key,
        **claims,
    }
    body["jti"] = base64.b32encode(hashlib.sha256(_json(body)).digest()).decode().rstrip("=")
    signing_input = f"{_b64(_HEADER)}.{_b64(_json(body))}"
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"


def decode(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified: for inspection (tests, debugging), never for trust."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


# -- the claims this project issues ------------------------------------------------------------
def operator_jwt(operator: KeyPair, system_account: str, name: str = "instanode") -> str:
    """The self-signed operator the server trusts."""
    nats = {"type": "operator", "version": 2, "system_account": system_account}
    return encode({"sub": operator.public_key, "name": name, "nats": nats}, operator)


def account_jwt(
    operator: KeyPair,
    account: str,
    name: str,
    limits: Mapping[str, int | bool],
    signing_keys: Sequence[str] = (),
    revocations: Mapping[str, int] | None = None,
) -> str:
    """An account signed by the operator. ``limits`` override unlimited defaults; JetStream is on
    when ``disk_storage`` or ``mem_storage`` is non-zero. Users issued by any of
    ``signing_keys`` (with ``issuer_account`` = ``account``) may log in to the account."""
    nats: dict[str, Any] = {
        "type": "account",
        "version": 2,
        "limits": {
            **{k: UNLIMITED for k in ("subs", "data", "payload", "imports", "exports", "conn")},
            **{"leaf": 0, "wildcards": True, "disk_storage": 0, "mem_storage": 0},
            **limits,
        },
        "signing_keys": list(signing_keys),
        "default_permissions": {"pub": {}, "sub": {}},
    }
    if revocations:
        nats["revocations"] = dict(revocations)
    return encode({"sub": account, "name": name, "nats": nats}, operator)


def tombstone_jwt(operator: KeyPair, account: str) -> str:
    """``account`` being removed: no connections, every user revoked (live clients drop at once),
    JetStream still on so its data can be purged."""
    return account_jwt(
        operator,
        account,
        "deleted",
        {"conn": 0, "disk_storage": 1},
        revocations={ALL_USERS: int(time.time())},
    )


def derived_user(signing: KeyPair, account: str, generation: int = 0) -> KeyPair:
    """The user key of ``account`` and ``generation``, made from ``signing``'s seed (HMAC): only
    its holder can rebuild it. Generation 0 is derived as before generations existed."""
    suffix = f"/{generation}".encode() if generation else b""
    raw = hmac.new(signing.seed.encode(), _USER_KEY_CONTEXT + account.encode() + suffix, "sha256")
    return KeyPair.new("user", raw.digest())


def tenant_account_jwt(
    operator: KeyPair,
    signing: KeyPair,
    account: str,
    name: str,
    limits: Mapping[str, int | bool],
    generation: int,
) -> str:
    """An account whose users ``signing`` issues, with the derived users of every generation
    before ``generation`` revoked: the server refuses them and drops their live connections."""
    now = int(time.time())
    earlier = (derived_user(signing, account, g).public_key for g in range(generation))
    return account_jwt(
        operator,
        account,
        name,
        limits,
        signing_keys=[signing.public_key],
        revocations={user: now for user in earlier},
    )


def user_jwt(
    signer: KeyPair,
    user: str,
    name: str,
    issuer_account: str | None = None,
) -> str:
    """A user with open permissions inside its account. ``signer`` is the account itself, or one
    of its signing keys (then ``issuer_account`` names the account)."""
    nats: dict[str, Any] = {
        "type": "user",
        "version": 2,
        "pub": {},
        "sub": {},
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
    }
    if issuer_account:
        nats["issuer_account"] = issuer_account
    return encode({"sub": user, "name": name, "nats": nats}, signer)


def delete_accounts_jwt(operator: KeyPair, accounts: Sequence[str]) -> str:
    """The operator-signed request body of ``$SYS.REQ.CLAIMS.DELETE``."""
    nats = {"type": "generic", "version": 2, "accounts": list(accounts)}
    return encode({"sub": operator.public_key, "nats": nats}, operator)


def creds_file(user_jwt: str, user_seed: str) -> str:
    """The standard ``.creds`` text (as ``nsc`` writes it) that NATS clients load."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )
