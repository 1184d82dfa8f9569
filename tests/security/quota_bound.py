"""How far past its storage limit a tenant gets, and how long enforcement takes, measured on a
live server: a writer writes as fast as the tenant's own client can while the quota pass runs at
a fixed interval beside it (as the local stack's job loop runs it).

Each kind's attack test supplies ``write`` (one chunk through the tenant's real client; returns
False once the server refuses the write), ``usage`` (bytes the provider measures) and
``enforce`` (one quota pass); the figures are printed for the README's limits table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    kind: str
    limit_bytes: int
    over_bytes: int  # measured usage past the limit when the first write was refused
    seconds: float  # from the first write past the limit to the first refused write
    interval: float

    def line(self) -> str:
        return (
            f"{self.kind}: limit {self.limit_bytes} B, got {self.over_bytes} B past it, "
            f"refused after {self.seconds:.1f} s (quota pass every {self.interval:.0f} s)"
        )


def measure_bound(
    kind: str,
    write: Callable[[], bool],
    usage: Callable[[], int],
    enforce: Callable[[], None],
    limit_bytes: int,
    interval: float,
    timeout: float,
) -> Bound:
    """Write until refused (or ``timeout`` s), enforcing every ``interval`` s meanwhile."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def passes() -> None:
        while not stop.wait(interval):
            try:
                enforce()
            except BaseException as exc:  # surfaced by the caller's assertion below
                errors.append(exc)
                return

    enforcer = threading.Thread(target=passes, daemon=True)
    enforcer.start()
    crossed_at: float | None = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not errors:
            if not write():
                refused_at = time.monotonic()
                break
            if crossed_at is None and usage() > limit_bytes:
                crossed_at = time.monotonic()
        else:
            raise AssertionError(f"{kind}: writes were never refused within {timeout} s {errors}")
    finally:
        stop.set()
        enforcer.join(timeout=interval + 30)
    used = usage()
    bound = Bound(
        kind,
        limit_bytes,
        max(0, used - limit_bytes),
        0.0 if crossed_at is None else refused_at - crossed_at,
        interval,
    )
    print(bound.line())
    return bound
