"""The MongoDB provider against the stack's real SecantusDB: isolation, quotas, removal, outages."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pymongo
import pytest
from pymongo.errors import OperationFailure

from chalicelib.models import Backend, BackendRef, Credentials
from chalicelib.providers.base import BackendDownError, Tenant
from chalicelib.providers.mongodb import MongoProvider, tenant_roles
from chalicelib.tiers import KindLimits
from devstack.mongo_service import MongoServer
from devstack.stack import Stack
from tests.conftest import stack_profile

HOST = f"127.0.0.1:{stack_profile().mongo_port}"
LIMITS = KindLimits(storage_mb=5, connections=10, max_resources=1)
SMALL = KindLimits(storage_mb=1, connections=10, max_resources=1)
UNAUTHORIZED = 13

Client = pymongo.MongoClient[dict[str, Any]]
Made = tuple[BackendRef, Credentials]
MakeTenant = Callable[..., Made]


@pytest.fixture(scope="session")
def mongo_server(stack: Stack) -> MongoServer:
    return stack.mongo


@pytest.fixture(scope="session")
def backend(mongo_server: MongoServer) -> Backend:
    return Backend(
        name="mongo1", admin_url=mongo_server.admin_url(), public_host=HOST, internal_host=HOST
    )


@pytest.fixture
def admin(mongo_server: MongoServer) -> Iterator[Client]:
    client: Client = pymongo.MongoClient(mongo_server.admin_url(), serverSelectionTimeoutMS=3000)
    yield client
    client.close()


@pytest.fixture
def provider() -> MongoProvider:
    return MongoProvider()


@pytest.fixture
def clients() -> Iterator[Callable[[Credentials], Client]]:
    """Tenant clients opened with exactly the returned connection_url; closed after the test."""
    opened: list[Client] = []

    def _open(creds: Credentials) -> Client:
        client: Client = pymongo.MongoClient(creds.connection_url, serverSelectionTimeoutMS=3000)
        opened.append(client)
        return client

    yield _open
    for client in opened:
        client.close()


@pytest.fixture
def make_tenant(provider: MongoProvider, backend: Backend) -> Iterator[MakeTenant]:
    """Provision tenants with fresh names; every one is deprovisioned after the test."""
    made: list[BackendRef] = []

    def _make(limits: KindLimits = LIMITS) -> Made:
        ref = provider.new_ref(backend)
        made.append(ref)
        return ref, provider.provision(backend, ref, limits)

    yield _make
    for ref in made:
        provider.deprovision(backend, ref)


def roles_of(admin: Client, ref: BackendRef) -> list[dict[str, str]] | None:
    users = admin[ref.namespace].command("usersInfo", ref.principal)["users"]
    return [dict(r) for r in users[0]["roles"]] if users else None


def fill(client: Client, megabytes: float) -> None:
    blob = "x" * 100_000
    client.get_default_database().blobs.insert_many(
        [{"blob": blob} for _ in range(int(megabytes * 1024 * 1024 / 100_000) + 1)]
    )


def test_provision_returns_url_for_own_database_with_read_write_only(
    make_tenant: MakeTenant, admin: Client
) -> None:
    ref, creds = make_tenant()
    url = urlsplit(creds.connection_url)
    assert (url.username, url.hostname, url.port) == (ref.principal, "127.0.0.1", url.port)
    assert url.netloc.split("@")[1] == HOST
    assert (url.path, url.query) == (f"/{ref.namespace}", f"authSource={ref.namespace}")
    assert creds.internal_url == creds.connection_url
    assert (creds.extra, creds.stored) == ({}, {})
    assert ref.namespace.startswith("m_") and ref.principal == "mu_" + ref.namespace[2:]
    assert roles_of(admin, ref) == [{"role": "readWrite", "db": ref.namespace}]


def test_connect_with_connection_url_inserts_and_finds_own_documents(
    make_tenant: MakeTenant, clients: Callable[[Credentials], Client]
) -> None:
    ref, creds = make_tenant()
    db = clients(creds).get_default_database()
    assert db.name == ref.namespace
    db.items.insert_one({"_id": 1, "greeting": "hello"})
    assert db.items.find_one({"_id": 1}) == {"_id": 1, "greeting": "hello"}


@pytest.mark.parametrize("action", ["find", "insert", "drop"])
def test_touch_other_tenants_database_is_unauthorized(
    make_tenant: MakeTenant, clients: Callable[[Credentials], Client], action: str
) -> None:
    _, mine = make_tenant()
    their_ref, theirs = make_tenant()
    clients(theirs).get_default_database().secrets.insert_one({"_id": 1, "s": "s"})
    other = clients(mine)[their_ref.namespace]
    with pytest.raises(OperationFailure) as err:
        if action == "find":
            other.secrets.find_one()
        elif action == "insert":
            other.secrets.insert_one({"stolen": True})
        else:
            other.command("dropDatabase")
    assert err.value.code == UNAUTHORIZED
    assert clients(theirs).get_default_database().secrets.count_documents({}) == 1


@pytest.mark.parametrize(
    "command",
    [
        ("createUser", "evil", {"pwd": "p", "roles": ["readWrite"]}),
        ("grantRolesToUser", "{self}", {"roles": [{"role": "root", "db": "admin"}]}),
        ("updateUser", "{self}", {"roles": [{"role": "dbOwner", "db": "{db}"}]}),
    ],
    ids=lambda c: c[0],
)
def test_run_user_management_command_is_unauthorized(
    make_tenant: MakeTenant,
    clients: Callable[[Credentials], Client],
    admin: Client,
    command: tuple[str, str, dict[str, Any]],
) -> None:
    ref, creds = make_tenant()
    name, target, spec = command
    target = target.replace("{self}", ref.principal)
    if "roles" in spec and isinstance(spec["roles"][0], dict):
        spec = {
            "roles": [{**r, "db": r["db"].replace("{db}", ref.namespace)} for r in spec["roles"]]
        }
    with pytest.raises(OperationFailure) as err:
        clients(creds).get_default_database().command(name, target, **spec)
    assert err.value.code == UNAUTHORIZED
    assert roles_of(admin, ref) == [{"role": "readWrite", "db": ref.namespace}]


def test_usage_counts_only_own_database(
    make_tenant: MakeTenant,
    clients: Callable[[Credentials], Client],
    provider: MongoProvider,
    backend: Backend,
) -> None:
    ref, creds = make_tenant()
    _, other = make_tenant()
    fill(clients(other), 0.5)
    assert provider.usage(backend, ref) == 0
    fill(clients(creds), 0.2)
    assert 200_000 <= provider.usage(backend, ref) < 500_000


def test_enforce_over_quota_switches_to_read_and_back_under_restores_writes(
    make_tenant: MakeTenant,
    clients: Callable[[Credentials], Client],
    provider: MongoProvider,
    backend: Backend,
    admin: Client,
) -> None:
    ref, creds = make_tenant(SMALL)
    tenant = Tenant(ref, SMALL, creds.stored)
    fill(clients(creds), 1.2)
    [usage] = provider.enforce(backend, [tenant])
    assert usage.over_quota and usage.used_bytes > 1024 * 1024
    assert roles_of(admin, ref) == tenant_roles(ref.namespace, writable=False)
    db = clients(creds).get_default_database()
    with pytest.raises(OperationFailure) as err:
        db.more.insert_one({"x": 1})
    assert err.value.code == UNAUTHORIZED
    assert db.blobs.find_one() is not None  # reads stay
    db.blobs.delete_one({})  # and so do deletes and drops: the tenant frees space itself
    db.blobs.drop()
    [usage] = provider.enforce(backend, [tenant])
    assert not usage.over_quota and usage.used_bytes < 1024 * 1024
    assert roles_of(admin, ref) == [{"role": "readWrite", "db": ref.namespace}]
    clients(creds).get_default_database().more.insert_one({"x": 2})


def test_enforce_over_quota_cuts_writes_of_live_connection(
    make_tenant: MakeTenant,
    clients: Callable[[Credentials], Client],
    provider: MongoProvider,
    backend: Backend,
) -> None:
    ref, creds = make_tenant(SMALL)
    client = clients(creds)
    fill(client, 1.2)
    provider.enforce(backend, [Tenant(ref, SMALL, creds.stored)])
    with pytest.raises(OperationFailure):
        client.get_default_database().more.insert_one({"x": 1})


def test_enforce_leaves_tenants_under_quota_writable(
    make_tenant: MakeTenant,
    clients: Callable[[Credentials], Client],
    provider: MongoProvider,
    backend: Backend,
) -> None:
    small_ref, small = make_tenant(SMALL)
    big_ref, big = make_tenant(SMALL)
    fill(clients(small), 0.1)
    fill(clients(big), 1.2)
    tenants = [Tenant(small_ref, SMALL, {}), Tenant(big_ref, SMALL, {})]
    assert [u.over_quota for u in provider.enforce(backend, tenants)] == [False, True]
    clients(small).get_default_database().more.insert_one({"still": "writable"})


def test_enforce_does_not_restore_deprovisioned_tenant(
    make_tenant: MakeTenant, provider: MongoProvider, backend: Backend, admin: Client
) -> None:
    ref, creds = make_tenant()
    provider.deprovision(backend, ref)
    [usage] = provider.enforce(backend, [Tenant(ref, LIMITS, creds.stored)])
    assert usage.used_bytes == 0
    assert roles_of(admin, ref) is None


def test_deprovision_removes_user_and_database(
    make_tenant: MakeTenant,
    clients: Callable[[Credentials], Client],
    provider: MongoProvider,
    backend: Backend,
    admin: Client,
) -> None:
    ref, creds = make_tenant()
    fill(clients(creds), 0.1)
    assert ref.namespace in admin.list_database_names()
    provider.deprovision(backend, ref)
    assert roles_of(admin, ref) is None
    assert ref.namespace not in admin.list_database_names()
    fresh: Client = pymongo.MongoClient(creds.connection_url, serverSelectionTimeoutMS=3000)
    try:
        with pytest.raises(OperationFailure):
            fresh.get_default_database().command("ping")
    finally:
        fresh.close()


def test_deprovision_twice_succeeds(
    make_tenant: MakeTenant, provider: MongoProvider, backend: Backend, admin: Client
) -> None:
    ref, _ = make_tenant()
    provider.deprovision(backend, ref)
    provider.deprovision(backend, ref)
    assert roles_of(admin, ref) is None


def over_quota_roles(admin: Client) -> set[str]:
    return {str(r["role"]) for r in admin.admin.command("rolesInfo", 1)["roles"]}


def test_deprovision_removes_over_quota_role(
    make_tenant: MakeTenant,
    clients: Callable[[Credentials], Client],
    provider: MongoProvider,
    backend: Backend,
    admin: Client,
) -> None:
    ref, creds = make_tenant(SMALL)
    fill(clients(creds), 1.2)
    provider.enforce(backend, [Tenant(ref, SMALL, creds.stored)])
    assert ref.namespace in over_quota_roles(admin)
    provider.deprovision(backend, ref)
    assert ref.namespace not in over_quota_roles(admin)


def test_inventory_lists_half_made_tenants_and_deprovision_removes_them(
    make_tenant: MakeTenant,
    clients: Callable[[Credentials], Client],
    provider: MongoProvider,
    backend: Backend,
    admin: Client,
) -> None:
    user_only, _ = make_tenant()  # never wrote: no database
    data_only, creds = make_tenant()
    fill(clients(creds), 0.1)
    admin[data_only.namespace].command("dropUser", data_only.principal)
    role_only, creds = make_tenant(SMALL)
    fill(clients(creds), 1.2)
    provider.enforce(backend, [Tenant(role_only, SMALL, creds.stored)])
    admin[role_only.namespace].command("dropUser", role_only.principal)
    admin.drop_database(role_only.namespace)
    admin["m_not_ours"].things.insert_one({"kept": True})  # not an opaque name
    half_made = {user_only, data_only, role_only}
    assert half_made <= set(provider.inventory(backend))
    for ref in half_made:
        provider.deprovision(backend, ref)
    assert not half_made & set(provider.inventory(backend))
    assert "m_not_ours" in admin.list_database_names()
    admin.drop_database("m_not_ours")


def test_provision_with_wrong_admin_password_raises_backend_down(
    provider: MongoProvider, admin: Client
) -> None:
    wrong = Backend(
        name="mongo-wrong",
        admin_url=f"mongodb://root:wrong@{HOST}/admin",
        public_host=HOST,
        internal_host=HOST,
    )
    ref = provider.new_ref(wrong)
    with pytest.raises(BackendDownError):
        provider.provision(wrong, ref, LIMITS)
    assert roles_of(admin, ref) is None


def test_check_unreachable_backend_raises_backend_down(provider: MongoProvider) -> None:
    down = Backend(
        name="mongo-down",
        admin_url="mongodb://root:x@127.0.0.1:1/admin",
        public_host="",
        internal_host="",
    )
    started = time.monotonic()
    with pytest.raises(BackendDownError):
        provider.check(down)
    assert time.monotonic() - started < 10


def test_check_running_backend_passes(provider: MongoProvider, backend: Backend) -> None:
    provider.check(backend)


def test_provision_median_time_is_under_half_a_second(
    provider: MongoProvider, backend: Backend
) -> None:
    timings = []
    for _ in range(10):
        ref = provider.new_ref(backend)
        started = time.perf_counter()
        provider.provision(backend, ref, LIMITS)
        timings.append(time.perf_counter() - started)
        provider.deprovision(backend, ref)
    median = statistics.median(timings)
    print(f"\nMongoProvider.provision median: {median * 1000:.1f} ms")
    assert median < 0.5
