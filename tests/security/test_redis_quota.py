"""The Redis storage limit on the live server: how far a tenant writing flat out gets past its
5 MB, and how long until its writes are refused, with the quota pass at a fixed interval
(5 s here; ``INSTANODE_QUOTA_TEST_INTERVAL=60`` measures ``make run``'s). Revocation reaches
connections that are already open; deleting brings the writes back at the next pass.

Between passes only the server's memory cap holds the tenant: it can fill what the server has
free (writes then fail with OOM for everyone, nobody's keys are evicted), so the bytes past the
limit are bounded by ``maxmemory`` and the time by one interval plus one pass.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import pytest
import redis

from chalicelib.models import Backend, Kind
from chalicelib.providers.base import Tenant
from chalicelib.providers.redis import RedisProvider
from chalicelib.tiers import KindLimits, default_tiers
from tests.functional import redis_fixtures as rf
from tests.functional.redis_fixtures import MAX_VALUE_BYTES, MakeTenant, connect, key
from tests.security.quota_bound import measure_bound

redis_server, backend, admin, provider = rf.redis_server, rf.backend, rf.admin, rf.provider
make_tenant = rf.make_tenant

INTERVAL = float(os.environ.get("INSTANODE_QUOTA_TEST_INTERVAL", "5"))
PASS_SECONDS = 5.0  # what one quota pass over this server may take, on top of the interval


def flat_out_writer(client: redis.Redis, prefix: str) -> tuple[Callable[[], bool], list[str]]:
    """One 1 MiB SET per call (the largest value the server takes) and the keys it wrote; False
    once the tenant's writes are refused. A full server's OOM is not a refusal of the tenant:
    the write did not land and the tenant keeps trying."""
    value, written, names = b"x" * MAX_VALUE_BYTES, [], (f"{prefix}w{i}" for i in itertools.count())

    def write() -> bool:
        name = next(names)
        try:
            client.set(name, value)
        except redis.exceptions.NoPermissionError:
            return False
        except redis.exceptions.OutOfMemoryError:
            return True
        written.append(name)
        return True

    return write, written


def test_tenant_writing_flat_out_is_refused_within_one_pass(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend, admin: redis.Redis
) -> None:
    limits = default_tiers()["anonymous"].limits(Kind.REDIS)  # 5 MB
    ref, creds = make_tenant(limits)
    tenant = Tenant(ref, limits, creds.stored)
    client = connect(creds)
    write, written = flat_out_writer(client, key(creds, ""))
    bound = measure_bound(
        "redis",
        write,
        usage=lambda: provider.usage(backend, ref),
        enforce=lambda: provider.enforce(backend, [tenant]),
        limit_bytes=limits.storage_bytes,
        interval=INTERVAL,
        timeout=3 * INTERVAL + 30,
    )
    assert bound.over_bytes <= int(admin.config_get("maxmemory")["maxmemory"])
    assert bound.seconds <= INTERVAL + PASS_SECONDS
    assert client.delete(*written) == len(written)  # deletes stay open over the limit
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set(key(creds, "again"), "v")
    provider.enforce(backend, [tenant])  # the next pass
    assert client.set(key(creds, "again"), "v")


def test_revocation_reaches_open_connections(
    make_tenant: MakeTenant, provider: RedisProvider, backend: Backend, admin: redis.Redis
) -> None:
    """ACL changes apply live in Redis 7: a connection opened before the pass loses writes at
    once (a transaction queued before it too), and keeps its subscriptions and reads."""
    limits = KindLimits(1, 10, 1)
    ref, creds = make_tenant(limits)
    client, own = connect(creds), key(creds, "k")
    client.rpush(own, *["x" * 500_000] * 3)  # 1.5 MB against 1 MB
    before = client.client_id()
    queued = connect(creds).connection_pool.get_connection()
    queued.send_command("MULTI")
    queued.read_response()
    queued.send_command("SET", f"{own}:queued", "v")
    assert queued.read_response() == b"QUEUED"
    subscriber = connect(creds).pubsub()
    subscriber.subscribe(f"{own}:ch")
    assert subscriber.get_message(timeout=2)
    provider.enforce(backend, [Tenant(ref, limits, creds.stored)])
    assert client.client_id() == before  # the same connection, still open
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set(f"{own}:after", "v")
    queued.send_command("EXEC")
    [refused] = queued.read_response()  # EXEC checks the ACL again, command by command
    assert isinstance(refused, redis.exceptions.NoPermissionError)
    assert admin.exists(f"{own}:queued") == 0
    admin.publish(f"{own}:ch", "still subscribed")
    assert subscriber.get_message(timeout=2)["data"] == b"still subscribed"  # type: ignore[index]
    assert client.llen(own) == 3
    subscriber.close()
    queued.disconnect()
