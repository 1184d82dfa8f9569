"""Functional tier: the Chalice app through chalice.test.Client, DynamoDB in-process (moto), and the
real Postgres servers of the test stack."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

from app import app
from chalicelib import deps
from chalicelib.config import Settings
from chalicelib.dynamo import Dynamo, from_wire
from chalicelib.fingerprint import caller_of
from chalicelib.idempotency import Key, derive_key
from chalicelib.jobs.reaper import Reaper
from chalicelib.models import Backend, BackendRef, Caller, Credentials, Kind, ProvisionRequest
from chalicelib.providers.base import Provider
from chalicelib.providers.postgres import admin_connection
from chalicelib.service import ProvisionService
from chalicelib.tiers import KindLimits, Tier, all_tiers
from devstack.aws import create_tables
from devstack.stack import Stack
from tests.conftest import fresh_ip


@contextmanager
def platform_on(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The stack's environment with the platform's tables in moto's in-process DynamoDB (each
    test starts empty); the data servers and S3 are the stack's real ones. On the way out the
    reaper removes every backend object the test's records hold."""
    env = {k: v for k, v in stack.env().items() if k != "AWS_ENDPOINT_URL"}
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        # mock_aws swaps in fake credentials; the real local S3 behind the storage backend
        # checks signatures and trusts only the stack's key
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(key, env[key])
        create_tables(boto3.client("dynamodb"), env["INSTANODE_TABLE_PREFIX"])
        deps.reset()
        yield env
        later = time.time() + 3 * 86400  # every record's object goes with it
        Reaper(settings(), deps.get_dynamo(), deps.get_provider, lambda: later).run()
    deps.reset()


@pytest.fixture
def app_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    with platform_on(stack, monkeypatch) as env:
        yield env


def settings() -> Settings:
    return deps.get_settings()


@pytest.fixture
def client(app_env: dict[str, str]) -> Iterator[Client]:
    with Client(app, stage_name="local") as c:
        yield c


@pytest.fixture
def dynamo(app_env: dict[str, str]) -> Dynamo:
    return deps.get_dynamo()


Post = Callable[..., Any]


@pytest.fixture
def post(client: Client) -> Post:
    """POST a JSON body as a given client IP (fresh /24 unless told)."""

    def _post(path: str, body: Any, ip: str | None = None, **headers: str) -> Any:
        raw = body if isinstance(body, str | bytes) else json.dumps(body)
        hdrs = {"Content-Type": "application/json", "X-Forwarded-For": ip or fresh_ip()}
        hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
        return client.http.post(path, headers=hdrs, body=raw)

    return _post


def backend_named(name: str) -> Backend:
    from chalicelib.models import Kind

    return next(b for b in settings().backends_for(Kind.POSTGRES) if b.name == name)


def exists(ref: BackendRef) -> dict[str, bool]:
    """Whether the database and the role of ``ref`` exist on its backend."""
    with admin_connection(backend_named(ref.backend)) as conn:
        db = conn.run("SELECT 1 FROM pg_database WHERE datname = :d", d=ref.namespace)
        role = conn.run("SELECT 1 FROM pg_roles WHERE rolname = :r", r=ref.principal)
    return {"database": bool(db), "role": bool(role)}


def scan(dynamo: Dynamo, table: str) -> list[dict[str, Any]]:
    return [from_wire(i) for i in dynamo.client.scan(TableName=table)["Items"]]


def make_service(
    tiers: Mapping[str, Tier] | None = None,
    clock: Callable[[], float] = time.time,
    db: Dynamo | None = None,
    providers: Callable[[Kind], Provider] | None = None,
    config: Settings | None = None,
) -> ProvisionService:
    return ProvisionService(
        config or settings(),
        db or deps.get_dynamo(),
        tiers or all_tiers(),
        providers or deps.get_provider,
        clock,
    )


def caller(ip: str | None = None) -> Caller:
    return caller_of(ip or fresh_ip(), None, ())


def request(kind: Kind = Kind.POSTGRES, name: str = "app-db") -> ProvisionRequest:
    return ProvisionRequest(kind=kind, name=name)


def key_for(who: Caller, req: ProvisionRequest, header: str | None = None) -> Key:
    route = "/db/new" if req.kind is Kind.POSTGRES else "/vector/new"
    return derive_key(who.owner, route, {"name": req.name}, header)


class RecordingProvider:
    """The real provider, remembering every resource it was asked to create."""

    def __init__(self, kind: Kind) -> None:
        self._real = deps.get_provider(kind)
        self.kind = kind
        self.refs: list[BackendRef] = []

    def new_ref(self, backend: Backend) -> BackendRef:
        ref = self._real.new_ref(backend)
        self.refs.append(ref)
        return ref

    def provision(self, backend: Backend, ref: BackendRef, limits: KindLimits) -> Credentials:
        return self._real.provision(backend, ref, limits)

    def deprovision(self, backend: Backend, ref: BackendRef) -> None:
        self._real.deprovision(backend, ref)

    def usage(self, backend: Backend, ref: BackendRef) -> int:
        return self._real.usage(backend, ref)

    def check(self, backend: Backend) -> None:
        self._real.check(backend)
