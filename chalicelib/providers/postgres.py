"""Postgres databases (plain, and pgvector for the vector kind) on one of several servers.

Isolation per resource: a login role with a connection limit and a database it owns, copied from
a per-kind template whose public schema is closed to PUBLIC (and which holds the ``vector``
extension for the vector kind; it is not a trusted extension, so the admin installs it there).
The public schema belongs to ``pg_database_owner`` (Postgres >= 15), hence to the tenant.
CONNECT and TEMPORARY on the new database are revoked from PUBLIC, so no other tenant's role
can open it. Passwords reach the server as SCRAM verifiers, never in plain text.

Rotation sets a new verifier (new logins with the old password fail at once), then terminates
every session of the role (waiting up to ``TERMINATE_WAIT_MS`` for them to end). Resizing sets
the role's connection limit: Postgres checks it at login, so sessions already open beyond a
lowered limit stay until they close.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import unquote, urlsplit

import pg8000.native
from pg8000.exceptions import DatabaseError, InterfaceError

from chalicelib.models import Backend, BackendRef, Credentials, Kind
from chalicelib.providers.base import BackendDownError, Rotated, Tenant, opaque_ref
from chalicelib.tiers import KindLimits

MIN_SERVER_VERSION = 150000
CONNECT_TIMEOUT_SECONDS = 5
SCRAM_ITERATIONS = 4096
TERMINATE_WAIT_MS = 5000
_EXTENSIONS: dict[Kind, tuple[str, ...]] = {Kind.POSTGRES: (), Kind.VECTOR: ("vector",)}


class PostgresProvider:
    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._extensions = _EXTENSIONS[kind]
        self._template = f"instanode_template_{kind.value}"
        self._ready_templates: set[str] = set()

    def new_ref(self, backend: Backend) -> BackendRef:
        return opaque_ref(backend, "db", "u")

    def provision(self, backend: Backend, ref: BackendRef, limits: KindLimits) -> Credentials:
        password = secrets.token_urlsafe(24)
        with admin_connection(backend) as conn:
            self._ensure_template(backend, conn)
            try:
                conn.run(
                    f"CREATE ROLE {_ident(ref.principal)} LOGIN "
                    f"PASSWORD {pg8000.native.literal(scram_verifier(password))} "
                    f"CONNECTION LIMIT {int(limits.connections)}"
                )
                conn.run(
                    f"CREATE DATABASE {_ident(ref.namespace)} OWNER {_ident(ref.principal)} "
                    f"TEMPLATE {_ident(self._template)}"
                )
                conn.run(
                    f"REVOKE CONNECT, TEMPORARY ON DATABASE {_ident(ref.namespace)} FROM PUBLIC"
                )
            except Exception:
                _drop(conn, ref)
                raise
        return _credentials(backend, ref, password)

    def rotate(self, backend: Backend, tenant: Tenant) -> Rotated:
        ref, password = tenant.ref, secrets.token_urlsafe(24)
        with admin_connection(backend) as conn:
            conn.run(
                f"ALTER ROLE {_ident(ref.principal)} "
                f"PASSWORD {pg8000.native.literal(scram_verifier(password))}"
            )
            conn.run(
                "SELECT pg_terminate_backend(pid, :wait) FROM pg_stat_activity WHERE usename = :r",
                wait=TERMINATE_WAIT_MS,
                r=ref.principal,
            )
        return Rotated(ref, _credentials(backend, ref, password))

    def resize(self, backend: Backend, tenant: Tenant) -> None:
        with admin_connection(backend) as conn:
            conn.run(
                f"ALTER ROLE {_ident(tenant.ref.principal)} "
                f"CONNECTION LIMIT {int(tenant.limits.connections)}"
            )

    def deprovision(self, backend: Backend, ref: BackendRef) -> None:
        with admin_connection(backend) as conn:
            _drop(conn, ref)

    def usage(self, backend: Backend, ref: BackendRef) -> int:
        with admin_connection(backend) as conn:
            rows = conn.run(
                "SELECT pg_database_size(:db) - pg_database_size(:tpl)",
                db=ref.namespace,
                tpl=self._template,
            )
        return max(0, int(rows[0][0]))

    def check(self, backend: Backend) -> None:
        with admin_connection(backend) as conn:
            conn.run("SELECT 1")

    def _ensure_template(self, backend: Backend, conn: Any) -> None:
        """Create this kind's template database once per server (serialised by an advisory lock)."""
        if backend.name in self._ready_templates:
            return
        version = int(conn.run("SHOW server_version_num")[0][0])
        if version < MIN_SERVER_VERSION:
            raise BackendDownError(f"backend {backend.name} runs Postgres {version}; need >= 15")
        conn.run("SELECT pg_advisory_lock(hashtext(:t))", t=self._template)
        try:
            exists = conn.run("SELECT 1 FROM pg_database WHERE datname = :t", t=self._template)
            if not exists:
                conn.run(f"CREATE DATABASE {_ident(self._template)}")
                with admin_connection(backend, database=self._template, pooled=False) as tpl:
                    tpl.run("REVOKE ALL ON SCHEMA public FROM PUBLIC")
                    for ext in self._extensions:
                        tpl.run(f"CREATE EXTENSION IF NOT EXISTS {_ident(ext)}")
                conn.run(f"ALTER DATABASE {_ident(self._template)} WITH IS_TEMPLATE true")
        finally:
            conn.run("SELECT pg_advisory_unlock(hashtext(:t))", t=self._template)
        self._ready_templates.add(backend.name)


