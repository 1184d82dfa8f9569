"""POST /cache/new and /queue/new through the app, on the stack's real Redis and NATS servers."""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import replace

import nats
import pytest
import redis

from chalicelib import deps, errors
from chalicelib.dynamo import Dynamo
from chalicelib.jobs.quota import QuotaJob
from chalicelib.jobs.reaper import Reaper
from chalicelib.models import Kind
from chalicelib.tiers import KindLimits, Tier, all_tiers, get_tier
from tests.functional.conftest import Post, caller, key_for, make_service, request, settings

pytestmark = pytest.mark.usefixtures("app_env")


def tiny_redis_tier() -> dict[str, Tier]:
    anon = get_tier("anonymous")
    kinds = {**anon.kinds, Kind.REDIS: KindLimits(storage_mb=1, connections=10, max_resources=1)}
    return {**all_tiers(), "anonymous": replace(anon, kinds=kinds)}


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


async def round_trip(url: str, creds_file: str, subject: str) -> bytes:
    with tempfile.NamedTemporaryFile("w", suffix=".creds") as f:
        f.write(creds_file)
        f.flush()
        nc = await nats.connect(
            url, user_credentials=f.name, allow_reconnect=False, connect_timeout=2
        )
        sub = await nc.subscribe(subject)
        await nc.publish(subject, b"hello")
        msg = await sub.next_msg(timeout=2)
        await nc.close()
        return bytes(msg.data)


def test_cache_new_returns_a_prefixed_redis_user(post: Post) -> None:
    resp = post("/cache/new", {"name": "sessions-cache"})
    assert resp.status_code == 201
    body = resp.json_body
    assert body["connection_url"].startswith("redis://u_") and body["connection_url"].endswith("/0")
    assert body["limits"] == {"storage_mb": 5, "connections": 10}
    client = redis_client(body["connection_url"])
    client.set(f"{body['key_prefix']}greeting", "hi")
    assert client.get(f"{body['key_prefix']}greeting") == b"hi"
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("elsewhere", "x")


def test_second_cache_of_a_network_is_resource_limit_reached(post: Post) -> None:
    ip = "10.250.1.7"
    assert post("/cache/new", {"name": "a"}, ip=ip).status_code == 201
    assert post("/cache/new", {"name": "b"}, ip=ip).status_code == 402


def test_queue_new_returns_isolated_nats_credentials(post: Post) -> None:
    resp = post("/queue/new", {"name": "events-queue"})
    assert resp.status_code == 201
    body = resp.json_body
    assert body["auth_mode"] == "isolated" and body["connection_url"].startswith("nats://")
    assert {"nats_jwt", "nats_nkey", "creds_file"} <= body["credentials"].keys()
    subject = f"{body['subject_prefix']}orders" if body["subject_prefix"] else "orders"
    reply = asyncio.run(
        round_trip(body["connection_url"], body["credentials"]["creds_file"], subject)
    )
    assert reply == b"hello"


def test_queues_are_not_capped_per_network(post: Post) -> None:
    ip = "10.250.2.7"
    assert [post("/queue/new", {"name": f"q{i}"}, ip=ip).status_code for i in range(2)] == [
        201,
        201,
    ]


def test_quota_job_revokes_writes_over_the_limit_and_keeps_deletes(dynamo: Dynamo) -> None:
    tiers = tiny_redis_tier()
    who, req = caller(), request(Kind.REDIS)
    body = make_service(tiers=tiers).provision(who, req, key_for(who, req)).body
    client = redis_client(body["connection_url"])
    big = body["key_prefix"] + "big"
    client.rpush(big, *[b"x" * (1 << 19)] * 3)  # 1.5 MiB in values under the 1 MiB cap
    report = QuotaJob(settings(), dynamo, deps.get_provider, tiers).run()
    assert report.over_quota == 1 and report.failed == 0
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set(body["key_prefix"] + "more", "x")
    client.delete(big)
    assert QuotaJob(settings(), dynamo, deps.get_provider, tiers).run().over_quota == 0
    client.set(body["key_prefix"] + "more", "x")


def test_reaper_removes_expired_cache_and_queue(dynamo: Dynamo) -> None:
    t0 = time.time() - 2 * 86400
    svc = make_service(clock=lambda: t0)
    bodies = {}
    for kind in (Kind.REDIS, Kind.QUEUE):
        who, req = caller(), request(kind)
        bodies[kind] = svc.provision(who, req, key_for(who, req)).body
    report = Reaper(settings(), dynamo, deps.get_provider, time.time).run()
    assert report.expired == 2 and report.failed == 0
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis_client(bodies[Kind.REDIS]["connection_url"]).ping()
    queue = bodies[Kind.QUEUE]
    with pytest.raises(Exception, match="[Aa]uthorization"):
        asyncio.run(round_trip(queue["connection_url"], queue["credentials"]["creds_file"], "x"))


@pytest.mark.parametrize("kind", [Kind.REDIS, Kind.QUEUE])
def test_backend_down_is_503_with_nothing_recorded(kind: Kind, dynamo: Dynamo) -> None:
    live = settings().backends_for(kind)[0]
    dead_url = "redis://admin:x@127.0.0.1:9/0" if kind is Kind.REDIS else "nats://127.0.0.1:9"
    dead = replace(live, admin_url=dead_url, public_host="127.0.0.1:9")
    config = replace(settings(), backends={**settings().backends, kind: (dead,)})
    who, req = caller(), request(kind)
    with pytest.raises(errors.BackendUnavailableError):
        make_service(config=config).provision(who, req, key_for(who, req))
    assert dynamo.client.scan(TableName=settings().resources_table)["Items"] == []
