"""The Postgres servers behind ``/db/new`` and ``/vector/new``, over pg8000 admin connections."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Collection, Mapping, Sequence
from contextlib import suppress
from typing import Any
from urllib.parse import unquote, urlsplit

import pg8000.native

from bench.backends import RAW_PREFIX, ms_since


def admin_connect(admin_url: str) -> Any:
    """An autocommit admin connection (pg8000.native runs every statement on its own)."""
    parts = urlsplit(admin_url)
    return pg8000.native.Connection(
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        database=parts.path.lstrip("/") or "postgres",
    )


class PostgresBench:
    """The raw operation runs on each server in turn (the API places resources on either)."""

    def __init__(self, admin_urls: Sequence[str]) -> None:
        self.conns = [admin_connect(url) for url in admin_urls]
        self._turn = itertools.cycle(self.conns)
        self._raw: list[tuple[Any, str]] = []  # (admin connection, name) of raw-op objects

    def raw(self) -> float:
        """CREATE ROLE + CREATE DATABASE + REVOKE. Its objects are left to the next sweep, like
        the app's: a DROP DATABASE forces a checkpoint, which must not fall between two measured
        operations."""
        conn = next(self._turn)
        name = str(pg8000.native.identifier(f"{RAW_PREFIX}{secrets.token_hex(8)}"))
        password = pg8000.native.literal(secrets.token_urlsafe(24))
        statements = (
            f"CREATE ROLE {name} LOGIN PASSWORD {password} CONNECTION LIMIT 2",
            f"CREATE DATABASE {name} OWNER {name}",
            f"REVOKE CONNECT, TEMPORARY ON DATABASE {name} FROM PUBLIC",
        )
        start = time.perf_counter()
        try:
            for sql in statements:
                conn.run(sql)
            return ms_since(start)
        finally:
            self._raw.append((conn, name))

    def drop_raw(self) -> None:
        while self._raw:
            conn, name = self._raw.pop()
            conn.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.run(f"DROP ROLE IF EXISTS {name}")

    def made_by(self, answer: Mapping[str, Any]) -> str:
        return urlsplit(str(answer["connection_url"])).path.lstrip("/")

    def tenants(self) -> int:
        return self._count("datname LIKE 'db\\_%'")

    def left(self, made: Collection[str]) -> int:
        return self._count(
            "datname::text = ANY(CAST(:made AS text[])) OR datname LIKE :raw",
            made=list(made) or [""],
            raw=RAW_PREFIX.replace("_", "\\_") + "%",
        )

    def close(self) -> None:
        for conn in self.conns:
            with suppress(Exception):
                conn.close()

    def _count(self, where: str, **params: Any) -> int:
        sql = f"SELECT count(*) FROM pg_database WHERE {where}"
        return sum(int(conn.run(sql, **params)[0][0]) for conn in self.conns)
