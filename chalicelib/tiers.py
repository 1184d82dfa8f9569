"""Tier limits from plans.yaml, as frozen dataclasses."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from chalicelib.models import Kind

PLANS_FILE = Path(__file__).with_name("plans.yaml")
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class KindLimits:
    storage_mb: int
    connections: int
    max_resources: int | None  # None: no cap on active resources of this kind
    kept_requests: int | None = None  # webhook inboxes: how many received requests are kept

    @property
    def storage_bytes(self) -> int:
        return self.storage_mb << 20


@dataclass(frozen=True)
class DeployLimits:
    apps: int
    cpu_millis: int
    memory_mb: int
    tarball_mb: int
    stack_ttl_hours: int | None

    @property
    def tarball_bytes(self) -> int:
        return self.tarball_mb << 20


@dataclass(frozen=True)
class Tier:
    name: str
    price_usd_month: int
    self_serve: bool
    ttl_hours: int | None
    daily_provisions: int | None
    kinds: dict[Kind, KindLimits]
    deploys: DeployLimits

    def limits(self, kind: Kind) -> KindLimits:
        return self.kinds[kind]

    def expiry_of(self, created_at: int) -> int | None:
        """When a resource made at ``created_at`` expires on this tier (None: it does not)."""
        return None if self.ttl_hours is None else created_at + self.ttl_hours * 3600

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kinds"] = {kind.value: asdict(lim) for kind, lim in self.kinds.items()}
        return data


@lru_cache(maxsize=1)
def all_tiers() -> dict[str, Tier]:
    import yaml  # on first use: most cold starts never read the plans

    raw = yaml.safe_load(PLANS_FILE.read_text())["tiers"]
    return {name: _tier(name, spec) for name, spec in raw.items()}


def get_tier(name: str) -> Tier:
    return all_tiers()[name]


def _tier(name: str, spec: dict[str, Any]) -> Tier:
    return Tier(
        name=name,
        price_usd_month=int(spec["price_usd_month"]),
        self_serve=bool(spec["self_serve"]),
        ttl_hours=spec["ttl_hours"],
        daily_provisions=spec["daily_provisions"],
        kinds={Kind(k): KindLimits(**v) for k, v in spec["kinds"].items()},
        deploys=DeployLimits(**spec["deploys"]),
    )
