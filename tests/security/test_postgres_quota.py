"""The Postgres storage limit on the live server: how far a tenant writing flat out gets past its
10 MB, and how long until its writes are refused, with the quota pass at a fixed interval
(5 s here; ``INSTANODE_QUOTA_TEST_INTERVAL=60`` measures ``make run``'s). Emptying the database
brings the writes back at the next pass.

Between passes nothing holds the tenant (Postgres has no per-database size limit): the bytes
past the limit are what its client writes in one interval plus one pass, the time at most that.
"""

from __future__ import annotations

import os

import pg8000.native
from pg8000.exceptions import DatabaseError, InterfaceError

from chalicelib.models import Backend, Kind
from chalicelib.providers.postgres import PostgresProvider
from chalicelib.tiers import default_tiers
from tests.security.quota_bound import measure_bound
from tests.security.test_postgres_attacks import DENIED, Made, backend, tenants

__all__ = ["backend"]  # the fixture, shared with the attack tests

INTERVAL = float(os.environ.get("INSTANODE_QUOTA_TEST_INTERVAL", "5"))
PASS_SECONDS = 5.0  # what one quota pass over this server may take, on top of the interval
CHUNK_BYTES = 256 << 10
LIMITS = default_tiers()["anonymous"].limits(Kind.POSTGRES)  # 10 MB, 2 connections


class FlatOutWriter:
    """One INSERT of 256 KiB of random bytes (incompressible) per call, on one pg8000 session
    that reconnects when the quota switch ends it; False once the server refuses the write."""

    def __init__(self, made: Made) -> None:
        self._made, self._chunk = made, os.urandom(CHUNK_BYTES)
        self._session: pg8000.native.Connection | None = made.session()
        self._session.run("CREATE TABLE fill (body bytea)")

    def write(self) -> bool:
        try:
            self._session = self._session or self._made.session()
            self._session.run("INSERT INTO fill VALUES (:b)", b=self._chunk)
        except DatabaseError as exc:
            if exc.args[0]["C"] == DENIED:
                return False
            self._session = None  # the switch ended the session, or holds the database shut
        except (InterfaceError, OSError):  # ended mid-write: a reset socket
            self._session = None
        return True

    def session(self) -> pg8000.native.Connection:
        self._session = self._session or self._made.session()
        return self._session


def test_tenant_writing_flat_out_is_refused_within_one_pass(backend: Backend) -> None:
    provider = PostgresProvider(Kind.POSTGRES)
    with tenants(backend) as make:
        made = make(limits=LIMITS)
        tenant, writer = made.tenant(LIMITS), FlatOutWriter(made)
        bound = measure_bound(
            "postgres",
            writer.write,
            usage=lambda: provider.usage(backend, made.ref),
            enforce=lambda: provider.enforce(backend, [tenant]),
            limit_bytes=LIMITS.storage_bytes,
            interval=INTERVAL,
            timeout=3 * INTERVAL + 30,
        )
        assert bound.seconds <= INTERVAL + PASS_SECONDS
        writer.session().run("TRUNCATE fill")  # freeing space stays open over the limit
        assert not writer.write()
        provider.enforce(backend, [tenant])  # the next pass
        assert writer.write()
