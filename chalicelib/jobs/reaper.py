"""Expiry: remove resources whose time is up, and collect half-made ones whose lease ran out.
An anonymous network whose resource expired unclaimed is marked: it must claim once before it
provisions again (``free_tier_recycle_requires_claim``).

Due records come from the sparse ``by_expiry`` index, shard by shard and page by page (never a
table scan). Each record is leased before work, the backend object is removed (idempotently),
then the record and counters are updated in one transaction guarded by the status seen.
A half-made record's idempotency claim is left: it names the record (``holder``), so the next
request with its key finds the record gone and takes the key at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from chalicelib.config import Settings
from chalicelib.dynamo import Dynamo, TransactionCancelled
from chalicelib.models import ANONYMOUS_OWNER_PREFIX, Kind, Resource, Status
from chalicelib.providers.base import Provider
from chalicelib.store import ResourceStore

log = logging.getLogger(__name__)
LEASE_SECONDS = 300


@dataclass(frozen=True)
class ReapReport:
    expired: int = 0
    collected: int = 0
    skipped: int = 0
    failed: int = 0

    def as_json(self) -> dict[str, int]:
        return asdict(self)


class Reaper:
    def __init__(
        self,
        settings: Settings,
        db: Dynamo,
        providers: Callable[[Kind], Provider],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._db = db
        self._store = ResourceStore(db, settings)
        self._providers = providers
        self._clock = clock

    def run(self) -> ReapReport:
        now = int(self._clock())
        counts = {"expired": 0, "collected": 0, "skipped": 0, "failed": 0}
        for shard in range(self._settings.expiry_shards):
            for resource in self._store.due(shard, now):
                counts[self.reap(resource, now)] += 1
        report = ReapReport(**counts)
        log.info("reaper: %s", report)
        return report

    def reap(self, resource: Resource, now: int) -> str:
        """Remove one due record's backend object, then retire (or, half-made, delete) the
        record and refund its charge: ``expired``, ``collected``, ``skipped`` (another run
        has it, or it changed) or ``failed`` (retried after the lease). A provision retried
        after its dead first attempt's lease calls this too (ProvisionService)."""
        if not self._store.take_reaper_lease(resource, now, LEASE_SECONDS):
            return "skipped"
        backend = self._settings.backend_of(resource)
        if backend is None:
            log.error("resource %s is on unknown backend %s", resource.id, resource.ref.backend)
            return "failed"
        try:
            self._providers(resource.kind).deprovision(backend, resource.ref)
        except Exception:
            log.exception("could not remove %s; it is retried after its lease", resource.id)
            return "failed"
        half_made = resource.status is Status.PROVISIONING
        if half_made:
            records = [self._store.delete_item(resource)]
        else:
            records = self._store.retire_items(resource, now)
            if resource.owner.startswith(ANONYMOUS_OWNER_PREFIX):
                records.append(self._store.recycle_mark_item(resource, now))
        try:
            self._db.transact(
                [
                    *records,
                    *self._store.refund_items(resource, resource.created_at, daily=half_made),
                ]
            )
        except TransactionCancelled:
            return "skipped"
        return "collected" if half_made else "expired"


def run_reaper() -> ReapReport:
    from chalicelib.config import get_settings
    from chalicelib.deps import get_dynamo, get_provider

    return Reaper(get_settings(), get_dynamo(), get_provider).run()
