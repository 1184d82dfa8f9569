"""The operations the bench times: the raw backend work, and provisions through the API, over
HTTP (a ``python -m devstack serve`` of its own) and in this process (``chalice.test.Client``)."""

from __future__ import annotations

import itertools
import json
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import pg8000.native
import requests

from bench.meters import CallTimer, DynamoMeter, LocalRoute, Op
from devstack.stack import ROOT, Stack

RAW = "raw"
ROUTES = ("/db/new", "/vector/new")
LOCAL = "in process "
NAME = "bench-provision"  # every resource the bench makes has this name (the cleanup finds them)
BODY = json.dumps({"name": NAME}).encode()
RAW_PREFIX = "bench_raw_"
HTTP_TIMEOUT_SECONDS = 60
API_START_SECONDS = 60

Send = Callable[[str, dict[str, str]], tuple[int, str]]  # (route, headers) -> (status, body)


class BenchError(Exception):
    """The bench could not measure what it set out to (the message says why)."""


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


# -- the raw backend operation ----------------------------------------------------------------
def admin_connect(admin_url: str) -> Any:
    """An autocommit admin connection (pg8000.native runs every statement on its own)."""
    parts = urlsplit(admin_url)
    return pg8000.native.Connection(
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        database=parts.path.lstrip("/") or "postgres",
    )


def raw_provision(conn: Any, made: list[tuple[Any, str]]) -> float:
    """Milliseconds for the backend work of one provision. Its objects are left to the next
    sweep, like the app's: a DROP DATABASE forces a checkpoint, which must not fall between two
    measured operations."""
    name = str(pg8000.native.identifier(f"{RAW_PREFIX}{secrets.token_hex(8)}"))
    password = pg8000.native.literal(secrets.token_urlsafe(24))
    statements = (
        f"CREATE ROLE {name} LOGIN PASSWORD {password} CONNECTION LIMIT 2",
        f"CREATE DATABASE {name} OWNER {name}",
        f"REVOKE CONNECT, TEMPORARY ON DATABASE {name} FROM PUBLIC",
    )
    start = time.perf_counter()
    try:
        for sql in statements:
            conn.run(sql)
        return _ms_since(start)
    finally:
        made.append((conn, name))


def raw_op(conns: Sequence[Any], made: list[tuple[Any, str]]) -> Op:
    """The raw operation on each backend in turn."""
    turn = itertools.cycle(conns)
    return lambda: raw_provision(next(turn), made)


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
    """Times one provision per call and remembers the database it made (for the cleanup)."""

    send: Send
    ips: Iterator[str]
    made: list[str]

    def __call__(self, route: str) -> float:
        ip = next(self.ips)
        headers = {"Content-Type": "application/json", "X-Forwarded-For": ip}
        start = time.perf_counter()
        status, text = self.send(route, headers)
        elapsed = _ms_since(start)
        self.made.append(created_database(route, ip, status, text))
        return elapsed

    def ops(self) -> dict[str, Op]:
        return {route: partial(self, route) for route in ROUTES}


def created_database(route: str, ip: str, status: int, text: str) -> str:
    if status != 201:
        raise BenchError(f"POST {route} from {ip} answered {status}, not 201: {text[:400]}")
    url: str = json.loads(text)["connection_url"]
    return urlsplit(url).path.lstrip("/")


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


def local_routes(ips: Iterator[str], made: list[str]) -> dict[str, LocalRoute]:
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
