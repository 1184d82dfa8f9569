"""Postgres databases (plain, and pgvector for the vector kind) on one of several servers.

Isolation per resource: a login role with a connection limit and a database it owns, copied from
a per-kind template whose public schema is closed to PUBLIC (and which holds the ``vector``
extension for the vector kind; it is not a trusted extension, so the admin installs it there).
The public schema belongs to ``pg_database_owner`` (Postgres >= 15), hence to the tenant.
CONNECT and TEMPORARY on the new database are revoked from PUBLIC, so no other tenant's role
can open it. Passwords reach the server as SCRAM verifiers, never in plain text. The role's
comment (which only the admin can change) names its kind, so ``inventory`` tells the kinds apart
on a shared server.

Every server is prepared once per process, idempotently: the templates refuse connections
(``ALLOW_CONNECTIONS false``; copying them still works), and CONNECT and TEMPORARY on ``postgres``
and ``template1`` are revoked from PUBLIC, so no tenant can hold a session that makes another
tenant's ``CREATE DATABASE`` fail. Admin sessions override, at login, every setting a tenant
could attach to its database (``search_path``, timeouts, read-only, preloaded libraries).

Storage quota (``enforce``, one pass per server): the tenant owns its database, so revoking its
own privileges or making it read-only would hold only until it re-grants them. Over the limit,
ownership of the database and of everything in it moves to a NOLOGIN role ``o_<suffix>``; every
grant on those objects is revoked, whoever gave it; the tenant gets back CONNECT, USAGE on its
schemas, SELECT on its relations (and USAGE on sequences), and TRUNCATE / DELETE on each table
whose truncation / deletion can start nothing (no user trigger, rule or ON DELETE action in its
inheritance tree). EXECUTE on every routine it made is revoked from everyone, the owner too, so no
tenant code runs while restricted (not as an expression in a query, an index or ANALYZE); no
trigger fires on what it may still do. ``lo_create``, ``lo_creat`` and ``lo_from_bytea`` are
closed to PUBLIC in its database; large objects can be read, not removed, while restricted. The
switch happens with nobody else in the database (new connections refused, open sessions ended),
so no transaction in flight keeps writing. Back under the limit, everything returns to the tenant.
Between two passes Postgres itself limits nothing: a tenant writing flat out gets one interval's
worth of writes (plus one pass) past its limit.

A provision that fails half-way is removed on a fresh connection (the failed one may be dead),
after ending any admin statement still at work on it; when that cannot be done now, it raises
``BackendDownError`` and the half-made objects are left to the reaper and ``inventory``.

Rotation sets a new verifier (new logins with the old password fail at once), then terminates
every session of the role (waiting up to ``TERMINATE_WAIT_MS`` for them to end). Resizing sets
the role's connection limit: Postgres checks it at login, so sessions already open beyond a
lowered limit stay until they close.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import queue
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pg8000.native
from pg8000.exceptions import DatabaseError, InterfaceError

from chalicelib.models import Backend, BackendRef, Credentials, Kind
from chalicelib.providers.base import (
    BackendDownError,
    BackendUnreachableError,
    Rotated,
    Tenant,
    Usage,
    opaque_ref,
)
from chalicelib.tiers import KindLimits

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = 150000
CONNECT_TIMEOUT_SECONDS = 5  # TCP connect, startup and authentication
SOCKET_TIMEOUT_SECONDS = 15  # each statement: longer than CREATE DATABASE's own 5 s wait,
# and short enough that a provision plus its clean-up stays under API Gateway's 29 s
LOCK_TIMEOUT_MS = 5000
CLEAN_UP_ATTEMPTS = 2
CLEAN_UP_PAUSE_SECONDS = 1.0
SCRAM_ITERATIONS = 4096
TERMINATE_WAIT_MS = 5000
SYSTEM_DATABASES = ("postgres", "template1")
_EXTENSIONS: dict[Kind, tuple[str, ...]] = {Kind.POSTGRES: (), Kind.VECTOR: ("vector",)}
_MADE = re.compile(r"(?:db|u|o)_([0-9a-f]{20})")
# What a tenant could attach to its database (ALTER DATABASE ... SET) that would change or break
# an admin session inside it; login options take precedence over database settings.
_ADMIN_OPTIONS = " ".join(
    f"-c {setting}"
    for setting in (
        "search_path=pg_catalog,pg_temp",
        "statement_timeout=0",
        f"lock_timeout={LOCK_TIMEOUT_MS}",
        "idle_in_transaction_session_timeout=0",
        "idle_session_timeout=0",
        "default_transaction_read_only=off",
        "local_preload_libraries=",
    )
)

# The quota switch, run by the admin inside the tenant's database (settings instanode.tenant and
# instanode.owner name the roles). Both are idempotent.
_RESTRICT = """
DO $restrict$
DECLARE
    tenant_role regrole := current_setting('instanode.tenant')::regrole;
    owner_name text := current_setting('instanode.owner');
    owner_role regrole;
    item record;
    who text;
