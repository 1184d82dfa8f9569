"""Attacks on the shared NATS server by a tenant with nats-py and its own credentials, against
the test stack's real server (operator mode, each tenant an account of its own): each asserts
the denial. The server isolates accounts itself; these check that the platform's accounts, their
signing key and their JetStream settings leave it so."""

from __future__ import annotations

import asyncio
import json

import nats.errors
import nats.js.errors
import pytest
from nats.aio.msg import Msg

from tests.functional import nats_fixtures as nf
from tests.functional.nats_fixtures import MakeTenant, round_trip, tenant_client

server, backend, provider, tenant = nf.server, nf.backend, nf.provider, nf.tenant


@pytest.mark.parametrize("subject", [">", "$SYS.>", "$JS.>", "_INBOX.>"])
def test_a_wildcard_subscription_receives_nothing_of_another_tenant(
    tenant: MakeTenant, subject: str
) -> None:
    (_, victim), (_, attacker) = tenant(), tenant()

    async def scenario() -> tuple[bytes, list[str]]:
        leaked: list[str] = []

        async def spy(msg: Msg) -> None:
            leaked.append(msg.subject)

        async with tenant_client(victim) as a, tenant_client(attacker) as b:
            await b.subscribe(subject, cb=spy)
            await b.flush()
            await a.jetstream().add_stream(name="ORDERS", subjects=["orders.>"])
            await a.jetstream().publish("orders.new", b"secret")
            own = await round_trip(a, "orders.ping")
            await asyncio.sleep(0.2)
        return own, leaked

    assert asyncio.run(scenario()) == (b"hello", [])


def test_another_tenants_stream_is_not_found(tenant: MakeTenant) -> None:
    (_, victim), (_, attacker) = tenant(), tenant()

    async def scenario() -> None:
        async with tenant_client(victim) as a, tenant_client(attacker) as b:
            await a.jetstream().add_stream(name="ORDERS", subjects=["orders.>"])
            await b.jetstream().stream_info("ORDERS")

    with pytest.raises(nats.js.errors.NotFoundError) as err:
        asyncio.run(scenario())
    assert err.value.code == 404


def test_publishing_on_another_tenants_subjects_reaches_nothing_of_theirs(
    tenant: MakeTenant,
) -> None:
    (_, victim), (_, attacker) = tenant(), tenant()

    async def scenario() -> int:
        async with tenant_client(victim) as a, tenant_client(attacker) as b:
            js = a.jetstream()
            await js.add_stream(name="ORDERS", subjects=["orders.>"])
            await js.publish("orders.new", b"real")
            await b.publish("orders.new", b"forged")
            await b.publish("$JS.API.STREAM.PURGE.ORDERS", b"")  # the victim's JetStream API
            await b.publish("$JS.API.STREAM.DELETE.ORDERS", b"")
            await b.flush()
            await asyncio.sleep(0.2)
            return (await js.stream_info("ORDERS")).state.messages

    assert asyncio.run(scenario()) == 1  # the victim's own message, neither purged nor joined


@pytest.mark.parametrize("subject", ["$SYS.REQ.CLAIMS.LIST", "$SYS.REQ.SERVER.PING"])
def test_system_requests_get_no_responders(tenant: MakeTenant, subject: str) -> None:
    _, creds = tenant()

    async def scenario() -> None:
        async with tenant_client(creds) as nc:
            await nc.request(subject, b"", timeout=2)

    with pytest.raises(nats.errors.NoRespondersError):
        asyncio.run(scenario())


@pytest.mark.parametrize("subject", ["$SYS.REQ.ACCOUNT.PING.CONNZ", "$SYS.REQ.SERVER.PING.CONNZ"])
def test_the_connections_an_account_may_list_are_its_own(tenant: MakeTenant, subject: str) -> None:
    """nats-server answers these for every account, about that account only."""
    (_, victim), (_, attacker) = tenant(), tenant()

    async def scenario() -> dict[str, object]:
        async with tenant_client(victim), tenant_client(attacker) as b:
            reply = await b.request(subject, b"", timeout=2)
            return dict(json.loads(reply.data)["data"])

    listed = asyncio.run(scenario())
    assert listed["total"] == 1, listed  # the attacker's own connection, not the victim's
