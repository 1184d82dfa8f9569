"""Provisioning cost: ``/db/new`` and ``/vector/new`` through HTTP against the raw backend work.

    python -m bench.provision [--n 50] [--profile bench]

Starts (or reuses) the local stack of ``--profile`` and stops again what it started; serves the
API on a free port with ``python -m devstack serve``. Five operations run interleaved, round by
round with a rotating order, so that all of them see the same (noisy) machine:

* raw: ``CREATE ROLE + CREATE DATABASE + REVOKE`` over an open admin connection, on each of the
  stack's Postgres servers in turn (the API places resources on either of them);
* ``POST /db/new`` and ``POST /vector/new`` over HTTP: a new connection per request, and a fresh
  client /24 per request (``X-Forwarded-For``) so that no anonymous limit answers instead;
* the same two through ``chalice.test.Client`` in this process, where botocore events count and
  time the DynamoDB round trips and a timer wraps the provider's ``provision()``.

Then the import time of ``app`` against ``chalice, boto3`` in fresh interpreters. What the bench
provisioned is removed every ``SWEEP_EVERY`` rounds and at the end (the app's reaper with a clock
three days ahead), and checked gone. Exit status 1 when that cleanup leaves a database behind, 2
when the bench could not measure; targets missed are reported, not failed. See bench/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import pg8000.native
import requests

from devstack.stack import PROFILES, ROOT, Stack

RAW = "raw"
ROUTES = ("/db/new", "/vector/new")
LOCAL = "in process "
LABELS = {
    RAW: "raw CREATE ROLE+DATABASE+REVOKE",
    **{r: f"POST {r} (HTTP)" for r in ROUTES},
    **{LOCAL + r: f"{r} in process" for r in ROUTES},
}
NAME = "bench-provision"  # every resource the bench makes has this name (the cleanup finds them)
BODY = json.dumps({"name": NAME}).encode()
RAW_PREFIX = "bench_raw_"
WARMUP_ROUNDS = 6  # unmeasured: admin pools, templates, lazy imports, both backends
IMPORT_REPEATS = 9
LAZY_DRIVERS = ("pg8000",)  # backend drivers `import app` must not pull in
HTTP_TIMEOUT_SECONDS = 60
API_START_SECONDS = 60
REAP_AHEAD_SECONDS = 3 * 86400
CLEANUP_WAIT_SECONDS = 60
SWEEP_EVERY = 10  # measured rounds between two sweeps of the bench's resources
TARGET_LATENCY_RATIO = 1.5
TARGET_DYNAMO_CALLS = 4
TARGET_IMPORT_RATIO = 1.3

Op = Callable[[], float]  # runs once, returns milliseconds
Send = Callable[[str, dict[str, str]], tuple[int, str]]  # (route, headers) -> (status, body)


class BenchError(Exception):
    """The bench could not measure what it set out to (the message says why)."""


# -- statistics -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stats:
    ms: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.ms)

    @property
    def p50(self) -> float:
        return statistics.median(self.ms)

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.ms, n=100, method="inclusive")[98]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.ms)


def interleaved(ops: Mapping[str, Op], rounds: int, first: int = 0) -> dict[str, list[float]]:
    """Every round runs each op once, starting one op further along than the round before (no
    op is always first); ``first`` continues the rotation of an earlier call."""
    names = list(ops)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(first, first + rounds):
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            samples[name].append(ops[name]())
    return samples


def stats_of(samples: Mapping[str, list[float]]) -> dict[str, Stats]:
    return {name: Stats(tuple(ms)) for name, ms in samples.items()}


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


def drop_raw(made: list[tuple[Any, str]]) -> None:
    while made:
        conn, name = made.pop()
        conn.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.run(f"DROP ROLE IF EXISTS {name}")


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
        headers = {"Content-Type": "application/json", "X-Forwarded-For": next(self.ips)}
        start = time.perf_counter()
        status, text = self.send(route, headers)
        elapsed = _ms_since(start)
        self.made.append(created_database(route, headers, status, text))
        return elapsed

    def ops(self) -> dict[str, Op]:
        return {route: partial(self, route) for route in ROUTES}


def created_database(route: str, headers: Mapping[str, str], status: int, text: str) -> str:
    if status != 201:
        who = headers["X-Forwarded-For"]
        raise BenchError(f"POST {route} from {who} answered {status}, not 201: {text[:400]}")
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


# -- DynamoDB round trips, in process ---------------------------------------------------------
class DynamoMeter:
    """Counts DynamoDB requests sent (retries included) and times client calls, per operation."""

    def __init__(self, events: Any) -> None:
        self.sent: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._call_started = 0.0
        events.register("before-send.dynamodb", self._on_send)
        events.register("before-call.dynamodb", self._on_call)
        events.register("after-call.dynamodb", self._on_return)

    def reset(self) -> None:
        self.sent.clear()
        self.seconds.clear()

    def _on_send(self, event_name: str, **_: Any) -> None:
        self.sent[_operation(event_name)] += 1

    def _on_call(self, **_: Any) -> None:
        self._call_started = time.perf_counter()

    def _on_return(self, event_name: str, **_: Any) -> None:
        self.seconds[_operation(event_name)] += time.perf_counter() - self._call_started


def _operation(event_name: str) -> str:
    return event_name.rsplit(".", 1)[-1]


class CallTimer:
    """Wraps one method of one object (in this process only) and sums the time spent in it."""

    def __init__(self, obj: Any, method: str) -> None:
        self.seconds = 0.0
        inner = getattr(obj, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(obj, method, timed)


@dataclass(frozen=True)
class InProcess:
    """Where the time of one route's in-process provisions went (per provision)."""

    latency: Stats
    sent: dict[str, float]  # DynamoDB requests by operation
    dynamo_ms: dict[str, float]  # time in DynamoDB client calls by operation
    backend_ms: float  # time in the provider's provision(): the Postgres work

    @property
    def round_trips(self) -> float:
        return sum(self.sent.values())

    @property
    def other_ms(self) -> float:
        """Neither DynamoDB nor the backend: app code and chalice routing."""
        return self.latency.mean - sum(self.dynamo_ms.values()) - self.backend_ms


