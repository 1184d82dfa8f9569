"""What the deployments and stacks tables have in common (no HTTP, no backend calls).

Both hold live compute an owner pays a slot for: the owner's app count lives in the counters
table (``apps#<owner>``, one cap for apps and stacks together), charged in the transaction that
writes a new record and given back in the one that retires it. Every write after the first is
conditional on the record's ``version`` (and writes the next one), so a poller, a redeploy, a
tier change and a deletion never overwrite each other's change. Env vars are customer secrets:
sealed (AES-GCM, bound to the record's key). A record with a TTL sits in the sparse
``by_expiry`` index (expiry_shard, expires_at) the reaper walks; a record waiting for its
deletion to be confirmed carries the token's hash (``PendingDeletion``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib import dynamo, errors
from chalicelib.dynamo import Dynamo, Item
from chalicelib.sealing import ResealReport, SealedColumn, Sealer

RETIRED_RETENTION_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class PendingDeletion:
    """A deletion asked for and not yet confirmed: the emailed token's hash, and its end."""

    token_hash: str
    expires_at: int

    def status(self, now: int) -> str:
        return "pending_confirmation" if now < self.expires_at else "expired"


class Records:
    """One table of versioned, owner-counted records keyed by ``key_attr``."""

    def __init__(
        self,
        db: Dynamo,
        table: str,
        key_attr: str,
        counters: str,
        sealer: Sealer,
        shards: int,
    ) -> None:
        self._db = db
        self._table = table
        self._key_attr = key_attr
        self._counters = counters
        self._sealer = sealer
        self._shards = shards

    def create_item(self, item: Item, owner: str, max_apps: int | None) -> bool:
        """Write a new record, charging one app against ``max_apps`` (None: not counted);
        False when the cap is full."""
        put = dynamo.put(self._table, item, f"attribute_not_exists({self._key_attr})")
        if max_apps is None:
            self._db.transact([put])
            return True
        charge = dynamo.update(
            self._counters,
            {"pk": _apps_key(owner)},
            "ADD n :one",
            {":one": 1, ":cap": max_apps},
            condition="attribute_not_exists(n) OR n < :cap",
        )
        try:
            self._db.transact([put, charge])
        except dynamo.TransactionCancelled as exc:
            if exc.reasons[1].failed:
                return False
            raise
        return True

    def replace_item(self, item: Item, seen_version: int) -> bool:
        """Put ``item`` (carrying ``seen_version + 1``) if the record is still at
        ``seen_version``."""
        return self._db.put_if(self._table, item, "version = :v", {":v": seen_version})

    def retire_item(
        self, item: Item, seen_version: int, owner: str, counted: bool, now: int
    ) -> bool:
        """Put the retired ``item`` (kept 30 days, then DynamoDB's TTL drops it) if the record
        is still at ``seen_version``, giving a counted record's slot back in the same go."""
        ops = [
            dynamo.put(
                self._table,
                {**item, "ttl": now + RETIRED_RETENTION_SECONDS},
                "version = :v",
                {":v": seen_version},
            )
        ]
        if counted:
            ops.append(
                dynamo.update(self._counters, {"pk": _apps_key(owner)}, "ADD n :m", {":m": -1})
            )
        try:
            self._db.transact(ops)
        except dynamo.TransactionCancelled:
            return False
        return True

    def get_item(self, key: str) -> Item | None:
        return self._db.get(self._table, {self._key_attr: key}, consistent=True)

    def owned_items(self, owner: str) -> list[Item]:
        items = self._db.query(self._table, "by_owner", "#o = :o", {":o": owner}, {"#o": "owner"})
        return sorted(items, key=lambda i: -int(i["created_at"]))

    def live_items(self, attributes: Sequence[str]) -> Iterator[Item]:
        """``attributes`` of every record not retired (deleted or expired): whatever may still
        hold backend objects. A whole-table read, for the reconciler only."""
        retired = ("deleted", "expired")
        items = self._db.scan(self._table, ["status", *attributes])
        return (i for i in items if i.get("status") not in retired)

    def due_items(self, shard: int, now: int) -> Iterator[Item]:
        return iter(
            self._db.query(
                self._table,
                "by_expiry",
                "expiry_shard = :s AND expires_at <= :now",
                {":s": str(shard), ":now": now},
            )
        )

    def reseal_env(self) -> ResealReport:
        """Seal every record's env again under the current key where it is not already (a
        JWT-secret rotation, before the previous secret is dropped); safe beside the API: a
        reseal changes no ``version``, and loses to any write made since its read."""
        return SealedColumn(self._db, self._table, self._key_attr, "env", self._sealer).reseal()

    # -- mapping helpers --------------------------------------------------------------------
    def seal(self, value: Any, key: str) -> bytes:
        return self._sealer.seal(json.dumps(value).encode(), key)

    def unseal(self, blob: Any, key: str) -> Any:
        return json.loads(self._sealer.open(bytes(blob), key))

    def shard_of(self, key: str) -> str:
        return dynamo.shard_of(key, self._shards)

    def lifecycle_attrs(
        self, key: str, expires_at: int | None, live: bool, deletion: PendingDeletion | None
    ) -> Item:
        """The TTL index attributes of a live record with an expiry, and a pending deletion."""
        attrs: Item = {}
        if expires_at is not None and live:
            attrs |= {"expires_at": expires_at, "expiry_shard": self.shard_of(key)}
        if deletion is not None:
            attrs |= {
                "deletion_token_hash": deletion.token_hash,
                "deletion_expires_at": deletion.expires_at,
            }
        return attrs


def changed_meanwhile(kind: str) -> errors.ApiError:
    """The answer when a record changed between this request's read and its write."""
    return errors.IdempotencyInProgressError(
        f"The {kind} changed while this request ran (a build moved on, or another request); retry.",
        headers={"Retry-After": "1"},
    )


def deletion_of(item: Item) -> PendingDeletion | None:
    if "deletion_token_hash" not in item:
        return None
    return PendingDeletion(item["deletion_token_hash"], int(item["deletion_expires_at"]))


def _apps_key(owner: str) -> str:
    return f"apps#{owner}"
