"""The routes the bench provisions through, and the backend servers behind them.

Each backend (``bench.backend_pg``, ``_redis``, ``_nats``, ``_mongo``, ``_platform``) offers the
same few things: its raw operation (the backend work of one provision, over an admin connection
the bench holds open), the removal of the raw operation's objects, the name of the object a
provision made (from the API's answer) and counts of what is on the server.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Labels:
    name: str
    raw: str  # what its raw operation does
    tenants: str  # what ``BenchBackend.tenants()`` counts


LABELS = {
    "postgres": Labels("Postgres", "raw CREATE ROLE+DATABASE+REVOKE", "db_% databases"),
    "redis": Labels("Redis", "raw ACL SETUSER", "u_* ACL users"),
    "nats": Labels("NATS", "raw account JWT + CLAIMS.UPDATE", "accounts (but $SYS)"),
    "mongodb": Labels("MongoDB", "raw createUser readWrite", "mu_* users"),
    "storage": Labels("S3", "raw head_bucket", "s_* prefixes"),
    "webhook": Labels("webhook", "raw DynamoDB PutItem", "inbox# counters"),
}
# route -> the backend that holds its resources (a key of LABELS)
BACKEND_OF = {
    "/db/new": "postgres",
    "/vector/new": "postgres",
    "/cache/new": "redis",
    "/queue/new": "nats",
    "/nosql/new": "mongodb",
    "/storage/new": "storage",
    "/webhook/new": "webhook",
}
ROUTES = tuple(BACKEND_OF)
RAW_PREFIX = "bench_raw_"  # names of the raw operations' objects, where the backend has names


class BenchBackend(Protocol):
    def raw(self) -> float:
        """Milliseconds for the backend work of one provision; its objects stay until
        ``drop_raw()``, untimed."""
        ...

    def drop_raw(self) -> None: ...

    def made_by(self, answer: Mapping[str, Any]) -> str:
        """The backend object (database, ACL user, account) named in a provision's answer."""
        ...

    def tenants(self) -> int:
        """Tenant objects on the server(s), whoever made them."""
        ...

    def left(self, made: Collection[str]) -> int:
        """How many of ``made`` and of the raw operation's objects are still there."""
        ...

    def close(self) -> None: ...


def raw_key(backend: str) -> str:
    """The op key of a backend's raw operation in the interleaved loop."""
    return f"raw {backend}"


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000
