"""Fixtures and helpers for the Redis tests (the provider's functional tests and the attack and
quota suites in tests/security): the test stack's private Redis as a backend, tenants made with
fresh names and removed after each test, and how a tenant connects (redis-py or redis-cli).

A test module uses the fixtures by binding them under their names, e.g.
``backend, make_tenant = redis_fixtures.backend, redis_fixtures.make_tenant``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chalicelib.models import Backend, BackendRef, Credentials
from chalicelib.providers.base import Tenant
from chalicelib.providers.redis import RedisProvider
from chalicelib.tiers import KindLimits
from devstack.redis_service import RedisServer
from devstack.stack import Stack
from tests.conftest import stack_profile

LIMITS = KindLimits(storage_mb=5, connections=10, max_resources=1)
HOST = f"127.0.0.1:{stack_profile().redis_port}"
REDIS_CLI = "/usr/bin/redis-cli"
MAX_VALUE_BYTES = 1024 * 1024  # proto-max-bulk-len of every shared server

Made = tuple[BackendRef, Credentials]
MakeTenant = Callable[..., Made]


@pytest.fixture(scope="session")
def redis_server(stack: Stack) -> RedisServer:
    return stack.redis


@pytest.fixture(scope="session")
def backend(redis_server: RedisServer) -> Backend:
    return Backend(
        name="r1", admin_url=redis_server.admin_url(), public_host=HOST, internal_host=HOST
    )


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.admin_url())
    yield client
    client.close()


@pytest.fixture
def provider() -> RedisProvider:
    return RedisProvider()


@pytest.fixture
def make_tenant(provider: RedisProvider, backend: Backend) -> Iterator[MakeTenant]:
    """Provision tenants with fresh names; every one is deprovisioned after the test."""
    made: list[BackendRef] = []

    def _make(limits: KindLimits = LIMITS) -> Made:
        ref = provider.new_ref(backend)
        made.append(ref)
        return ref, provider.provision(backend, ref, limits)

    yield _make
    for ref in made:
        provider.deprovision(backend, ref)


def connect(creds: Credentials) -> redis.Redis:
    """A tenant's client, opened from exactly the returned connection_url (no retries)."""
    return redis.Redis.from_url(creds.connection_url, retry=Retry(NoBackoff(), 0), socket_timeout=5)


def key(creds: Credentials, name: str) -> str:
    return f"{creds.extra['key_prefix']}{name}"


def tenant_of(make: MakeTenant, limits: KindLimits) -> tuple[Tenant, redis.Redis, str]:
    """A provisioned tenant as the quota job sees it, its client and a key of its own."""
    ref, creds = make(limits)
    return Tenant(ref, limits, creds.stored), connect(creds), key(creds, "k")


def cli(creds: Credentials, *args: str, stdin: bytes | None = None) -> str:
    """Run ``redis-cli`` as the tenant (password in REDISCLI_AUTH, not on the command line);
    its output, error replies included (redis-cli prints them on stdout)."""
    url = urlsplit(creds.connection_url)
    cmd = [REDIS_CLI, "-h", url.hostname or "", "-p", str(url.port), "--user", url.username or ""]
    env = {**os.environ, "REDISCLI_AUTH": url.password or ""}
    done = subprocess.run(
        [*cmd, *(["-x"] if stdin is not None else []), *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=30,
    )
    return (done.stdout + done.stderr).decode(errors="replace").strip()


def user_exists(admin: redis.Redis, user: str) -> bool:
    return user in {u.decode() if isinstance(u, bytes) else u for u in admin.acl_users()}


def clients_of(admin: redis.Redis, user: str) -> list[int]:
    return sorted(int(c["id"]) for c in admin.client_list() if c.get("user") == user)


def fill_until_oom(client: redis.Redis, creds: Credentials) -> int:
    """Write the largest values the server takes (1 MiB) under the tenant's prefix until it
    answers OOM (its memory cap); how many were written."""
    value = b"x" * MAX_VALUE_BYTES
    for written in itertools.count():
        try:
            client.set(key(creds, f"fill{written}"), value)
        except redis.exceptions.OutOfMemoryError:
            return written
    raise AssertionError("unreachable")
