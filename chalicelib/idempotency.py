"""Idempotency records (spec convention 7), two layers:

* explicit: the ``Idempotency-Key`` header, remembered 24 h; the same key with another body is a
  conflict.
* fingerprint: no header; ``sha256(scope, route, canonical body)`` dedups for 120 s.

A request claims its key with a conditional put (INPROGRESS, with a lease) in the same
transaction that reserves the resource; completion stores the response (sealed, see
sealing.py: it holds credentials) for replays.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chalicelib import dynamo
from chalicelib.dynamo import Dynamo, Item
from chalicelib.sealing import Sealer

EXPLICIT_TTL_SECONDS = 24 * 3600
FINGERPRINT_TTL_SECONDS = 120
MAX_KEY_LENGTH = 255


class Source(StrEnum):
    EXPLICIT = "explicit"
    FINGERPRINT = "fingerprint"
    MISS = "miss"


class State(StrEnum):
    IN_PROGRESS = "INPROGRESS"
    COMPLETED = "COMPLETED"


@dataclass(frozen=True)
class Key:
    pk: str
    source: Source
    body_hash: str
    ttl_seconds: int


@dataclass(frozen=True)
class Record:
    state: State
    body_hash: str
    status_code: int
    body: dict[str, Any]


def canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def derive_key(scope: str, route: str, body: dict[str, Any], header: str | None) -> Key:
    body_hash = _sha(route, canonical(body))
    if header:
        return Key(f"key#{_sha(scope, header)}", Source.EXPLICIT, body_hash, EXPLICIT_TTL_SECONDS)
    return Key(
        f"fp#{_sha(scope, route, canonical(body))}",
        Source.FINGERPRINT,
        body_hash,
        FINGERPRINT_TTL_SECONDS,
    )


class IdempotencyStore:
    def __init__(self, db: Dynamo, table: str, sealer: Sealer) -> None:
        self._db = db
        self._table = table
        self._sealer = sealer

    def claim_item(self, key: Key, now: int, lease_seconds: int) -> dict[str, Any]:
        """Take the key unless a live record holds it (an abandoned lease may be taken over)."""
        return dynamo.put(
            self._table,
            {
                "pk": key.pk,
                "state": State.IN_PROGRESS.value,
                "body_hash": key.body_hash,
                "lease_until": now + lease_seconds,
                "expires_at": now + key.ttl_seconds,
                "ttl": now + key.ttl_seconds,
            },
            condition="attribute_not_exists(pk) OR expires_at < :now "
            "OR (#st = :inprogress AND lease_until < :now)",
            values={":now": now, ":inprogress": State.IN_PROGRESS.value},
            names={"#st": "state"},
        )

    def complete_item(
        self, key: Key, now: int, status_code: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        return dynamo.put(
            self._table,
            {
                "pk": key.pk,
                "state": State.COMPLETED.value,
                "body_hash": key.body_hash,
                "status_code": status_code,
                "response": self._sealer.seal(json.dumps(body).encode(), key.pk),
                "expires_at": now + key.ttl_seconds,
                "ttl": now + key.ttl_seconds,
            },
        )

    def release_item(self, key: Key) -> dict[str, Any]:
        return dynamo.delete(self._table, {"pk": key.pk})

    def get(self, key: Key) -> Record | None:
        item = self._db.get(self._table, {"pk": key.pk}, consistent=True)
        return self.record_of(item) if item else None

    def record_of(self, item: Item) -> Record:
        body: dict[str, Any] = {}
        if "response" in item:
            body = json.loads(self._sealer.open(bytes(item["response"]), item["pk"]))
        return Record(
            state=State(item["state"]),
            body_hash=item["body_hash"],
            status_code=int(item.get("status_code", 0)),
            body=body,
        )
