"""Webhook receive: one inbox provisioned through the API, then POSTs to its ``receive_url``
over HTTP from a few threads (requests/s, latency) and through ``chalice.test.Client`` in this
process (the handler's own time, and its DynamoDB calls)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from bench.meters import DynamoMeter, Stats
from bench.ops import BODY, HTTP_TIMEOUT_SECONDS, BenchError, Made, created
from devstack.stack import ROOT

ROUTE = "/webhook/new"
HTTP_REQUESTS = 500
HTTP_THREADS = 4
LOCAL_REQUESTS = 200
WARMUP_REQUESTS = 5  # each way, unmeasured
TIME_LIMIT_SECONDS = 60.0  # each way: stop early rather than hang
PAYLOAD = b'{"event": "bench.receive", "data": {"id": 1, "ok": true}}'
HEADERS = {"Content-Type": "application/json", "Connection": "close"}


class ReceiveError(BenchError):
    """A receive was not answered with 200."""


@dataclass(frozen=True)
class Receive:
    http: Stats  # ms per request over HTTP, from HTTP_THREADS threads
    http_seconds: float  # wall time of all of them
    local: Stats  # ms per request in process
    sent: dict[str, float]  # DynamoDB requests per in-process receive, by operation

    @property
    def per_second(self) -> float:
        return self.http.n / self.http_seconds


def open_inbox(base_url: str, ips: Iterator[str], made: Made) -> str:
    """Provision one inbox over HTTP; the path of its ``receive_url`` (the URL names the
    stack's public base URL, not this bench's API server)."""
    ip = next(ips)
    resp = requests.post(
        base_url + ROUTE,
        data=BODY,
        headers={**HEADERS, "X-Forwarded-For": ip},
        timeout=HTTP_TIMEOUT_SECONDS,
    )
    answer = created(ROUTE, ip, resp.status_code, resp.text)
    made(ROUTE, answer)
    return urlsplit(str(answer["receive_url"])).path


def _post(url: str) -> float:
    start = time.perf_counter()
    resp = requests.post(url, data=PAYLOAD, headers=HEADERS, timeout=HTTP_TIMEOUT_SECONDS)
    elapsed = (time.perf_counter() - start) * 1000
    if resp.status_code != 200:
        raise ReceiveError(f"POST {url} answered {resp.status_code}: {resp.text[:300]}")
    return elapsed


def over_http(url: str) -> tuple[list[float], float]:
    """HTTP_REQUESTS POSTs shared by HTTP_THREADS threads, a new connection each; bounded by
    TIME_LIMIT_SECONDS. Per-request milliseconds, and the wall seconds of all."""
    for _ in range(WARMUP_REQUESTS):
        _post(url)
    samples: list[float] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    deadline = time.monotonic() + TIME_LIMIT_SECONDS

    def worker(count: int) -> None:
        try:
            for _ in range(count):
                if time.monotonic() > deadline:
                    return
                ms = _post(url)
                with lock:
                    samples.append(ms)
        except Exception as exc:  # reported once all threads are done
            failures.append(exc)

    per, extra = divmod(HTTP_REQUESTS, HTTP_THREADS)
    shares = [per + (i < extra) for i in range(HTTP_THREADS)]
    threads = [threading.Thread(target=worker, args=(k,)) for k in shares]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if failures:
        raise ReceiveError(str(failures[0]))
    return samples, seconds


def in_process(path: str) -> tuple[list[float], dict[str, float]]:
    """LOCAL_REQUESTS POSTs through ``chalice.test.Client``: milliseconds each, and the DynamoDB
    requests per receive by operation."""
    from chalice.test import Client

    from app import app
    from chalicelib import deps

    client = Client(app, "local", str(ROOT))
    meter = DynamoMeter(deps.get_dynamo().client.meta.events)
    headers = {"Content-Type": "application/json"}
    samples: list[float] = []
    deadline = time.monotonic() + TIME_LIMIT_SECONDS
    for i in range(WARMUP_REQUESTS + LOCAL_REQUESTS):
        if i == WARMUP_REQUESTS:
            meter.reset()
        start = time.perf_counter()
        resp = client.http.post(path, headers=headers, body=PAYLOAD)
        elapsed = (time.perf_counter() - start) * 1000
        if resp.status_code != 200:
            raise ReceiveError(f"POST {path} in process answered {resp.status_code}")
        if i >= WARMUP_REQUESTS:
            samples.append(elapsed)
        if time.monotonic() > deadline:
            break
    return samples, {op: k / len(samples) for op, k in sorted(meter.sent.items())}


def measure_receive(base_url: str, ips: Iterator[str], made: Made) -> Receive:
    path = open_inbox(base_url, ips, made)
    http, seconds = over_http(base_url + path)
    local, sent = in_process(path)
    return Receive(Stats(tuple(http)), seconds, Stats(tuple(local)), sent)
