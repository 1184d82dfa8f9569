"""A provision that cannot finish before the API's timeout fails cleanly, and one whose process
is killed (Lambda's timeout: nothing runs after it) is cleaned up soon after, on the real
servers of the test stack.

* deadline: the service answers 503 ``provision_timeout`` at its deadline, and what the late
  backend call made is removed when it ends (key, record and charge given back);
* hard kill: a provision runs in a child process that is SIGKILLed after the backend object
  exists, before activation. A retry with the same key is told at once to wait for the lease,
  and after it takes over (the dead attempt's object removed first); with no retry, the reaper
  collects it, and the key is free.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib import deps
from chalicelib.config import Settings
from chalicelib.dynamo import Dynamo
from chalicelib.errors import IdempotencyInProgressError
from chalicelib.idempotency import IN_PROGRESS_WAIT_SECONDS, IdempotencyStore, Record
from chalicelib.jobs.reaper import Reaper
from chalicelib.models import Backend, BackendRef, Credentials, Kind, Resource, Status
from chalicelib.sealing import Sealer
from chalicelib.service import Deadline, ProvisionService, ProvisionTimeoutError
from chalicelib.store import ResourceStore
from chalicelib.tiers import KindLimits, all_tiers
from devstack.aws import create_tables, table_specs
from devstack.stack import Stack
from tests.conftest import fresh_ip
from tests.functional.conftest import (
    Post,
    RecordingProvider,
    caller,
    exists,
    key_for,
    make_service,
    request,
    scan,
    settings,
)
from tests.functional.test_compensation import activates

ROOT = Path(__file__).resolve().parents[2]
LATE_SECONDS = 2.0  # how long after the deadline the slow backend call ends
UNDONE_WITHIN_SECONDS = 15.0  # the late call ends, then its undo runs
CHILD_READY_SECONDS = 60.0


class SlowProvider(RecordingProvider):
    """The real provider whose answer arrives late: the object exists on the server, then
    the call takes ``LATE_SECONDS`` more (a slow network or a loaded server)."""

    def provision(self, backend: Backend, ref: BackendRef, limits: KindLimits) -> Credentials:
        made = super().provision(backend, ref, limits)
        time.sleep(LATE_SECONDS)
        return made


def counters(dynamo: Dynamo) -> dict[str, int]:
    return {i["pk"]: i["n"] for i in scan(dynamo, settings().counters_table) if "n" in i}


def wait_until_empty(dynamo: Dynamo, table: str) -> None:
    give_up = time.monotonic() + UNDONE_WITHIN_SECONDS
    while scan(dynamo, table) and time.monotonic() < give_up:
        time.sleep(0.1)


# -- the deadline: 503 at it, the late call undone -----------------------------------------
@pytest.mark.usefixtures("app_env")
def test_provision_past_its_deadline_answers_at_it_and_removes_what_it_made(
    dynamo: Dynamo,
) -> None:
    provider = SlowProvider(Kind.POSTGRES)
    svc = make_service(providers=lambda _: provider)
    who, req = caller(), request()
    started = time.monotonic()
    with pytest.raises(ProvisionTimeoutError) as raised:
        svc.provision(who, req, key_for(who, req, "slow"), Deadline(started + 0.5))
    assert time.monotonic() - started < 0.5 + LATE_SECONDS / 2  # not when the call ended
    assert raised.value.status == 503 and raised.value.headers == {"Retry-After": "5"}
    [ref] = provider.refs
    wait_until_empty(dynamo, settings().idempotency_table)
    assert exists(ref) == {"database": False, "role": False}
    assert scan(dynamo, settings().resources_table) == []
    assert scan(dynamo, settings().idempotency_table) == []
    assert all(n == 0 for n in counters(dynamo).values())
    retry = make_service().provision(who, req, key_for(who, req, "slow"))
    assert retry.status_code == 201


@pytest.fixture
def hung_postgres(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The only Postgres backend accepts connections and never answers (a hung server); the
    API's timeout is 7 s, so provisions have a 2 s deadline."""
    with socket.create_server(("127.0.0.1", 0)) as hung:
        port = hung.getsockname()[1]
        backend = {
            "name": "hung",
            "admin_url": f"postgresql://postgres:x@127.0.0.1:{port}/postgres",
            "public_host": f"127.0.0.1:{port}",
        }
        monkeypatch.setenv("INSTANODE_POSTGRES_BACKENDS", json.dumps([backend]))
        monkeypatch.setenv("INSTANODE_API_TIMEOUT_SECONDS", "7")
        deps.reset()
        yield


@pytest.mark.usefixtures("hung_postgres")
def test_route_answers_provision_timeout_before_the_api_timeout(post: Post, dynamo: Dynamo) -> None:
    started = time.monotonic()
    r = post("/db/new", {"name": "hung-db"}, **{"Idempotency-Key": "hung"})
    took = time.monotonic() - started
    body = r.json_body
    assert r.status_code == 503 and body["error"] == "provision_timeout", body
    assert 2 <= took < 4  # the deadline, before the driver's own 5 s timeout
    assert r.headers["Retry-After"] == "5" and body["retry_after_seconds"] == 5
    assert "same body and Idempotency-Key" in body["agent_action"]
    assert r.headers["X-Idempotency-Source"] == "explicit"
    wait_until_empty(dynamo, settings().idempotency_table)  # the driver gives up: released
    assert scan(dynamo, settings().resources_table) == []
    assert all(n == 0 for n in counters(dynamo).values())


