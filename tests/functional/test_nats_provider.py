"""The NATS provider against a real nats-server (operator mode, JetStream): what a tenant can do
with the returned credentials, what it cannot reach, and the limits the server enforces."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Callable
from pathlib import Path

import nats.errors
import nats.js.errors
import nkeys  # type: ignore[import-untyped]
import pytest
from nats.aio.client import RawCredentials

from chalicelib import natsjwt
from chalicelib.models import Backend
from chalicelib.natsjwt import KeyPair
from chalicelib.providers.base import BackendDownError
from chalicelib.providers.nats import NatsError, NatsProvider
from chalicelib.tiers import KindLimits
from devstack.nats_service import NatsServer
from tests.conftest import stack_profile
from tests.functional import nats_fixtures as nf
from tests.functional.nats_fixtures import (
    LIMITS,
    MIB,
    MakeTenant,
    creds_text,
    free_port,
    jwt_and_seed_auth,
    listed_accounts,
    login_round_trip,
    tenant_client,
)

server, backend, provider, tenant = nf.server, nf.backend, nf.provider, nf.tenant


def test_encode_signs_with_the_issuer_key() -> None:
    issuer = KeyPair.new("operator")
    token = natsjwt.encode({"sub": issuer.public_key, "nats": {"type": "operator"}}, issuer)
    head, body, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    assert nkeys.from_seed(issuer.seed.encode()).verify(f"{head}.{body}".encode(), raw)
    assert natsjwt.decode(token)["iss"] == issuer.public_key


def test_provision_returns_credentials_in_the_spec_shape(tenant: MakeTenant) -> None:
    ref, creds = tenant()
    assert creds.connection_url == f"nats://127.0.0.1:{stack_profile().nats_port}"
    assert creds.extra["auth_mode"] == "isolated"
    assert creds.extra["subject_prefix"].startswith("q_")
    assert set(creds.extra["credentials"]) == {"nats_jwt", "nats_nkey", "creds_file"}
    assert ref.namespace.startswith("A") and ref.principal.startswith("U")  # public keys only


def test_connect_with_creds_file_round_trips(tenant: MakeTenant, tmp_path: Path) -> None:
    _, creds = tenant()
    path = tmp_path / "queue.creds"
    path.write_text(creds_text(creds))
    assert login_round_trip(creds.connection_url, user_credentials=str(path)) == b"hello"


def test_connect_with_jwt_and_seed_round_trips(tenant: MakeTenant) -> None:
    _, creds = tenant()
    secret = creds.extra["credentials"]
    auth = jwt_and_seed_auth(secret["nats_jwt"], secret["nats_nkey"])
    assert login_round_trip(creds.connection_url, **auth) == b"hello"


def test_add_stream_over_storage_limit_is_refused(tenant: MakeTenant) -> None:
    _, creds = tenant(KindLimits(storage_mb=1, connections=3, max_resources=None))

    async def scenario() -> None:
        async with tenant_client(creds) as nc:
            await nc.jetstream().add_stream(name="BIG", subjects=["big.>"], max_bytes=2 * MIB)

    with pytest.raises(nats.js.errors.APIError) as err:
        asyncio.run(scenario())
    assert "insufficient storage" in str(err.value.description)


def test_publish_beyond_storage_limit_is_refused(tenant: MakeTenant) -> None:
    _, creds = tenant(KindLimits(storage_mb=1, connections=3, max_resources=None))

    async def scenario() -> int:
        stored = 0
        async with tenant_client(creds) as nc:
            js = nc.jetstream()
            await js.add_stream(name="FILL", subjects=["fill.>"])
            with pytest.raises(nats.js.errors.APIError) as err:
                for _ in range(40):
                    await js.publish("fill.x", b"x" * 64 * 1024)
                    stored += 64 * 1024
            assert "resource limits exceeded" in str(err.value.description)
        return stored

    assert asyncio.run(scenario()) <= MIB


def test_connect_beyond_connection_limit_fails(tenant: MakeTenant) -> None:
    _, creds = tenant(KindLimits(storage_mb=1, connections=2, max_resources=None))

    async def scenario() -> None:
        async with tenant_client(creds), tenant_client(creds), tenant_client(creds):
            pass

    with pytest.raises(nats.errors.Error, match="maximum account active connections"):
        asyncio.run(scenario())


def test_connect_as_user_of_foreign_signing_key_is_refused(tenant: MakeTenant) -> None:
    ref, creds = tenant()
    intruder, user = KeyPair.new("account"), KeyPair.new("user")
    forged = natsjwt.user_jwt(intruder, user.public_key, "x", issuer_account=ref.namespace)
    text = natsjwt.creds_file(forged, user.seed)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        login_round_trip(creds.connection_url, user_credentials=RawCredentials(text))


def test_usage_counts_stream_bytes(
    tenant: MakeTenant, provider: NatsProvider, backend: Backend
) -> None:
    ref, creds = tenant()
    before = provider.usage(backend, ref)

    async def scenario() -> None:
        async with tenant_client(creds) as nc:
            js = nc.jetstream()
            await js.add_stream(name="LOG", subjects=["log.>"])
            for _ in range(10):
                await js.publish("log.x", b"x" * 10_000)

    asyncio.run(scenario())
    assert before == 0 and 100_000 <= provider.usage(backend, ref) < 120_000


def test_deprovision_disconnects_live_client(
    tenant: MakeTenant, provider: NatsProvider, backend: Backend
) -> None:
    ref, creds = tenant()

    async def scenario() -> bool:
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        async with tenant_client(creds, closed_cb=on_closed):
            await asyncio.to_thread(provider.deprovision, backend, ref)
            await asyncio.wait_for(closed.wait(), timeout=5)
            return closed.is_set()

    assert asyncio.run(scenario())


def test_connect_after_deprovision_is_refused(
    tenant: MakeTenant, provider: NatsProvider, backend: Backend
) -> None:
    ref, creds = tenant()
    provider.deprovision(backend, ref)

    async def scenario() -> None:
        async with tenant_client(creds):
            pass

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(scenario())


def test_deprovision_removes_account_and_stream_data(
    tenant: MakeTenant, provider: NatsProvider, backend: Backend, server: NatsServer
) -> None:
    ref, creds = tenant()

    async def scenario() -> None:
        async with tenant_client(creds) as nc:
            await nc.jetstream().add_stream(name="KEEP", subjects=["keep.>"])
            await nc.jetstream().publish("keep.x", b"data")

    asyncio.run(scenario())
    store = server.dir / "js" / "jetstream" / ref.namespace
    assert store.exists() and ref.namespace in listed_accounts(backend)
    provider.deprovision(backend, ref)
    assert not store.exists() and ref.namespace not in listed_accounts(backend)


def test_deprovision_twice_succeeds(
    tenant: MakeTenant, provider: NatsProvider, backend: Backend
) -> None:
    ref, _ = tenant()
    provider.deprovision(backend, ref)
    provider.deprovision(backend, ref)
    assert ref.namespace not in listed_accounts(backend)


def test_provision_beyond_server_capacity_leaves_no_account(
    provider: NatsProvider, backend: Backend
) -> None:
    ref = provider.new_ref(backend)
    too_big = KindLimits(storage_mb=2 * 1024 * 1024, connections=1, max_resources=None)  # 2 TiB
    with pytest.raises(NatsError, match="JetStream is off"):
        provider.provision(backend, ref, too_big)
    assert ref.namespace not in listed_accounts(backend)


def test_reconnect_after_server_restart_reads_stored_message(
    tenant: MakeTenant, server: NatsServer
) -> None:
    _, creds = tenant()

    async def store() -> None:
        async with tenant_client(creds) as nc:
            await nc.jetstream().add_stream(name="DURABLE", subjects=["durable.>"])
            await nc.jetstream().publish("durable.x", b"kept")

    async def read() -> bytes:
        async with tenant_client(creds) as nc:
            return bytes((await nc.jetstream().get_msg("DURABLE", 1)).data or b"")

    asyncio.run(store())
    server.down()
    server.up()
    assert asyncio.run(read()) == b"kept"


@pytest.mark.parametrize("operation", ["provision", "deprovision", "usage", "check"])
def test_call_against_dead_server_raises_backend_down(
    provider: NatsProvider, backend: Backend, operation: str
) -> None:
    dead = dataclasses.replace(backend, admin_url=f"nats://127.0.0.1:{free_port()}")
    ref = provider.new_ref(dead)
    calls: dict[str, Callable[[], object]] = {
        "provision": lambda: provider.provision(dead, ref, LIMITS),
        "deprovision": lambda: provider.deprovision(dead, ref),
        "usage": lambda: provider.usage(dead, ref),
        "check": lambda: provider.check(dead),
    }
    with pytest.raises(BackendDownError):
        calls[operation]()


def test_check_live_server_passes(provider: NatsProvider, backend: Backend) -> None:
    provider.check(backend)
