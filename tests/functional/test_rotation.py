"""Credential rotation and live resizing against the stack's real servers: after ``rotate`` the old
credentials are refused and (but on MongoDB) their live sessions are closed, while the new ones
reach the same data; ``resize`` changes what the server itself enforces."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors
import pg8000.exceptions
import pymongo
import pytest
import redis
from nats.aio.client import RawCredentials
from pymongo.errors import OperationFailure

from chalicelib import natsjwt
from chalicelib.config import Settings
from chalicelib.models import Backend, Credentials, Kind
from chalicelib.providers.base import Resizer, Rotator, Tenant, build_provider
from chalicelib.providers.nats import NatsError
from chalicelib.providers.postgres import admin_connection
from chalicelib.tiers import KindLimits
from devstack.stack import Stack
from tests.conftest import connect as pg_connect
from tests.functional import redis_fixtures
from tests.functional.nats_fixtures import (
    MIB,
    creds_text,
    listed_accounts,
    login_round_trip,
    round_trip,
    tenant_client,
)

LIMITS = KindLimits(storage_mb=8, connections=5, max_resources=None)
AUTH_FAILED = 18
PG_CLOSED = (pg8000.exceptions.DatabaseError, pg8000.exceptions.InterfaceError)


@dataclasses.dataclass
class Tenants:
    """Provisions tenants of any kind on the stack's first backend of that kind, and rotates and
    resizes them as the service would: from the record (a ``Tenant``) to the next record."""

    settings: Settings
    made: list[tuple[Kind, Tenant]] = dataclasses.field(default_factory=list)

    def backend(self, kind: Kind) -> Backend:
        return self.settings.backends_for(kind)[0]

    def make(self, kind: Kind, limits: KindLimits = LIMITS) -> tuple[Tenant, Credentials]:
        provider, backend = build_provider(kind), self.backend(kind)
        ref = provider.new_ref(backend)
        self.made.append((kind, Tenant(ref, limits, {})))
        creds = provider.provision(backend, ref, limits)
        return Tenant(ref, limits, creds.stored), creds

    def rotate(self, kind: Kind, tenant: Tenant) -> tuple[Tenant, Credentials]:
        provider = build_provider(kind)
        assert isinstance(provider, Rotator)
        rotated = provider.rotate(self.backend(kind), tenant)
        return Tenant(rotated.ref, tenant.limits, rotated.credentials.stored), rotated.credentials

    def resize(self, kind: Kind, tenant: Tenant, limits: KindLimits) -> Tenant:
        provider = build_provider(kind)
        assert isinstance(provider, Resizer)
        resized = dataclasses.replace(tenant, limits=limits)
        provider.resize(self.backend(kind), resized)
        return resized

    def deprovision(self, kind: Kind, tenant: Tenant) -> None:
        build_provider(kind).deprovision(self.backend(kind), tenant.ref)


@pytest.fixture(scope="module")
def settings(stack: Stack) -> Settings:
    return Settings.from_env(stack.env())


@pytest.fixture
def tenants(settings: Settings) -> Iterator[Tenants]:
    """Every tenant made in the test is deprovisioned after it."""
    pool = Tenants(settings)
    yield pool
    for kind, tenant in pool.made:
        pool.deprovision(kind, tenant)


@pytest.mark.parametrize("kind", list(Kind))
def test_build_provider_rotates_and_resizes_kinds_with_backend_credentials(kind: Kind) -> None:
    provider = build_provider(kind)
    rotates = kind in (Kind.POSTGRES, Kind.VECTOR, Kind.REDIS, Kind.MONGODB, Kind.QUEUE)
    resizes = kind in (Kind.POSTGRES, Kind.VECTOR, Kind.QUEUE)
    assert (isinstance(provider, Rotator), isinstance(provider, Resizer)) == (rotates, resizes)


# -- Postgres (and pgvector) -----------------------------------------------------------------
@pytest.fixture(params=[Kind.POSTGRES, Kind.VECTOR])
def pg_kind(request: pytest.FixtureRequest) -> Kind:
    kind: Kind = request.param
    return kind


def test_rotate_postgres_closes_live_session(tenants: Tenants, pg_kind: Kind) -> None:
    tenant, creds = tenants.make(pg_kind)
    session = pg_connect(creds.connection_url)
    session.run("SELECT 1")
    tenants.rotate(pg_kind, tenant)
    with admin_connection(tenants.backend(pg_kind)) as admin:
        left = admin.run(
            "SELECT pid FROM pg_stat_activity WHERE usename = :r", r=tenant.ref.principal
        )
    assert left == []
    with pytest.raises(PG_CLOSED):  # the server's goodbye, or the closed socket (whichever first)
        session.run("SELECT 1")


def test_rotate_postgres_refuses_old_password(tenants: Tenants, pg_kind: Kind) -> None:
    tenant, creds = tenants.make(pg_kind)
    tenants.rotate(pg_kind, tenant)
    with pytest.raises(pg8000.exceptions.DatabaseError) as err:
        pg_connect(creds.connection_url)
    assert err.value.args[0]["C"] == "28P01"  # invalid_password


def test_rotate_postgres_new_password_reads_rows_written_before(
    tenants: Tenants, pg_kind: Kind
) -> None:
    tenant, creds = tenants.make(pg_kind)
    before = pg_connect(creds.connection_url)
    before.run("CREATE TABLE notes (body text)")
    before.run("INSERT INTO notes VALUES ('kept')")
    before.close()
    _, new = tenants.rotate(pg_kind, tenant)
    assert pg_connect(new.connection_url).run("SELECT body FROM notes") == [["kept"]]


def test_rotate_postgres_keeps_role_and_database(tenants: Tenants, pg_kind: Kind) -> None:
    tenant, creds = tenants.make(pg_kind)
    rotated, new = tenants.rotate(pg_kind, tenant)
    old_url, new_url = urlsplit(creds.connection_url), urlsplit(new.connection_url)
    assert rotated.ref == tenant.ref and new.stored == creds.stored
    assert (new_url.username, new_url.hostname, new_url.port, new_url.path) == (
        old_url.username,
        old_url.hostname,
        old_url.port,
        old_url.path,
    )
    assert new_url.password != old_url.password
    assert urlsplit(new.internal_url).password == new_url.password


def test_resize_postgres_sets_role_connection_limit(tenants: Tenants, pg_kind: Kind) -> None:
    tenant, creds = tenants.make(pg_kind)
    tenants.resize(pg_kind, tenant, dataclasses.replace(LIMITS, connections=12))
    session = pg_connect(creds.connection_url)
    rows = session.run("SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user")
    assert rows == [[12]]


def test_resize_postgres_refuses_connection_beyond_new_limit(
    tenants: Tenants, pg_kind: Kind
) -> None:
    tenant, creds = tenants.make(pg_kind)
    tenants.resize(pg_kind, tenant, dataclasses.replace(LIMITS, connections=2))
    sessions = [pg_connect(creds.connection_url) for _ in range(2)]
    with pytest.raises(pg8000.exceptions.DatabaseError) as err:
        sessions.append(pg_connect(creds.connection_url))
    assert "too many connections for role" in err.value.args[0]["M"]


# -- Redis -----------------------------------------------------------------------------------
def test_rotate_redis_closes_live_connection(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.REDIS)
    client = redis_fixtures.connect(creds)
    client.ping()
    tenants.rotate(Kind.REDIS, tenant)
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_rotate_redis_refuses_old_password(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.REDIS)
    tenants.rotate(Kind.REDIS, tenant)
    with pytest.raises(redis.AuthenticationError):
        redis_fixtures.connect(creds).ping()


def test_rotate_redis_new_password_reads_keys_written_before(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.REDIS)
    redis_fixtures.connect(creds).set(redis_fixtures.key(creds, "greeting"), "kept")
    _, new = tenants.rotate(Kind.REDIS, tenant)
    assert redis_fixtures.connect(new).get(redis_fixtures.key(new, "greeting")) == b"kept"


def test_rotate_redis_stores_digest_of_new_password(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.REDIS)
    rotated, new = tenants.rotate(Kind.REDIS, tenant)
    password = str(urlsplit(new.connection_url).password)
    assert new.stored == {"acl_digest": hashlib.sha256(password.encode()).hexdigest()}
    assert new.stored != creds.stored and new.extra == creds.extra
    assert rotated.ref == tenant.ref


def test_rotate_redis_keeps_shared_keyspace_closed(tenants: Tenants) -> None:
    tenant, _ = tenants.make(Kind.REDIS)
    _, new = tenants.rotate(Kind.REDIS, tenant)
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis_fixtures.connect(new).scan()


def test_rotate_deprovisioned_redis_user_is_refused(tenants: Tenants) -> None:
    tenant, _ = tenants.make(Kind.REDIS)
    tenants.deprovision(Kind.REDIS, tenant)
    with pytest.raises(LookupError):
        tenants.rotate(Kind.REDIS, tenant)
    with redis.Redis.from_url(tenants.backend(Kind.REDIS).admin_url) as admin:
        assert tenant.ref.principal.encode() not in admin.acl_users()


# -- MongoDB ---------------------------------------------------------------------------------
def mongo_client(creds: Credentials) -> pymongo.MongoClient[dict[str, Any]]:
    return pymongo.MongoClient(creds.connection_url, serverSelectionTimeoutMS=3000)


def test_rotate_mongo_refuses_old_password_on_new_connection(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.MONGODB)
    tenants.rotate(Kind.MONGODB, tenant)
    with mongo_client(creds) as fresh, pytest.raises(OperationFailure) as err:
        fresh.get_default_database().command("ping")
    assert err.value.code == AUTH_FAILED


def test_rotate_mongo_new_password_reads_documents_written_before(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.MONGODB)
    with mongo_client(creds) as before:
        before.get_default_database().notes.insert_one({"_id": 1, "body": "kept"})
    _, new = tenants.rotate(Kind.MONGODB, tenant)
    with mongo_client(new) as after:
        found = after.get_default_database().notes.find_one({"_id": 1})
    assert found == {"_id": 1, "body": "kept"}


@pytest.mark.xfail(
    strict=True,
    reason="a connection keeps the login it made: updateUser (a new password) reaches new logins "
    "only, on SecantusDB 0.7.0b3 as on mongod",
)
def test_rotate_mongo_closes_live_session(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.MONGODB)
    with mongo_client(creds) as live:
        live.get_default_database().command("ping")
        tenants.rotate(Kind.MONGODB, tenant)
        with pytest.raises(OperationFailure):
            live.get_default_database().notes.find_one()


# -- NATS ------------------------------------------------------------------------------------
def nats_login(creds: Credentials) -> bytes:
    """One round trip as the user of ``creds`` (raises when the server refuses the login)."""
    return login_round_trip(
        creds.connection_url, user_credentials=RawCredentials(creds_text(creds))
    )


def closed_by(creds: Credentials, action: Callable[[], object]) -> bool:
    """Whether a live connection of ``creds`` is closed by the server within 5 s of ``action``."""

    async def scenario() -> bool:
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        async with tenant_client(creds, closed_cb=on_closed):
            await asyncio.to_thread(action)
            with suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), timeout=5)
        return closed.is_set()

    return asyncio.run(scenario())


def test_rotate_nats_closes_live_connection(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.QUEUE)
    assert closed_by(creds, lambda: tenants.rotate(Kind.QUEUE, tenant))


def test_rotate_nats_refuses_old_user(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.QUEUE)
    tenants.rotate(Kind.QUEUE, tenant)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        nats_login(creds)


def test_rotate_nats_new_user_reads_stream_written_before(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.QUEUE)

    async def store() -> None:
        async with tenant_client(creds) as nc:
            await nc.jetstream().add_stream(name="NOTES", subjects=["notes.>"])
            await nc.jetstream().publish("notes.x", b"kept")

    async def read(creds: Credentials) -> bytes:
        async with tenant_client(creds) as nc:
            return bytes((await nc.jetstream().get_msg("NOTES", 1)).data or b"")

    asyncio.run(store())
    _, new = tenants.rotate(Kind.QUEUE, tenant)
    assert asyncio.run(read(new)) == b"kept"


def test_rotate_nats_issues_user_of_next_generation(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.QUEUE)
    rotated, new = tenants.rotate(Kind.QUEUE, tenant)
    user = natsjwt.decode(new.extra["credentials"]["nats_jwt"])
    assert (creds.stored, new.stored) == ({"user_generation": "0"}, {"user_generation": "1"})
    assert rotated.ref == dataclasses.replace(tenant.ref, principal=user["sub"])
    assert rotated.ref.principal != tenant.ref.principal
    assert user["nats"]["issuer_account"] == tenant.ref.namespace
    assert new.extra["subject_prefix"] == creds.extra["subject_prefix"]
    assert set(new.extra["credentials"]) == {"nats_jwt", "nats_nkey", "creds_file"}


def test_rotate_nats_twice_refuses_every_earlier_user(tenants: Tenants) -> None:
    first, creds0 = tenants.make(Kind.QUEUE)
    second, creds1 = tenants.rotate(Kind.QUEUE, first)
    _, creds2 = tenants.rotate(Kind.QUEUE, second)
    for old in (creds0, creds1):
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            nats_login(old)
    assert nats_login(creds2) == b"hello"


def test_rotate_removed_nats_account_is_refused(tenants: Tenants) -> None:
    tenant, _ = tenants.make(Kind.QUEUE)
    tenants.deprovision(Kind.QUEUE, tenant)
    with pytest.raises(NatsError, match="was removed"):
        tenants.rotate(Kind.QUEUE, tenant)
    assert tenant.ref.namespace not in listed_accounts(tenants.backend(Kind.QUEUE))


def test_resize_nats_allows_stream_beyond_old_storage_limit(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.QUEUE, dataclasses.replace(LIMITS, storage_mb=1))

    async def add_stream() -> None:
        async with tenant_client(creds) as nc:
            await nc.jetstream().add_stream(name="BIG", subjects=["big.>"], max_bytes=2 * MIB)

    with pytest.raises(nats.js.errors.APIError, match="insufficient storage"):
        asyncio.run(add_stream())
    tenants.resize(Kind.QUEUE, tenant, dataclasses.replace(LIMITS, storage_mb=4))
    asyncio.run(add_stream())


def test_resize_nats_keeps_rotated_out_user_refused(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.QUEUE)
    rotated, _ = tenants.rotate(Kind.QUEUE, tenant)
    tenants.resize(Kind.QUEUE, rotated, dataclasses.replace(LIMITS, connections=8))
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        nats_login(creds)


def test_resize_nats_record_without_generation_keeps_user_connected(tenants: Tenants) -> None:
    tenant, creds = tenants.make(Kind.QUEUE)
    made_before_rotation = dataclasses.replace(tenant, stored={})
    bigger = dataclasses.replace(LIMITS, connections=8)

    async def scenario() -> bytes:
        async with tenant_client(creds) as nc:
            await asyncio.to_thread(tenants.resize, Kind.QUEUE, made_before_rotation, bigger)
            return await round_trip(nc)

    assert asyncio.run(scenario()) == b"hello"


def test_rotate_nats_after_server_restart_issues_working_user(
    tenants: Tenants, stack: Stack
) -> None:
    tenant, _ = tenants.make(Kind.QUEUE)
    stack.nats.down()  # the restarted server loads the account only when asked for it
    stack.nats.up()
    _, new = tenants.rotate(Kind.QUEUE, tenant)
    assert nats_login(new) == b"hello"
