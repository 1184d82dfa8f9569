"""NATS JetStream queues: one NATS account per resource, on a server in operator mode.

The account is the isolation boundary: subjects, pub/sub, request/reply and JetStream streams of
one account are invisible to every other. The server enforces the tier's limits itself: the
account JWT carries ``conn`` (connections) and ``disk_storage`` (JetStream bytes; memory streams
are off, as the server reserves every account's memory limit up front).

Keys, and what is stored where:
- the operator signs account JWTs (pushed with ``$SYS.REQ.CLAIMS.UPDATE`` as the system user);
- every account lists the platform's signing key, which issues its users (``issuer_account``),
  so no per-account seed exists anywhere;
- the user's seed is derived from the signing seed, the account and a generation (HMAC), so the
  ``BackendRef`` (written before provisioning) holds only public keys and provisioning can
  rebuild the seed; the record keeps the generation (``Credentials.stored``).

Rotation issues the user of the next generation and re-issues the account with every earlier
generation's user revoked (``revocations``): their logins are refused and live connections drop.
Resizing re-issues the account with the new limits and the same revocations. Neither brings back
an account that was removed.

Removal: push a tombstone JWT for the account (no connections, every user revoked: live clients
drop at once), purge its JetStream data as the system account (``$JS.API.ACCOUNT.PURGE``), then
delete it (``$SYS.REQ.CLAIMS.DELETE``). Each step succeeds for an account that is already gone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats.errors
from nats.aio.client import Client, RawCredentials

from chalicelib import natsjwt
from chalicelib.models import Backend, BackendRef, Credentials, Kind
from chalicelib.natsjwt import KeyPair
from chalicelib.providers.base import BackendDownError, BackendUnreachableError, Rotated, Tenant
from chalicelib.tiers import KindLimits

CONNECT_TIMEOUT_SECONDS = 3
REQUEST_TIMEOUT_SECONDS = 3
MAX_STREAMS = 10
MAX_CONSUMERS = 100
USER_GENERATION = "user_generation"  # the key of Credentials.stored
_NETWORK_ERRORS = (nats.errors.Error, OSError, TimeoutError)
T = TypeVar("T")


class NatsError(Exception):
    """The NATS server refused an admin request, or the backend's keys are incomplete."""


@dataclass(frozen=True)
class NatsAdmin:
    """A backend's admin material (its ``secrets`` from ``INSTANODE_NATS_BACKENDS``)."""

    url: str
    operator: KeyPair = field(repr=False)
    signing: KeyPair = field(repr=False)
    system_creds: str = field(repr=False)

    @classmethod
    def of(cls, backend: Backend) -> NatsAdmin:
        needed = ("operator_seed", "signing_seed", "system_user_jwt", "system_user_seed")
        missing = [key for key in needed if not backend.secrets.get(key)]
        if missing:
            raise NatsError(f"NATS backend {backend.name} lacks {', '.join(missing)}")
        s = backend.secrets
        return cls(
            url=backend.admin_url,
            operator=KeyPair.from_seed(s["operator_seed"]),
            signing=KeyPair.from_seed(s["signing_seed"]),
            system_creds=natsjwt.creds_file(s["system_user_jwt"], s["system_user_seed"]),
        )

    def user_key(self, account: str, generation: int = 0) -> KeyPair:
        """The account's user of ``generation`` (0 at provisioning, one more per rotation)."""
        return natsjwt.derived_user(self.signing, account, generation)

    def account_jwt(self, ref: BackendRef, limits: KindLimits, generation: int) -> str:
        """The tenant's account, the users of every generation before ``generation`` revoked."""
        return natsjwt.tenant_account_jwt(
            self.operator,
            self.signing,
            ref.namespace,
            subject_prefix(ref),
            account_limits(limits),
            generation,
        )