# -- the hard kill: a child process dies between the backend create and activation --------
@pytest.fixture
def shared_platform(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dynamo]:
    """The stack's environment with the platform's tables on its moto server (a child process
    sees them too), under a prefix of this test's own; the reaper cleans up afterwards."""
    prefix = f"deadlines-{uuid.uuid4().hex[:8]}"
    for name, value in {**stack.env(), "INSTANODE_TABLE_PREFIX": prefix}.items():
        monkeypatch.setenv(name, value)
    deps.reset()
    client = boto3.client("dynamodb")
    create_tables(client, prefix)
    yield deps.get_dynamo()
    later = time.time() + 3 * 86400
    Reaper(settings(), deps.get_dynamo(), deps.get_provider, lambda: later).run()
    for spec in table_specs(prefix):
        client.delete_table(TableName=spec["TableName"])
    deps.reset()


def provision_then_stall(ip: str, header: str) -> None:
    """In the child: provision with the real provider and tables; when the record is about
    to be activated, say so on stdout and stall there until killed."""

    class StallingActivation(Dynamo):
        def transact(self, items: Any) -> None:
            if activates(items):
                print("created", flush=True)
                time.sleep(3600)
            super().transact(items)

    config = Settings.from_env()
    db = StallingActivation(boto3.client("dynamodb"))
    svc = ProvisionService(config, db, all_tiers(), deps.get_provider)
    who, req = caller(ip), request()
    svc.provision(who, req, key_for(who, req, header))


CHILD = "import sys; from tests.functional.test_deadlines import provision_then_stall as p; "
CHILD += "p(sys.argv[1], sys.argv[2])"


def kill_after_backend_create(ip: str, header: str) -> Resource:
    """Run the provision in a child process, SIGKILL it once the backend object exists, and
    return the PROVISIONING record it left."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, ip, header],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], CHILD_READY_SECONDS)
        assert ready and child.stdout.readline().strip() == "created"
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    [dead] = records()
    assert dead.status is Status.PROVISIONING
    assert exists(dead.ref) == {"database": True, "role": True}  # the kill left it
    return dead


def records() -> list[Resource]:
    store = ResourceStore(deps.get_dynamo(), settings())
    items = scan(deps.get_dynamo(), settings().resources_table)
    return [r for r in (store.get(i["id"]) for i in items) if r is not None]


def claims() -> list[Record]:
    idem = IdempotencyStore(
        deps.get_dynamo(), settings().idempotency_table, Sealer(settings().jwt_secret)
    )
    return [idem.record_of(i) for i in scan(deps.get_dynamo(), settings().idempotency_table)]


def test_retry_of_a_killed_provision_waits_for_the_lease_then_takes_over(
    shared_platform: Dynamo,
) -> None:
    ip = fresh_ip()
    dead = kill_after_backend_create(ip, "killed-a")
    who, req = caller(ip), request()
    started = time.monotonic()
    with pytest.raises(IdempotencyInProgressError) as raised:
        make_service().provision(who, req, key_for(who, req, "killed-a"))
    assert time.monotonic() - started < IN_PROGRESS_WAIT_SECONDS + 2  # a clear answer, soon
    lease = settings().provisioning_lease_seconds
    assert raised.value.fields["retry_after_seconds"] == 5
    assert "lapses within" in raised.value.message
    after_lease = dead.created_at + lease + 1
    retry = make_service(clock=lambda: after_lease).provision(
        who, req, key_for(who, req, "killed-a")
    )
    assert retry.status_code == 201 and retry.body["id"] != dead.id
    assert exists(dead.ref) == {"database": False, "role": False}  # removed before the new one
    [made] = records()
    assert made.id == retry.body["id"] and made.status is Status.ACTIVE
    assert sorted(counters(shared_platform).values()) == [1, 1, 1]  # cap, day, backend: once
    assert [c.state.value for c in claims()] == ["COMPLETED"]


def test_reaper_collects_a_killed_provision_and_its_key_is_free(shared_platform: Dynamo) -> None:
    ip = fresh_ip()
    dead = kill_after_backend_create(ip, "killed-b")
    lease = settings().provisioning_lease_seconds

    def reaper_at(now: int) -> Reaper:
        return Reaper(settings(), shared_platform, deps.get_provider, lambda: now)

    assert reaper_at(dead.created_at + lease - 1).run().collected == 0  # lease running
    assert reaper_at(dead.created_at + lease).run().collected == 1
    assert exists(dead.ref) == {"database": False, "role": False}
    assert records() == []
    assert all(n == 0 for n in counters(shared_platform).values())
    [claim] = claims()  # the dead request's claim: inert, it names a record that is gone
    assert claim.holder == dead.id and claim.abandoned(dead.created_at + lease + 1)
    who, req = caller(ip), request()
    started = time.monotonic()
    retry = make_service(clock=lambda: dead.created_at + lease + 1).provision(
        who, req, key_for(who, req, "killed-b")
    )
    assert retry.status_code == 201
    assert time.monotonic() - started < IN_PROGRESS_WAIT_SECONDS  # no wait on the old claim
