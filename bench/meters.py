"""Timing tools: latency statistics, the interleaved loop, and the meters that split an in-process
provision into DynamoDB calls, backend work and the rest."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from devstack.stack import Profile, Stack, get_profile

Op = Callable[[], float]  # runs once, returns milliseconds


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
    """An op: one provision of ``route`` (``provision`` times it, in this process), accounting
    the DynamoDB calls and the backend time it took."""

    route: str
    provision: Callable[[str], float]
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


@contextmanager
def local_stack(profile: Profile) -> Iterator[Stack]:
    """The local stack of ``profile``, up (and this process's environment pointing at it) for
    the ``with`` block, then down again if this started it."""
    stack = Stack(profile)
    started = stack.up()
    os.environ.update(stack.env())
    try:
        yield stack
    finally:
        stack.down(started)


def main_on_stack(
    prog: str,
    doc: str | None,
    rounds: tuple[int, str],
    run: Callable[[Stack, int], int],
    argv: Sequence[str] | None,
) -> int:
    """A bench's ``main``: ``--n`` rounds (default and help in ``rounds``) of ``run`` on the
    local stack of ``--profile`` (``bench``)."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc)
    parser.add_argument("--n", type=int, default=rounds[0], help=rounds[1])
    parser.add_argument("--profile", type=get_profile, default="bench")
    args = parser.parse_args(argv)
    with local_stack(args.profile) as stack:
        return run(stack, args.n)
