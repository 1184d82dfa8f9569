"""DynamoDB persistence of deployments (no HTTP, no backend calls).

Table ``deployments``, pk ``id``; GSI ``by_owner`` (owner, created_at) lists a team's apps,
``by_name`` (owner_name = "<owner>#<name>", created_at) finds the app a ``redeploy=true`` names,
sparse ``by_expiry`` (expiry_shard, expires_at) holds the apps the reaper must visit.
The team's app count lives in the counters table (``apps#<owner>``), charged in the same
transaction that writes a new app, so the tier's cap holds under concurrent deploys.
Env vars are customer secrets: stored sealed (AES-GCM, bound to the record).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from chalicelib import dynamo
from chalicelib.deploy.backend import DeployStatus
from chalicelib.dynamo import Dynamo, Item
from chalicelib.sealing import Sealer

SEAL_LABEL = b"instanode/deploy-env/v1"
RETIRED_RETENTION_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class Deployment:
    id: str  # "app_<hex>"
    owner: str
    name: str
    slug: str
    url: str
    port: int
    revision: int
    context_key: str
    status: DeployStatus
    ttl_policy: str  # auto_24h | permanent | custom
    created_at: int
    updated_at: int
    expires_at: int | None = None
    error_message: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    deletion_token_hash: str | None = field(default=None, repr=False)
    deletion_expires_at: int | None = None

    def as_json(self) -> dict[str, Any]:
        from chalicelib.service import iso

        return {
            "id": self.id,
            "app_id": self.id,
            "name": self.name,
            "slug": self.slug,
            "url": self.url,
            "status": self.status.value,
            "error_message": self.error_message,
            "port": self.port,
            "revision": self.revision,
            "ttl_policy": self.ttl_policy,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "expires_at": iso(self.expires_at),
            "env_vars": sorted(self.env),  # names only: values are secrets
            "deletion_status": "pending_confirmation" if self.deletion_token_hash else None,
        }


class DeploymentStore:
    def __init__(self, db: Dynamo, table: str, counters: str, sealer: Sealer, shards: int) -> None:
        self._db = db
        self._table = table
        self._counters = counters
        self._sealer = sealer
        self._shards = shards

    # -- writes -----------------------------------------------------------------------------
    def create(self, d: Deployment, max_apps: int) -> bool:
        """Write a new app and count it against the owner's cap; False when the cap is full."""
        try:
            self._db.transact(
                [
                    dynamo.put(self._table, self._to_item(d), "attribute_not_exists(id)"),
                    dynamo.update(
                        self._counters,
                        {"pk": self._apps_key(d.owner)},
                        "ADD n :one",
                        {":one": 1, ":cap": max_apps},
                        condition="attribute_not_exists(n) OR n < :cap",
                    ),
                ]
            )
        except dynamo.TransactionCancelled as exc:
            if exc.reasons[1].failed:
                return False
            raise
        return True

    def save(self, d: Deployment, seen: Deployment) -> bool:
        """Replace the record, only if it is still as ``seen`` (revision and status)."""
        return self._db.put_if(
            self._table,
            self._to_item(d),
            "revision = :rev AND #s = :status",
            {":rev": seen.revision, ":status": seen.status.value},
            {"#s": "status"},
        )

    def retire(self, d: Deployment, status: DeployStatus, now: int) -> bool:
        """Mark deleted or expired and give the app's slot back, in one transaction."""
        retired = replace(d, status=status, updated_at=now, expires_at=None)
        item = {**self._to_item(retired), "ttl": now + RETIRED_RETENTION_SECONDS}
        try:
            self._db.transact(
                [
                    dynamo.put(
                        self._table,
                        item,
                        "#s = :status AND revision = :rev",
                        {":status": d.status.value, ":rev": d.revision},
                        {"#s": "status"},
                    ),
                    dynamo.update(
                        self._counters, {"pk": self._apps_key(d.owner)}, "ADD n :m", {":m": -1}
                    ),
                ]
            )
        except dynamo.TransactionCancelled:
            return False
        return True

    def make_permanent(self, owner: str) -> int:
        """Roll ``owner``'s live ``auto_24h`` apps forward to ``permanent`` (a paid upgrade);
        ``custom`` and ``permanent`` apps are left as they are. Returns how many changed."""
        changed = 0
        for app in self.owned(owner):
            if app.ttl_policy == "auto_24h" and app.status not in _RETIRED:
                kept = replace(app, ttl_policy="permanent", expires_at=None)
                changed += self.save(kept, app)
        return changed

    # -- reads ------------------------------------------------------------------------------
    def get(self, app_id: str) -> Deployment | None:
        item = self._db.get(self._table, {"id": app_id}, consistent=True)
        return self._from_item(item) if item else None

    def by_name(self, owner: str, name: str) -> Deployment | None:
        """The newest live app of ``owner`` called ``name``."""
        items = self._db.query(
            self._table,
            "by_name",
            "owner_name = :on",
            {":on": f"{owner}#{name}"},
        )
        live = [d for d in map(self._from_item, items) if d.status not in _RETIRED]
        return max(live, key=lambda d: d.created_at) if live else None

    def owned(self, owner: str) -> list[Deployment]:
        items = self._db.query(self._table, "by_owner", "#o = :o", {":o": owner}, {"#o": "owner"})
        return sorted(map(self._from_item, items), key=lambda d: -d.created_at)

    def in_progress(self, shard: int) -> Iterator[Deployment]:
        """Apps of one shard still building or deploying (the sparse ``by_progress`` index)."""
        items = self._db.query(
            self._table, "by_progress", "progress_shard = :s", {":s": str(shard)}
        )
        return (self._from_item(i) for i in items)

    def due(self, shard: int, now: int) -> Iterator[Deployment]:
        items = self._db.query(
            self._table,
            "by_expiry",
            "expiry_shard = :s AND expires_at <= :now",
            {":s": str(shard), ":now": now},
        )
        return (self._from_item(i) for i in items)

    # -- mapping ----------------------------------------------------------------------------
    def _to_item(self, d: Deployment) -> Item:
        item: Item = {
            "id": d.id,
            "owner": d.owner,
            "name": d.name,
            "owner_name": f"{d.owner}#{d.name}",
            "slug": d.slug,
            "url": d.url,
            "port": d.port,
            "revision": d.revision,
            "context_key": d.context_key,
            "status": d.status.value,
            "ttl_policy": d.ttl_policy,
            "created_at": d.created_at,
            "updated_at": d.updated_at,
            "env": self._sealer.seal(json.dumps(dict(d.env)).encode(), d.id),
        }
        if d.expires_at is not None and d.status not in _RETIRED:
            item["expires_at"] = d.expires_at
            item["expiry_shard"] = dynamo.shard_of(d.id, self._shards)
        if d.status in _IN_PROGRESS:
            item["progress_shard"] = dynamo.shard_of(d.id, self._shards)
        if d.error_message:
            item["error_message"] = d.error_message
        if d.deletion_token_hash and d.deletion_expires_at:
            item["deletion_token_hash"] = d.deletion_token_hash
            item["deletion_expires_at"] = d.deletion_expires_at
        return item

    def _from_item(self, item: Item) -> Deployment:
        env = json.loads(self._sealer.open(bytes(item["env"]), item["id"]))
        return Deployment(
            id=item["id"],
            owner=item["owner"],
            name=item["name"],
            slug=item["slug"],
            url=item["url"],
            port=int(item["port"]),
            revision=int(item["revision"]),
            context_key=item["context_key"],
            status=DeployStatus(item["status"]),
            ttl_policy=item["ttl_policy"],
            created_at=int(item["created_at"]),
            updated_at=int(item["updated_at"]),
            expires_at=item.get("expires_at"),
            error_message=item.get("error_message"),
            env=env,
            deletion_token_hash=item.get("deletion_token_hash"),
            deletion_expires_at=item.get("deletion_expires_at"),
        )

    @staticmethod
    def _apps_key(owner: str) -> str:
        return f"apps#{owner}"


_RETIRED = (DeployStatus.DELETED, DeployStatus.EXPIRED)
_IN_PROGRESS = (DeployStatus.BUILDING, DeployStatus.DEPLOYING)
