"""Readiness: every dependency checked in parallel, the result cached for a few seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chalicelib.service import iso

CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    critical: bool
    probe: Callable[[], object]


@dataclass(frozen=True)
class Result:
    status: str
    latency_ms: float
    last_checked: str
    message: str | None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "latency_ms": self.latency_ms,
            "last_checked": self.last_checked,
        }
        if self.message:
            out["message"] = self.message
        return out


def _run(check: Check) -> Result:
    started = time.monotonic()
    try:
        check.probe()
        status, message = "ok", None
    except Exception as exc:  # a failed probe is data here, not an error
        status, message = "down", f"{type(exc).__name__}: {exc}"[:200]
    latency = round((time.monotonic() - started) * 1000, 1)
    return Result(status, latency, iso(int(time.time())) or "", message)


class Readiness:
    def __init__(self, checks: list[Check]) -> None:
        self._checks = checks
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any], bool] | None = None

    def report(self) -> tuple[dict[str, Any], bool]:
        """The readiness body and whether every critical check passed."""
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < CACHE_SECONDS:
                return self._cached[1], self._cached[2]
            body, healthy = self._evaluate()
            self._cached = (time.monotonic(), body, healthy)
            return body, healthy

    def _evaluate(self) -> tuple[dict[str, Any], bool]:
        with ThreadPoolExecutor(max_workers=max(1, len(self._checks))) as pool:
            results = dict(zip(self._checks, pool.map(_run, self._checks), strict=True))
        critical_ok = all(r.status == "ok" for c, r in results.items() if c.critical)
        all_ok = all(r.status == "ok" for r in results.values())
        overall = "ok" if all_ok else ("degraded" if critical_ok else "down")
        checks = {c.name: r.as_json() for c, r in results.items()}
        return {"ok": critical_ok, "overall": overall, "checks": checks}, critical_ok
