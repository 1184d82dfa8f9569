"""Quota enforcement: for every backend whose kind does not enforce tier limits itself, hand its
active tenants to the provider in one batch (one pass over the server, not one per tenant).

The same pass re-applies access that lives only in the server's memory (Redis ACLs), so a
restarted server gets its tenants back within one run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from chalicelib.config import Settings
from chalicelib.dynamo import Dynamo
from chalicelib.models import Kind
from chalicelib.providers.base import Enforcer, Provider, Tenant
from chalicelib.store import ResourceStore
from chalicelib.tiers import Tier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuotaReport:
    backends: int = 0
    tenants: int = 0
    over_quota: int = 0
    failed: int = 0

    def as_json(self) -> dict[str, int]:
        return asdict(self)


class QuotaJob:
    def __init__(
        self,
        settings: Settings,
        db: Dynamo,
        providers: Callable[[Kind], Provider],
        tiers: Mapping[str, Tier],
    ) -> None:
        self._settings = settings
        self._store = ResourceStore(db, settings)
        self._providers = providers
        self._tiers = tiers

    def run(self) -> QuotaReport:
        counts = {"backends": 0, "tenants": 0, "over_quota": 0, "failed": 0}
        for kind, backends in self._settings.backends.items():
            provider = self._providers(kind)
            if not isinstance(provider, Enforcer):
                continue  # the backend enforces its limits itself (NATS)
            for backend in backends:
                tenants = [
                    Tenant(r.ref, self._tiers[r.tier].limits(kind), r.stored)
                    for r in self._store.placed_on(kind, backend.name)
                ]
                counts["backends"] += 1
                counts["tenants"] += len(tenants)
                try:
                    usages = provider.enforce(backend, tenants)
                except Exception:
                    log.exception("quota pass over %s backend %s failed", kind.value, backend.name)
                    counts["failed"] += 1
                    continue
                counts["over_quota"] += sum(u.over_quota for u in usages)
        report = QuotaReport(**counts)
        log.info("quota: %s", report)
        return report


def run_quota_job() -> QuotaReport:
    from chalicelib.config import get_settings
    from chalicelib.deps import get_dynamo, get_provider
    from chalicelib.tiers import all_tiers

    return QuotaJob(get_settings(), get_dynamo(), get_provider, all_tiers()).run()
