"""Helpers for the Redis provider's functional tests: where the private test Redis runs, its
admin password, and how a tenant connects."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chalicelib.models import Credentials
from chalicelib.tiers import KindLimits

STATE = Path(__file__).resolve().parents[2] / ".state" / "test"
PORT = 16379
HOST = f"127.0.0.1:{PORT}"
LIMITS = KindLimits(storage_mb=5, connections=10, max_resources=1)


def admin_password() -> str:
    """The test stack's Redis password when it has one, else one kept under the state dir."""
    try:
        known = json.loads((STATE / "secrets.json").read_text()).get("redis_password")
    except FileNotFoundError:
        known = None
    if known:
        return str(known)
    path = STATE / "redis-test-password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(16))
    return path.read_text().strip()


def connect(creds: Credentials) -> redis.Redis:
    """A tenant's client, opened from exactly the returned connection_url (no retries)."""
    return redis.Redis.from_url(creds.connection_url, retry=Retry(NoBackoff(), 0), socket_timeout=5)


def key(creds: Credentials, name: str) -> str:
    return f"{creds.extra['key_prefix']}{name}"
