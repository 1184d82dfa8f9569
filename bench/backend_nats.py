"""The NATS server behind ``/queue/new``, over a system-user connection the bench keeps open.

nats-py is asyncio: the connection lives on an event loop of the bench's own, which runs only
while a call here waits for it. The account JWT, the admin protocol and the removal are the
provider's (``chalicelib.providers.nats``, ``chalicelib.natsjwt``), not copies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Coroutine, Mapping
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from bench.backends import ms_since
from chalicelib import natsjwt
from chalicelib.models import Backend, Kind
from chalicelib.providers.nats import (
    NatsAdmin,
    NatsProvider,
    account_limits,
    admin_request,
    connect,
    push_claims,
    remove_account,
    subject_prefix,
)
from chalicelib.tiers import ANONYMOUS, get_tier

T = TypeVar("T")


class NatsBench:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._admin = NatsAdmin.of(backend)
        self._system = backend.secrets["system_account"]
        self._limits = account_limits(get_tier(ANONYMOUS).limits(Kind.QUEUE))
        self._loop = asyncio.new_event_loop()
        self._exits = AsyncExitStack()
        self._nc = self._run(
            self._exits.enter_async_context(connect(self._admin.url, self._admin.system_creds))
        )
        self._raw: list[str] = []  # raw-op accounts

    def raw(self) -> float:
        """Build one account JWT as the provider does (operator-signed, the anonymous tier's
        limits, the platform signing key) and push it with ``$SYS.REQ.CLAIMS.UPDATE``. The
        account key is made untimed, as the app makes it before ``provision()``."""
        ref = NatsProvider().new_ref(self._backend)
        start = time.perf_counter()
        try:
            account_jwt = natsjwt.account_jwt(
                self._admin.operator,
                ref.namespace,
                subject_prefix(ref),
                self._limits,
                signing_keys=[self._admin.signing.public_key],
            )
            self._run(push_claims(self._nc, "$SYS.REQ.CLAIMS.UPDATE", account_jwt))
            return ms_since(start)
        finally:
            self._raw.append(ref.namespace)

    def drop_raw(self) -> None:
        """The provider's removal: tombstone, JetStream purge, ``$SYS.REQ.CLAIMS.DELETE``."""
        while self._raw:
            self._run(remove_account(self._nc, self._admin, self._raw[-1]))
            self._raw.pop()

    def made_by(self, answer: Mapping[str, Any]) -> str:
        """The account: the ``issuer_account`` of the user JWT handed out."""
        user = natsjwt.decode(str(answer["credentials"]["nats_jwt"]))
        return str(user["nats"]["issuer_account"])

    def accounts(self) -> set[str]:
        """The accounts in the server's resolver (``$SYS.REQ.CLAIMS.LIST``), but the system's."""
        listed = self._run(admin_request(self._nc, "$SYS.REQ.CLAIMS.LIST")).get("data") or []
        return {str(account) for account in listed} - {self._system}

    def tenants(self) -> int:
        return len(self.accounts())

    def left(self, made: Collection[str]) -> int:
        return len(self.accounts() & {*made, *self._raw})

    def close(self) -> None:
        try:
            self._run(self._exits.aclose())
        finally:
            self._loop.close()

    def _run(self, step: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(step)
