"""The Redis provider against a real private redis-server: provisioning, quotas, restarts,
removal, inventory and the server settings it requires. Attacks are in tests/security."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
import redis

from chalicelib.models import Backend
from chalicelib.providers.base import BackendDownError, Tenant
from chalicelib.providers.redis import RedisProvider
from chalicelib.tiers import KindLimits
from devstack.redis_service import RedisServer
from tests.functional import redis_fixtures as rf
from tests.functional.redis_fixtures import (
    HOST,
    MakeTenant,
    cli,
    clients_of,
    connect,
    key,
    tenant_of,
    user_exists,
)

redis_server, backend, admin, provider = rf.redis_server, rf.backend, rf.admin, rf.provider
make_tenant = rf.make_tenant


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


def test_redis_cli_as_tenant_sets_and_gets(make_tenant: MakeTenant) -> None:
    _, creds = make_tenant()
    assert cli(creds, "SET", key(creds, "cli"), "from-cli") == "OK"
    assert cli(creds, "GET", key(creds, "cli")) == "from-cli"


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
    client.rpush(big, *["x" * 500_000] * 3)  # 1.5 MB (one value: at most 1 MiB)
    [usage] = provider.enforce(backend, [tenant])
    assert usage.over_quota and usage.used_bytes > 1024 * 1024
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set(big + "2", "y")
    assert client.llen(big) == 3  # reads stay
    assert client.delete(big) == 1


def test_enforce_back_under_quota_restores_writes(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend
) -> None:
    tenant, client, big = tenant_of(make_tenant, KindLimits(1, 10, 1))
    client.rpush(big, *["x" * 500_000] * 3)
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
    big_client.rpush(big_key, *["x" * 500_000] * 3)
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


def test_inventory_lists_whole_and_half_made_tenants(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend, admin: redis.Redis
) -> None:
    whole, creds = make_tenant()
    connect(creds).set(key(creds, "k"), "v")
    user_only, _ = make_tenant()
    keys_only = provider.new_ref(backend)
    admin.set(f"{keys_only.namespace}:k", "v")
    admin.set("not-a-tenant:k", "v")
    try:
        listed = provider.inventory(backend)
        assert {whole, user_only, keys_only} <= set(listed)
        assert all(r.namespace.startswith("t_") and r.principal.startswith("u_") for r in listed)
        assert len(listed) == len(set(listed))
    finally:
        admin.delete("not-a-tenant:k")
        provider.deprovision(backend, keys_only)


def test_deprovision_removes_any_inventoried_tenant(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend, admin: redis.Redis
) -> None:
    user_only, _ = make_tenant()
    keys_only = provider.new_ref(backend)
    admin.set(f"{keys_only.namespace}:k", "v")
    for ref in (user_only, keys_only):
        provider.deprovision(backend, ref)
    listed = provider.inventory(backend)
    assert user_only not in listed and keys_only not in listed


def test_deprovision_on_full_server_frees_it(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend, admin: redis.Redis
) -> None:
    ref, creds = make_tenant()
    assert rf.fill_until_oom(connect(creds), creds) > 0
    provider.deprovision(backend, ref)
    assert not user_exists(admin, ref.principal)
    assert list(admin.scan_iter(match=f"{ref.namespace}:*", count=1000)) == []
    assert admin.set("instanode:probe", "fits") and admin.delete("instanode:probe")


@pytest.mark.parametrize(
    ("setting", "unsafe", "problem"),
    [
        ("maxmemory-policy", "allkeys-lru", "maxmemory-policy is 'allkeys-lru'"),
        ("maxmemory", "0", "maxmemory is 0"),
        ("proto-max-bulk-len", "512mb", "proto-max-bulk-len is '536870912'"),
        ("maxmemory-clients", "0", "maxmemory-clients is '0'"),
    ],
)
def test_provision_on_server_without_required_setting_is_refused(
    provider: RedisProvider,
    backend: Backend,
    admin: redis.Redis,
    setting: str,
    unsafe: str,
    problem: str,
) -> None:
    unsafe_backend = replace(backend, name=f"r1-{setting}")  # not verified before in this run
    kept = admin.config_get(setting)[setting]
    admin.config_set(setting, unsafe)
    try:
        with pytest.raises(BackendDownError, match=problem):
            provider.provision(unsafe_backend, provider.new_ref(unsafe_backend), rf.LIMITS)
        with pytest.raises(BackendDownError, match=problem):
            provider.check(unsafe_backend)
    finally:
        admin.config_set(setting, kept)


def test_check_server_refusing_config_judges_what_info_shows(
    provider: RedisProvider, backend: Backend, admin: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """As on ElastiCache: CONFIG is refused, INFO shows the memory cap and its policy."""
    admin.execute_command("ACL SETUSER", "cfgless", "on", ">pw", "~*", "&*", "+@all", "-config")
    url = urlsplit(backend.admin_url)
    managed = replace(
        backend, name="r1-managed", admin_url=f"redis://cfgless:pw@{url.netloc.split('@')[1]}/0"
    )
    try:
        with caplog.at_level(logging.WARNING):
            provider.check(managed)
        assert "proto-max-bulk-len" in caplog.text
        admin.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(BackendDownError, match="maxmemory-policy"):
            provider.check(replace(managed, name="r1-managed-evicting"))
    finally:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.acl_deluser("cfgless")
