"""Tier limits from plans.yaml, as frozen dataclasses, with the operator's overrides.

plans.yaml is the default table. An operator changes what a tier may do with
``INSTANODE_PLANS_OVERRIDES`` (config.py), a JSON object merged over it per tier, e.g.
``{"free": {"deploys": {"apps": 1}}}``: ``build_tiers`` checks every name and type (a
ConfigError at load, never at request time). ``all_tiers()`` is the effective table of this
process, read by provisioning, quotas, capabilities and deploys alike.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, get_type_hints

from chalicelib.errors import ConfigError
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


def all_tiers() -> dict[str, Tier]:
    """The effective table: plans.yaml with this installation's INSTANODE_PLANS_OVERRIDES."""
    from chalicelib.config import get_settings

    return dict(get_settings().tiers)


def get_tier(name: str) -> Tier:
    return all_tiers()[name]


def default_tiers() -> dict[str, Tier]:
    """plans.yaml as shipped, without any override."""
    return build_tiers({})


def lowest_deploying_tier(tiers: Mapping[str, Tier]) -> Tier | None:
    """The cheapest tier that runs container deploys (None when none does)."""
    deploying = [t for t in tiers.values() if t.name != ANONYMOUS and t.deploys.apps > 0]
    return min(deploying, key=lambda t: t.price_usd_month, default=None)


def build_tiers(overrides: Mapping[str, Any], source: str = "plans override") -> dict[str, Tier]:
    """plans.yaml with ``overrides`` (``{tier: {key: value, deploys: {...}, kinds: {kind:
    {...}}}}``) merged over it; a ConfigError naming ``source`` and the first bad entry (an
    unknown tier or key, or a value of the wrong type)."""
    plans = _plans()
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{source} must be a JSON object of tier names")
    for name, override in overrides.items():
        if name not in plans:
            raise ConfigError(f"{source}: unknown tier '{name}' (known: {', '.join(plans)})")
        _check(override, _TIER_SCHEMA, f"{source}: {name}")
    return {
        name: _tier(name, _merged(spec, overrides.get(name, {}))) for name, spec in plans.items()
    }


@lru_cache(maxsize=1)
def _plans() -> dict[str, dict[str, Any]]:
    import yaml  # on first use: most cold starts never read the plans

    plans: dict[str, dict[str, Any]] = yaml.safe_load(PLANS_FILE.read_text())["tiers"]
    return plans


def _merged(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merged(base[key], value) if isinstance(value, Mapping) else value
    return merged


def _schema(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


_TIER_SCHEMA: dict[str, Any] = {
    **{k: v for k, v in _schema(Tier).items() if k not in ("name", "kinds", "deploys")},
    "deploys": _schema(DeployLimits),
    "kinds": {kind.value: _schema(KindLimits) for kind in Kind},
}


def _check(value: Any, schema: Any, where: str) -> None:
    """``value`` fits ``schema`` (a dict of keys, or a type such as ``int | None``)."""
    if isinstance(schema, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be an object with keys of {', '.join(schema)}")
        for key, item in value.items():
            if key not in schema:
                raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(schema)})")
            _check(item, schema[key], f"{where}.{key}")
        return
    nullable = isinstance(schema, types.UnionType) and type(None) in schema.__args__
    if value is None and nullable:
        return
    base = bool if schema is bool else int
    if base is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigError(
            f"{where} must be a whole number >= 0{' or null' if nullable else ''}, not {value!r}"
        )
    if base is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")


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
