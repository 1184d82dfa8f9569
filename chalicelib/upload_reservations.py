"""The bytes a storage prefix's live presigned uploads may still write, so that all the URLs
minted while it was under quota fit the quota together, whenever they are used.

A presigned PUT carries its signed size, a presigned POST its ``content-length-range`` maximum:
each is reserved for its key until the URL expires. A key holds one object at a time, so it
counts for the larger of its stored size and its largest live reservation (a URL used twice,
or a key overwritten, costs nothing more). Without this a tenant could mint 60 URLs a minute
for an hour before uploading anything, each for the whole remaining quota.

One counters-table item per prefix, ``reserved#<backend>#<prefix>`` (the prefix outlives token
rotations and claims): ``r`` maps a key's digest to ``[bytes, expires_at]``, ``v`` is a version
that each write must match, so two presigns at once cannot both take the last bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from chalicelib.dynamo import Dynamo
from chalicelib.models import BackendRef


def digest(key: str) -> str:
    """The ledger's name of an object key (keys are up to 1 KiB; the item has a size limit)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Ledger:
    """A prefix's live reservations as read at ``version`` (0: no item yet)."""

    version: int = 0
    entries: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # digest: bytes, expiry

    def reserved(self, key: str) -> int:
        return self.entries.get(digest(key), (0, 0))[0]

    def committed(self, sizes: Mapping[str, int]) -> int:
        """Bytes the prefix holds or may come to hold: per key, stored size or reservation."""
        stored = {digest(key): size for key, size in sizes.items()}
        names = stored.keys() | self.entries.keys()
        return sum(max(stored.get(n, 0), self.entries.get(n, (0, 0))[0]) for n in names)

    def room_for(self, key: str, sizes: Mapping[str, int], limit: int) -> int:
        """The largest object ``key`` may hold within ``limit`` (its own bytes are freed)."""
        own = max(sizes.get(key, 0), self.reserved(key))
        return limit - (self.committed(sizes) - own)

    def with_reservation(self, key: str, size: int, expires_at: int) -> Ledger:
        name = digest(key)
        old_size, old_expiry = self.entries.get(name, (0, 0))
        entries = {**self.entries, name: (max(size, old_size), max(expires_at, old_expiry))}
        return Ledger(self.version, entries)


class Reservations:
    def __init__(self, db: Dynamo, table: str) -> None:
        self._db = db
        self._table = table

    @staticmethod
    def _pk(ref: BackendRef) -> str:
        return f"reserved#{ref.backend}#{ref.namespace}"

    def read(self, ref: BackendRef, now: int) -> Ledger:
        """The prefix's unexpired reservations (consistent read)."""
        item = self._db.get(self._table, {"pk": self._pk(ref)}, consistent=True)
        if item is None:
            return Ledger()
        entries = {
            name: (int(size), int(expiry))
            for name, (size, expiry) in item.get("r", {}).items()
            if int(expiry) > now
        }
        return Ledger(int(item["v"]), entries)

    def write(self, ref: BackendRef, ledger: Ledger) -> bool:
        """Store ``ledger`` unless another write came after it was read (then False)."""
        entries = {name: [size, expiry] for name, (size, expiry) in ledger.entries.items()}
        item = {
            "pk": self._pk(ref),
            "v": ledger.version + 1,
            "r": entries,
            "ttl": max((expiry for _, expiry in ledger.entries.values()), default=0),
        }
        return self._db.put_if(
            self._table, item, "attribute_not_exists(pk) OR v = :v", {":v": ledger.version}
        )
