"""Hostile request shapes against ordinary ones, in process (issue 13): how long the app takes to
refuse each, side by side in one run, and the ratio to the ordinary input it stands beside.

    .venv/bin/python -m bench.hostile [--n 20]

No stack is needed: these are the checks a handler runs before it touches a backend.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from chalice.app import Request

from chalicelib import errors
from chalicelib.deploy.manifest import parse_manifest
from chalicelib.routes.requests import json_object
from chalicelib.routes.storage import validate_key


def _request(body: bytes) -> Request:
    event: dict[str, Any] = {
        "headers": {"content-type": "application/json"},
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "requestContext": {"httpMethod": "POST", "resourcePath": "/db/new"},
        "body": body.decode(),
        "isBase64Encoded": False,
        "stageVariables": None,
    }
    return Request(event)


def _refused(check: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            check()
        except errors.ApiError:
            return
        raise SystemExit("a hostile input was accepted")

    return run


def _median_ms(run: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[n // 2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="runs of each (median)")
    n = parser.parse_args(argv).n
    deep_json = _request(b"[" * 100_000 + b"]" * 100_000)
    cases = [
        (
            "presign key: 20 MB vs 'reports/a.png'",
            lambda: validate_key("reports/a.png"),
            _refused(lambda: validate_key("\u00e9" * 20_000_000)),
        ),
        (
            "JSON body: nested 100,000 deep vs {'name': 'db'}",
            lambda: json_object(_request(b'{"name": "db"}')),
            _refused(lambda: json_object(deep_json)),
        ),
        (
            "instant.yaml: nested 10,000 deep vs two services",
            lambda: parse_manifest(b"services:\n  web: {port: 8080}\n  api: {port: 9000}\n"),
            _refused(lambda: parse_manifest(b"a: " + b"[" * 10_000 + b"]" * 10_000)),
        ),
        (
            "instant.yaml: a 5,000-digit port vs port 8080",
            lambda: parse_manifest(b"services:\n  web: {port: 8080}\n"),
            _refused(lambda: parse_manifest(b"services:\n  web: {port: " + b"9" * 5000 + b"}\n")),
        ),
    ]
    print(f"{'case':52} {'ordinary ms':>12} {'hostile ms':>11} {'ratio':>7}")
    for label, ordinary, hostile in cases:
        base, bad = _median_ms(ordinary, n), _median_ms(hostile, n)
        print(f"{label:52} {base:12.3f} {bad:11.3f} {bad / base:7.1f}x")


if __name__ == "__main__":
    main()