BEGIN
    IF to_regrole(owner_name) IS NULL THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', owner_name);
        EXECUTE format('COMMENT ON ROLE %I IS %L',
                       owner_name, shobj_description(tenant_role, 'pg_authid'));
    END IF;
    owner_role := owner_name::regrole;
    EXECUTE format('REASSIGN OWNED BY %s TO %s', tenant_role, owner_role);
    -- Every grant on it all goes, whoever gave it (CASCADE: and whatever was passed on). The
    -- owner keeps its rights, except on routines (keeper 0): nothing the tenant wrote may run.
    FOR item IN
        SELECT format('DATABASE %I', datname) AS target, datdba AS keeper, datacl AS acl
          FROM pg_database WHERE datname = current_database()
        UNION ALL
        SELECT format('SCHEMA %I', nspname), nspowner, nspacl
          FROM pg_namespace WHERE nspowner = owner_role OR nspname = 'public'
        UNION ALL
        SELECT format('%s %s', CASE relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                      oid::regclass), relowner, relacl
          FROM pg_class WHERE relowner = owner_role AND relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
        UNION ALL
        SELECT format('TABLE %s', c.oid::regclass), c.relowner, a.attacl
          FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE c.relowner = owner_role AND a.attacl IS NOT NULL
        UNION ALL
        SELECT format('ROUTINE %s', oid::regprocedure), 0::oid,
               coalesce(proacl, acldefault('f', proowner))
          FROM pg_proc WHERE proowner = owner_role
        UNION ALL
        SELECT format('LARGE OBJECT %s', oid), lomowner, lomacl
          FROM pg_largeobject_metadata WHERE lomowner = owner_role
    LOOP
        FOR who IN
            SELECT 'PUBLIC'
            UNION
            SELECT quote_ident(pg_get_userbyid(x.grantee)) FROM aclexplode(item.acl) x
             WHERE x.grantee NOT IN (0, item.keeper)
        LOOP
            EXECUTE format('REVOKE ALL ON %s FROM %s CASCADE', item.target, who);
        END LOOP;
    END LOOP;
    -- What the tenant keeps: reading, and freeing space where that can start nothing.
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %s', current_database(), tenant_role);
    FOR item IN
        SELECT nspname FROM pg_namespace WHERE nspowner = owner_role OR nspname = 'public'
    LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', item.nspname, tenant_role);
    END LOOP;
    FOR item IN
        WITH RECURSIVE tree(root, rel) AS (
            SELECT oid, oid FROM pg_class WHERE relowner = owner_role AND relkind IN ('r', 'p')
            UNION
            SELECT tree.root, i.inhrelid FROM tree JOIN pg_inherits i ON i.inhparent = tree.rel
        ), fires AS (
            SELECT root,
                   bool_or(EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel
                                      AND NOT tgisinternal AND tgtype & 8 <> 0)
                           OR EXISTS (SELECT FROM pg_rewrite WHERE ev_class = rel)
                           OR EXISTS (SELECT FROM pg_constraint WHERE confrelid = rel
                                         AND confdeltype NOT IN ('a', 'r'))) AS on_delete,
                   bool_or(EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel
                                      AND NOT tgisinternal AND tgtype & 32 <> 0)) AS on_truncate
              FROM tree GROUP BY root
        )
        SELECT format('%s %s', CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
                      c.oid::regclass) AS target,
               concat_ws(', ', 'SELECT',
                         CASE WHEN c.relkind = 'S' THEN 'USAGE' END,
                         CASE WHEN NOT f.on_truncate THEN 'TRUNCATE' END,
                         CASE WHEN NOT f.on_delete THEN 'DELETE' END) AS privileges
          FROM pg_class c LEFT JOIN fires f ON f.root = c.oid
         WHERE c.relowner = owner_role AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    LOOP
        EXECUTE format('GRANT %s ON %s TO %s', item.privileges, item.target, tenant_role);
    END LOOP;
    FOR item IN SELECT oid FROM pg_largeobject_metadata WHERE lomowner = owner_role LOOP
        EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO %s', item.oid, tenant_role);
    END LOOP;
    REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea)
        FROM PUBLIC;
