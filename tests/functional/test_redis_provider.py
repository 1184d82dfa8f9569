"""The Redis provider against a real private redis-server: isolation, quotas, restarts, removal."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis

from chalicelib.models import Backend, BackendRef, Credentials
from chalicelib.providers.base import BackendDownError, Tenant
from chalicelib.providers.redis import RedisProvider
from chalicelib.tiers import KindLimits
from devstack.redis_service import RedisServer
from devstack.stack import Stack
from tests.conftest import stack_profile
from tests.functional.redis_fixtures import LIMITS, connect, key

HOST = f"127.0.0.1:{stack_profile().redis_port}"

REDIS_CLI = "/usr/bin/redis-cli"


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


Made = tuple[BackendRef, Credentials]
MakeTenant = Callable[..., Made]


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


def tenant_of(make: MakeTenant, limits: KindLimits) -> tuple[Tenant, redis.Redis, str]:
    """A provisioned tenant as the quota job sees it, its client and a key of its own."""
    ref, creds = make(limits)
    return Tenant(ref, limits, creds.stored), connect(creds), key(creds, "k")


def user_exists(admin: redis.Redis, user: str) -> bool:
    return user in {u.decode() if isinstance(u, bytes) else u for u in admin.acl_users()}


def clients_of(admin: redis.Redis, user: str) -> list[int]:
    return sorted(int(c["id"]) for c in admin.client_list() if c.get("user") == user)


def test_provision_returns_prefix_url_and_digest(
    make_tenant: MakeTenant, admin: redis.Redis
) -> None:
    ref, creds = make_tenant()
    url = urlsplit(creds.connection_url)
    assert (url.username, url.netloc.split("@")[1], url.path) == (ref.principal, HOST, "/0")
    assert creds.extra == {"key_prefix": f"{ref.namespace}:"}
    assert creds.stored == {"acl_digest": hashlib.sha256(str(url.password).encode()).hexdigest()}
    assert user_exists(admin, ref.principal)


def test_connect_with_connection_url_reads_and_writes_own_keys(make_tenant: MakeTenant) -> None:
    _, creds = make_tenant()
    client = connect(creds)
    client.set(key(creds, "greeting"), "hello")
    client.hset(key(creds, "h"), "f", "v")
    assert client.get(key(creds, "greeting")) == b"hello"
    assert client.hget(key(creds, "h"), "f") == b"v"
    assert client.acl_whoami() == urlsplit(creds.connection_url).username


@pytest.mark.parametrize("command", ["GET", "SET", "DEL"])
def test_touch_other_tenants_key_is_refused(make_tenant: MakeTenant, command: str) -> None:
    _, mine = make_tenant()
    _, theirs = make_tenant()
    connect(theirs).set(key(theirs, "secret"), "s")
    args = [key(theirs, "secret")] + (["x"] if command == "SET" else [])
    with pytest.raises(redis.exceptions.NoPermissionError):
        connect(mine).execute_command(command, *args)
    assert connect(theirs).get(key(theirs, "secret")) == b"s"


SHARED_KEYSPACE_COMMANDS = [
    ["SCAN", "0"],
    ["KEYS", "*"],
    ["FLUSHALL"],
    ["FLUSHDB"],
    ["FUNCTION", "FLUSH"],
    ["SCRIPT", "FLUSH"],
    ["SELECT", "1"],
    ["COPY", "{own}", "{own}2", "DB", "1"],
    ["CONFIG", "GET", "*"],
    ["DBSIZE"],
    ["RANDOMKEY"],
    ["EVAL", "return redis.call('GET', KEYS[1])", "1", "{own}"],
    ["PUBSUB", "CHANNELS"],
    ["MEMORY", "STATS"],
    ["CLIENT", "LIST"],
    ["CLIENT", "TRACKING", "on", "BCAST"],
]


@pytest.mark.parametrize("command", SHARED_KEYSPACE_COMMANDS, ids=" ".join)
def test_run_shared_keyspace_command_is_refused(
    make_tenant: MakeTenant, admin: redis.Redis, command: list[str]
) -> None:
    _, creds = make_tenant()
    client = connect(creds)
    own = key(creds, "k")
    client.set(own, "v")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*(part.replace("{own}", own) for part in command))
    assert admin.get(own) == b"v"


def test_redis_cli_with_connection_url_sets_and_gets(make_tenant: MakeTenant) -> None:
    _, creds = make_tenant()

    def cli(*args: str) -> str:
        cmd = [REDIS_CLI, "--no-auth-warning", "-u", creds.connection_url, *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=10).stdout

    assert cli("SET", key(creds, "cli"), "from-cli").strip() == "OK"
    assert cli("GET", key(creds, "cli")).strip() == "from-cli"
    assert "NOPERM" in cli("KEYS", "*")


def test_usage_counts_only_own_keys(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend
) -> None:
    ref, creds = make_tenant()
    _, other = make_tenant()
    connect(other).set(key(other, "big"), "x" * 200_000)
    assert provider.usage(backend, ref) == 0
    connect(creds).set(key(creds, "big"), "x" * 100_000)
    assert 100_000 <= provider.usage(backend, ref) < 200_000


def test_enforce_over_quota_revokes_writes_but_keeps_deletes(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend
) -> None:
    tenant, client, big = tenant_of(make_tenant, KindLimits(1, 10, 1))
    client.set(big, "x" * 1_500_000)
    [usage] = provider.enforce(backend, [tenant])
    assert usage.over_quota and usage.used_bytes > 1024 * 1024
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set(big + "2", "y")
    assert client.get(big) is not None  # reads stay
    assert client.delete(big) == 1


def test_enforce_back_under_quota_restores_writes(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend
) -> None:
    tenant, client, big = tenant_of(make_tenant, KindLimits(1, 10, 1))
    client.set(big, "x" * 1_500_000)
    provider.enforce(backend, [tenant])
    client.delete(big)
    [usage] = provider.enforce(backend, [tenant])
    assert not usage.over_quota and usage.used_bytes == 0
    assert client.set(big, "small")


def test_enforce_leaves_tenants_under_quota_writable(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend
) -> None:
    small, small_client, small_key = tenant_of(make_tenant, KindLimits(1, 10, 1))
    big, big_client, big_key = tenant_of(make_tenant, KindLimits(1, 10, 1))
    small_client.set(small_key, "x" * 1000)
    big_client.set(big_key, "x" * 1_500_000)
    usages = provider.enforce(backend, [small, big])
    assert [u.over_quota for u in usages] == [False, True]
    assert small_client.set(small_key, "still writable")


def test_enforce_kills_connections_beyond_budget(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend, admin: redis.Redis
) -> None:
    ref, creds = make_tenant(KindLimits(5, 2, 1))
    clients = [connect(creds) for _ in range(4)]
    ids = [c.client_id() for c in clients]
    assert clients_of(admin, ref.principal) == sorted(ids)
    provider.enforce(backend, [Tenant(ref, KindLimits(5, 2, 1), creds.stored)])
    assert clients_of(admin, ref.principal) == sorted(ids)[:2]  # the oldest two stay


def test_enforce_after_restart_restores_acls_with_same_password(
    make_tenant: MakeTenant,
    provider: RedisProvider,
    backend: Backend,
    redis_server: RedisServer,
) -> None:
    tenant, client, own = tenant_of(make_tenant, KindLimits(5, 10, 1))
    client.set(own, "before")
    redis_server.down()
    redis_server.up()
    with pytest.raises(redis.exceptions.AuthenticationError):
        client.ping()
    provider.enforce(backend, [tenant])
    assert client.get(own) is None  # no persistence: the data is gone, the login is back
    assert client.set(own, "after")


def test_enforce_does_not_restore_deprovisioned_tenant(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend, admin: redis.Redis
) -> None:
    tenant, _, _ = tenant_of(make_tenant, KindLimits(5, 10, 1))
    provider.deprovision(backend, tenant.ref)
    provider.enforce(backend, [tenant])  # a tenant list read before the delete
    assert not user_exists(admin, tenant.ref.principal)


def test_deprovision_removes_user_keys_and_connections(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend, admin: redis.Redis
) -> None:
    ref, creds = make_tenant()
    client = connect(creds)
    for i in range(2500):  # more than one SCAN batch
        client.set(key(creds, str(i)), i)
    provider.deprovision(backend, ref)
    assert not user_exists(admin, ref.principal)
    assert clients_of(admin, ref.principal) == []
    assert list(admin.scan_iter(match=f"{ref.namespace}:*", count=1000)) == []
    with pytest.raises(redis.exceptions.AuthenticationError):
        connect(creds).ping()


def test_deprovision_twice_succeeds(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend, admin: redis.Redis
) -> None:
    ref, _ = make_tenant()
    provider.deprovision(backend, ref)
    provider.deprovision(backend, ref)
    assert not user_exists(admin, ref.principal)


def test_provision_with_wrong_admin_password_raises_backend_down(
    provider: RedisProvider, backend: Backend, redis_server: RedisServer, admin: redis.Redis
) -> None:
    wrong = Backend(
        name="r1-wrong",
        admin_url=f"redis://admin:wrong@{HOST}/0",
        public_host=HOST,
        internal_host=HOST,
    )
    ref = provider.new_ref(wrong)
    with pytest.raises(BackendDownError):
        provider.provision(wrong, ref, KindLimits(5, 10, 1))
    assert not user_exists(admin, ref.principal)


def test_check_unreachable_backend_raises_backend_down(provider: RedisProvider) -> None:
    down = Backend(
        name="r-down", admin_url="redis://admin:x@127.0.0.1:1/0", public_host="", internal_host=""
    )
    with pytest.raises(BackendDownError):
        provider.check(down)


def test_check_running_backend_passes(provider: RedisProvider, backend: Backend) -> None:
    provider.check(backend)
