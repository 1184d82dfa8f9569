"""Expiry: the scheduled reaper drops expired anonymous resources and keeps live ones."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import deps
from chalicelib.dynamo import Dynamo
from chalicelib.jobs.reaper import Reaper, ReapReport
from chalicelib.models import Backend, BackendRef, Kind, Status
from chalicelib.store import ResourceStore
from tests.functional.conftest import (
    RecordingProvider,
    caller,
    exists,
    key_for,
    make_service,
    request,
    scan,
    settings,
)
from tests.functional.test_compensation import InjectedFailure

pytestmark = pytest.mark.usefixtures("app_env")
DAY = 24 * 3600


def reaper_at(now: float) -> Reaper:
    return Reaper(settings(), deps.get_dynamo(), deps.get_provider, lambda: now)


def provision_at(now: float, kind: Kind = Kind.POSTGRES) -> tuple[str, RecordingProvider]:
    provider = RecordingProvider(kind)
    svc = make_service(clock=lambda: now, providers=lambda _: provider)
    who, req = caller(), request(kind)
    return svc.provision(who, req, key_for(who, req)).body["id"], provider


def status(resource_id: str) -> Status:
    found = ResourceStore(deps.get_dynamo(), settings()).get(resource_id)
    assert found is not None
    return found.status


def counters(dynamo: Dynamo) -> dict[str, int]:
    return {i["pk"]: i["n"] for i in scan(dynamo, settings().counters_table) if "n" in i}


def test_reaper_drops_expired_and_keeps_live(dynamo: Dynamo) -> None:
    t0 = time.time()
    old_id, old = provision_at(t0 - 25 * 3600)
    live_id, live = provision_at(t0 - 1 * 3600, Kind.VECTOR)
    report = reaper_at(t0).run()
    assert report.expired == 1 and report.failed == 0
    assert exists(old.refs[0]) == {"database": False, "role": False}
    assert exists(live.refs[0]) == {"database": True, "role": True}
    assert status(old_id) is Status.EXPIRED and status(live_id) is Status.ACTIVE
    assert counters(dynamo)[f"active#{caller_owner(old_id)}#postgres"] == 0


def caller_owner(resource_id: str) -> str:
    found = ResourceStore(deps.get_dynamo(), settings()).get(resource_id)
    assert found is not None
    return found.owner


def test_reaper_run_twice_at_once_expires_each_resource_once(dynamo: Dynamo) -> None:
    t0 = time.time()
    ids = [provision_at(t0 - 2 * DAY)[0] for _ in range(3)]
    reports: list[ReapReport] = []
    runs = [threading.Thread(target=lambda: reports.append(reaper_at(t0).run())) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert sum(r.expired for r in reports) == 3 and sum(r.failed for r in reports) == 0
    assert all(status(i) is Status.EXPIRED for i in ids)
    assert all(n == 0 for k, n in counters(dynamo).items() if k.startswith("active#"))


def test_reaper_second_run_finds_nothing() -> None:
    t0 = time.time()
    provision_at(t0 - 2 * DAY)
    assert reaper_at(t0).run().expired == 1
    assert reaper_at(t0).run() == ReapReport()


class Crash(Dynamo):
    """The process dies after the backend create: every write after the first one fails."""

    def transact(self, items: Any) -> None:
        if not any(
            i.get("Put", {}).get("Item", {}).get("state") == {"S": "INPROGRESS"} for i in items
        ):
            raise InjectedFailure("crash")
        super().transact(items)


class CrashingProvider(RecordingProvider):
    """A provider whose clean-up never runs, as when the process dies."""

    def deprovision(self, backend: Backend, ref: BackendRef) -> None:
        raise InjectedFailure("crash")


def test_reaper_collects_a_half_made_resource_after_its_lease(dynamo: Dynamo) -> None:
    t0 = time.time()
    provider = CrashingProvider(Kind.POSTGRES)
    svc = make_service(db=Crash(dynamo.client), providers=lambda _: provider, clock=lambda: t0)
    who, req = caller(), request()
    with pytest.raises(InjectedFailure):
        svc.provision(who, req, key_for(who, req, "crash-key"))
    [ref] = provider.refs
    assert exists(ref)["database"]  # the crash left it behind
    lease = settings().provisioning_lease_seconds
    assert reaper_at(t0 + lease - 1).run().collected == 0  # lease still running
    assert reaper_at(t0 + lease + 1).run().collected == 1
    assert exists(ref) == {"database": False, "role": False}
    assert scan(dynamo, settings().resources_table) == []
    retry = make_service(clock=lambda: t0 + lease + 2).provision(
        who, req, key_for(who, req, "crash-key")
    )
    assert retry.status_code == 201


def test_reap_expired_lambda_runs_the_reaper(client: Client) -> None:
    provision_at(time.time() - 2 * DAY)
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    result = client.lambda_.invoke("reap_expired", event)
    assert result.payload["expired"] == 1