END
$restrict$
"""
_LIFT = """
DO $lift$
DECLARE
    tenant_role regrole := current_setting('instanode.tenant')::regrole;
    owner_role regrole := current_setting('instanode.owner')::regrole;
    item record;
BEGIN
    FOR item IN SELECT oid::regprocedure AS routine FROM pg_proc WHERE proowner = owner_role LOOP
        EXECUTE format('GRANT ALL ON ROUTINE %s TO PUBLIC, %s', item.routine, owner_role);
    END LOOP;
    EXECUTE format('REASSIGN OWNED BY %s TO %s', owner_role, tenant_role);
    EXECUTE format('REVOKE ALL ON SCHEMA public FROM %s', tenant_role);
    GRANT EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea)
        TO PUBLIC;
END
$lift$
"""
# Per tenant, in one query: who owns its database, whether it takes connections, the role's
# connection limit and kind, and the bytes used beyond an empty copy of the template.
_LIVE = """
SELECT d.datname, o.rolname, d.datallowconn, r.rolconnlimit,
       shobj_description(r.oid, 'pg_authid'),
       pg_database_size(d.oid) - pg_database_size(:template)
  FROM unnest(CAST(:databases AS text[]), CAST(:roles AS text[])) AS t(db, role)
  JOIN pg_database d ON d.datname = t.db
  JOIN pg_roles r ON r.rolname = t.role
  JOIN pg_roles o ON o.oid = d.datdba
"""
# Databases where privileges were granted to the given roles (by another tenant, say).
_GRANTED_ELSEWHERE = """
SELECT d.datname, string_agg(DISTINCT quote_ident(r.rolname), ', ')
  FROM pg_shdepend s
  JOIN pg_database d ON d.oid = s.dbid
  JOIN pg_roles r ON r.oid = s.refobjid
 WHERE s.refclassid = 'pg_authid'::regclass AND r.rolname = ANY(CAST(:roles AS text[]))
 GROUP BY d.datname
"""
# Admin sessions (superusers) at work on a statement that names one of the given objects.
_STOP_ADMIN_WORK = """
SELECT pg_terminate_backend(a.pid, :wait)
  FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
 WHERE r.rolsuper AND a.state <> 'idle' AND a.pid <> pg_backend_pid()
   AND EXISTS (SELECT FROM unnest(CAST(:names AS text[])) n WHERE strpos(a.query, n) > 0)
"""
_INVENTORY = """
SELECT name, (SELECT max(shobj_description(r.oid, 'pg_authid')) FROM pg_roles r
               WHERE r.rolname IN ('u_' || substr(name, 4), 'o_' || substr(name, 4)))
  FROM (SELECT datname AS name FROM pg_database WHERE datname ~ '^db_[0-9a-f]{20}$'
        UNION
        SELECT 'db_' || substr(rolname, 3) FROM pg_roles WHERE rolname ~ '^[uo]_[0-9a-f]{20}$') m
