"""What accounts cost per request, in this process (``chalice.test.Client`` against the bench
stack's moto server and SMTP server): latency p50/p99 and DynamoDB requests per call.

  python -m bench.accounts [--n 50]

Pairs compared side by side in one interleaved loop (so machine noise hits both alike):
* ``POST /webhook/new`` anonymous vs with an API key (the key and team lookups a team pays),
* ``GET /auth/me`` with a session (revocation check) vs with an API key,
* ``GET /api/v1/resources`` (a page of 10) and ``GET /claim/preview``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from bench.meters import DynamoMeter, Op, interleaved, main_on_stack, stats_of
from devstack.stack import ROOT, Stack

JSON = {"Content-Type": "application/json"}


def _timed(meter: DynamoMeter, calls: dict[str, list[int]], name: str, fn: Callable[[], Any]) -> Op:
    def op() -> float:
        meter.reset()
        started = time.perf_counter()
        fn()
        elapsed = (time.perf_counter() - started) * 1000
        calls.setdefault(name, []).append(sum(meter.sent.values()))
        return elapsed

    return op


def main(argv: Sequence[str] | None = None) -> int:
    return main_on_stack("bench.accounts", __doc__, (50, "measured rounds"), run, argv)


def run(stack: Stack, n: int) -> int:
    from chalice.test import Client

    from app import app
    from chalicelib import deps

    deps.reset()
    client = Client(app, "local", str(ROOT))
    meter = DynamoMeter(deps.get_dynamo().client.meta.events)
    ips = (f"10.{i // 256 % 256}.{i % 256}.9" for i in range(7_000_000, 8_000_000))

    def post(path: str, body: dict[str, Any], **headers: str) -> Any:
        reply = client.http.post(path, body=json.dumps(body), headers={**JSON, **headers})
        assert reply.status_code < 400, reply.body
        return json.loads(reply.body)

    def get(path: str, **headers: str) -> Any:
        reply = client.http.get(path, headers=headers)
        assert reply.status_code == 200, reply.body
        return json.loads(reply.body)

    # a signed-in team with an API key and ten resources, and a claim token to preview
    email = f"bench{uuid.uuid4().hex[:10]}@example.com"
    post("/auth/email/start", {"email": email})
    part = stack.smtp.wait_for(email).get_body(("plain",))
    link = re.search(r"/auth/email/callback\?token=\S+", part.get_content() if part else "")
    assert link
    cookie = client.http.get(link.group(0)).headers["Set-Cookie"].split(";")[0]
    key = post("/api/v1/api-keys", {"name": "bench", "scope": "write"}, Cookie=cookie)
    bearer = {"Authorization": f"Bearer {key['api_token']}"}
    for i in range(10):
        post("/webhook/new", {"name": f"team-{i}"}, **bearer)
    preview_jwt = post("/webhook/new", {"name": "anon"}, **{"X-Forwarded-For": next(ips)})

    calls: dict[str, list[int]] = {}
    ops = {
        "POST /webhook/new (anonymous)": lambda: post(
            "/webhook/new", {"name": "b"}, **{"X-Forwarded-For": next(ips)}
        ),
        "POST /webhook/new (API key)": lambda: post(
            "/webhook/new", {"name": f"b{uuid.uuid4().hex[:6]}"}, **bearer
        ),
        "GET /auth/me (session)": lambda: get("/auth/me", Cookie=cookie),
        "GET /auth/me (API key)": lambda: get("/auth/me", **bearer),
        "GET /api/v1/resources?limit=10": lambda: get("/api/v1/resources?limit=10", **bearer),
        "GET /claim/preview": lambda: get(f"/claim/preview?t={preview_jwt['upgrade_jwt']}"),
    }
    timed = {name: _timed(meter, calls, name, fn) for name, fn in ops.items()}
    interleaved(timed, 3)  # warm-up, unmeasured
    calls.clear()
    results = stats_of(interleaved(timed, n))
    print(f"accounts, in process, n={n} (ms; DynamoDB requests per call)")
    for name, st in results.items():
        per_call = sum(calls[name]) / len(calls[name])
        print(f"  {name:34s} p50 {st.p50:6.1f}  p99 {st.p99:6.1f}  dynamodb {per_call:4.2f}")
    anon = results["POST /webhook/new (anonymous)"].p50
    keyed = results["POST /webhook/new (API key)"].p50
    print(f"  API-key provision / anonymous provision: {keyed / anon:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
