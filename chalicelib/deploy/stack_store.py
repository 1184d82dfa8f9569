"""DynamoDB persistence of stacks (no HTTP, no backend calls).

Table ``stacks``, pk ``slug``; GSI ``by_owner`` (owner, created_at) lists an owner's stacks,
sparse ``by_expiry`` (expiry_shard, expires_at) holds the stacks the reaper must visit (those
with a TTL: anonymous ones and those of tiers without deploy slots). One item per stack: the
services' state is a JSON list in it, the env (the manifest's per-service env and the
stack-level env PATCH sets) is one sealed blob. A team stack with a slot counts as one app.
Counting, versions, sealing and the TTL index work as for deployments: see records.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from chalicelib.deploy.backend import DeployBackend, DeployStatus
from chalicelib.deploy.records import PendingDeletion, Records, deletion_of
from chalicelib.dynamo import Dynamo, Item
from chalicelib.sealing import Sealer

SEAL_LABEL = b"instanode/stack-env/v1"
_RETIRED = (DeployStatus.DELETED, DeployStatus.EXPIRED)


@dataclass(frozen=True)
class ServiceState:
    """One service of a stack: a backend app of its own (``slug``), rebuilt per revision."""

    name: str
    slug: str
    port: int
    expose: bool
    revision: int
    context_key: str
    status: DeployStatus
    env_names: tuple[str, ...] = ()  # the manifest's env keys (values are in the sealed blob)
    error_message: str | None = None

    def as_item(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "slug": self.slug,
            "port": self.port,
            "expose": self.expose,
            "revision": self.revision,
            "context_key": self.context_key,
            "status": self.status.value,
            "env_names": list(self.env_names),
            "error_message": self.error_message,
        }

    @classmethod
    def of_item(cls, raw: Mapping[str, Any]) -> ServiceState:
        return cls(
            name=raw["name"],
            slug=raw["slug"],
            port=int(raw["port"]),
            expose=bool(raw["expose"]),
            revision=int(raw["revision"]),
            context_key=raw["context_key"],
            status=DeployStatus(raw["status"]),
            env_names=tuple(raw.get("env_names") or ()),
            error_message=raw.get("error_message"),
        )


@dataclass(frozen=True)
class StackEnv:
    """The secrets of a stack: each service's manifest env, and the stack-level env."""

    services: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    stack: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stack:
    slug: str  # "<name-base>-<hex>": the services' slugs are "<slug>-<service>"
    owner: str  # "team:<id>", or the anonymous network's owner
    name: str
    anonymous: bool  # immutable once created, readable by anyone holding the slug
    counted: bool  # charged one app against the owner's cap
    tier: str
    services: tuple[ServiceState, ...]
    status: DeployStatus
    created_at: int
    updated_at: int
    version: int = 1
    expires_at: int | None = None
    env: StackEnv = field(default_factory=StackEnv, repr=False)
    deletion: PendingDeletion | None = field(default=None, repr=False)

    def service(self, name: str) -> ServiceState | None:
        return next((s for s in self.services if s.name == name), None)

    def as_json(self, backend: DeployBackend, full: bool = True) -> dict[str, Any]:
        """The stack as the API shows it (``full``: with the manifest and env names), its
        services' URLs from ``backend``."""
        from chalicelib.service import iso

        exposed = [s for s in self.services if s.expose]
        services = []
        for s in self.services:
            item: dict[str, Any] = {
                "name": s.name,
                "url": backend.url_of(s.slug) if s.expose else None,
                "status": s.status.value,
            }
            if full:
                item |= {
                    "internal_url": backend.internal_url_of(s.slug),
                    "port": s.port,
                    "expose": s.expose,
                    "revision": s.revision,
                    "error_message": s.error_message,
                }
            services.append(item)
        failed = next((s for s in self.services if s.status is DeployStatus.FAILED), None)
        view: dict[str, Any] = {
            "slug": self.slug,
            "name": self.name,
            "stack_url": backend.url_of(exposed[0].slug) if exposed else None,
            "status": self.status.value,
            "error_message": (f"{failed.name}: {failed.error_message}" if failed else None),
            "services": services,
            "anonymous": self.anonymous,
            "expires_at": iso(self.expires_at),
        }
        if full:
            view |= {
                "manifest": {
                    "services": {
                        s.name: {"port": s.port, "expose": s.expose, "env": list(s.env_names)}
                        for s in self.services
                    }
                },
                "env_vars": sorted(self.env.stack),  # names only: values are secrets
                "created_at": iso(self.created_at),
                "updated_at": iso(self.updated_at),
            }
        return view


