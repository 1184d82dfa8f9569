"""Removing what the bench provisioned (its raw-operation objects; through the app's reaper, with
a clock three days ahead, its resources on every backend; their DynamoDB items), and counting
what is left on each backend."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.backends import BACKEND_OF, ROUTES, BenchBackend
from bench.ops import NAME

if TYPE_CHECKING:
    from chalicelib.config import Settings

# moto's transactions slow down as its tables grow: sweep after about this many provisions
# through the app (each round makes one per route over HTTP and one in process).
PROVISIONS_BETWEEN_SWEEPS = 40
SWEEP_EVERY = max(1, PROVISIONS_BETWEEN_SWEEPS // (2 * len(ROUTES)))  # measured rounds
REAP_AHEAD_DAYS = 3
CLEANUP_WAIT_SECONDS = 60


@dataclass(frozen=True)
class Leftovers:
    """One backend's count of tenant objects, and of the bench's own still there."""

    before: int  # tenant objects on the backend before the run
    after: int
    made: int  # objects the bench provisioned there through the app
    left: int  # of those (and of the raw operation's), still there


@dataclass(frozen=True)
class Cleanup:
    reaped: dict[str, int]
    backends: dict[str, Leftovers]  # by backend key
    forgotten: int  # expired bench records whose DynamoDB items were deleted

    @property
    def ok(self) -> bool:
        return all(b.left == 0 for b in self.backends.values())


def reap_everything_due() -> dict[str, int]:
    """The app's reaper, three days ahead: expires every anonymous resource in the stack."""
    from chalicelib import deps
    from chalicelib.config import get_settings
    from chalicelib.jobs.reaper import Reaper

    ahead = time.time() + REAP_AHEAD_DAYS * 86400
    reaper = Reaper(get_settings(), deps.get_dynamo(), deps.get_provider, clock=lambda: ahead)
    return reaper.run().as_json()


def _dynamo() -> tuple[Settings, Any]:
    """The app's settings (its table names) and its DynamoDB client."""
    from chalicelib import deps
    from chalicelib.config import get_settings

    return get_settings(), deps.get_dynamo().client


def _scan(client: Any, table: str, **kwargs: Any) -> list[dict[str, Any]]:
    from chalicelib.dynamo import from_wire

    pages = client.get_paginator("scan").paginate(TableName=table, **kwargs)
    return [from_wire(item) for page in pages for item in page["Items"]]


def _delete(client: Any, table: str, keys: Sequence[Mapping[str, Any]]) -> None:
    from chalicelib.dynamo import to_wire

    for i in range(0, len(keys), 25):  # BatchWriteItem takes 25 at a time
        deletes = [{"DeleteRequest": {"Key": to_wire(k)}} for k in keys[i : i + 25]]
        client.batch_write_item(RequestItems={table: deletes})


def table_items() -> dict[str, int]:
    settings, client = _dynamo()
    tables = {
        "resources": settings.resources_table,
        "counters": settings.counters_table,
        "idempotency": settings.idempotency_table,
    }
    return {label: len(_scan(client, table)) for label, table in tables.items()}


def forget_records() -> int:
    """Delete the DynamoDB items of expired bench resources: records, the counters and the
    idempotency keys of their /24s (bench addresses only). moto copies every table a transaction
    touches, so its transactions slow down as tables grow; without this each run would make the
    next one (and the test suite) slower. Also catches what an interrupted run left."""
    from chalicelib.idempotency import derive_key
    from chalicelib.models import Status

    settings, client = _dynamo()
    records = _scan(
        client,
        settings.resources_table,
        FilterExpression="#n = :n",
        ExpressionAttributeNames={"#n": "name"},
        ExpressionAttributeValues={":n": {"S": NAME}},
    )
    live = {r["owner"] for r in records if r["status"] != Status.EXPIRED.value}
    done = [r for r in records if r["owner"] not in live]
    owners = {r["owner"] for r in done}
    counters = [
        c for c in _scan(client, settings.counters_table) if owners & set(c["pk"].split("#"))
    ]
    _delete(client, settings.resources_table, [{"id": r["id"]} for r in done])
    _delete(client, settings.counters_table, [{"pk": c["pk"]} for c in counters])
    keys = [derive_key(o, route, {"name": NAME}, None).pk for o in owners for route in ROUTES]
    _delete(client, settings.idempotency_table, [{"pk": k} for k in keys])
    return len(done)


class Janitor:
    """Removes what the bench provisioned: every few rounds, so that moto's tables (which its
    transactions copy whole) stay small, and at the end."""

    def __init__(self, backends: Mapping[str, BenchBackend]) -> None:
        self.backends = backends
        self.made: dict[str, list[str]] = {key: [] for key in backends}  # through the app
        self._before = {key: b.tenants() for key, b in backends.items()}
        self._reaped: Counter[str] = Counter()
        self._forgotten = 0

    def record(self, route: str, answer: Mapping[str, Any]) -> None:
        """What a provision through ``route`` made (``answer``: its 201 body)."""
        key = BACKEND_OF[route]
        self.made[key].append(self.backends[key].made_by(answer))

    def sweep(self) -> None:
        for backend in self.backends.values():
            backend.drop_raw()
        self._reaped.update(reap_everything_due())
        self._forgotten += forget_records()

    def left(self) -> dict[str, int]:
        return {key: b.left(self.made[key]) for key, b in self.backends.items()}

    def finish(self) -> Cleanup:
        """Sweep until the bench's objects are gone (another reaper may hold the lease on some
        of them for a moment), then report."""
        deadline = time.monotonic() + CLEANUP_WAIT_SECONDS
        self.sweep()
        while any((left := self.left()).values()) and time.monotonic() < deadline:
            time.sleep(1)
            self.sweep()
        found = {
            key: Leftovers(self._before[key], b.tenants(), len(self.made[key]), left[key])
            for key, b in self.backends.items()
        }
        return Cleanup(dict(self._reaped), found, self._forgotten)