def _drop(conn: Any, ref: BackendRef) -> None:
    conn.run(f"DROP DATABASE IF EXISTS {_ident(ref.namespace)} WITH (FORCE)")
    conn.run(f"DROP ROLE IF EXISTS {_ident(ref.principal)}")


def _ident(name: str) -> str:
    return str(pg8000.native.identifier(name))


def _credentials(backend: Backend, ref: BackendRef, password: str) -> Credentials:
    return Credentials(
        connection_url=_url(ref, password, backend.public_host),
        internal_url=_url(ref, password, backend.internal_host),
    )


def _url(ref: BackendRef, password: str, host: str) -> str:
    return f"postgres://{ref.principal}:{password}@{host}/{ref.namespace}"


def scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier Postgres stores, computed here so the password never travels."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt).decode()}"
        f"${b64(hashlib.sha256(client_key).digest()).decode()}:{b64(server_key).decode()}"
    )


# -- admin connections: a small pool per backend (Lambda reuses it across invocations) --------
IDLE_CHECK_SECONDS = 30
_pools: dict[tuple[str, str], queue.LifoQueue[tuple[Any, float]]] = {}
_pools_lock = threading.Lock()


def _pool(key: tuple[str, str]) -> queue.LifoQueue[tuple[Any, float]]:
    with _pools_lock:
        return _pools.setdefault(key, queue.LifoQueue())


def _connect(admin_url: str, database: str | None) -> Any:
    parts = urlsplit(admin_url)
    try:
        return pg8000.native.Connection(
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password) if parts.password else None,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            database=database or parts.path.lstrip("/") or "postgres",
            timeout=CONNECT_TIMEOUT_SECONDS,
        )
    except (InterfaceError, OSError) as exc:
        raise BackendDownError(f"cannot reach {parts.hostname}:{parts.port}") from exc
    except DatabaseError as exc:
        raise BackendDownError(f"admin login to {parts.hostname}:{parts.port} failed") from exc


def _checkout(pool: queue.LifoQueue[tuple[Any, float]]) -> Any | None:
    """A pooled connection, pinged first when it has been idle long enough to have gone stale."""
    while True:
        try:
            conn, last_used = pool.get_nowait()
        except queue.Empty:
            return None
        if time.monotonic() - last_used < IDLE_CHECK_SECONDS:
            return conn
        try:
            conn.run("SELECT 1")
            return conn
        except (InterfaceError, OSError, DatabaseError):
            _close(conn)


@contextmanager
def admin_connection(
    backend: Backend, database: str | None = None, pooled: bool = True
) -> Iterator[Any]:
    """An autocommit admin connection; broken connections are dropped, healthy ones reused."""
    pool = _pool((backend.name, database or ""))
    conn = (_checkout(pool) if pooled else None) or _connect(backend.admin_url, database)
    try:
        yield conn
    except (InterfaceError, OSError) as exc:
        _close(conn)
        raise BackendDownError(f"lost the connection to backend {backend.name}") from exc
    except BaseException:
        _close(conn)
        raise
    if pooled:
        pool.put((conn, time.monotonic()))
    else:
        _close(conn)


def _close(conn: Any) -> None:
    with suppress(Exception):
        conn.close()