@dataclass
class LocalRoute:
    """An op: one provision of ``route`` through ``chalice.test.Client`` in this process,
    accounting the DynamoDB calls and the backend time it took."""

    route: str
    provision: Provisioner
    meter: DynamoMeter
    backend: CallTimer
    n: int = 0
    sent: Counter[str] = field(default_factory=Counter)
    dynamo_s: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    backend_s: float = 0.0

    def __call__(self) -> float:
        self.meter.reset()
        self.backend.seconds = 0.0
        elapsed = self.provision(self.route)
        self.n += 1
        self.sent.update(self.meter.sent)
        for op, seconds in self.meter.seconds.items():
            self.dynamo_s[op] += seconds
        self.backend_s += self.backend.seconds
        return elapsed

    def clear(self) -> None:
        self.n, self.backend_s = 0, 0.0
        self.sent.clear()
        self.dynamo_s.clear()

    def result(self, latency: Stats) -> InProcess:
        return InProcess(
            latency,
            {op: k / self.n for op, k in sorted(self.sent.items())},
            {op: s * 1000 / self.n for op, s in sorted(self.dynamo_s.items())},
            self.backend_s * 1000 / self.n,
        )


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


# -- import time ------------------------------------------------------------------------------
IMPORT_PROBE = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"
IMPORT_SUBJECTS = ("app", "chalice, boto3")
IMPORTTIME_LINE = re.compile(r"import time:\s+(?P<self>\d+) \|\s+\d+ \|\s*(?P<name>\S+)")


@dataclass(frozen=True)
class Imports:
    times: dict[str, Stats]
    extra_ms: list[tuple[str, float]]  # top-level packages `app` adds, by self time
    eager_drivers: list[str]

    @property
    def ratio(self) -> float:
        return self.times["app"].p50 / self.times["chalice, boto3"].p50


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter in the repo root, with the stack's environment."""
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=True
    )


def import_ms(modules: str) -> float:
    return float(_python("-c", IMPORT_PROBE.format(modules)).stdout) * 1000


def importtime(modules: str) -> dict[str, int]:
    """Module name -> self import time in microseconds, from one ``-X importtime`` run."""
    err = _python("-X", "importtime", "-c", f"import {modules}").stderr
    return {m["name"]: int(m["self"]) for m in map(IMPORTTIME_LINE.match, err.splitlines()) if m}


