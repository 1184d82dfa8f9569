"""Helpers for the accounts API's functional tests (test_claims.py, test_accounts.py): JSON calls
through ``chalice.test.Client``, sign-in through the stack's real SMTP server, and tokens made
with the app's own (or another) signing key."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from chalice.test import Client

from chalicelib import deps
from devstack.stack import Stack
from tests.conftest import fresh_ip, magic_link

SESSION_COOKIE = "instanode_session"
OTHER_KEY = "another-signing-key-" + "x" * 32


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> tuple[int, str | None]:
        """The status and the envelope's error code (None on success)."""
        return self.status, self.body.get("error") if isinstance(self.body, dict) else None


def call(
    client: Client,
    method: str,
    path: str,
    body: Any = None,
    *,
    bearer: str | None = None,
    ip: str | None = None,
    **headers: str,
) -> Reply:
    """One request; ``body`` goes as JSON (a str or bytes body as it is)."""
    hdrs = {"X-Forwarded-For": ip or fresh_ip()}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    if bearer is not None:
        hdrs["Authorization"] = f"Bearer {bearer}"
    hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
    raw = body if body is None or isinstance(body, str | bytes) else json.dumps(body)
    r = client.http.request(method, path, headers=hdrs, body=raw or b"")
    text = r.body.decode() if isinstance(r.body, bytes) else r.body
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return Reply(r.status_code, parsed, {k.lower(): v for k, v in r.headers.items()})


def new_email() -> str:
    return f"f{uuid.uuid4().hex[:12]}@example.com"


def follow(client: Client, link: str) -> Reply:
    """Open a link of this API (its path and query) without following the redirect."""
    parts = urlsplit(link)
    return call(client, "GET", f"{parts.path}?{parts.query}" if parts.query else parts.path)


def session_of(reply: Reply) -> str:
    """The session token a sign-in callback set as its cookie."""
    cookie = reply.headers.get("set-cookie", "")
    name, _, rest = cookie.partition("=")
    assert reply.status == 302 and name == SESSION_COOKIE, reply
    return rest.split(";")[0]


def sign_in(client: Client, stack: Stack, email: str | None = None) -> str:
    """A session token, through POST /auth/email/start and the emailed link."""
    email = email or new_email()
    assert call(client, "POST", "/auth/email/start", {"email": email}).status == 200
    return session_of(follow(client, magic_link(stack, email)))


def claim(client: Client, stack: Stack, upgrade_jwt: str, email: str | None = None) -> str:
    """Claim through POST /claim and the emailed link; the session token."""
    email = email or new_email()
    sent = call(client, "POST", "/claim", {"token": upgrade_jwt, "email": email})
    assert sent.status == 200, sent
    return session_of(follow(client, magic_link(stack, email)))


def provision(
    client: Client, path: str, name: str = "f", *, ip: str | None = None, bearer: str | None = None
) -> Reply:
    return call(client, "POST", path, {"name": name}, ip=ip, bearer=bearer)


def made(client: Client, path: str, **kwargs: Any) -> dict[str, Any]:
    """Provision and return the 201 body."""
    r = provision(client, path, **kwargs)
    assert r.status == 201, r
    body: dict[str, Any] = r.body
    return body


def api_key(client: Client, session: str, scope: str = "read") -> dict[str, Any]:
    r = call(client, "POST", "/api/v1/api-keys", {"name": scope, "scope": scope}, bearer=session)
    assert r.status == 201, r
    body: dict[str, Any] = r.body
    return body


def claims_of(token: str) -> dict[str, Any]:
    """The claims of one of our JWTs, unverified."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def signed(claims: dict[str, Any], key: str | None = None, algorithm: str = "HS256") -> str:
    """``claims`` as a JWT signed with ``key`` (default: the app's own signing key)."""
    secret = deps.get_settings().jwt_secret if key is None else key
    return jwt.encode(claims, None if algorithm == "none" else secret, algorithm=algorithm)
