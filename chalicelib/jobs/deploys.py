"""Deploy expiry: apps whose TTL ran out (``auto_24h``) are removed from their backend and marked
expired, freeing the team's slot. Due apps come from the sparse ``by_expiry`` index, shard by
shard; a record changed meanwhile (a redeploy, a deletion) is skipped by its condition.
Stacks whose TTL ran out (anonymous ones: 6h) go the same way, every service of them.
The poller advances apps still building or deploying to what their backend reports."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import TypeVar

from chalicelib.deploy.service import DeployService
from chalicelib.deploy.stack_store import StackStore
from chalicelib.deploy.stacks import StackService
from chalicelib.deploy.store import DeploymentStore

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DeployReapReport:
    expired: int = 0
    skipped: int = 0
    failed: int = 0
    stacks_expired: int = 0
    stacks_skipped: int = 0
    stacks_failed: int = 0

    def as_json(self) -> dict[str, int]:
        return asdict(self)


def reap_deploys(
    store: DeploymentStore,
    service: DeployService,
    shards: int,
    clock: Callable[[], float] = time.time,
) -> DeployReapReport:
    now = int(clock())
    expired, skipped, failed = _expire_due(
        (app for shard in range(shards) for app in store.due(shard, now)),
        service.expire,
        now,
        lambda app: app.id,
    )
    report = DeployReapReport(expired=expired, skipped=skipped, failed=failed)
    log.info("deploy reaper: %s", report)
    return report


def reap_stacks(
    store: StackStore,
    service: StackService,
    shards: int,
    clock: Callable[[], float] = time.time,
) -> DeployReapReport:
    """Remove every service of each stack whose TTL ran out, and mark it expired."""
    now = int(clock())
    expired, skipped, failed = _expire_due(
        (stack for shard in range(shards) for stack in store.due(shard, now)),
        service.expire,
        now,
        lambda stack: stack.slug,
    )
    report = DeployReapReport(stacks_expired=expired, stacks_skipped=skipped, stacks_failed=failed)
    log.info("stack reaper: %s", report)
    return report


def _expire_due(
    due: Iterable[T], expire: Callable[[T, int], bool], now: int, name: Callable[[T], str]
) -> tuple[int, int, int]:
    """Expire each due item (an app or a stack): how many expired, were skipped (changed
    meanwhile), failed (logged; the next run retries them)."""
    counts = [0, 0, 0]
    for item in due:
        try:
            counts[0 if expire(item, now) else 1] += 1
        except Exception:
            log.exception("could not expire %s; retried next run", name(item))
            counts[2] += 1
    return counts[0], counts[1], counts[2]


def poll_deploys(store: DeploymentStore, service: DeployService, shards: int) -> dict[str, int]:
    """Advance every app still building or deploying (from the sparse ``by_progress`` index)
    to what its backend reports, so status moves on even when nobody polls the API."""
    counts = {"polled": 0, "changed": 0, "failed": 0}
    for shard in range(shards):
        for app in store.in_progress(shard):
            counts["polled"] += 1
            try:
                counts["changed"] += service.refresh(app).status is not app.status
            except Exception:
                log.exception("could not poll %s; retried next run", app.id)
                counts["failed"] += 1
    log.info("deploy poller: %s", counts)
    return counts


def run_deploy_poller() -> dict[str, int]:
    from chalicelib.config import get_settings
    from chalicelib.deps import get_deploys

    service = get_deploys()
    return poll_deploys(service.store, service, get_settings().expiry_shards)


def run_deploy_reaper() -> DeployReapReport:
    from chalicelib.config import get_settings
    from chalicelib.deps import get_deploys, get_stacks

    service, stacks = get_deploys(), get_stacks()
    shards = get_settings().expiry_shards
    apps = reap_deploys(service.store, service, shards)
    gone = reap_stacks(stacks.store, stacks, shards)
    return replace(
        apps,
        stacks_expired=gone.stacks_expired,
        stacks_skipped=gone.stacks_skipped,
        stacks_failed=gone.stacks_failed,
    )