def measure_imports(top: int = 6) -> Imports:
    probes = {s: partial(import_ms, s) for s in IMPORT_SUBJECTS}
    times = stats_of(interleaved(probes, IMPORT_REPEATS))
    app, base = importtime("app"), importtime("chalice, boto3")
    extra: Counter[str] = Counter()
    for name, us in app.items():
        if name not in base:
            extra[name.split(".")[0]] += us
    eager = [d for d in LAZY_DRIVERS if d in app]
    return Imports(times, [(pkg, us / 1000) for pkg, us in extra.most_common(top)], eager)


# -- cleanup ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cleanup:
    reaped: dict[str, int]
    before: int  # db_% databases on the backends before the run
    after: int
    made: int  # databases the bench provisioned through the app
    left: int  # of those (and of the raw ones), still there
    forgotten: int  # expired bench records whose DynamoDB items were deleted

    @property
    def ok(self) -> bool:
        return self.left == 0


def _count(conns: Sequence[Any], where: str, **params: Any) -> int:
    sql = f"SELECT count(*) FROM pg_database WHERE {where}"
    return sum(int(conn.run(sql, **params)[0][0]) for conn in conns)


def tenant_databases(conns: Sequence[Any]) -> int:
    return _count(conns, "datname LIKE 'db\\_%'")


def bench_databases(conns: Sequence[Any], made: list[str]) -> int:
    return _count(
        conns,
        "datname::text = ANY(CAST(:made AS text[])) OR datname LIKE :raw",
        made=made or [""],
        raw=RAW_PREFIX.replace("_", "\\_") + "%",
    )


def reap_everything_due() -> dict[str, int]:
    """The app's reaper, three days ahead: expires every anonymous resource in the stack."""
    from chalicelib import deps
    from chalicelib.config import get_settings
    from chalicelib.jobs.reaper import Reaper

    ahead = time.time() + REAP_AHEAD_SECONDS
    reaper = Reaper(get_settings(), deps.get_dynamo(), deps.get_provider, clock=lambda: ahead)
    return reaper.run().as_json()


def _scan(client: Any, table: str, **kwargs: Any) -> list[dict[str, Any]]:
    from chalicelib.dynamo import from_wire

    pages = client.get_paginator("scan").paginate(TableName=table, **kwargs)
    return [from_wire(item) for page in pages for item in page["Items"]]


def _delete(client: Any, table: str, keys: Sequence[Mapping[str, Any]]) -> None:
    from chalicelib.dynamo import to_wire

    for i in range(0, len(keys), 25):  # BatchWriteItem takes 25 at a time
        deletes = [{"DeleteRequest": {"Key": to_wire(k)}} for k in keys[i : i + 25]]
        client.batch_write_item(RequestItems={table: deletes})


def table_items() -> dict[str, int]:
    from chalicelib import deps
    from chalicelib.config import get_settings

    settings, client = get_settings(), deps.get_dynamo().client
    tables = {
        "resources": settings.resources_table,
        "counters": settings.counters_table,
        "idempotency": settings.idempotency_table,
    }
    return {label: len(_scan(client, table)) for label, table in tables.items()}


def forget_records() -> int:
    """Delete the DynamoDB items of expired bench resources: records, the counters and the
    idempotency keys of their /24s (bench addresses only). moto copies every table a transaction
    touches, so its transactions slow down as tables grow; without this each run would make the
    next one (and the test suite) slower. Also catches what an interrupted run left."""
    from chalicelib import deps
    from chalicelib.config import get_settings
    from chalicelib.idempotency import derive_key
    from chalicelib.models import Status

    settings, client = get_settings(), deps.get_dynamo().client
    records = _scan(
        client,
        settings.resources_table,
        FilterExpression="#n = :n",
        ExpressionAttributeNames={"#n": "name"},
        ExpressionAttributeValues={":n": {"S": NAME}},
    )
    live = {r["owner"] for r in records if r["status"] != Status.EXPIRED.value}
    done = [r for r in records if r["owner"] not in live]
    owners = {r["owner"] for r in done}
    counters = [
        c for c in _scan(client, settings.counters_table) if owners & set(c["pk"].split("#"))
    ]
    _delete(client, settings.resources_table, [{"id": r["id"]} for r in done])
    _delete(client, settings.counters_table, [{"pk": c["pk"]} for c in counters])
    keys = [derive_key(o, route, {"name": NAME}, None).pk for o in owners for route in ROUTES]
    _delete(client, settings.idempotency_table, [{"pk": k} for k in keys])
    return len(done)


