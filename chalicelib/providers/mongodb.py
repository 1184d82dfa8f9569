"""MongoDB tenants: one database and one SCRAM user per resource on a shared MongoDB-wire server.

Isolation per resource: an opaque database ``m_<hex>`` and a user ``mu_<hex>`` defined in it with
the single role ``readWrite`` on it. Tenants never get ``dbOwner`` or ``userAdmin``, and every
user management command stays with the service's root account.

MongoDB enforces neither storage quotas nor per-user connection limits: ``enforce`` reads
``dbStats`` for every tenant database and moves tenants over their storage limit from
``readWrite`` to a custom role that reads and frees space (deletes, collection and index drops)
but cannot insert, update or create, until they are back under it. The server must apply a
changed role to connections already open, as mongod does (the local stack's SecantusDB does so
through ``devstack/mongo_guard.py``), so the limit holds from the pass that finds a tenant over
it. The connection limit is reported to the agent, not enforced here. Users and roles live in
the server's persistent store, so a restart loses nothing to re-apply.

Rotation sets a new password with ``updateUser``: new logins with the old one fail at once, but
a connection keeps the login it made (mongod keeps it too), so a live session is not closed.

``inventory`` lists every tenant database ``m_<hex>``, tenant user ``mu_<hex>`` and over-quota
role ``m_<hex>@admin`` (named after the database it covers) on a server, so what failed
provisions and removals leave is found again.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import pymongo
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from chalicelib.models import Backend, BackendRef, Credentials, Kind
from chalicelib.providers.base import BackendDownError, Rotated, Tenant, Usage, opaque_ref
from chalicelib.tiers import KindLimits

SERVER_SELECTION_TIMEOUT_MS = 3000
CONNECT_TIMEOUT_MS = 3000
SOCKET_TIMEOUT_MS = 15_000
# dbStats and dropDatabase take time in proportion to the data (SecantusDB scans it: ~4 s a GB
# here), and a tenant may have written far past its limit before the pass finds it.
SCAN_TIMEOUT_SECONDS = 300
MECHANISM = "SCRAM-SHA-256"
# Server error codes: an absent user or role, an existing role, a refused admin login (wrong or
# removed root).
USER_NOT_FOUND = 11
ROLE_NOT_FOUND = 31
ROLE_EXISTS = 51002
AUTH_FAILED = 18
UNAUTHORIZED = 13

# Opaque names (base.opaque_ref: 20 hex digits): a database m_<hex> and its user mu_<hex>.
DATABASE_PREFIX, USER_PREFIX = "m", "mu"
TENANT_DATABASE = re.compile(rf"{DATABASE_PREFIX}_([0-9a-f]{{20}})")
TENANT_USER = re.compile(rf"{USER_PREFIX}_([0-9a-f]{{20}})")

# What a tenant over its storage limit keeps on its database: reading, and freeing space.
OVER_QUOTA_ACTIONS = [
    *("find", "listCollections", "listIndexes", "dbStats", "collStats", "killCursors"),
    *("remove", "dropCollection", "dropIndex"),
]

Document = dict[str, Any]
Client = pymongo.MongoClient[Document]


def tenant_roles(database: str, writable: bool = True) -> list[dict[str, str]]:
    """The only roles a tenant ever holds: ``readWrite`` on its database, or over quota the
    role ``<database>@admin`` (reads and frees space)."""
    if writable:
        return [{"role": "readWrite", "db": database}]
    return [{"role": database, "db": "admin"}]


class MongoProvider:
    kind = Kind.MONGODB

    def new_ref(self, backend: Backend) -> BackendRef:
        return opaque_ref(backend, DATABASE_PREFIX, USER_PREFIX)

    def provision(self, backend: Backend, ref: BackendRef, limits: KindLimits) -> Credentials:
        password = secrets.token_urlsafe(24)
        with admin_client(backend) as client:
            db = client[ref.namespace]
            try:
                db.command(
                    "createUser",
                    ref.principal,
                    pwd=password,
                    roles=tenant_roles(ref.namespace),
                    mechanisms=[MECHANISM],
                )
            except Exception:
                _forget_user(client, ref)  # the reply may have been lost after the user was made
                raise
        return _credentials(backend, ref, password)

    def rotate(self, backend: Backend, tenant: Tenant) -> Rotated:
        ref, password = tenant.ref, secrets.token_urlsafe(24)
        with admin_client(backend) as client:
            client[ref.namespace].command(
                "updateUser", ref.principal, pwd=password, mechanisms=[MECHANISM]
            )
        return Rotated(ref, _credentials(backend, ref, password))

    def deprovision(self, backend: Backend, ref: BackendRef) -> None:
        with admin_client(backend) as client:
            _drop_user(client, ref)  # new logins fail, live sessions lose their roles
            _drop_over_quota_role(client, ref.namespace)
            with pymongo.timeout(SCAN_TIMEOUT_SECONDS):
                client.drop_database(ref.namespace)

    def inventory(self, backend: Backend) -> list[BackendRef]:
        """Every tenant database and every tenant user, whole or half-made (a user that never
        wrote has no database; a database may outlive its user)."""
        with admin_client(backend) as client:
            suffixes = _tenant_suffixes(client)
        return [
            BackendRef(backend.name, f"{DATABASE_PREFIX}_{s}", f"{USER_PREFIX}_{s}")
            for s in sorted(suffixes)
        ]

    def usage(self, backend: Backend, ref: BackendRef) -> int:
        with admin_client(backend) as client:
            return _used_bytes(client, ref.namespace)

    def check(self, backend: Backend) -> None:
        with admin_client(backend) as client:
            client.admin.command("ping")

    def enforce(self, backend: Backend, tenants: Sequence[Tenant]) -> list[Usage]:
        if not tenants:
            return []
        with admin_client(backend) as client:
            roles = _current_roles(client, [t.ref for t in tenants])
            usages = []
            for tenant in tenants:
                usage = Usage.of(tenant, _used_bytes(client, tenant.ref.namespace))
                usages.append(usage)
                _apply_roles(client, tenant.ref, roles.get(tenant.ref.principal), usage)
        return usages


def _credentials(backend: Backend, ref: BackendRef, password: str) -> Credentials:
    return Credentials(
        connection_url=_url(ref, password, backend.public_host),
        internal_url=_url(ref, password, backend.internal_host),
        extra={},
        stored={},
    )


def _url(ref: BackendRef, password: str, host: str) -> str:
    db = ref.namespace
    return f"mongodb://{ref.principal}:{password}@{host}/{db}?authSource={db}"


def _drop_user(client: Client, ref: BackendRef) -> None:
    try:
        client[ref.namespace].command("dropUser", ref.principal)
    except OperationFailure as exc:
        if exc.code != USER_NOT_FOUND:
            raise


def _forget_user(client: Client, ref: BackendRef) -> None:
    with suppress(PyMongoError):  # unreachable: the caller's compensation runs deprovision
        _drop_user(client, ref)


# -- listing ---------------------------------------------------------------------------------
def _tenant_suffixes(client: Client) -> set[str]:
    """Suffixes of tenant databases, of their over-quota roles, and of tenant users defined in
    their own database."""
    roles = [str(r["role"]) for r in client.admin.command("rolesInfo", 1)["roles"]]
    named = (TENANT_DATABASE.fullmatch(name) for name in [*client.list_database_names(), *roles])
    suffixes = {m.group(1) for m in named if m}
    for user in client.admin["system.users"].find({}, {"user": 1, "db": 1}):
        found = TENANT_USER.fullmatch(str(user.get("user", "")))
        if found and user.get("db") == f"{DATABASE_PREFIX}_{found.group(1)}":
            suffixes.add(found.group(1))
    return suffixes


# -- measuring -------------------------------------------------------------------------------
def _used_bytes(client: Client, database: str) -> int:
    """Data plus index bytes of ``database`` (an absent database uses nothing)."""
    with pymongo.timeout(SCAN_TIMEOUT_SECONDS):
        stats = client[database].command("dbStats")
    return int(stats.get("dataSize", 0)) + int(stats.get("indexSize", 0))


# -- enforcing -------------------------------------------------------------------------------
def _current_roles(
    client: Client, refs: Sequence[BackendRef]
) -> dict[str, list[Mapping[str, Any]]]:
    """Roles of every tenant user that still exists, by user name (one query)."""
    wanted = [f"{ref.namespace}.{ref.principal}" for ref in refs]
    users = client.admin["system.users"].find({"_id": {"$in": wanted}}, {"user": 1, "roles": 1})
    return {str(u["user"]): list(u.get("roles", [])) for u in users}


def _apply_roles(
    client: Client, ref: BackendRef, current: list[Mapping[str, Any]] | None, usage: Usage
) -> None:
    """Narrow to ``overQuota`` over quota, widen back to ``readWrite`` under it; users deprovisioned
    since the tenant list was read (absent) stay absent."""
    if current is None:
        return
    wanted = tenant_roles(ref.namespace, writable=not usage.over_quota)
    if [dict(role) for role in current] == wanted:
        return
    if usage.over_quota:
        _ensure_over_quota_role(client, ref.namespace)
    try:
        client[ref.namespace].command("updateUser", ref.principal, roles=wanted)
    except OperationFailure as exc:
        if exc.code != USER_NOT_FOUND:
            raise


def _ensure_over_quota_role(client: Client, database: str) -> None:
    privileges = [{"resource": {"db": database, "collection": ""}, "actions": OVER_QUOTA_ACTIONS}]
    try:
        client.admin.command("createRole", database, privileges=privileges, roles=[])
    except OperationFailure as exc:
        if exc.code != ROLE_EXISTS:
            raise


def _drop_over_quota_role(client: Client, database: str) -> None:
    try:
        client.admin.command("dropRole", database)
    except OperationFailure as exc:
        if exc.code != ROLE_NOT_FOUND:
            raise


# -- admin clients: one per backend (MongoClient is thread-safe and pools connections) --------
_clients: dict[tuple[str, str], Client] = {}
_clients_lock = threading.Lock()


def _client(backend: Backend) -> Client:
    key = (backend.name, backend.admin_url)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = pymongo.MongoClient(
                backend.admin_url,
                serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
                connectTimeoutMS=CONNECT_TIMEOUT_MS,
                socketTimeoutMS=SOCKET_TIMEOUT_MS,
                appname="instanode",
            )
        return _clients[key]


@contextmanager
def admin_client(backend: Backend) -> Iterator[Client]:
    """The backend's admin client; an unreachable server or a refused login is BackendDownError."""
    try:
        yield _client(backend)
    except ConnectionFailure as exc:  # includes ServerSelectionTimeoutError and AutoReconnect
        raise BackendDownError(f"cannot reach MongoDB backend {backend.name}") from exc
    except OperationFailure as exc:
        if exc.code in (AUTH_FAILED, UNAUTHORIZED):
            raise BackendDownError(f"MongoDB backend {backend.name} refused the admin") from exc
        raise
