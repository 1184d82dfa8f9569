"""Provisions through the API, timed: over HTTP (a ``python -m devstack serve`` of its own) and
in this process (``chalice.test.Client``). The raw backend work is in ``bench.backend_*``."""

from __future__ import annotations

import itertools
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

import requests

from bench.backends import ROUTES, ms_since
from bench.meters import CallTimer, DynamoMeter, LocalRoute, Op
from devstack.stack import ROOT, Stack

LOCAL = "in process "
NAME = "bench-provision"  # every resource the bench makes has this name (the cleanup finds them)
BODY = json.dumps({"name": NAME}).encode()
HTTP_TIMEOUT_SECONDS = 60
API_START_SECONDS = 60

Send = Callable[[str, dict[str, str]], tuple[int, str]]  # (route, headers) -> (status, body)
Made = Callable[[str, Mapping[str, Any]], None]  # (route, the 201 answer): what it provisioned


class BenchError(Exception):
    """The bench could not measure what it set out to (the message says why)."""


# -- provisions through the API ---------------------------------------------------------------
def client_ips() -> Iterator[str]:
    """One address per fresh 10.x.y.0/24. The random start keeps runs on the same day apart
    (each /24 may make 5 anonymous provisions a day and hold 1 resource of each kind)."""
    start = random.randrange(1 << 16)
    for i in itertools.count():
        net = (start + i) % (1 << 16)
        yield f"10.{net >> 8}.{net & 255}.7"


@dataclass
class Provisioner:
    """Times one provision per call and hands its answer to ``made`` (for the cleanup)."""

    send: Send
    ips: Iterator[str]
    made: Made

    def __call__(self, route: str) -> float:
        ip = next(self.ips)
        headers = {"Content-Type": "application/json", "X-Forwarded-For": ip}
        start = time.perf_counter()
        status, text = self.send(route, headers)
        elapsed = ms_since(start)
        self.made(route, created(route, ip, status, text))
        return elapsed

    def ops(self) -> dict[str, Op]:
        return {route: partial(self, route) for route in ROUTES}


def created(route: str, ip: str, status: int, text: str) -> dict[str, Any]:
    if status != 201:
        raise BenchError(f"POST {route} from {ip} answered {status}, not 201: {text[:400]}")
    answer: dict[str, Any] = json.loads(text)
    return answer


def http_send(base_url: str) -> Send:
    def send(route: str, headers: dict[str, str]) -> tuple[int, str]:
        # requests.post opens a new connection each time; keep-alive would risk Nagle stalls.
        resp = requests.post(
            base_url + route,
            data=BODY,
            headers={**headers, "Connection": "close"},
            timeout=HTTP_TIMEOUT_SECONDS,
        )
        return resp.status_code, resp.text

    return send


def local_send(client: Any) -> Send:
    def send(route: str, headers: dict[str, str]) -> tuple[int, str]:
        resp = client.http.post(route, headers=headers, body=BODY)
        return int(resp.status_code), bytes(resp.body).decode()

    return send


def local_routes(ips: Iterator[str], made: Made) -> dict[str, LocalRoute]:
    """The app in this process, metered: botocore events count DynamoDB round trips."""
    from chalice.test import Client

    from app import app
    from chalicelib import deps
    from chalicelib.routes.provision import ROUTES as KIND_OF

    deps.reset()
    meter = DynamoMeter(deps.get_dynamo().client.meta.events)
    provision = Provisioner(local_send(Client(app, "local", str(ROOT))), ips, made)
    return {
        LOCAL + route: LocalRoute(
            route, provision, meter, CallTimer(deps.get_provider(KIND_OF[route]), "provision")
        )
        for route in ROUTES
    }


# -- the API server ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def api_server(stack: Stack) -> Iterator[str]:
    """``python -m devstack serve`` on a free port (so it never meets another run's server)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = stack.state / f"bench-api-{port}.log"
    command = ["-m", "devstack", "serve", "--profile", stack.profile.name, "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *command], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait_healthy(url, proc, str(log_path))
        yield url
    finally:
        _stop(proc)
    log_path.unlink()  # kept when the run failed


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: str) -> None:
    deadline = time.monotonic() + API_START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the API exited with status {proc.returncode}; see {log_path}")
        with suppress(requests.RequestException):
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise BenchError(f"{url}/healthz did not answer within {API_START_SECONDS}s; see {log_path}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
