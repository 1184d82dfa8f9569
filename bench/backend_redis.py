"""The Redis server behind ``/cache/new``, over an admin redis-py client."""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import redis

from bench.backends import RAW_PREFIX, ms_since
from chalicelib.providers.redis import acl_rules, password_digest

TENANT_PREFIX = "u_"  # the provider's ACL users (chalicelib.providers.redis.RedisProvider.new_ref)


class RedisBench:
    def __init__(self, admin_url: str) -> None:
        self.client = redis.Redis.from_url(admin_url)
        self.client.ping()  # the connection is open before the first timed command

    def raw(self) -> float:
        """One ``ACL SETUSER`` with the rules the provider sends (``acl_rules``), for a user and
        key prefix of the bench's own (``RAW_PREFIX``: never taken for a tenant)."""
        suffix = secrets.token_hex(10)
        user = f"{RAW_PREFIX}u_{suffix}"
        rules = acl_rules(f"{RAW_PREFIX}t_{suffix}", password_digest(secrets.token_urlsafe(24)))
        start = time.perf_counter()
        self.client.execute_command("ACL SETUSER", user, *rules)  # type: ignore[no-untyped-call]
        return ms_since(start)

    def drop_raw(self) -> None:
        """Every raw-op user, also those an interrupted run left."""
        if raw := [u for u in self.users() if u.startswith(RAW_PREFIX)]:
            self.client.acl_deluser(*raw)

    def made_by(self, answer: Mapping[str, Any]) -> str:
        return unquote(urlsplit(str(answer["connection_url"])).username or "")

    def users(self) -> list[str]:
        return [u.decode() if isinstance(u, bytes) else str(u) for u in self.client.acl_users()]

    def tenants(self) -> int:
        return sum(u.startswith(TENANT_PREFIX) for u in self.users())

    def left(self, made: Collection[str]) -> int:
        wanted = set(made)
        return sum(u in wanted or u.startswith(RAW_PREFIX) for u in self.users())

    def close(self) -> None:
        self.client.close()
