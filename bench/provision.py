"""Provisioning cost: ``/db/new``, ``/vector/new``, ``/cache/new``, ``/queue/new``, ``/nosql/new``,
``/storage/new`` and ``/webhook/new`` through HTTP against the raw backend work; webhook receive.

    python -m bench.provision [--n 50] [--profile bench]

Starts (or reuses) the local stack of ``--profile`` and stops again what it started; serves the
API on a free port with ``python -m devstack serve``. Twenty operations run interleaved, round by
round with a rotating order, so that all of them see the same (noisy) machine:

* one raw operation per backend, over an admin connection held open: ``CREATE ROLE + CREATE
  DATABASE + REVOKE`` on each of the stack's Postgres servers in turn, the provider's
  ``ACL SETUSER`` on Redis, the provider's account JWT pushed to NATS, ``createUser`` on
  MongoDB, ``head_bucket`` on S3, one DynamoDB ``PutItem`` for webhooks (``bench.backend_*``);
* each route over HTTP: a new connection per request, and a fresh client /24 per request
  (``X-Forwarded-For``) so that no anonymous limit answers instead;
* each route through ``chalice.test.Client`` in this process, where botocore events count and
  time the DynamoDB round trips and a timer wraps the provider's ``provision()``.

Then one inbox receives POSTs over HTTP from a few threads and in process (``bench.receive``),
and the import time of ``app`` against ``chalice, boto3`` in fresh interpreters. What the bench
provisioned is removed every ``SWEEP_EVERY`` rounds and at the end (the app's reaper with a clock
three days ahead), and checked gone. Exit status 1 when that cleanup leaves a database, ACL user,
account or MongoDB user behind, 2 when the bench could not measure; targets missed are
reported, not failed.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack

from bench.backend_mongo import MongoBench
from bench.backend_nats import NatsBench
from bench.backend_pg import PostgresBench
from bench.backend_platform import StorageBench, WebhookBench
from bench.backend_redis import RedisBench
from bench.backends import BenchBackend, raw_key
from bench.cleanup import SWEEP_EVERY, Janitor, table_items
from bench.imports import measure_imports
from bench.meters import Op, Stats, interleaved, local_stack, stats_of
from bench.ops import BenchError, Provisioner, api_server, client_ips, http_send, local_routes
from bench.receive import measure_receive
from bench.report import Results, cleanup_lines, render
from devstack.stack import PROFILES, Stack

WARMUP_ROUNDS = 6  # unmeasured: admin pools, templates, lazy imports, both backends


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
        print(f"  {min(first + SWEEP_EVERY, n)}/{n} rounds", file=sys.stderr, flush=True)
    return stats_of(samples)


def open_backends(stack: Stack, exits: ExitStack) -> dict[str, BenchBackend]:
    """An admin connection to each of the stack's backends (by ``bench.backends.LABELS`` key),
    closed with ``exits``."""
    storage = json.loads(stack.env()["INSTANODE_STORAGE_BACKENDS"])[0]
    openers: dict[str, Callable[[], BenchBackend]] = {
        "postgres": lambda: PostgresBench([pg.admin_url() for pg in stack.postgres]),
        "redis": lambda: RedisBench(stack.redis.admin_url()),
        "nats": lambda: NatsBench(stack.nats.backend()),
        "mongodb": lambda: MongoBench(stack.mongo.admin_url()),
        "storage": lambda: StorageBench(storage["admin_url"], storage["bucket"]),
        "webhook": WebhookBench,
    }
    backends: dict[str, BenchBackend] = {}
    for key, connect in openers.items():
        backends[key] = backend = connect()
        exits.callback(backend.close)
    return backends


def measure(stack: Stack, n: int, janitor: Janitor) -> Results:
    start = table_items()
    ips = client_ips()
    local = local_routes(ips, janitor.record)
    with api_server(stack) as base_url:
        settle: dict[str, Op] = {
            **{raw_key(key): b.raw for key, b in janitor.backends.items()},
            **Provisioner(http_send(base_url), ips, janitor.record).ops(),
        }
        ops: dict[str, Op] = {**settle, **local}
        print(f"warming up ({WARMUP_ROUNDS} rounds), then {n} rounds", file=sys.stderr)
        interleaved(ops, WARMUP_ROUNDS)
        for route in local.values():
            route.clear()
        latency = measured_rounds(ops, settle, n, janitor)
        print("webhook receive", file=sys.stderr)
        receive = measure_receive(base_url, ips, janitor.record)
    end = table_items()
    tables = {table: (k, end[table]) for table, k in start.items()}
    print("import times", file=sys.stderr)
    breakdown = {r.route: r.result(latency[key]) for key, r in local.items()}
    return Results(latency, breakdown, measure_imports(), tables, receive)


def run(stack: Stack, backends: Mapping[str, BenchBackend], n: int) -> int:
    janitor = Janitor(backends)
    try:
        print("\n".join([*render(measure(stack, n, janitor)), ""]))
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
    try:
        with local_stack(PROFILES[args.profile]) as stack, ExitStack() as exits:
            return run(stack, open_backends(stack, exits), args.n)
    except BenchError as exc:
        print(f"bench.provision: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