"""


@dataclass(frozen=True)
class _Live:
    """A tenant as its server holds it now."""

    owner: str
    open: bool
    connection_limit: int
    marker: str | None
    used_bytes: int


class PostgresProvider:
    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._extensions = _EXTENSIONS[kind]
        self._template = f"instanode_template_{kind.value}"
        self._marker = f"instanode:{kind.value}"
        self._prepared: set[tuple[str, str]] = set()  # (name, admin_url): a server each

    def new_ref(self, backend: Backend) -> BackendRef:
        return opaque_ref(backend, "db", "u")

    def provision(self, backend: Backend, ref: BackendRef, limits: KindLimits) -> Credentials:
        password = secrets.token_urlsafe(24)
        with self._server(backend) as conn:
            try:
                self._create(conn, ref, password, limits)
            except Exception:
                _clean_up(backend, ref)
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
            _set_connection_limit(conn, tenant)

    def deprovision(self, backend: Backend, ref: BackendRef) -> None:
        try:
            with admin_connection(backend) as conn:
                _drop(backend, conn, ref)
        except BackendDownError:  # the pooled connection was ended or went stale
            _clean_up(backend, ref)

    def usage(self, backend: Backend, ref: BackendRef) -> int:
        with self._server(backend) as conn:
            rows = conn.run(
                "SELECT pg_database_size(:db) - pg_database_size(:tpl)",
                db=ref.namespace,
                tpl=self._template,
            )
        return max(0, int(rows[0][0]))

    def check(self, backend: Backend) -> None:
        with admin_connection(backend) as conn:
            conn.run("SELECT 1")

    def enforce(self, backend: Backend, tenants: Sequence[Tenant]) -> list[Usage]:
        """Measure every tenant in one query; switch those that crossed their limit (either
        way) and heal what an interrupted switch or a missed resize left behind."""
        usages = []
        with self._server(backend) as conn:
            live = self._live(conn, tenants)
            for tenant in tenants:
                state = live.get(tenant.ref.namespace)
                if state is None:
                    continue  # removed since the tenant list was read
                usage = Usage.of(tenant, max(0, state.used_bytes))
                try:
                    self._hold(backend, conn, tenant, state, usage.over_quota)
                except (DatabaseError, BackendDownError):
                    log.exception("quota: could not hold %s to its limits", tenant.ref.namespace)
                usages.append(usage)
        return usages

    def inventory(self, backend: Backend) -> list[BackendRef]:
        """Every ``db_``/``u_``/``o_`` name of this kind, by suffix; names whose roles carry no
        kind (made before kinds were marked, or with their roles gone) count as postgres."""
        with admin_connection(backend) as conn:
            rows = conn.run(_INVENTORY)
        mine = {self._marker} | ({None} if self.kind is Kind.POSTGRES else set())
        return [
            BackendRef(backend.name, name, f"u_{name[3:]}")
            for name, marker in rows
            if marker in mine
        ]

    # -- provisioning ------------------------------------------------------------------------
    def _create(self, conn: Any, ref: BackendRef, password: str, limits: KindLimits) -> None:
        role = _ident(ref.principal)
        conn.run("BEGIN")
        conn.run(
            f"CREATE ROLE {role} LOGIN "
            f"PASSWORD {pg8000.native.literal(scram_verifier(password))} "
            f"CONNECTION LIMIT {int(limits.connections)}"
        )
        conn.run(f"COMMENT ON ROLE {role} IS {pg8000.native.literal(self._marker)}")
        conn.run("COMMIT")
        conn.run(
            f"CREATE DATABASE {_ident(ref.namespace)} OWNER {role} "
            f"TEMPLATE {_ident(self._template)}"
        )
        conn.run(f"REVOKE CONNECT, TEMPORARY ON DATABASE {_ident(ref.namespace)} FROM PUBLIC")

    @contextmanager
    def _server(self, backend: Backend) -> Iterator[Any]:
        """An admin connection to a server prepared for this kind."""
        with admin_connection(backend) as conn:
            self._prepare(backend, conn)
            yield conn

    def _prepare(self, backend: Backend, conn: Any) -> None:
        """Once per server: create this kind's template if missing, close it and the system
        databases to tenants, and end tenant sessions already in them (serialised by an
        advisory lock)."""
        if (backend.name, backend.admin_url) in self._prepared:
            return
        version = int(conn.run("SHOW server_version_num")[0][0])
        if version < MIN_SERVER_VERSION:
            raise BackendDownError(f"backend {backend.name} runs Postgres {version}; need >= 15")
        conn.run("SELECT pg_advisory_lock(hashtext(:t))", t=self._template)
        try:
            if not conn.run("SELECT 1 FROM pg_database WHERE datname = :t", t=self._template):
                self._create_template(backend, conn)
            conn.run(
                f"ALTER DATABASE {_ident(self._template)} "
                "WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
            )
            conn.run(
                "REVOKE CONNECT, TEMPORARY ON DATABASE "
                f"{', '.join(map(_ident, SYSTEM_DATABASES))} FROM PUBLIC"
            )
            conn.run(
                "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a "
                "JOIN pg_roles r ON r.rolname = a.usename "
                "WHERE NOT r.rolsuper AND a.datname = ANY(CAST(:dbs AS text[]))",
                dbs=[self._template, *SYSTEM_DATABASES],
            )
        finally:
            conn.run("SELECT pg_advisory_unlock(hashtext(:t))", t=self._template)
        self._prepared.add((backend.name, backend.admin_url))

    def _create_template(self, backend: Backend, conn: Any) -> None:
        conn.run(f"CREATE DATABASE {_ident(self._template)}")
        with admin_connection(backend, database=self._template, pooled=False) as tpl:
            tpl.run("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            for ext in self._extensions:
                tpl.run(f"CREATE EXTENSION IF NOT EXISTS {_ident(ext)}")

    # -- quota ---------------------------------------------------------------------------------
    def _live(self, conn: Any, tenants: Sequence[Tenant]) -> dict[str, _Live]:
        rows = conn.run(
            _LIVE,
            databases=[t.ref.namespace for t in tenants],
            roles=[t.ref.principal for t in tenants],
            template=self._template,
        )
        return {
            db: _Live(owner, bool(open_), int(limit), marker, int(used))
            for db, owner, open_, limit, marker, used in rows
        }

    def _hold(
        self, backend: Backend, conn: Any, tenant: Tenant, state: _Live, over_quota: bool
    ) -> None:
        ref = tenant.ref
        if state.marker != self._marker:  # made before kinds were marked
            conn.run(
                f"COMMENT ON ROLE {_ident(ref.principal)} IS {pg8000.native.literal(self._marker)}"
            )
        if not state.open:  # a switch was interrupted
            conn.run(f"ALTER DATABASE {_ident(ref.namespace)} ALLOW_CONNECTIONS true")
        if state.connection_limit != tenant.limits.connections:
            _set_connection_limit(conn, tenant)
        if (state.owner == _owner_role(ref)) != over_quota:
            _switch(backend, conn, ref, _RESTRICT if over_quota else _LIFT)


def _switch(backend: Backend, conn: Any, ref: BackendRef, sql: str) -> None:
    """Run ``sql`` in one transaction inside the tenant's database with nobody else in it: new
    connections are refused meanwhile and open sessions are ended first, so no transaction in
    flight keeps writing or holds a lock the switch needs."""
    db = _ident(ref.namespace)
    with admin_connection(backend, ref.namespace, pooled=False) as inside:
        conn.run(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
        try:
            conn.run(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> :me",
                db=ref.namespace,
                me=inside.run("SELECT pg_backend_pid()")[0][0],
            )
            inside.run("BEGIN")
            inside.run(
                "SELECT set_config('instanode.tenant', :t, true), "
                "set_config('instanode.owner', :o, true)",
                t=ref.principal,
                o=_owner_role(ref),
            )
            inside.run(sql)
            inside.run("COMMIT")
        finally:
            conn.run(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")


def _set_connection_limit(conn: Any, tenant: Tenant) -> None:
    conn.run(
        f"ALTER ROLE {_ident(tenant.ref.principal)} "
        f"CONNECTION LIMIT {int(tenant.limits.connections)}"
    )


# -- removal -----------------------------------------------------------------------------------
def _owner_role(ref: BackendRef) -> str:
    """The NOLOGIN role that owns a tenant's objects while it is over quota."""
    return f"o_{ref.principal.removeprefix('u_')}"


