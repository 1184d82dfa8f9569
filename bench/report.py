"""The report: latency, where the in-process time goes, import time, targets, cleanup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bench.cleanup import REAP_AHEAD_DAYS, SWEEP_EVERY, Cleanup
from bench.imports import IMPORT_REPEATS, IMPORT_SUBJECTS, Imports
from bench.meters import InProcess, Stats
from bench.ops import LOCAL, RAW, ROUTES

LABELS = {
    RAW: "raw CREATE ROLE+DATABASE+REVOKE",
    **{r: f"POST {r} (HTTP)" for r in ROUTES},
    **{LOCAL + r: f"{r} in process" for r in ROUTES},
}
TARGET_LATENCY_RATIO = 1.5
TARGET_DYNAMO_CALLS = 4
TARGET_IMPORT_RATIO = 1.3


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

    @property
    def met(self) -> bool:
        return self.value <= self.limit

    def line(self) -> str:
        return (
            f"  {self.label:<44}{self.value:>7.2f}{self.unit:<2} "
            f"target <= {self.limit:g}{self.unit:<2} {'PASS' if self.met else 'MISS'}"
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


def render(res: Results) -> list[str]:
    found = targets(res)
    met = sum(t.met for t in found)
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


def cleanup_lines(c: Cleanup) -> list[str]:
    reaped = ", ".join(f"{k} {v}" for k, v in c.reaped.items())
    return [
        "cleanup:",
        f"  reaper (clock +{REAP_AHEAD_DAYS} days, every {SWEEP_EVERY} rounds and at the end):"
        f" {reaped}",
        f"  db_% databases on the backends: {c.before} before, {c.after} after",
        f"  bench databases left behind: {c.left} of {c.made} provisioned "
        f"(+ raw ones) -> {'OK' if c.ok else 'NOT CLEAN'}",
        f"  DynamoDB items of {c.forgotten} expired bench resources deleted",
    ]
