"""DynamoDB persistence of deployments (no HTTP, no backend calls).

Table ``deployments``, pk ``id``; GSI ``by_owner`` (owner, created_at) lists a team's apps,
``by_name`` (owner_name = "<owner>#<name>", created_at) finds the app a ``redeploy=true`` names,
sparse ``by_expiry`` (expiry_shard, expires_at) holds the apps the reaper must visit, sparse
``by_progress`` (progress_shard) the ones still building or deploying, for the poller.
Counting, versions, sealing and the TTL index work as for stacks: see records.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from chalicelib.deploy.backend import DeployStatus
from chalicelib.deploy.records import PendingDeletion, Records, deletion_of
from chalicelib.dynamo import Dynamo, Item
from chalicelib.sealing import Sealer

SEAL_LABEL = b"instanode/deploy-env/v1"


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
    deletion: PendingDeletion | None = field(default=None, repr=False)
    version: int = 1

    def as_json(self, now: int) -> dict[str, Any]:
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
            "deletion_status": self.deletion.status(now) if self.deletion else None,
        }


class DeploymentStore(Records):
    def __init__(self, db: Dynamo, table: str, counters: str, sealer: Sealer, shards: int) -> None:
        super().__init__(db, table, "id", counters, sealer, shards)

    # -- writes -----------------------------------------------------------------------------
    def create(self, d: Deployment, max_apps: int) -> bool:
        """Write a new app and count it against the owner's cap; False when the cap is full."""
        return self.create_item(self._to_item(d), d.owner, max_apps)

    def save(self, d: Deployment, seen: Deployment) -> Deployment | None:
        """Store ``d`` if the record is still as ``seen``: the stored app (its next version),
        or None when it changed meanwhile."""
        stored = replace(d, version=seen.version + 1)
        return stored if self.replace_item(self._to_item(stored), seen.version) else None

    def retire(self, d: Deployment, status: DeployStatus, now: int) -> bool:
        """Mark deleted or expired and give the app's slot back, in one transaction."""
        retired = replace(
            d, status=status, updated_at=now, expires_at=None, deletion=None, version=d.version + 1
        )
        return self.retire_item(self._to_item(retired), d.version, d.owner, True, now)

    def make_permanent(self, owner: str) -> int:
        """Roll ``owner``'s live ``auto_24h`` apps forward to ``permanent`` (a paid upgrade);
        ``custom`` and ``permanent`` apps are left as they are. Returns how many changed."""
        changed = 0
        for app in self.owned(owner):
            if app.ttl_policy == "auto_24h" and app.status not in _RETIRED:
                changed += self._kept_forever(app)
        return changed

    def _kept_forever(self, app: Deployment) -> bool:
        """One app made permanent, re-read and retried if a poll or a redeploy changed it."""
        for _ in range(3):
            if self.save(replace(app, ttl_policy="permanent", expires_at=None), app):
                return True
            fresh = self.get(app.id)
            if fresh is None or fresh.status in _RETIRED or fresh.ttl_policy != "auto_24h":
                return False
            app = fresh
        return False

    # -- reads ------------------------------------------------------------------------------
    def get(self, app_id: str) -> Deployment | None:
        item = self.get_item(app_id)
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
        return [self._from_item(i) for i in self.owned_items(owner)]

    def live_slugs(self) -> set[str]:
        """The backend names (slugs) of every app not retired."""
        return {str(i["slug"]) for i in self.live_items(["slug"])}

    def in_progress(self, shard: int) -> Iterator[Deployment]:
        """Apps of one shard still building or deploying (the sparse ``by_progress`` index)."""
        items = self._db.query(
            self._table, "by_progress", "progress_shard = :s", {":s": str(shard)}
        )
        return (self._from_item(i) for i in items)

    def due(self, shard: int, now: int) -> Iterator[Deployment]:
        return (self._from_item(i) for i in self.due_items(shard, now))

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
            "version": d.version,
            "env": self.seal(dict(d.env), d.id),
            **self.lifecycle_attrs(d.id, d.expires_at, d.status not in _RETIRED, d.deletion),
        }
        if d.status in _IN_PROGRESS:
            item["progress_shard"] = self.shard_of(d.id)
        if d.error_message:
            item["error_message"] = d.error_message
        return item

    def _from_item(self, item: Item) -> Deployment:
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
            env=self.unseal(item["env"], item["id"]),
            deletion=deletion_of(item),
            version=int(item["version"]),
        )


_RETIRED = (DeployStatus.DELETED, DeployStatus.EXPIRED)
_IN_PROGRESS = (DeployStatus.BUILDING, DeployStatus.DEPLOYING)