class Janitor:
    """Removes what the bench provisioned: every few rounds, so that moto's tables (which its
    transactions copy whole) stay small, and at the end."""

    def __init__(self, conns: Sequence[Any]) -> None:
        self.made: list[str] = []  # databases provisioned through the app, by name
        self.raw: list[tuple[Any, str]] = []  # (admin connection, name) of raw-op objects
        self._conns = conns
        self._before = tenant_databases(conns)
        self._reaped: Counter[str] = Counter()
        self._forgotten = 0

    def sweep(self) -> None:
        drop_raw(self.raw)
        self._reaped.update(reap_everything_due())
        self._forgotten += forget_records()

    def finish(self) -> Cleanup:
        """Sweep until the bench's databases are gone (another reaper may hold the lease on
        some of them for a moment), then report."""
        deadline = time.monotonic() + CLEANUP_WAIT_SECONDS
        self.sweep()
        while (left := bench_databases(self._conns, self.made)) and time.monotonic() < deadline:
            time.sleep(1)
            self.sweep()
        after = tenant_databases(self._conns)
        reaped = dict(self._reaped)
        return Cleanup(reaped, self._before, after, len(self.made), left, self._forgotten)


# -- the report -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Results:
    latency: dict[str, Stats]  # by op: RAW, the routes over HTTP, LOCAL + the routes
    local: dict[str, InProcess]  # by route
    imports: Imports
    table_items: dict[str, tuple[int, int]]  # moto items per app table: at the start, at the end


@dataclass(frozen=True)
class Target:
    label: str
    value: float
    limit: float
    unit: str

    def line(self) -> str:
        verdict = "PASS" if self.value <= self.limit else "MISS"
        return (
            f"  {self.label:<44}{self.value:>7.2f}{self.unit:<2} "
            f"target <= {self.limit:g}{self.unit:<2} {verdict}"
        )


def latency_lines(stats: Mapping[str, Stats]) -> list[str]:
    raw = stats[RAW].p50
    head = f"  {'operation':<34}{'n':>4}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}   p50 vs raw"
    rows = [
        f"  {LABELS[k]:<34}{s.n:>4}{s.p50:>9.1f}{s.p99:>9.1f}{s.mean:>9.1f}"
        + ("" if k == RAW else f"   {s.p50 / raw:.2f}x ({s.p50 - raw:+.1f} ms)")
        for k, s in stats.items()
    ]
    return ["latency, interleaved in one loop:", head, *rows]


def breakdown_lines(res: Results) -> list[str]:
    sizes = ", ".join(f"{t} {a} -> {b}" for t, (a, b) in res.table_items.items())
    lines = ["where the time goes, in process, mean ms per provision:"]
    for route, r in res.local.items():
        calls = ", ".join(f"{op} {r.sent[op]:g}x {ms:.1f}" for op, ms in r.dynamo_ms.items())
        lines += [
            f"  {route:<12} {r.latency.mean:5.1f} = Postgres {r.backend_ms:5.1f}"
            f" + DynamoDB {sum(r.dynamo_ms.values()):5.1f} + other {r.other_ms:4.1f}"
            f"  (DynamoDB: {calls})",
            f"  {'':<12} HTTP p50 - in-process p50:"
            f" {res.latency[route].p50 - r.latency.p50:+.1f} ms (HTTP and chalice local)",
        ]
    lines.append(
        f"  moto items, start -> end (its transactions copy the tables they touch; the bench "
        f"reaps its resources every {SWEEP_EVERY} rounds): {sizes}"
    )
    return lines


def import_lines(imports: Imports) -> list[str]:
    lines = [f"import time, fresh interpreters, median of {IMPORT_REPEATS}:"]
    lines += [f"  import {s:<16}{imports.times[s].p50:7.1f} ms" for s in IMPORT_SUBJECTS]
    extra = ", ".join(f"{pkg} {ms:.1f}" for pkg, ms in imports.extra_ms)
    lines.append(f"  what `import app` adds over chalice+boto3 (ms, one -X importtime): {extra}")
    eager = ", ".join(imports.eager_drivers) or "none"
    lines.append(f"  backend drivers imported by `import app`: {eager}")
    return lines


