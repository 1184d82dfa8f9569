"""The interface every resource kind implements, and the registry of providers by kind.

Providers are built lazily (their drivers import on first use) so the Lambda cold start only
pays for the kinds a request touches.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from chalicelib.models import Backend, BackendRef, Credentials, Kind
from chalicelib.tiers import KindLimits


def opaque_ref(backend: Backend, namespace: str, principal: str) -> BackendRef:
    """Fresh opaque names sharing one random suffix, e.g. ``db_<hex>`` and ``u_<hex>`` (every
    tenant can see other tenants' names on some servers, so names say nothing about anyone)."""
    suffix = secrets.token_hex(10)
    return BackendRef(backend.name, f"{namespace}_{suffix}", f"{principal}_{suffix}")


class BackendDownError(Exception):
    """The backend server could not be reached or refused the admin connection."""


class BackendUnreachableError(BackendDownError):
    """No connection to the backend could be opened: nothing of the operation reached it."""


@dataclass(frozen=True)
class Tenant:
    """An active resource as the scheduled jobs hand it to its provider."""

    ref: BackendRef
    limits: KindLimits
    stored: Mapping[str, str]  # what the provider asked to keep (Credentials.stored)


@dataclass(frozen=True)
class Usage:
    ref: BackendRef
    used_bytes: int
    over_quota: bool

    @classmethod
    def of(cls, tenant: Tenant, used_bytes: int) -> Usage:
        return cls(tenant.ref, used_bytes, used_bytes > tenant.limits.storage_bytes)


@dataclass(frozen=True)
class Rotated:
    """New credentials for a live resource; ``ref`` differs when the principal was replaced."""

    ref: BackendRef
    credentials: Credentials


@runtime_checkable
class Rotator(Protocol):
    """Implemented by providers whose resources carry backend credentials (a password, a key)."""

    def rotate(self, backend: Backend, tenant: Tenant) -> Rotated:
        """Issue new credentials: from now on the old ones are refused and sessions opened with
        them are closed. ``Rotated.credentials.stored`` replaces what the record keeps."""
        ...


@runtime_checkable
class Resizer(Protocol):
    """Implemented by providers whose backend enforces limits set when the resource was made."""

    def resize(self, backend: Backend, tenant: Tenant) -> None:
        """Apply ``tenant.limits`` to the live resource (e.g. after its team changed tier)."""
        ...


@runtime_checkable
class Enforcer(Protocol):
    """Implemented by providers whose backend does not enforce tier limits by itself."""

    def enforce(self, backend: Backend, tenants: Sequence[Tenant]) -> list[Usage]:
        """In one pass over ``backend``: re-apply every tenant's access (a restarted server may
        have lost it), measure usage, restrict tenants over their storage limit and lift the
        restriction from those back under it, and hold each to its connection limit."""
        ...


@runtime_checkable
class Inventoried(Protocol):
    """Implemented by providers whose resources are objects on a backend server (roles and
    databases, ACL users and keys, accounts, users, prefixes): the reconciler compares what a
    backend holds with the records and removes what no record knows."""

    def inventory(self, backend: Backend) -> list[BackendRef]:
        """Every resource this platform made on ``backend``, recognised by its opaque names,
        whole or half-made (a role without its database is listed too), whatever the records
        say. ``deprovision`` must remove any ref listed here."""
        ...

    def deprovision(self, backend: Backend, ref: BackendRef) -> None: ...


class Provider(Protocol):
    kind: Kind

    def new_ref(self, backend: Backend) -> BackendRef:
        """Fresh opaque names for a resource on ``backend`` (no side effects)."""
        ...

    def provision(self, backend: Backend, ref: BackendRef, limits: KindLimits) -> Credentials:
        """Create the resource; on failure leave nothing behind and raise."""
        ...

    def deprovision(self, backend: Backend, ref: BackendRef) -> None:
        """Remove the resource; succeeds when it is already gone."""
        ...

    def usage(self, backend: Backend, ref: BackendRef) -> int:
        """Bytes the resource uses beyond an empty one."""
        ...

    def check(self, backend: Backend) -> None:
        """Raise ``BackendDownError`` unless the backend answers."""
        ...


def build_provider(kind: Kind) -> Provider:
    """The provider of ``kind``; its module (and backend driver) is imported only now."""
    if kind in (Kind.POSTGRES, Kind.VECTOR):
        from chalicelib.providers import postgres

        return postgres.PostgresProvider(kind)
    if kind is Kind.REDIS:
        from chalicelib.providers import redis

        return redis.RedisProvider()
    if kind is Kind.QUEUE:
        from chalicelib.providers import nats

        return nats.NatsProvider()
    if kind is Kind.MONGODB:
        from chalicelib.providers import mongodb

        return mongodb.MongoProvider()
    if kind is Kind.STORAGE:
        from chalicelib.providers import storage

        return storage.StorageProvider()
    from chalicelib.providers import webhook

    return webhook.WebhookProvider()