class StackStore(Records):
    def __init__(self, db: Dynamo, table: str, counters: str, sealer: Sealer, shards: int) -> None:
        super().__init__(db, table, "slug", counters, sealer, shards)

    def create(self, stack: Stack, max_apps: int) -> bool:
        """Write a new stack (charging one app when ``counted``); False when the cap is full."""
        cap = max_apps if stack.counted else None
        return self.create_item(self._to_item(stack), stack.owner, cap)

    def save(self, stack: Stack, seen: Stack) -> Stack | None:
        """Store ``stack`` if the record is still as ``seen``: the stored stack (its next
        version), or None when it changed meanwhile."""
        stored = replace(stack, version=seen.version + 1)
        return stored if self.replace_item(self._to_item(stored), seen.version) else None

    def retire(self, stack: Stack, status: DeployStatus, now: int) -> bool:
        """Mark expired (or deleted) and give a counted stack's slot back, in one transaction."""
        retired = replace(
            stack,
            status=status,
            services=tuple(replace(s, status=status) for s in stack.services),
            updated_at=now,
            expires_at=None,
            deletion=None,
            version=stack.version + 1,
        )
        item = self._to_item(retired)
        return self.retire_item(item, stack.version, stack.owner, stack.counted, now)

    def get(self, slug: str) -> Stack | None:
        item = self.get_item(slug)
        return self._from_item(item) if item else None

    def owned(self, owner: str) -> list[Stack]:
        return [self._from_item(i) for i in self.owned_items(owner)]

    def live_slugs(self) -> set[str]:
        """The backend names (slugs) of every service of every stack not retired."""
        return {
            str(service["slug"])
            for item in self.live_items(["services"])
            for service in json.loads(item["services"])
        }

    def due(self, shard: int, now: int) -> Iterator[Stack]:
        return (self._from_item(i) for i in self.due_items(shard, now))

    def _to_item(self, s: Stack) -> Item:
        env = {"services": {k: dict(v) for k, v in s.env.services.items()}, "stack": s.env.stack}
        return {
            "slug": s.slug,
            "owner": s.owner,
            "name": s.name,
            "anonymous": s.anonymous,
            "counted": s.counted,
            "tier": s.tier,
            "services": json.dumps([x.as_item() for x in s.services]),
            "status": s.status.value,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "version": s.version,
            "env": self.seal(env, s.slug),
            **self.lifecycle_attrs(s.slug, s.expires_at, s.status not in _RETIRED, s.deletion),
        }

    def _from_item(self, item: Item) -> Stack:
        env = self.unseal(item["env"], item["slug"])
        return Stack(
            slug=item["slug"],
            owner=item["owner"],
            name=item["name"],
            anonymous=bool(item["anonymous"]),
            counted=bool(item["counted"]),
            tier=item["tier"],
            services=tuple(ServiceState.of_item(x) for x in json.loads(item["services"])),
            status=DeployStatus(item["status"]),
            created_at=int(item["created_at"]),
            updated_at=int(item["updated_at"]),
            version=int(item["version"]),
            expires_at=int(item["expires_at"]) if "expires_at" in item else None,
            env=StackEnv(env["services"], env["stack"]),
            deletion=deletion_of(item),
        )