def targets(res: Results) -> list[Target]:
    raw = res.latency[RAW].p50
    found = [
        Target(f"p50 {route} / p50 raw", res.latency[route].p50 / raw, TARGET_LATENCY_RATIO, "x")
        for route in ROUTES
    ]
    found += [
        Target(f"DynamoDB round trips per {route}", r.round_trips, TARGET_DYNAMO_CALLS, "")
        for route, r in res.local.items()
    ]
    ratio = res.imports.ratio
    found.append(Target("import app / import chalice, boto3", ratio, TARGET_IMPORT_RATIO, "x"))
    return found


def cleanup_lines(c: Cleanup) -> list[str]:
    reaped = ", ".join(f"{k} {v}" for k, v in c.reaped.items())
    return [
        "cleanup:",
        f"  reaper (clock +3 days, every {SWEEP_EVERY} rounds and at the end): {reaped}",
        f"  db_% databases on the backends: {c.before} before, {c.after} after",
        f"  bench databases left behind: {c.left} of {c.made} provisioned "
        f"(+ raw ones) -> {'OK' if c.ok else 'NOT CLEAN'}",
        f"  DynamoDB items of {c.forgotten} expired bench resources deleted",
    ]


def render(res: Results) -> list[str]:
    found = targets(res)
    met = sum(t.value <= t.limit for t in found)
    return [
        *latency_lines(res.latency),
        "",
        *breakdown_lines(res),
        "",
        *import_lines(res.imports),
        "",
        f"targets ({met}/{len(found)} met):",
        *(t.line() for t in found),
    ]


# -- the run ----------------------------------------------------------------------------------
def measured_rounds(
    ops: Mapping[str, Op], settle: Mapping[str, Op], n: int, janitor: Janitor
) -> dict[str, Stats]:
    """``n`` rounds of ``ops``, in chunks. Before each chunk the janitor sweeps, so that moto's
    tables stay small; its DROP DATABASEs force checkpoints, whose I/O one unmeasured round of
    ``settle`` absorbs before measuring goes on."""
    samples: dict[str, list[float]] = {name: [] for name in ops}
    for first in range(0, n, SWEEP_EVERY):
        janitor.sweep()
        interleaved(settle, 1, first)
        for name, ms in interleaved(ops, min(SWEEP_EVERY, n - first), first).items():
            samples[name] += ms
        print(f"  {len(samples[RAW])}/{n} rounds", file=sys.stderr, flush=True)
    return stats_of(samples)


def measure(stack: Stack, conns: Sequence[Any], n: int, janitor: Janitor) -> Results:
    start = table_items()
    ips = client_ips()
    local = local_routes(ips, janitor.made)
    with api_server(stack) as base_url:
        settle: dict[str, Op] = {
            RAW: raw_op(conns, janitor.raw),
            **Provisioner(http_send(base_url), ips, janitor.made).ops(),
        }
        ops: dict[str, Op] = {**settle, **local}
        print(f"warming up ({WARMUP_ROUNDS} rounds), then {n} rounds", file=sys.stderr)
        interleaved(ops, WARMUP_ROUNDS)
        for route in local.values():
            route.clear()
        latency = measured_rounds(ops, settle, n, janitor)
    end = table_items()
    tables = {table: (k, end[table]) for table, k in start.items()}
    print("import times", file=sys.stderr)
    breakdown = {r.route: r.result(latency[key]) for key, r in local.items()}
    return Results(latency, breakdown, measure_imports(), tables)


def run(stack: Stack, conns: Sequence[Any], n: int) -> int:
    janitor = Janitor(conns)
    try:
        print("\n".join([*render(measure(stack, conns, n, janitor)), ""]))
    finally:
        cleanup = janitor.finish()
        print("\n".join(cleanup_lines(cleanup)))
    return 0 if cleanup.ok else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.provision",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=50, help="measured rounds (>= 50 for p99)")
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="bench",
        help="local stack to use (default: bench, its own servers); the cleanup expires every "
        "anonymous resource in it",
    )
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error("--n must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stack = Stack(PROFILES[args.profile])
    started = stack.up()
    os.environ.update(stack.env())
    conns = [admin_connect(pg.admin_url()) for pg in stack.postgres]
    try:
        return run(stack, conns, args.n)
    except BenchError as exc:
        print(f"bench.provision: {exc}", file=sys.stderr)
        return 2
    finally:
        for conn in conns:
            with suppress(Exception):
                conn.close()
        stack.down(started)


if __name__ == "__main__":
    sys.exit(main())
