"""The MongoDB storage limit holds on open connections: a tenant writing through ONE open pymongo
connection as fast as it can, while the quota pass runs beside it, is refused from the pass that
finds it over the limit (the server applies the narrowed role to open connections), then frees
space itself and writes again, on the same connection, after the next pass.

The figures (bytes past the limit, seconds from crossing it to the first refusal) print for the
README's limits table; ``INSTANODE_QUOTA_TEST_INTERVAL`` sets the pass interval (5 s here, 60 s as
``make run`` runs its jobs).
"""

from __future__ import annotations

import os

from pymongo.errors import OperationFailure

from chalicelib.models import Kind
from chalicelib.providers.base import Tenant as QuotaTenant
from chalicelib.tiers import default_tiers
from tests.security.quota_bound import measure_bound
from tests.security.test_mongo_attacks import UNAUTHORIZED, Tenant, Tenants

INTERVAL = float(os.environ.get("INSTANODE_QUOTA_TEST_INTERVAL", "5"))
LIMITS = default_tiers()["anonymous"].limits(Kind.MONGODB)  # the spec's 5 MB
CHUNK_DOCUMENTS, DOCUMENT_BYTES = 4, 100_000  # one write: insert_many of 400 KB
PASS_SECONDS = 30  # a generous ceiling on one quota pass (dbStats of what was written)


def write_chunk(tenant: Tenant) -> bool:
    """One insert as fast as pymongo sends it; False once the server refuses it."""
    try:
        tenant.db.blobs.insert_many(
            [{"blob": "x" * DOCUMENT_BYTES} for _ in range(CHUNK_DOCUMENTS)]
        )
    except OperationFailure as exc:
        if exc.code != UNAUTHORIZED:
            raise
        return False
    return True


def test_over_quota_tenant_is_refused_on_its_open_connection_and_writes_again_when_under(
    tenants: Tenants,
) -> None:
    tenant = tenants.new(LIMITS, maxPoolSize=1)  # every command on one open connection
    quota = QuotaTenant(tenant.ref, LIMITS, {})
    provider, backend = tenants.provider, tenants.backend

    def quota_pass() -> None:
        provider.enforce(backend, [quota])

    bound = measure_bound(
        "mongodb",
        write=lambda: write_chunk(tenant),
        usage=lambda: provider.usage(backend, tenant.ref),
        enforce=quota_pass,
        limit_bytes=LIMITS.storage_bytes,
        interval=INTERVAL,
        timeout=2 * INTERVAL + PASS_SECONDS,
    )
    assert 0 < bound.seconds <= INTERVAL + PASS_SECONDS
    assert tenant.db.blobs.find_one({}, {"_id": 1}) is not None  # reads stay

    tenant.db.blobs.drop()  # the tenant frees space itself
    assert not write_chunk(tenant)  # still refused until the next pass looks
    quota_pass()
    assert write_chunk(tenant)
