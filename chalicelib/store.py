"""DynamoDB persistence of resource records and counters (no HTTP, no backend logic).

Tables (names from config; infra/terraform/dynamodb.tf creates the same):
  resources   pk ``id``; GSI ``by_owner`` (owner, created_at); sparse GSI ``by_expiry``
              (expiry_shard, expires_at) holding only records the reaper must visit; sparse GSI
              ``by_placement`` (placement = ``<kind>#<backend>``, created_at) holding the
              provisioning and active records of a server, for the quota job and the
              reconciler (retiring a record takes it out).
              A rotated token adds an alias item (``id`` = the new token's hash, ``alias_of``),
              so token lookups stay one key away from the record.
              No record holds its bearer token in clear: ``token_hash`` (SHA-256) checks a
              presented token, ``token_sealed`` (AES-GCM under the platform key, bound to the
              record's id) gives it back where the API must (spec convention 6, the owner's
              listing); ``reseal_tokens`` moves them to the current key after a rotation.
              Records of the old format (``token`` in clear) are rewritten the first
              time anything reads them, and ``seal_plain_tokens`` rewrites the rest in one pass.
  counters    pk ``pk``: ``day#<owner>#<date>`` provisions today, ``active#<owner>#<kind>``
              active resources, ``backend#<name>`` resources placed on a backend server,
              ``recycle#<owner>`` the anonymous resource of a network that expired unclaimed.
Methods named ``*_item`` build transaction items; the service commits them in one round trip.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from chalicelib import dynamo
from chalicelib.accounts import secret_hash
from chalicelib.config import Settings
from chalicelib.dynamo import Dynamo, Item, from_wire
from chalicelib.models import BackendRef, Kind, Resource, Status
from chalicelib.sealing import ResealReport, SealedColumn, Sealer

EXPIRED_RECORD_RETENTION_SECONDS = 30 * 24 * 3600
DAY_COUNTER_RETENTION_SECONDS = 2 * 24 * 3600
RECYCLE_MARK_RETENTION_SECONDS = 30 * 24 * 3600
TOKEN_SEAL_LABEL = b"instanode/resource-token/v1"


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
    return "res_" + secret_hash(token)[:20]


class ResourceStore:
    def __init__(self, db: Dynamo, settings: Settings) -> None:
        self._db = db
        self._resources = settings.resources_table
        self._counters = settings.counters_table
        self._shards = settings.expiry_shards
        self._sealer = Sealer(settings.jwt_keys, TOKEN_SEAL_LABEL)

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

    def retire_items(
        self, resource: Resource, now: int, status: Status = Status.EXPIRED
    ) -> list[dict[str, Any]]:
        """Mark expired (or deleted), only if nobody else changed the record since it was read;
        a rotated token's alias goes with it."""
        retire = dynamo.update(
            self._resources,
            {"id": resource.id},
            "SET #s = :retired, #ttl = :ttl REMOVE expiry_shard, placement",
            {
                ":retired": status.value,
                ":ttl": now + EXPIRED_RECORD_RETENTION_SECONDS,
                ":seen": resource.status.value,
            },
            condition="#s = :seen",
            names={"#s": "status", "#ttl": "ttl"},
        )
        alias = [dynamo.delete(self._resources, {"id": resource.alias_id})]
        return [retire, *(alias if resource.alias_id else [])]

    def move_items(
        self, resource: Resource, owner: str, tier: str, expires_at: int | None
    ) -> list[dict[str, Any]]:
        """Hand an active resource to another owner (a claim): record and both cap counters."""
        moved = replace(resource, owner=owner)
        return [
            self._retier(resource, tier, expires_at, {"owner": owner}),
            self._count(self._active_key(resource), -1),
            self._count(self._active_key(moved), 1),
        ]

    def retier_item(self, resource: Resource, tier: str, expires_at: int | None) -> dict[str, Any]:
        """Put an active resource on another tier (and its expiry with it)."""
        return self._retier(resource, tier, expires_at, {})

    def _retier(
        self, r: Resource, tier: str, expires_at: int | None, more: dict[str, str]
    ) -> dict[str, Any]:
        sets = ["tier = :tier", *(f"#{k} = :{k}" for k in more)]
        values: dict[str, Any] = {":tier": tier, ":active": Status.ACTIVE.value, ":seen": r.owner}
        values.update({f":{k}": v for k, v in more.items()})
        names = {"#s": "status", "#owner_seen": "owner", **{f"#{k}": k for k in more}}
        if expires_at is None:
            tail = " REMOVE expires_at, expiry_shard"
        else:
            sets += ["expires_at = :exp", "expiry_shard = :shard"]
            values.update({":exp": expires_at, ":shard": dynamo.shard_of(r.id, self._shards)})
            tail = ""
        return dynamo.update(
            self._resources,
            {"id": r.id},
            "SET " + ", ".join(sets) + tail,
            values,
            condition="#s = :active AND #owner_seen = :seen",
            names=names,
        )

    def credentials_item(self, resource: Resource, principal: str, stored: dict[str, str]) -> Any:
        """Record rotated credentials: the new principal and what the provider keeps."""
        return dynamo.update(
            self._resources,
            {"id": resource.id},
            "SET principal = :p, provider_data = :stored",
            {":p": principal, ":stored": stored, ":active": Status.ACTIVE.value},
            condition="#s = :active",
            names={"#s": "status"},
        )

    def token_items(self, resource: Resource, new_token: str) -> list[dict[str, Any]]:
        """Replace a resource's token (for kinds whose token is the credential): the record
        takes the new token's hash and sealed copy, an alias item points the new token's id at
        the record, and the previous alias goes. The old token then matches nothing."""
        alias = resource_id_of(new_token)
        sealed = self._token_attrs(new_token, resource.id)
        items = [
            dynamo.update(
                self._resources,
                {"id": resource.id},
                "SET token_hash = :token_hash, token_sealed = :token_sealed, alias_id = :alias",
                {**_values(sealed), ":old": resource.token_hash, ":alias": alias},
                condition="token_hash = :old",
            ),
            dynamo.put(
                self._resources, {"id": alias, "alias_of": resource.id}, "attribute_not_exists(id)"
            ),
        ]
        if resource.alias_id:
            items.append(dynamo.delete(self._resources, {"id": resource.alias_id}))
        return items

    def recycle_mark_item(self, resource: Resource, now: int) -> dict[str, Any]:
        """Remember that this anonymous network let a resource expire unclaimed."""
        return dynamo.update(
            self._counters,
            {"pk": self._recycle_key(resource.owner)},
            "SET expired_id = :id, #ttl = :ttl",
            {":id": resource.id, ":ttl": now + RECYCLE_MARK_RETENTION_SECONDS},
            names={"#ttl": "ttl"},
        )

    def recycle_check_item(self, owner: str) -> dict[str, Any]:
        """Cancels a provision while the network has an unclaimed expiry on file."""
        return dynamo.check(
            self._counters,
            {"pk": self._recycle_key(owner)},
            "attribute_not_exists(expired_id) OR claimed = :yes",
            {":yes": True},
        )

    def mark_claimed(self, owner: str) -> None:
        """The network claimed once: its expiries no longer block provisioning."""
        self._db.update_item(
            self._counters,
            {"pk": self._recycle_key(owner)},
            "SET claimed = :yes REMOVE #ttl",
            {":yes": True},
            names={"#ttl": "ttl"},
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
        if item and "alias_of" in item:  # a rotated token's id: one more key to the record
            item = self._db.get(self._resources, {"id": item["alias_of"]}, consistent=True)
        return self._resource(item) if item else None

    def owned_page(self, owner: str, limit: int, start: Item | None) -> tuple[list[Resource], Any]:
        """One page of ``owner``'s records, newest first, and the key the next page starts at."""
        page = self._db.page(
            self._resources, "by_owner", "#o = :o", {":o": owner}, limit, start, {"#o": "owner"}
        )
        return [self._resource(i) for i in page.items], page.next_key

    def active_owned(self, owner: str) -> list[Resource]:
        items = self._db.query(
            self._resources,
            "by_owner",
            "#o = :o",
            {":o": owner, ":a": Status.ACTIVE.value},
            names={"#o": "owner", "#s": "status"},
            filter_expression="#s = :a",
        )
        return [self._resource(i) for i in items]

    def recycle_blocker(self, owner: str) -> str | None:
        """The id of the resource whose unclaimed expiry blocks this network, if any."""
        item = self._db.get(self._counters, {"pk": self._recycle_key(owner)}, consistent=True)
        if not item or item.get("claimed"):
            return None
        return str(item["expired_id"]) if item.get("expired_id") else None

    def live_by_token(self, token: str, kind: Kind, now: float) -> Resource | None:
        """The active, unexpired resource of ``kind`` that ``token`` names, else None."""
        found = self.get(resource_id_of(token))
        if (
            found is None
            or not hmac.compare_digest(found.token_hash, secret_hash(token))
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
        found = [self._resource(i) for i in items]
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
        return (self._resource(i) for i in items)

    def placed_on(self, kind: Kind, backend: str) -> Iterator[Resource]:
        """Every active resource of ``kind`` on ``backend``."""
        return (r for r in self.held_on(kind, backend) if r.status is Status.ACTIVE)

    def held_on(self, kind: Kind, backend: str) -> Iterator[Resource]:
        """Every resource of ``kind`` that holds (or is being given) an object on ``backend``:
        the provisioning and active records."""
        items = self._db.query(
            self._resources,
            "by_placement",
            "placement = :p",
            {":p": _placement(kind, backend)},
        )
        return (self._resource(i) for i in items)

    def backend_loads(self, names: list[str]) -> dict[str, int]:
        """Active resources (of every kind) per backend server name."""
        keys = [{"pk": self._backend_key(n)} for n in names]
        loads = {
            item["pk"]: int(item.get("n", 0)) for item in self._db.batch_get(self._counters, keys)
        }
        return {n: loads.get(self._backend_key(n), 0) for n in names}

    def token_of(self, r: Resource) -> str:
        """``r``'s token in clear: the one a request just minted, or the record's sealed copy
        opened (active records only: the API gives no retired record's token back)."""
        if r.token is not None:
            return r.token
        return self._sealer.open(r.sealed_token, r.id).decode()

    # -- migration --------------------------------------------------------------------------
    def reseal_tokens(self) -> ResealReport:
        """Seal every record's token again under the current key where it is not already (a
        JWT-secret rotation, before the previous secret is dropped); safe beside the API."""
        return SealedColumn(self._db, self._resources, "id", "token_sealed", self._sealer).reseal()

    def seal_plain_tokens(self) -> int:
        """Rewrite every record still holding its token in clear, in one pass over the table
        (reads rewrite such a record anyway; this reaches those nobody reads). Returns how many
        it found; safe to run again, and beside the API."""
        scan: dict[str, Any] = {
            "TableName": self._resources,
            "FilterExpression": "attribute_exists(#token)",
            "ExpressionAttributeNames": {"#token": "token"},
        }
        found = 0
        while True:
            page = self._db.client.scan(**scan)
            for raw in page.get("Items", []):
                self._seal_plain_token(from_wire(raw))
                found += 1
            if "LastEvaluatedKey" not in page:
                return found
            scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _seal_plain_token(self, item: Item) -> Item:
        """Rewrite an old-format record (its token in clear) to the hash and the sealed copy;
        the record as it is now. A record another reader rewrote first is left alone."""
        plain = str(item["token"])
        sealed = self._token_attrs(plain, item["id"])
        self._db.update_if(
            self._resources,
            {"id": item["id"]},
            "SET token_hash = :token_hash, token_sealed = :token_sealed REMOVE #token",
            "#token = :plain",
            {**_values(sealed), ":plain": plain},
            names={"#token": "token"},
        )
        return {**{k: v for k, v in item.items() if k != "token"}, **sealed}

    # -- mapping ----------------------------------------------------------------------------
    def _token_attrs(self, token: str, record_id: str) -> Item:
        """What a record keeps of its token: the hash, and the token sealed to the record."""
        return {
            "token_hash": secret_hash(token),
            "token_sealed": self._sealer.seal(token.encode(), record_id),
        }

    def _to_item(self, r: Resource) -> Item:
        item: Item = {
            "id": r.id,
            **self._token_attrs(self.token_of(r), r.id),
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
        if r.status in (Status.PROVISIONING, Status.ACTIVE):
            item["placement"] = _placement(r.kind, r.ref.backend)
        if r.expires_at is not None:
            item["expires_at"] = r.expires_at
            item["expiry_shard"] = dynamo.shard_of(r.id, self._shards)
        return item

    def _resource(self, item: Item) -> Resource:
        """The record as a Resource (``token`` None: the record has only its hash and sealed
        copy); an old-format record is rewritten first (the lazy migration)."""
        if "token" in item:
            item = self._seal_plain_token(item)
        return Resource(
            id=item["id"],
            token=None,
            kind=Kind(item["kind"]),
            name=item["name"],
            owner=item["owner"],
            tier=item["tier"],
            status=Status(item["status"]),
            ref=BackendRef(item["backend"], item["namespace"], item["principal"]),
            created_at=item["created_at"],
            expires_at=item.get("expires_at"),
            stored=item.get("provider_data", {}),
            alias_id=item.get("alias_id"),
            token_hash=item["token_hash"],
            sealed_token=bytes(item["token_sealed"]),
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

    @staticmethod
    def _recycle_key(owner: str) -> str:
        return f"recycle#{owner}"


def _placement(kind: Kind, backend: str) -> str:
    return f"{kind.value}#{backend}"


def _values(attrs: Item) -> Item:
    """``attrs`` as the expression values ``SET name = :name`` refers to."""
    return {f":{name}": value for name, value in attrs.items()}
