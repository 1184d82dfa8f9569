"""Import time of ``app`` against ``chalice, boto3``, in fresh interpreters."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from functools import partial

from bench.meters import Stats, interleaved, stats_of
from devstack.stack import ROOT

APP, BASE = "app", "chalice, boto3"
IMPORT_SUBJECTS = (APP, BASE)
IMPORT_REPEATS = 9
LAZY_DRIVERS = ("pg8000",)  # backend drivers `import app` must not pull in
IMPORT_PROBE = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"
IMPORTTIME_LINE = re.compile(r"import time:\s+(?P<self>\d+) \|\s+\d+ \|\s*(?P<name>\S+)")


@dataclass(frozen=True)
class Imports:
    times: dict[str, Stats]
    extra_ms: list[tuple[str, float]]  # top-level packages `app` adds, by self time
    eager_drivers: list[str]

    @property
    def ratio(self) -> float:
        return self.times[APP].p50 / self.times[BASE].p50


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
    app, base = importtime(APP), importtime(BASE)
    extra: Counter[str] = Counter()
    for name, us in app.items():
        if name not in base:
            extra[name.split(".")[0]] += us
    eager = [d for d in LAZY_DRIVERS if d in app]
    return Imports(times, [(pkg, us / 1000) for pkg, us in extra.most_common(top)], eager)