def _drop(backend: Backend, conn: Any, ref: BackendRef) -> None:
    """Remove the database, then both roles. First end any admin statement still at work on
    them (a provision whose client gave up may still be creating the database), and drop what
    other databases granted the roles (another tenant may have: a role with privileges anywhere
    cannot be dropped)."""
    roles = [ref.principal, _owner_role(ref)]
    conn.run(_STOP_ADMIN_WORK, names=[ref.namespace, *roles], wait=TERMINATE_WAIT_MS)
    conn.run(f"DROP DATABASE IF EXISTS {_ident(ref.namespace)} WITH (FORCE)")
    for database, granted in conn.run(_GRANTED_ELSEWHERE, roles=roles):
        with admin_connection(backend, database, pooled=False) as other:
            other.run(f"DROP OWNED BY {granted}")
    conn.run(f"DROP ROLE IF EXISTS {', '.join(map(_ident, roles))}")


def _clean_up(backend: Backend, ref: BackendRef) -> None:
    """Remove a resource on a fresh connection (a half-made one's, or the pool's, may be dead),
    retrying once; raise ``BackendDownError`` when that is not possible now."""
    for attempt in range(CLEAN_UP_ATTEMPTS):
        try:
            with admin_connection(backend, pooled=False) as conn:
                _drop(backend, conn, ref)
            return
        except (BackendDownError, DatabaseError) as exc:
            log.warning("cleaning up %s on %s failed: %r", ref.namespace, backend.name, exc)
            if attempt + 1 < CLEAN_UP_ATTEMPTS:
                time.sleep(CLEAN_UP_PAUSE_SECONDS)
    raise BackendDownError(f"could not remove {ref.namespace} on {backend.name}")


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
_pools: dict[tuple[str, str, str], queue.LifoQueue[tuple[Any, float]]] = {}
_pools_lock = threading.Lock()