class NatsProvider:
    kind = Kind.QUEUE

    def new_ref(self, backend: Backend) -> BackendRef:
        account = KeyPair.new("account").public_key  # its seed is never needed: dropped here
        user = NatsAdmin.of(backend).user_key(account)
        return BackendRef(backend=backend.name, namespace=account, principal=user.public_key)

    def provision(self, backend: Backend, ref: BackendRef, limits: KindLimits) -> Credentials:
        admin = NatsAdmin.of(backend)
        credentials = _credentials(backend, admin, ref, 0)
        creds = credentials.extra["credentials"]["creds_file"]
        _run(_create(admin, ref.namespace, admin.account_jwt(ref, limits, 0), creds))
        return credentials

    def rotate(self, backend: Backend, tenant: Tenant) -> Rotated:
        admin = NatsAdmin.of(backend)
        generation = _generation(admin, tenant) + 1
        user = admin.user_key(tenant.ref.namespace, generation)
        ref = dataclasses.replace(tenant.ref, principal=user.public_key)
        _run(_reissue(admin, ref, admin.account_jwt(ref, tenant.limits, generation)))
        return Rotated(ref, _credentials(backend, admin, ref, generation))

    def resize(self, backend: Backend, tenant: Tenant) -> None:
        admin = NatsAdmin.of(backend)
        account_jwt = admin.account_jwt(tenant.ref, tenant.limits, _generation(admin, tenant))
        _run(_reissue(admin, tenant.ref, account_jwt))

    def deprovision(self, backend: Backend, ref: BackendRef) -> None:
        admin = NatsAdmin.of(backend)

        async def remove() -> None:
            async with connect(admin.url, admin.system_creds) as nc:
                await remove_account(nc, admin, ref.namespace)

        _run(remove())

    def usage(self, backend: Backend, ref: BackendRef) -> int:
        admin = NatsAdmin.of(backend)

        async def measure() -> int:
            async with connect(admin.url, admin.system_creds) as nc:
                reply = await admin_request(nc, f"$SYS.REQ.ACCOUNT.{ref.namespace}.JSZ")
            error = str((reply.get("error") or {}).get("description", ""))
            if "not found" in error or "not jetstream enabled" in error:
                return 0  # never used since the server started, or gone: no JetStream data
            if error or not isinstance(reply.get("data"), dict):
                raise NatsError(f"JSZ of {ref.namespace}: {error or reply}")
            return int(reply["data"]["storage"]) + int(reply["data"]["memory"])

        return _run(measure())

    def check(self, backend: Backend) -> None:
        admin = NatsAdmin.of(backend)

        async def ping() -> None:
            async with connect(admin.url, admin.system_creds) as nc:
                await _guard(nc.flush(timeout=REQUEST_TIMEOUT_SECONDS), admin.url)

        _run(ping())

    def inventory(self, backend: Backend) -> list[BackendRef]:
        """Every account in the server's resolver but the system account (the operator signs
        no other), removed ones whose deletion did not finish included."""
        admin = NatsAdmin.of(backend)

        async def listing() -> list[str]:
            async with connect(admin.url, admin.system_creds) as nc:
                return await _tenant_accounts(nc, backend)

        return [
            BackendRef(backend.name, account, admin.user_key(account).public_key)
            for account in _run(listing())
        ]


def remove_all_accounts(backend: Backend) -> int:
    """Remove every account but the system account (the local stack's reset); return how many."""
    admin = NatsAdmin.of(backend)

    async def sweep() -> int:
        async with connect(admin.url, admin.system_creds) as nc:
            accounts = await _tenant_accounts(nc, backend)
            for account in accounts:
                await remove_account(nc, admin, account)
        return len(accounts)

    return _run(sweep())


async def _tenant_accounts(nc: Client, backend: Backend) -> list[str]:
    system = backend.secrets.get("system_account")
    if not system:
        raise NatsError(f"NATS backend {backend.name} lacks system_account")
    listed = (await admin_request(nc, "$SYS.REQ.CLAIMS.LIST")).get("data") or []
    return [str(account) for account in listed if account != system]


def account_limits(limits: KindLimits) -> dict[str, int | bool]:
    """The tier's limits as account JWT limits (the server enforces them)."""
    return {
        "conn": limits.connections,
        "disk_storage": limits.storage_bytes,
        "mem_storage": 0,
        "streams": MAX_STREAMS,
        "consumer": MAX_CONSUMERS,
        "leaf": 0,
        "disallow_bearer": True,
    }


def subject_prefix(ref: BackendRef) -> str:
    """A short subject token for the resource (``q_`` + part of the account key). The account
    already isolates the whole subject space, so it is a suggested namespace, not a fence: a
    client written for prefix-scoped queues keeps working under ``<prefix>.>``."""
    return f"q_{ref.namespace[1:11].lower()}"


def _nats_url(host: str) -> str:
    return host if "://" in host else f"nats://{host}"


def _user(admin: NatsAdmin, ref: BackendRef, generation: int) -> KeyPair:
    """The user of ``generation``, which must be ``ref.principal`` (else the signing key changed,
    or the record's generation is not the server's: earlier users would escape revocation)."""
    user = admin.user_key(ref.namespace, generation)
    if user.public_key != ref.principal:
        raise NatsError(f"user key of {ref.namespace} does not match (signing key changed?)")
    return user


def _generation(admin: NatsAdmin, tenant: Tenant) -> int:
    """The generation of the tenant's current user (records made before rotation have none: 0)."""
    generation = int(tenant.stored.get(USER_GENERATION, "0"))
    _user(admin, tenant.ref, generation)
    return generation


def _credentials(
    backend: Backend, admin: NatsAdmin, ref: BackendRef, generation: int
) -> Credentials:
    user = _user(admin, ref, generation)
    user_jwt = natsjwt.user_jwt(
        admin.signing, user.public_key, subject_prefix(ref), issuer_account=ref.namespace
    )
    creds = natsjwt.creds_file(user_jwt, user.seed)
    return Credentials(
        connection_url=_nats_url(backend.public_host),
        internal_url=_nats_url(backend.internal_host),
        extra={
            "credentials": {"nats_jwt": user_jwt, "nats_nkey": user.seed, "creds_file": creds},
            "subject_prefix": subject_prefix(ref),
            "auth_mode": "isolated",
        },
        stored={USER_GENERATION: str(generation)},
    )


