"""Helpers for the Redis provider's functional tests: default limits and how a tenant connects."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chalicelib.models import Credentials
from chalicelib.tiers import KindLimits

LIMITS = KindLimits(storage_mb=5, connections=10, max_resources=1)


def connect(creds: Credentials) -> redis.Redis:
    """A tenant's client, opened from exactly the returned connection_url (no retries)."""
    return redis.Redis.from_url(creds.connection_url, retry=Retry(NoBackoff(), 0), socket_timeout=5)


def key(creds: Credentials, name: str) -> str:
    return f"{creds.extra['key_prefix']}{name}"
