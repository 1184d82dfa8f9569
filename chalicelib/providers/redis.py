"""Redis key-prefix tenants on one of several shared Redis >= 7 servers.

Isolation per resource: an ACL user that may touch only keys and channels under its prefix
(``<namespace>:``), with every command closed that lists, wipes or escapes the shared keyspace
(SCAN, RANDOMKEY, DBSIZE, SELECT, COPY ... DB, FUNCTION/SCRIPT, scripting, PUBSUB listings,
server-wide MEMORY reports, client tracking) or that lets one call copy a tenant's whole data set
(the ``*STORE`` forms of the set, sorted-set and geo commands; their read forms stay). The
password reaches the server as its SHA-256 digest; the digest is kept on the record
(``Credentials.stored``) because ACLs live in the server's memory and the quota pass re-applies
them after a restart.

Redis enforces neither per-user storage nor per-user connection limits. The server bounds what
any one client can do (``redis_settings``: a memory cap that evicts nobody's keys, at most 1 MiB
per string or argument, bounded request and reply buffers); tenants are placed only on a server
that has these settings. ``enforce`` measures every tenant in one SCAN pass, takes writes (but
not deletes) away from tenants over their storage limit (live, on open connections too) and
closes connections beyond their budget.

Rotation replaces the digest (new logins with the old password fail) and closes every connection
of the user. The user comes back writable: a tenant over its limit loses writes again at the next
quota pass. A user deprovisioned since (its tombstone is there) is not brought back.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from itertools import islice

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chalicelib.models import Backend, BackendRef, Credentials, Kind
from chalicelib.providers.base import (
    BackendDownError,
    BackendUnreachableError,
    Rotated,
    Tenant,
    Usage,
    opaque_ref,
)
from chalicelib.providers.redis_settings import verify_server
from chalicelib.tiers import KindLimits

SOCKET_TIMEOUT_SECONDS = 10
CONNECT_TIMEOUT_SECONDS = 5
SCAN_COUNT = 1000
# Deprovisioned users are remembered this long, so a quota pass working from a tenant list read
# before the delete does not bring the user back (admin-only keys: no tenant pattern matches).
TOMBSTONE_PREFIX = "instanode:deleted:"
TOMBSTONE_SECONDS = 86_400
# The names new_ref makes (opaque_ref): what inventory recognises as the platform's.
_TENANT_USER = re.compile(r"u_([0-9a-f]+)")
_TENANT_NAMESPACE = re.compile(rb"t_([0-9a-f]+)")

# Commands closed to every tenant on top of @dangerous (which covers KEYS, FLUSH*, CONFIG, INFO,
# CLIENT LIST/KILL/NO-EVICT, DEBUG, MONITOR, SORT, MIGRATE, RESTORE and ACL administration).
_CLOSED = (
    "@dangerous",
    "@scripting",
    "select",
    "move",
    "copy",
    "swapdb",
    "scan",
    "randomkey",
    "dbsize",
    "pubsub",
    "memory|doctor",
    "memory|stats",
    "memory|malloc-stats",
    "memory|purge",
    "client|tracking",
    "cluster",
    "function",
    "script",
    "wait",
    "readonly",
    "readwrite",
    "asking",
)
# One call of these writes up to everything the tenant holds (a union of all its keys), so a
# tenant could double its data with each call between quota passes. Their read forms (SUNION,
# ZUNION, ZRANGE, GEOSEARCH, GEORADIUS_RO, ...) stay open; GEORADIUS has a STORE option.
_COPYING = (
    "sunionstore",
    "sinterstore",
    "sdiffstore",
    "zunionstore",
    "zinterstore",
    "zdiffstore",
    "zrangestore",
    "geosearchstore",
    "georadius",
    "georadiusbymember",
)
# What a tenant over its storage limit keeps of @write: commands that only free memory.
_FREEING = (
    "del",
    "unlink",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "getdel",
    "lpop",
    "rpop",
    "ltrim",
    "lrem",
    "hdel",
    "srem",
    "spop",
    "zrem",
    "zpopmin",
    "zpopmax",
    "zremrangebyrank",
    "zremrangebyscore",
    "zremrangebylex",
    "xdel",
    "xtrim",
)


def acl_rules(namespace: str, digest: str, writable: bool = True) -> list[str]:
    """The complete ACL of a tenant (``reset`` first, so applying it again is idempotent)."""
    pattern = f"{glob_escape(namespace)}:*"
    rules = ["reset", "on", f"#{digest}", f"~{pattern}", f"&{pattern}", "+@all"]
    rules += [f"-{command}" for command in (*_CLOSED, *_COPYING)]
    if not writable:
        rules += ["-@write", *(f"+{command}" for command in _FREEING)]
    return rules


def password_digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern (MATCH and ACL key patterns)."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


class RedisProvider:
    kind = Kind.REDIS

    def new_ref(self, backend: Backend) -> BackendRef:
        return opaque_ref(backend, "t", "u")

    def provision(self, backend: Backend, ref: BackendRef, limits: KindLimits) -> Credentials:
        password = secrets.token_urlsafe(24)
        digest = password_digest(password)
        with admin_client(backend) as client:
            _reach(client, backend)
            try:
                _set_user(client, ref, digest, writable=True)
            except Exception:
                _forget_user(client, ref)  # the reply may have been lost after the user was made
                raise
        return _credentials(backend, ref, password)

    def rotate(self, backend: Backend, tenant: Tenant) -> Rotated:
        ref, password = tenant.ref, secrets.token_urlsafe(24)
        tombstone = f"{TOMBSTONE_PREFIX}{ref.principal}"

        def replace_password(pipe: redis.client.Pipeline) -> None:
            if pipe.exists(tombstone):
                raise LookupError(f"Redis user {ref.principal} was deprovisioned")
            pipe.multi()
            _set_user(pipe, ref, password_digest(password), writable=True)
            pipe.client_kill_filter(user=ref.principal)

        with admin_client(backend) as client:  # atomic against a deprovision (its tombstone)
            client.transaction(replace_password, tombstone)
        return Rotated(ref, _credentials(backend, ref, password))

    def deprovision(self, backend: Backend, ref: BackendRef) -> None:
        """User first (no more writes), then keys, then the tombstone: on a full server only
        the freed memory lets the tombstone in (and it is skipped if even that does not)."""
        with admin_client(backend) as client:
            _drop_user(client, ref.principal)
            for batch in _batches(_keys_of(client, ref.namespace)):
                client.unlink(*batch)
            with suppress(redis.exceptions.OutOfMemoryError):
                client.set(f"{TOMBSTONE_PREFIX}{ref.principal}", 1, ex=TOMBSTONE_SECONDS)
            _drop_user(client, ref.principal)  # a quota pass may have re-made it meanwhile

    def usage(self, backend: Backend, ref: BackendRef) -> int:
        with admin_client(backend) as client:
            return sum(size for _, size in _measure(client, _keys_of(client, ref.namespace)))

    def check(self, backend: Backend) -> None:
        with admin_client(backend) as client:
            verify_server(client, backend)

    def enforce(self, backend: Backend, tenants: Sequence[Tenant]) -> list[Usage]:
        if not tenants:
            return []
        with admin_client(backend) as client:
            used = _usage_by_namespace(client, {t.ref.namespace for t in tenants})
            usages = [Usage.of(t, used.get(t.ref.namespace, 0)) for t in tenants]
            _apply_acls(client, tenants, usages)
            _hold_connection_budgets(client, tenants)
        return usages

    def inventory(self, backend: Backend) -> list[BackendRef]:
        """Every tenant ACL user (``u_<hex>``) and every tenant key prefix (``t_<hex>:``), a
        user without keys and keys without a user included, as one ref per suffix."""
        with admin_client(backend) as client:
            users = (_TENANT_USER.fullmatch(_text(u)) for u in client.acl_users())
            suffixes = {m.group(1) for m in users if m}
            suffixes |= _namespace_suffixes(client.scan_iter(match="t_*:*", count=SCAN_COUNT))
        return [BackendRef(backend.name, f"t_{s}", f"u_{s}") for s in sorted(suffixes)]


def _reach(client: redis.Redis, backend: Backend) -> None:
    """Verify the server before anything is made on it: failing to reach it here left nothing
    behind (``BackendUnreachableError``), an unsafe server is refused (``BackendDownError``)."""
    try:
        verify_server(client, backend)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BackendUnreachableError(f"cannot reach Redis backend {backend.name}") from exc


def _credentials(backend: Backend, ref: BackendRef, password: str) -> Credentials:
    return Credentials(
        connection_url=_url(ref, password, backend.public_host),
        internal_url=_url(ref, password, backend.internal_host),
        extra={"key_prefix": f"{ref.namespace}:"},
        stored={"acl_digest": password_digest(password)},
    )


def _url(ref: BackendRef, password: str, host: str) -> str:
    return f"redis://{ref.principal}:{password}@{host}/0"


def _set_user(client: redis.Redis, ref: BackendRef, digest: str, writable: bool) -> None:
    rules = acl_rules(ref.namespace, digest, writable)
    client.execute_command("ACL SETUSER", ref.principal, *rules)  # type: ignore[no-untyped-call]


def _forget_user(client: redis.Redis, ref: BackendRef) -> None:
    with suppress(redis.RedisError):  # unreachable: the caller's compensation runs deprovision
        client.acl_deluser(ref.principal)


def _drop_user(client: redis.Redis, user: str) -> None:
    """Delete the user and close its connections (both done already is fine)."""
    client.acl_deluser(user)
    try:
        client.client_kill_filter(user=user)
    except redis.ResponseError as exc:
        if "no such user" not in str(exc).lower():
            raise


def _namespace_suffixes(keys: Iterable[bytes]) -> set[str]:
    prefixes = (_TENANT_NAMESPACE.fullmatch(key.split(b":", 1)[0]) for key in keys)
    return {m.group(1).decode() for m in prefixes if m}


# -- measuring -------------------------------------------------------------------------------
def _keys_of(client: redis.Redis, namespace: str) -> Iterator[bytes]:
    yield from client.scan_iter(match=f"{glob_escape(namespace)}:*", count=SCAN_COUNT)


def _batches(keys: Iterable[bytes], size: int = SCAN_COUNT) -> Iterator[list[bytes]]:
    it = iter(keys)
    while batch := list(islice(it, size)):
        yield batch


def _measure(client: redis.Redis, keys: Iterable[bytes]) -> Iterator[tuple[bytes, int]]:
    """(key, bytes) for every key still there, measured exactly (SAMPLES 0) in pipelined batches."""
    for batch in _batches(keys):
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for key, size in zip(batch, pipe.execute(), strict=True):
            if size is not None:
                yield key, int(size)


def _usage_by_namespace(client: redis.Redis, namespaces: Collection[str]) -> dict[str, int]:
    """One SCAN over the whole keyspace; bytes per namespace (the part of a key before ':')."""
    wanted = {ns.encode() for ns in namespaces}
    keys = (k for k in client.scan_iter(count=SCAN_COUNT) if k.split(b":", 1)[0] in wanted)
    used: dict[str, int] = defaultdict(int)
    for key, size in _measure(client, keys):
        used[key.split(b":", 1)[0].decode()] += size
    return used


# -- enforcing -------------------------------------------------------------------------------
def _apply_acls(client: redis.Redis, tenants: Sequence[Tenant], usages: Sequence[Usage]) -> None:
    """Each tenant's full ACL, writable or not by its usage; users a restart lost come back,
    users deprovisioned since the tenant list was read do not."""
    gone = _deprovisioned(client, [t.ref.principal for t in tenants])
    pipe = client.pipeline(transaction=False)
    for tenant, usage in zip(tenants, usages, strict=True):
        digest = tenant.stored.get("acl_digest")
        if digest and tenant.ref.principal not in gone:
            _set_user(pipe, tenant.ref, digest, writable=not usage.over_quota)
    pipe.execute()


def _deprovisioned(client: redis.Redis, principals: Sequence[str]) -> set[str]:
    existing = {_text(u) for u in client.acl_users()}
    missing = [p for p in principals if p not in existing]
    pipe = client.pipeline(transaction=False)
    for principal in missing:
        pipe.exists(f"{TOMBSTONE_PREFIX}{principal}")
    return {p for p, found in zip(missing, pipe.execute(), strict=True) if found}


def _hold_connection_budgets(client: redis.Redis, tenants: Sequence[Tenant]) -> None:
    """Close each tenant's newest connections beyond its limit (client ids grow with age)."""
    budget = {t.ref.principal: t.limits.connections for t in tenants}
    excess = _excess_clients(client.client_list(), budget)
    pipe = client.pipeline(transaction=False)
    for client_id in excess:
        pipe.client_kill_filter(_id=client_id)
    pipe.execute()


