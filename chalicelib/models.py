"""Typed values passed between layers: routes -> service -> providers/store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """A resource kind; the value is the name used in plans.yaml, records and caps."""

    POSTGRES = "postgres"
    VECTOR = "vector"
    REDIS = "redis"
    QUEUE = "queue"
    MONGODB = "mongodb"
    STORAGE = "storage"
    WEBHOOK = "webhook"


class Status(StrEnum):
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    EXPIRED = "expired"
    DELETED = "deleted"


@dataclass(frozen=True)
class Backend:
    """One backend server a kind can place resources on (admin_url is a secret)."""

    name: str
    admin_url: str = field(repr=False)
    public_host: str
    internal_host: str
    # kind-specific admin material beyond admin_url (e.g. NATS operator and signing seeds)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Caller:
    """Who is asking: anonymous callers are identified by their network fingerprint."""

    fingerprint: str
    source_ip: str
    team_id: str | None = None  # set when the request carried a session or an API key
    tier: str = "anonymous"  # the team's tier for a team, else anonymous

    @property
    def owner(self) -> str:
        return (
            team_owner(self.team_id) if self.team_id else ANONYMOUS_OWNER_PREFIX + self.fingerprint
        )

    @property
    def anonymous(self) -> bool:
        return self.team_id is None


ANONYMOUS_OWNER_PREFIX = "fp:"


def team_owner(team_id: str) -> str:
    """The ``owner`` of a team's resource records (anonymous ones are ``fp:<network>``)."""
    return f"team:{team_id}"


@dataclass(frozen=True)
class ProvisionRequest:
    kind: Kind
    name: str
    ignored_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackendRef:
    """Where a resource lives on its backend: enough to remove, measure or rotate it later.

    ``namespace`` is what holds the tenant's data (a Postgres database, a key prefix, a NATS
    account); ``principal`` is the identity it connects as (a role, an ACL user, a NATS user).
    """

    backend: str
    namespace: str
    principal: str


@dataclass(frozen=True)
class Credentials:
    """What a provider hands back: the URLs are secrets (they hold the password)."""

    connection_url: str = field(repr=False)
    internal_url: str = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # more response fields
    # non-secret facts the provider needs again later (kept on the record, e.g. an ACL digest)
    stored: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resource:
    """A resource record. Its bearer token is never stored in clear: the record keeps the
    token's SHA-256 (``token_hash``, to check a presented token) and the token sealed under the
    platform key (``sealed_token``, to give it back). ``token`` is the token in clear only on
    the resource a request has just minted; on a record read back it is None (the store's
    ``token_of`` unseals it)."""

    id: str
    token: str | None = field(repr=False)
    kind: Kind
    name: str
    owner: str
    tier: str
    status: Status
    ref: BackendRef
    created_at: int
    expires_at: int | None
    stored: Mapping[str, str] = field(default_factory=dict)  # Credentials.stored, once active
    alias_id: str | None = None  # the record's id for its current token, once rotated
    token_hash: str = ""  # set on a record read back
    sealed_token: bytes = field(default=b"", repr=False)  # set on a record read back