# -- the admin protocol ---------------------------------------------------------------------
async def _create(admin: NatsAdmin, account: str, account_jwt: str, creds: str) -> None:
    """Push the account, then prove JetStream works for its user; on failure remove it again."""
    async with connect(admin.url, admin.system_creds) as nc:
        try:
            await push_claims(nc, "$SYS.REQ.CLAIMS.UPDATE", account_jwt)
            await _check_tenant(admin.url, creds)
        except BaseException:
            with suppress(Exception):
                await remove_account(nc, admin, account)
            raise


async def _reissue(admin: NatsAdmin, ref: BackendRef, account_jwt: str) -> None:
    """Push a new JWT for a live account; a removed one (no JWT, or its tombstone) stays removed."""
    async with connect(admin.url, admin.system_creds) as nc:
        current = await _guard(_lookup(nc, ref.namespace), ref.namespace)
        if not current or natsjwt.decode(current).get("name") != subject_prefix(ref):
            raise NatsError(f"account {ref.namespace} was removed")
        await push_claims(nc, "$SYS.REQ.CLAIMS.UPDATE", account_jwt)


async def _lookup(nc: Client, account: str) -> str:
    """The account's JWT in the server's resolver, or "" when it holds none (then nats-server 2.9
    does not answer: the lookup times out)."""
    subject = f"$SYS.REQ.ACCOUNT.{account}.CLAIMS.LOOKUP"
    try:
        return (await nc.request(subject, b"", timeout=REQUEST_TIMEOUT_SECONDS)).data.decode()
    except nats.errors.TimeoutError:
        return ""


async def _check_tenant(url: str, creds: str) -> None:
    """Log in as the new user (this loads the account) and ask for its JetStream info: a server
    whose ``max_file_store`` cannot hold the account's limit leaves JetStream off for it."""
    try:
        await _check_jetstream(url, creds)
    except BackendUnreachableError as exc:  # the account was pushed: the server is not clean
        raise BackendDownError(str(exc)) from exc


async def _check_jetstream(url: str, creds: str) -> None:
    async with connect(url, creds, refused=NatsError) as nc:
        try:
            await _guard(nc.request("$JS.API.INFO", b"", timeout=REQUEST_TIMEOUT_SECONDS), url)
        except BackendDownError as exc:
            if isinstance(exc.__cause__, nats.errors.NoRespondersError):
                raise NatsError("JetStream is off for the new account (server full?)") from exc
            raise


async def remove_account(nc: Client, admin: NatsAdmin, account: str) -> None:
    await push_claims(nc, "$SYS.REQ.CLAIMS.UPDATE", natsjwt.tombstone_jwt(admin.operator, account))
    purged = await admin_request(nc, f"$JS.API.ACCOUNT.PURGE.{account}")
    if not purged.get("initiated"):
        raise NatsError(f"purge of {account} refused: {purged.get('error', purged)}")
    await push_claims(
        nc, "$SYS.REQ.CLAIMS.DELETE", natsjwt.delete_accounts_jwt(admin.operator, [account])
    )


async def push_claims(nc: Client, subject: str, token: str) -> None:
    reply = await admin_request(nc, subject, token.encode())
    data = reply.get("data")
    if not isinstance(data, dict) or data.get("code") != 200:
        raise NatsError(f"{subject} refused: {reply.get('error', reply)}")


async def admin_request(nc: Client, subject: str, payload: bytes = b"") -> dict[str, Any]:
    msg = await _guard(nc.request(subject, payload, timeout=REQUEST_TIMEOUT_SECONDS), subject)
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


async def _guard(step: Coroutine[Any, Any, T], what: str) -> T:
    try:
        return await step
    except _NETWORK_ERRORS as exc:
        raise BackendDownError(f"NATS did not answer {what}: {exc!r}") from exc


@asynccontextmanager
async def connect(
    url: str, creds: str, refused: type[Exception] = BackendDownError
) -> AsyncIterator[Client]:
    """A single-use connection; ``refused`` is raised when the server turns the login down."""

    async def quiet(exc: Exception) -> None:  # nats-py logs every error with a traceback
        return None

    nc = Client()
    try:
        # nats-py retries an unreachable server forever when max_reconnect_attempts is 0: allow
        # one retry, and bound the whole attempt as well.
        await asyncio.wait_for(
            nc.connect(
                url,
                user_credentials=RawCredentials(creds),
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                error_cb=quiet,
                name="instanode-admin",
            ),
            timeout=2 * CONNECT_TIMEOUT_SECONDS + 1,
        )
    except (OSError, TimeoutError, nats.errors.NoServersError) as exc:
        await _close(nc)
        raise BackendUnreachableError(f"cannot reach NATS at {url}") from exc
    except nats.errors.Error as exc:
        await _close(nc)
        raise refused(f"NATS at {url} refused the login: {exc}") from exc
    try:
        yield nc
    finally:
        await _close(nc)


async def _close(nc: Client) -> None:
    with suppress(Exception):
        await nc.close()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """nats-py is asyncio; the app is synchronous: one private event loop per call."""
    return asyncio.run(coro)
