"""The report: latency, where the in-process time goes, import time, targets, cleanup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bench.backends import BACKEND_OF, LABELS, ROUTES, raw_key
from bench.cleanup import REAP_AHEAD_DAYS, SWEEP_EVERY, Cleanup
from bench.imports import IMPORT_REPEATS, IMPORT_SUBJECTS, Imports
from bench.meters import InProcess, Stats
from bench.ops import LOCAL
from bench.receive import HTTP_THREADS, Receive

# Rows by backend: its raw operation, then its routes over HTTP, then in process.
ROWS = {
    key: {
        raw_key(key): labels.raw,
        **{r: f"POST {r} (HTTP)" for r in ROUTES if BACKEND_OF[r] == key},
        **{LOCAL + r: f"{r} in process" for r in ROUTES if BACKEND_OF[r] == key},
    }
    for key, labels in LABELS.items()
}
TARGET_LATENCY_RATIO = {"/db/new": 1.5, "/vector/new": 1.5}  # p50 over HTTP / p50 of its raw op
TARGET_P50_MS = {"/cache/new": 30.0, "/queue/new": 30.0}  # p50 over HTTP, strictly below
TARGET_DYNAMO_CALLS = 4
TARGET_IMPORT_RATIO = 1.3


@dataclass(frozen=True)
class Results:
    latency: dict[str, Stats]  # by op: raw_key(backend), the routes over HTTP, LOCAL + routes
    local: dict[str, InProcess]  # by route
    imports: Imports
    table_items: dict[str, tuple[int, int]]  # moto items per app table: at the start, at the end
    receive: Receive


@dataclass(frozen=True)
class Target:
    label: str
    value: float
    limit: float
    unit: str
    strict: bool = False  # value < limit, not <=

    @property
    def met(self) -> bool:
        return self.value < self.limit if self.strict else self.value <= self.limit

    def line(self) -> str:
        return (
            f"  {self.label:<44}{self.value:>7.2f}{self.unit:<3}target "
            f"{'<' if self.strict else '<='} {self.limit:g}{self.unit:<2} "
            f"{'PASS' if self.met else 'MISS'}"
        )


def latency_lines(stats: Mapping[str, Stats]) -> list[str]:
    head = (
        f"  {'operation':<34}{'n':>4}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}"
        "   p50 vs its backend's raw op"
    )
    lines = ["latency, interleaved in one loop:", head]
    for key, rows in ROWS.items():
        raw = stats[raw_key(key)].p50
        lines += [
            f"  {label:<34}{stats[k].n:>4}{stats[k].p50:>9.1f}{stats[k].p99:>9.1f}"
            f"{stats[k].mean:>9.1f}"
            + (
                ""
                if k == raw_key(key)
                else f"   {stats[k].p50 / raw:6.2f}x ({stats[k].p50 - raw:+.1f} ms)"
            )
            for k, label in rows.items()
        ]
    return lines


def breakdown_lines(res: Results) -> list[str]:
    sizes = ", ".join(f"{t} {a} -> {b}" for t, (a, b) in res.table_items.items())
    lines = ["where the time goes, in process, mean ms per provision:"]
    for route, r in res.local.items():
        calls = ", ".join(f"{op} {r.sent[op]:g}x {ms:.1f}" for op, ms in r.dynamo_ms.items())
        lines += [
            f"  {route:<12} {r.latency.mean:5.1f} = {LABELS[BACKEND_OF[route]].name:<8}"
            f" {r.backend_ms:5.1f}"
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


def receive_lines(r: Receive) -> list[str]:
    calls = ", ".join(f"{op} {k:g}x" for op, k in r.sent.items())
    return [
        "webhook receive, one inbox, POST with a small JSON body:",
        f"  HTTP, {HTTP_THREADS} threads, new connection each: {r.http.n} requests in"
        f" {r.http_seconds:.2f} s = {r.per_second:.0f} requests/s;"
        f" p50 {r.http.p50:.1f} ms, p99 {r.http.p99:.1f} ms, mean {r.http.mean:.1f} ms",
        f"  in process (chalice.test.Client), the handler's own time: {r.local.n} requests,"
        f" p50 {r.local.p50:.2f} ms, p99 {r.local.p99:.2f} ms, mean {r.local.mean:.2f} ms",
        f"  DynamoDB requests per receive: {sum(r.sent.values()):g} ({calls})",
    ]


def import_lines(imports: Imports) -> list[str]:
    lines = [f"import time, fresh interpreters, median of {IMPORT_REPEATS}:"]
    lines += [f"  import {s:<16}{imports.times[s].p50:7.1f} ms" for s in IMPORT_SUBJECTS]
    extra = ", ".join(f"{pkg} {ms:.1f}" for pkg, ms in imports.extra_ms)
    lines.append(f"  what `import app` adds over chalice+boto3 (ms, one -X importtime): {extra}")
    eager = ", ".join(imports.eager_drivers) or "none"
    lines.append(f"  backend drivers imported by `import app`: {eager}")
    return lines


def targets(res: Results) -> list[Target]:
    found = [
        Target(f"p50 {route} / p50 raw", res.latency[route].p50 / _raw_p50(res, route), limit, "x")
        for route, limit in TARGET_LATENCY_RATIO.items()
    ]
    found += [
        Target(f"p50 {route} (HTTP)", res.latency[route].p50, limit, "ms", strict=True)
        for route, limit in TARGET_P50_MS.items()
    ]
    found += [
        Target(f"DynamoDB round trips per {route}", r.round_trips, TARGET_DYNAMO_CALLS, "")
        for route, r in res.local.items()
    ]
    ratio = res.imports.ratio
    found.append(Target("import app / import chalice, boto3", ratio, TARGET_IMPORT_RATIO, "x"))
    return found


def _raw_p50(res: Results, route: str) -> float:
    return res.latency[raw_key(BACKEND_OF[route])].p50


def render(res: Results) -> list[str]:
    found = targets(res)
    met = sum(t.met for t in found)
    return [
        *latency_lines(res.latency),
        "",
        *breakdown_lines(res),
        "",
        *receive_lines(res.receive),
        "",
        *import_lines(res.imports),
        "",
        f"targets ({met}/{len(found)} met):",
        *(t.line() for t in found),
    ]


def cleanup_lines(c: Cleanup) -> list[str]:
    reaped = ", ".join(f"{k} {v}" for k, v in c.reaped.items())
    lines = [
        "cleanup:",
        f"  reaper (clock +{REAP_AHEAD_DAYS} days, every {SWEEP_EVERY} rounds and at the end):"
        f" {reaped}",
    ]
    for key, b in c.backends.items():
        labels = LABELS[key]
        lines.append(
            f"  {labels.name:<8} {labels.tenants}: {b.before} before, {b.after} after; the bench's"
            f" left behind: {b.left} of {b.made} provisioned (+ raw ones)"
            f" -> {'OK' if b.left == 0 else 'NOT CLEAN'}"
        )
    lines.append(f"  DynamoDB items of {c.forgotten} expired bench resources deleted")
    return lines
