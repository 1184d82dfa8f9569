"""Idempotency records (spec convention 7), two layers:

* explicit: the ``Idempotency-Key`` header, remembered 24 h; the same key with another body is a
  conflict.
* fingerprint: no header; ``sha256(scope, route, canonical body)`` dedups for 120 s.

A request claims its key with a conditional put (INPROGRESS, with a lease), in the same
transaction that reserves the resource where there is one (``claim_item``) or on its own
(``once``); completion stores the response (sealed, see sealing.py: it holds credentials) for
replays. A request that finds its key taken gets the stored answer (``replay``), waiting a
moment while the first one still runs; the same key with another body is a 409.

The lease outlives the API's timeout (config.py checks it), so a claim whose lease is over
belongs to a request that is dead. A claim without a holder is then simply taken over; a
provision's claim names its PROVISIONING record (``holder``) and is not: the caller must first
remove what the dead request made (ProvisionService does), so a retry neither waits for the
reaper nor pays twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from chalicelib import dynamo, errors
from chalicelib.dynamo import Dynamo, Item
from chalicelib.sealing import Sealer

log = logging.getLogger(__name__)

EXPLICIT_TTL_SECONDS = 24 * 3600
FINGERPRINT_TTL_SECONDS = 120
MAX_KEY_LENGTH = 255
IN_PROGRESS_WAIT_SECONDS = 3.0
IN_PROGRESS_POLL_SECONDS = 0.1
IN_PROGRESS_RETRY_SECONDS = 5  # Retry-After of a 409 in progress, or less when the lease ends


@dataclass(frozen=True)
class Outcome:
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


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

    @property
    def first_source(self) -> Source:
        """``X-Idempotency-Source`` of the call that made the record: ``explicit`` whenever an
        Idempotency-Key came along, ``miss`` on the fingerprint path."""
        return Source.EXPLICIT if self.source is Source.EXPLICIT else Source.MISS


@dataclass(frozen=True)
class Record:
    state: State
    body_hash: str
    status_code: int
    body: dict[str, Any]
    lease_until: int = 0  # INPROGRESS: the request holding the key is dead after this
    holder: str = ""  # INPROGRESS: the id of the PROVISIONING record the request made

    def abandoned(self, now: int) -> bool:
        """A provision holds the key, and its lease is over: the request died."""
        return self.state is State.IN_PROGRESS and bool(self.holder) and self.lease_until < now


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
    def __init__(
        self, db: Dynamo, table: str, sealer: Sealer, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._table = table
        self._sealer = sealer
        self._clock = clock

    def once(
        self, key: Key, lease_seconds: int, create: Callable[[], tuple[int, dict[str, Any]]]
    ) -> Outcome:
        """Run ``create`` (status, body) once per key: a retry gets the first answer. The key is
        given back when ``create`` raises, so a failed attempt can be retried."""
        now = int(self._clock())
        try:
            self._db.transact([self.claim_item(key, now, lease_seconds)])
        except dynamo.TransactionCancelled as exc:
            held = exc.reasons[0].item
            if held is None:
                raise
            return self.replay(key, self.record_of(held))
        try:
            status, body = create()
        except Exception:
            self._db.transact([self.release_item(key)])
            raise
        try:
            self._db.transact([self.complete_item(key, now, status, body)])
        except Exception:  # done, but not remembered: a retry would make another
            log.exception("could not record the answer of %s", key.source.value)
        return Outcome(status, body, {"X-Idempotency-Source": key.first_source.value})

    def replay(self, key: Key, record: Record) -> Outcome:
        """The stored answer of the request that holds ``key``."""
        if record.body_hash != key.body_hash:
            raise errors.IdempotencyKeyConflictError(
                "This Idempotency-Key was already used with a different request body.",
                agent_action="Send a new Idempotency-Key (a fresh UUID) for a different request.",
            )
        waited_until = time.monotonic() + IN_PROGRESS_WAIT_SECONDS
        while record.state is State.IN_PROGRESS and time.monotonic() < waited_until:
            time.sleep(IN_PROGRESS_POLL_SECONDS)
            record = self.get(key) or record
        if record.state is State.IN_PROGRESS:
            lapses_in = max(record.lease_until - int(self._clock()), 1)
            retry = min(lapses_in, IN_PROGRESS_RETRY_SECONDS)
            raise errors.IdempotencyInProgressError(
                "The first request with this idempotency key is still running; if it died, "
                f"its claim lapses within {lapses_in} s and a retry then starts afresh.",
                headers={"Retry-After": str(retry)},
                retry_after_seconds=retry,
            )
        headers = {"X-Idempotent-Replay": "true", "X-Idempotency-Source": key.source.value}
        return Outcome(record.status_code, record.body, headers)

    def claim_item(
        self, key: Key, now: int, lease_seconds: int, holder: str = ""
    ) -> dict[str, Any]:
        """Take the key unless a live record holds it. An abandoned lease is taken over when
        its claim has no ``holder`` (see ``Record.abandoned`` for those that do)."""
        item = {
            "pk": key.pk,
            "state": State.IN_PROGRESS.value,
            "body_hash": key.body_hash,
            "lease_until": now + lease_seconds,
            "expires_at": now + key.ttl_seconds,
            "ttl": now + key.ttl_seconds,
        }
        return dynamo.put(
            self._table,
            {**item, "holder": holder} if holder else item,
            condition="attribute_not_exists(pk) OR expires_at < :now "
            "OR (#st = :inprogress AND lease_until < :now AND attribute_not_exists(#h))",
            values={":now": now, ":inprogress": State.IN_PROGRESS.value},
            names={"#st": "state", "#h": "holder"},
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

    def release_item(self, key: Key, holder: str = "") -> dict[str, Any]:
        """Give the key back (only while ``holder``'s claim holds it, when one is named)."""
        if not holder:
            return dynamo.delete(self._table, {"pk": key.pk})
        return dynamo.delete(
            self._table,
            {"pk": key.pk},
            "#h = :h AND #st = :inprogress",
            {":h": holder, ":inprogress": State.IN_PROGRESS.value},
            {"#h": "holder", "#st": "state"},
        )

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
            lease_until=int(item.get("lease_until", 0)),
            holder=str(item.get("holder", "")),
        )
