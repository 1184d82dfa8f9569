"""DynamoDB persistence of resource records and counters (no HTTP, no backend logic).

Tables (names from config; infra/terraform/dynamodb.tf creates the same):
  resources   pk ``id``; GSI ``by_owner`` (owner, created_at); sparse GSI ``by_expiry``
              (expiry_shard, expires_at) holding only records the reaper must visit; sparse GSI
              ``by_placement`` (placement = ``<kind>#<backend>``, created_at) holding only active
              records, for the quota job.
  counters    pk ``pk``: ``day#<owner>#<date>`` provisions today, ``active#<owner>#<kind>``
              active resources, ``backend#<name>`` resources placed on a backend server.
Methods named ``*_item`` build transaction items; the service commits them in one round trip.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chalicelib import dynamo
from chalicelib.config import Settings
from chalicelib.dynamo import Dynamo, Item
from chalicelib.models import BackendRef, Kind, Resource, Status

EXPIRED_RECORD_RETENTION_SECONDS = 30 * 24 * 3600
DAY_COUNTER_RETENTION_SECONDS = 2 * 24 * 3600


@dataclass(frozen=True)
class Charge:
    """Counter updates for one provision: the per-kind cap, the daily count, the backend load."""

    CAP, BACKEND, DAILY = 0, 1, 2  # positions in items()

    cap: dict[str, Any]
    daily: dict[str, Any] | None
    backend: dict[str, Any]

    def items(self) -> list[dict[str, Any]]:
        return [self.cap, self.backend] + ([self.daily] if self.daily else [])


def resource_id_of(token: str) -> str:
    """The public id is a one-way function of the secret token (id never grants access)."""
    return "res_" + hashlib.sha256(token.encode()).hexdigest()[:20]


class ResourceStore:
    def __init__(self, db: Dynamo, settings: Settings) -> None:
        self._db = db
        self._resources = settings.resources_table
        self._counters = settings.counters_table
        self._shards = settings.expiry_shards

    # -- transaction items ------------------------------------------------------------------
    def put_provisioning_item(self, resource: Resource) -> dict[str, Any]:
        return dynamo.put(self._resources, self._to_item(resource), "attribute_not_exists(id)")

    def activate_item(self, resource: Resource) -> dict[str, Any]:
        values: dict[str, Any] = {
            ":active": Status.ACTIVE.value,
            ":stored": dict(resource.stored),
            ":placement": _placement(resource.kind, resource.ref.backend),
        }
        expression = "SET #s = :active, provider_data = :stored, placement = :placement"
        if resource.expires_at is None:
            expression += " REMOVE expires_at, expiry_shard"
        else:
            expression += ", expires_at = :exp"
            values[":exp"] = resource.expires_at
        values[":provisioning"] = Status.PROVISIONING.value
        return dynamo.update(
            self._resources,
            {"id": resource.id},
            expression,
            values,
            condition="#s = :provisioning",  # never resurrect a record the reaper collected
            names={"#s": "status"},
        )

    def delete_item(self, resource: Resource) -> dict[str, Any]:
        """Remove the record, only if it is still in the state it was read in."""
        return dynamo.delete(
            self._resources,
            {"id": resource.id},
            "#s = :seen",
            {":seen": resource.status.value},
            {"#s": "status"},
        )

    def expire_item(self, resource: Resource, now: int) -> dict[str, Any]:
        """Mark expired, only if nobody else changed the record since it was read."""
        return dynamo.update(
            self._resources,
            {"id": resource.id},
            "SET #s = :expired, #ttl = :ttl REMOVE expiry_shard, placement",
            {
                ":expired": Status.EXPIRED.value,
                ":ttl": now + EXPIRED_RECORD_RETENTION_SECONDS,
                ":seen": resource.status.value,
            },
            condition="#s = :seen",
            names={"#s": "status", "#ttl": "ttl"},
        )

    def take_reaper_lease(self, resource: Resource, now: int, seconds: int) -> bool:
        """Let one reaper at a time work on a record (two runs at once are safe)."""
        return self._db.update_if(
            self._resources,
            {"id": resource.id},
            "SET reaper_lease = :until",
            "#s = :seen AND (attribute_not_exists(reaper_lease) OR reaper_lease < :now)",
            {":until": now + seconds, ":now": now, ":seen": resource.status.value},
            names={"#s": "status"},
        )

    def take_slot(self, key: str, limit: int, ttl: int) -> bool:
        """Count one use under ``key`` unless ``limit`` is reached (a fixed-window rate limit)."""
        return self._db.apply_if(self._count(key, 1, limit=limit, ttl=ttl))

    def charge(
        self, resource: Resource, max_resources: int | None, daily_limit: int | None, now: int
    ) -> Charge:
        """Counter increments that fail when the cap or the daily limit is already reached."""
        return Charge(
            cap=self._count(self._active_key(resource), 1, limit=max_resources),
            daily=None
            if daily_limit is None
            else self._count(
                self._day_key(resource.owner, now),
                1,
                limit=daily_limit,
                ttl=now + DAY_COUNTER_RETENTION_SECONDS,
            ),
            backend=self._count(self._backend_key(resource.ref.backend), 1),
        )

    def refund_items(self, resource: Resource, now: int, daily: bool) -> list[dict[str, Any]]:
        """The inverse of ``charge`` (``daily`` False on expiry: the provision did happen)."""
        items = [
            self._count(self._active_key(resource), -1),
            self._count(self._backend_key(resource.ref.backend), -1),
        ]
        if daily:
            items.append(self._count(self._day_key(resource.owner, now), -1))
        return items

    # -- reads ------------------------------------------------------------------------------
    def get(self, resource_id: str) -> Resource | None:
        item = self._db.get(self._resources, {"id": resource_id}, consistent=True)
        return self._from_item(item) if item else None

    def live_by_token(self, token: str, kind: Kind, now: float) -> Resource | None:
        """The active, unexpired resource of ``kind`` that ``token`` names, else None."""
        found = self.get(resource_id_of(token))
        if (
            found is None
            or not hmac.compare_digest(found.token.encode(), token.encode())
            or found.kind is not kind
            or found.status is not Status.ACTIVE
            or (found.expires_at is not None and found.expires_at <= now)
        ):
            return None
        return found

    def active_of(self, owner: str, kind: Kind) -> Resource | None:
        """The newest active resource of ``kind`` held by ``owner``."""
        items = self._db.query(
            self._resources,
            "by_owner",
            "#o = :o",
            {":o": owner, ":k": kind.value, ":a": Status.ACTIVE.value},
            names={"#o": "owner", "#k": "kind", "#s": "status"},
            filter_expression="#k = :k AND #s = :a",
        )
        found = [self._from_item(i) for i in items]
        return max(found, key=lambda r: r.created_at) if found else None

    def due(self, shard: int, now: int, page_size: int = 100) -> Iterator[Resource]:
        """Records in one expiry shard whose expiry (or provisioning lease) has passed."""
        items = self._db.query(
            self._resources,
            "by_expiry",
            "expiry_shard = :s AND expires_at <= :now",
            {":s": str(shard), ":now": now},
            page_size=page_size,
        )
        return (self._from_item(i) for i in items)

    def placed_on(self, kind: Kind, backend: str) -> Iterator[Resource]:
        """Every active resource of ``kind`` on ``backend``."""
        items = self._db.query(
            self._resources,
            "by_placement",
            "placement = :p",
            {":p": _placement(kind, backend)},
        )
        return (self._from_item(i) for i in items)

    def backend_loads(self, names: list[str]) -> dict[str, int]:
        """Active resources (of every kind) per backend server name."""
        keys = [{"pk": self._backend_key(n)} for n in names]
        loads = {
            item["pk"]: int(item.get("n", 0)) for item in self._db.batch_get(self._counters, keys)
        }
        return {n: loads.get(self._backend_key(n), 0) for n in names}

    # -- mapping ----------------------------------------------------------------------------
    def shard_of(self, resource_id: str) -> int:
        return zlib.crc32(resource_id.encode()) % self._shards

    def _to_item(self, r: Resource) -> Item:
        item: Item = {
            "id": r.id,
            "token": r.token,
            "kind": r.kind.value,
            "name": r.name,
            "owner": r.owner,
            "tier": r.tier,
            "status": r.status.value,
            "backend": r.ref.backend,
            "namespace": r.ref.namespace,
            "principal": r.ref.principal,
            "created_at": r.created_at,
        }
        if r.expires_at is not None:
            item["expires_at"] = r.expires_at
            item["expiry_shard"] = str(self.shard_of(r.id))
        return item

    @staticmethod
    def _from_item(item: Item) -> Resource:
        return Resource(
            id=item["id"],
            token=item["token"],
            kind=Kind(item["kind"]),
            name=item["name"],
            owner=item["owner"],
            tier=item["tier"],
            status=Status(item["status"]),
            ref=BackendRef(item["backend"], item["namespace"], item["principal"]),
            created_at=item["created_at"],
            expires_at=item.get("expires_at"),
            stored=item.get("provider_data", {}),
        )

    def _count(
        self, key: str, delta: int, limit: int | None = None, ttl: int | None = None
    ) -> dict[str, Any]:
        values: dict[str, Any] = {":d": delta}
        expression = "ADD n :d"
        if ttl is not None:
            expression += " SET #ttl = :ttl"
            values[":ttl"] = ttl
        condition = None
        if limit is not None:
            condition = "attribute_not_exists(n) OR n < :limit"
            values[":limit"] = limit
        return dynamo.update(
            self._counters,
            {"pk": key},
            expression,
            values,
            condition=condition,
            names={"#ttl": "ttl"} if ttl is not None else None,
        )

    @staticmethod
    def _active_key(r: Resource) -> str:
        return f"active#{r.owner}#{r.kind.value}"

    @staticmethod
    def _day_key(owner: str, now: int) -> str:
        return f"day#{owner}#{datetime.fromtimestamp(now, UTC).date().isoformat()}"

    @staticmethod
    def _backend_key(backend: str) -> str:
        return f"backend#{backend}"


def _placement(kind: Kind, backend: str) -> str:
    return f"{kind.value}#{backend}"