def _excess_clients(clients: Iterable[Mapping[str, str]], budget: Mapping[str, int]) -> list[str]:
    ids: dict[str, list[int]] = defaultdict(list)
    for entry in clients:
        if entry.get("user") in budget:
            ids[entry["user"]].append(int(entry["id"]))
    return [str(i) for user, own in ids.items() for i in sorted(own)[max(0, budget[user]) :]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- admin clients: one per backend (redis-py clients are thread-safe and pool connections) ----
_clients: dict[tuple[str, str], redis.Redis] = {}
_clients_lock = threading.Lock()


def _client(backend: Backend) -> redis.Redis:
    key = (backend.name, backend.admin_url)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = redis.Redis.from_url(
                backend.admin_url,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 1),  # one reconnect: pooled sockets of a restarted server
                health_check_interval=30,
                redis_connect_func=_exempt_from_eviction,
            )
        return _clients[key]


def _exempt_from_eviction(connection: redis.connection.AbstractConnection) -> None:
    """Log in as usual, then make sure this connection is never the one ``maxmemory-clients``
    evicts (a tenant swelling the client buffers must not end the quota pass)."""
    connection.on_connect()  # type: ignore[no-untyped-call]
    connection.send_command("CLIENT", "NO-EVICT", "on")  # type: ignore[no-untyped-call]
    with suppress(redis.ResponseError):  # refused by a managed server: admin buffers stay small
        connection.read_response()


@contextmanager
def admin_client(backend: Backend) -> Iterator[redis.Redis]:
    """The backend's admin client; an unreachable server or a refused login is BackendDownError."""
    try:
        yield _client(backend)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BackendDownError(f"cannot reach Redis backend {backend.name}") from exc
