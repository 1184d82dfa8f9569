"""A team's resources through the API: list, read, delete and rotate credentials.

Every lookup is by id and owner together: a resource of another team (or of nobody) answers 404,
exactly as one that does not exist, so ids of other tenants cannot be probed.
Rotation: kinds with backend credentials get new ones from their provider (old ones refused,
their sessions closed); storage and webhook resources, whose token is the credential, get a new
token (the old presign and receive URLs stop working).
An active resource's token and the URLs that take it are shown to its team, opened from the
record's sealed copy (the record keeps no token in clear; see store.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from chalicelib import errors
from chalicelib.config import Settings
from chalicelib.dynamo import Dynamo, TransactionCancelled
from chalicelib.models import Kind, Resource, Status
from chalicelib.providers.base import Provider, Rotator, Tenant
from chalicelib.service import iso, token_fields
from chalicelib.store import ResourceStore
from chalicelib.tiers import Tier

log = logging.getLogger(__name__)
MAX_PAGE = 100


def resource_summary(r: Resource) -> dict[str, Any]:
    """What anyone allowed to see a resource may see (no token, no credentials)."""
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind.value,
        "tier": r.tier,
        "status": r.status.value,
        "created_at": iso(r.created_at),
        "expires_at": iso(r.expires_at),
    }


class ResourceService:
    def __init__(
        self,
        settings: Settings,
        db: Dynamo,
        tiers: dict[str, Tier],
        providers: Callable[[Kind], Provider],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._db = db
        self._store = ResourceStore(db, settings)
        self._tiers = tiers
        self._providers = providers
        self._clock = clock

    def list(self, owner: str, limit: Any, cursor: Any) -> dict[str, Any]:
        size = _page_size(limit)
        start = _decode_cursor(cursor, owner) if cursor else None
        found, next_key = self._store.owned_page(owner, size, start)
        return {
            "ok": True,
            "items": [self._detail(r) for r in found],
            "next_cursor": _encode_cursor(next_key) if next_key else None,
        }

    def get(self, owner: str, resource_id: str) -> dict[str, Any]:
        return {"ok": True, **self._detail(self._owned(owner, resource_id))}

    def delete(self, owner: str, resource_id: str) -> dict[str, Any]:
        r = self._owned(owner, resource_id, live=True)
        backend = self._settings.backend_of(r)
        if backend is None:
            raise errors.BackendUnavailableError(f"The server holding {r.id} is not configured.")
        self._providers(r.kind).deprovision(backend, r.ref)  # idempotent: gone already is fine
        now = int(self._clock())
        try:
            self._db.transact(
                [
                    *self._store.retire_items(r, now, Status.DELETED),
                    *self._store.refund_items(r, r.created_at, daily=False),
                ]
            )
        except TransactionCancelled as exc:  # another delete, or the reaper, got there first
            raise errors.NotFoundError(f"Resource {resource_id} is already gone.") from exc
        log.info("deleted %s %s", r.kind.value, r.id)
        return {"ok": True, "id": r.id, "status": Status.DELETED.value}

    def rotate(self, owner: str, resource_id: str) -> dict[str, Any]:
        r = self._owned(owner, resource_id, live=True)
        provider = self._providers(r.kind)
        now = iso(int(self._clock()))
        if not isinstance(provider, Rotator):
            token = str(uuid.uuid4())
            self._db.transact(self._store.token_items(r, token))
            log.info("rotated the token of %s", r.id)
            fields = token_fields(self._settings.public_base_url, r.kind, token)
            return {"ok": True, "id": r.id, **fields, "rotated_at": now}
        backend = self._settings.backend_of(r)
        if backend is None:
            raise errors.BackendUnavailableError(f"The server holding {r.id} is not configured.")
        limits = self._tiers[r.tier].limits(r.kind)
        rotated = provider.rotate(backend, Tenant(r.ref, limits, r.stored))
        creds = rotated.credentials
        self._db.transact([self._store.credentials_item(r, rotated.ref.principal, creds.stored)])
        log.info("rotated the credentials of %s", r.id)
        urls = {"connection_url": creds.connection_url, "internal_url": creds.internal_url}
        return {"ok": True, "id": r.id, **urls, **creds.extra, "rotated_at": now}

    def _owned(self, owner: str, resource_id: str, live: bool = False) -> Resource:
        r = self._store.get(resource_id) if resource_id.startswith("res_") else None
        if r is None or r.id != resource_id or r.owner != owner:
            raise errors.NotFoundError(
                f"No resource {resource_id} in this team.",
                agent_action="List the team's resources with GET /api/v1/resources.",
            )
        if live and r.status is not Status.ACTIVE:
            raise errors.NotFoundError(f"Resource {resource_id} is {r.status.value}.")
        return r

    def _detail(self, r: Resource) -> dict[str, Any]:
        if r.status is not Status.ACTIVE:
            return resource_summary(r)
        base, token = self._settings.public_base_url, self._store.token_of(r)
        return {**resource_summary(r), **token_fields(base, r.kind, token)}


def _page_size(limit: Any) -> int:
    if limit in (None, ""):
        return 50
    text = str(limit)  # isdecimal, not isdigit: int() refuses digits such as '²' (a 500)
    if not (text.isdecimal() and len(text) <= 3) or not 1 <= int(text) <= MAX_PAGE:
        raise errors.BadRequestError(f"'limit' must be a whole number from 1 to {MAX_PAGE}.")
    return int(text)


def _encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, owner: str) -> dict[str, Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise _bad_cursor() from exc
    if not isinstance(key, dict) or key.get("owner") != owner or set(key) != _CURSOR_KEYS:
        raise _bad_cursor()
    if not isinstance(key["id"], str) or type(key["created_at"]) is not int:
        raise _bad_cursor()  # DynamoDB would refuse a start key of other types (a 500)
    return key


_CURSOR_KEYS = {"id", "owner", "created_at"}


def _bad_cursor() -> errors.ApiError:
    return errors.BadRequestError(
        "'cursor' is not one this API returned.",
        agent_action="Pass next_cursor from the previous page unchanged, or omit it.",
    )
