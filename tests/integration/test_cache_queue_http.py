"""An agent's view of /cache/new and /queue/new: real clients with exactly the returned values."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from urllib.parse import urlsplit

import nats
import nkeys
import pytest
import redis
import requests

from devstack.stack import Stack
from tests.integration.conftest import provision

pytestmark = pytest.mark.integration
REDIS_CLI = "/usr/bin/redis-cli"


def test_cache_url_works_with_redis_py_and_redis_cli(api: str) -> None:
    body = provision(api, "/cache/new", "sessions").json()
    key = f"{body['key_prefix']}session:1"
    redis.Redis.from_url(body["connection_url"], socket_timeout=5).set(key, "alive")
    out = subprocess.run(
        [REDIS_CLI, "--no-auth-warning", "-u", body["connection_url"], "GET", key],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert out.stdout.strip() == "alive"


def test_cache_tenant_cannot_see_or_touch_another_tenants_keys(api: str) -> None:
    a = provision(api, "/cache/new", "a").json()
    b = provision(api, "/cache/new", "b").json()
    redis.Redis.from_url(b["connection_url"]).set(f"{b['key_prefix']}secret", "b-only")
    client = redis.Redis.from_url(a["connection_url"], socket_timeout=5)
    for command in (
        ("GET", f"{b['key_prefix']}secret"),
        ("SCAN", "0"),
        ("KEYS", "*"),
        ("FLUSHALL",),
        ("SELECT", "1"),
        ("CONFIG", "GET", "*"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)


async def _publish_and_receive(url: str, jwt: str, seed: str, subject: str) -> bytes:
    signer = nkeys.from_seed(seed.encode())

    def sign(nonce: str) -> bytes:
        return base64.b64encode(signer.sign(nonce.encode()))

    nc = await nats.connect(
        url,
        user_jwt_cb=lambda: jwt.encode(),
        signature_cb=sign,
        allow_reconnect=False,
        connect_timeout=2,
    )
    sub = await nc.subscribe(subject)
    await nc.publish(subject, b"order-1")
    msg = await sub.next_msg(timeout=2)
    await nc.close()
    return bytes(msg.data)


def test_queue_credentials_work_as_jwt_and_seed(api: str) -> None:
    body = provision(api, "/queue/new", "events").json()
    creds = body["credentials"]
    subject = f"{body['subject_prefix']}.orders"
    received = asyncio.run(
        _publish_and_receive(body["connection_url"], creds["nats_jwt"], creds["nats_nkey"], subject)
    )
    assert received == b"order-1"


def test_readyz_checks_redis_and_nats(api: str) -> None:
    checks = requests.get(f"{api}/readyz", timeout=10).json()["checks"]
    assert checks["redis:redis1"]["status"] == "ok"
    assert checks["queue:nats1"]["status"] == "ok"


def test_tokens_and_passwords_never_reach_the_server_log(api: str, stack: Stack) -> None:
    cache = provision(api, "/cache/new", "logged").json()
    inbox = provision(api, "/webhook/new", "logged").json()
    requests.post(inbox["receive_url"].replace(stack.base_url, api), data=b"x", timeout=10)
    requests.get(f"{api}/api/v1/webhooks/{inbox['token']}/requests", timeout=10)
    log = (stack.state / "api-integration.log").read_text()
    assert "/webhook/receive/<token>" in log  # the requests were logged, redacted
    for secret in (cache["token"], inbox["token"], urlsplit(cache["connection_url"]).password):
        assert secret and secret not in log