def _pool(key: tuple[str, str, str]) -> queue.LifoQueue[tuple[Any, float]]:
    with _pools_lock:
        return _pools.setdefault(key, queue.LifoQueue())


def _connect(admin_url: str, database: str | None) -> Any:
    """Log in within ``CONNECT_TIMEOUT_SECONDS``; statements then get ``SOCKET_TIMEOUT_SECONDS``."""
    parts = urlsplit(admin_url)
    where = f"{parts.hostname}:{parts.port}"
    try:
        sock = socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 5432), CONNECT_TIMEOUT_SECONDS
        )
    except OSError as exc:
        raise BackendUnreachableError(f"cannot reach {where}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn = pg8000.native.Connection(
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password) if parts.password else None,
            database=database or parts.path.lstrip("/") or "postgres",
            startup_params={"options": _ADMIN_OPTIONS},
            sock=sock,
        )
    except (InterfaceError, OSError) as exc:
        sock.close()
        raise BackendUnreachableError(f"cannot log in to {where}") from exc
    except DatabaseError as exc:
        sock.close()
        raise BackendUnreachableError(f"admin login to {where} failed") from exc
    sock.settimeout(SOCKET_TIMEOUT_SECONDS)
    return conn


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
    pool = _pool((backend.name, backend.admin_url, database or ""))
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
