"""The reconciler: remove backend objects that no record knows (orphans).

Every provision writes its PROVISIONING record before it touches a backend, and the reaper
collects records whose lease ran out, so an object without a record is one whose record went
away while the object stayed: a clean-up that died with its connection, a server that came back
with state the platform had given up on, a hand-made mistake. Nothing else would ever find it.

One pass, per backend of every kind whose provider lists its objects (``Inventoried``), and for
the deploy backend when it lists its apps (``AppInventoried``: containers and images by slug,
against the deployments' and stacks' live records):
1. take the backend's lease (one reconciler at a time per server, as the reaper leases records);
2. list the server's objects first, then the records placed on it (provisioning and active), so
   an object made during the pass already has its record;
3. an object with no record becomes a suspect, remembered with the time it was first seen;
   suspects still unknown after the grace period are deprovisioned (the grace covers index lag
   and clocks; a record that shows up clears the suspicion).
Suspects live in the counters table under ``reconcile#<kind>#<backend>`` (``reconcile#deploy``)
with the lease.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

from chalicelib.config import Settings
from chalicelib.deploy.backend import AppInventoried
from chalicelib.dynamo import Dynamo
from chalicelib.models import Backend, Kind
from chalicelib.providers.base import Inventoried, Provider
from chalicelib.store import ResourceStore

log = logging.getLogger(__name__)
Remover = Callable[[], None]
Listing = Callable[[], tuple[dict[str, Remover], set[str]]]  # what a backend holds, known names
LEASE_SECONDS = 600
MAX_SUSPECTS = 2000  # per backend and pass (keeps the ledger item well under DynamoDB's 400 KB)


@dataclass(frozen=True)
class ReconcileReport:
    backends: int = 0
    objects: int = 0
    suspects: int = 0
    removed: int = 0
    skipped: int = 0
    failed: int = 0

    def as_json(self) -> dict[str, int]:
        return asdict(self)


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        db: Dynamo,
        providers: Callable[[Kind], Provider],
        apps: AppSweep | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._db = db
        self._store = ResourceStore(db, settings)
        self._providers = providers
        self._apps = apps
        self._clock = clock

    def run(self) -> ReconcileReport:
        counts = dict.fromkeys(ReconcileReport.__dataclass_fields__, 0)
        for kind, backends in self._settings.backends.items():
            provider = self._providers(kind)
            if not isinstance(provider, Inventoried):
                continue  # nothing of the kind lives on a server (webhook inboxes are records)
            for backend in backends:
                counts["backends"] += 1
                self._sweep(
                    f"{kind.value}#{backend.name}", self._objects(kind, provider, backend), counts
                )
        if self._apps is not None:
            counts["backends"] += 1
            self._sweep("deploy", self._apps.listing, counts)
        report = ReconcileReport(**counts)
        log.info("reconcile: %s", report)
        return report

    def _objects(self, kind: Kind, provider: Inventoried, backend: Backend) -> Listing:
        def listing() -> tuple[dict[str, Remover], set[str]]:
            found: dict[str, Remover] = {
                r.namespace: partial(provider.deprovision, backend, r)
                for r in provider.inventory(backend)
            }
            known = {r.ref.namespace for r in self._store.held_on(kind, backend.name)}
            return found, known

        return listing

    def _sweep(self, name: str, listing: Listing, counts: dict[str, int]) -> None:
        """One backend: what it holds against what the records know (listed in that order)."""
        key = {"pk": f"reconcile#{name}"}
        run, now = uuid.uuid4().hex, int(self._clock())
        if not self._lease(key, run, now):
            counts["skipped"] += 1
            return
        try:
            found, known = listing()
        except Exception:
            log.exception("reconcile: cannot list %s", name)
            counts["failed"] += 1
            self._release(key, run, None)
            return
        counts["objects"] += len(found)
        seen = self._suspects(key)
        suspects: dict[str, int] = {}
        for object_name, remove in found.items():
            if object_name in known or len(suspects) >= MAX_SUSPECTS:
                continue
            first_seen = seen.get(object_name, now)
            if now - first_seen < self._settings.reconcile_grace_seconds:
                suspects[object_name] = first_seen
            elif _removed(name, object_name, remove):
                counts["removed"] += 1
            else:
                suspects[object_name] = first_seen
                counts["failed"] += 1
        counts["suspects"] += len(suspects)
        self._release(key, run, suspects)

    # -- the per-backend ledger item: lease and suspects --------------------------------------
    def _lease(self, key: dict[str, str], run: str, now: int) -> bool:
        return self._db.update_if(
            self._settings.counters_table,
            key,
            "SET lease_until = :until, lease_run = :run",
            "attribute_not_exists(lease_until) OR lease_until < :now",
            {":until": now + LEASE_SECONDS, ":now": now, ":run": run},
        )

    def _suspects(self, key: dict[str, str]) -> dict[str, int]:
        item = self._db.get(self._settings.counters_table, key, consistent=True) or {}
        return {str(ns): int(ts) for ns, ts in (item.get("suspects") or {}).items()}

    def _release(self, key: dict[str, str], run: str, suspects: dict[str, int] | None) -> None:
        """End the lease; ``suspects`` replaces the ledger (None: keep it, the pass failed)."""
        expression = "SET lease_until = :zero"
        values: dict[str, object] = {":zero": 0, ":run": run}
        if suspects is not None:
            expression += ", suspects = :suspects"
            values[":suspects"] = suspects
        self._db.update_if(
            self._settings.counters_table, key, expression, "lease_run = :run", values
        )


@dataclass(frozen=True)
class AppSweep:
    """The deploy backend's apps against the deployments' and stacks' live records."""

    backend: AppInventoried
    live_slugs: Callable[[], set[str]]

    def listing(self) -> tuple[dict[str, Remover], set[str]]:
        found: dict[str, Remover] = {
            slug: partial(self.backend.remove, slug) for slug in self.backend.apps()
        }
        return found, self.live_slugs()


def _removed(where: str, name: str, remove: Remover) -> bool:
    try:
        remove()
    except Exception:
        log.exception("reconcile: could not remove orphan %s on %s", name, where)
        return False
    log.warning("reconcile: removed orphan %s on %s", name, where)
    return True


def run_reconciler() -> ReconcileReport:
    from chalicelib.config import get_settings
    from chalicelib.deps import (
        get_deploy_backend,
        get_deploys,
        get_dynamo,
        get_provider,
        get_stacks,
    )

    backend = get_deploy_backend()
    apps = None
    if isinstance(backend, AppInventoried):
        deploys, stacks = get_deploys().store, get_stacks().store
        apps = AppSweep(backend, lambda: deploys.live_slugs() | stacks.live_slugs())
    return Reconciler(get_settings(), get_dynamo(), get_provider, apps).run()
