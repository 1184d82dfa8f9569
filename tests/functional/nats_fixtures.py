"""Fixtures and helpers for the NATS provider's tests (functional and tests/security): tenants on
the test stack's server, how a tenant connects, and what the server holds (listed as the system
user, with nats-py only, not through the code under test)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import nkeys  # type: ignore[import-untyped]
import pytest
from nats.aio.client import Client, RawCredentials

from chalicelib.models import Backend, BackendRef, Credentials
from chalicelib.providers.nats import NatsProvider
from chalicelib.tiers import KindLimits
from devstack.nats_service import NatsServer
from devstack.stack import Stack

LIMITS = KindLimits(storage_mb=8, connections=5, max_resources=None)
MIB = 1 << 20

Tenant = tuple[BackendRef, Credentials]
MakeTenant = Callable[..., Tenant]


@pytest.fixture(scope="module")
def server(stack: Stack) -> NatsServer:
    return stack.nats


@pytest.fixture(scope="module")
def backend(server: NatsServer) -> Backend:
    return server.backend()


@pytest.fixture
def provider() -> NatsProvider:
    return NatsProvider()


@pytest.fixture
def tenant(backend: Backend, provider: NatsProvider) -> Iterator[MakeTenant]:
    """Provision queues (``limits`` optional); every one is removed after the test."""
    made: list[BackendRef] = []

    def make(limits: KindLimits = LIMITS) -> Tenant:
        ref = provider.new_ref(backend)
        made.append(ref)
        return ref, provider.provision(backend, ref, limits)

    yield make
    for ref in made:
        provider.deprovision(backend, ref)


def creds_text(creds: Credentials) -> str:
    text: str = creds.extra["credentials"]["creds_file"]
    return text


async def open_client(url: str, **auth: Any) -> Client:
    """A client that gives up at once (nats-py retries forever with max_reconnect_attempts=0)."""

    async def quiet(exc: Exception) -> None:
        return None

    nc = Client()
    await nc.connect(
        url,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0,
        connect_timeout=3,
        error_cb=quiet,
        **auth,
    )
    return nc


def login_round_trip(url: str, **auth: Any) -> bytes:
    """Log in with ``auth`` and get one message back through the server."""

    async def scenario() -> bytes:
        nc = await open_client(url, **auth)
        try:
            return await round_trip(nc)
        finally:
            await nc.close()

    return asyncio.run(scenario())


def jwt_and_seed_auth(user_jwt: str, seed: str) -> dict[str, Callable[..., bytes]]:
    """In-memory (nats_jwt, nats_nkey) login for nats-py 2.16, which has no UserJWTAndSeed:
    the JWT callback plus a callback that signs the server's nonce with the seed."""

    def sign(nonce: str) -> bytes:
        signature: bytes = nkeys.from_seed(seed.encode()).sign(nonce.encode())
        return base64.b64encode(signature)

    return {"user_jwt_cb": lambda: user_jwt.encode(), "signature_cb": sign}


@asynccontextmanager
async def tenant_client(creds: Credentials, **options: Any) -> AsyncIterator[Client]:
    """The tenant's connection, from exactly the returned URL and in-memory creds text."""
    nc = await open_client(
        creds.connection_url, user_credentials=RawCredentials(creds_text(creds)), **options
    )
    try:
        yield nc
    finally:
        await nc.close()


async def round_trip(nc: Client, subject: str = "jobs.ping") -> bytes:
    sub = await nc.subscribe(subject)
    await nc.publish(subject, b"hello")
    msg = await sub.next_msg(timeout=3)
    return bytes(msg.data)


def system_request(backend: Backend, subject: str) -> dict[str, Any]:
    """One request as the server's system user (what the server itself reports)."""

    async def ask() -> dict[str, Any]:
        s = backend.secrets
        creds = (
            "-----BEGIN NATS USER JWT-----\n"
            f"{s['system_user_jwt']}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{s['system_user_seed']}\n"
            "------END USER NKEY SEED------\n"
        )
        nc = await open_client(backend.admin_url, user_credentials=RawCredentials(creds))
        try:
            reply: dict[str, Any] = json.loads((await nc.request(subject, b"", timeout=3)).data)
        finally:
            await nc.close()
        return reply

    return asyncio.run(ask())


def listed_accounts(backend: Backend) -> list[str]:
    accounts: list[str] = system_request(backend, "$SYS.REQ.CLAIMS.LIST")["data"]
    return accounts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
