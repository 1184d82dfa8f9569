"""Integration tier: the API served over HTTP by the local stack's server, as an agent sees it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from chalicelib.jobs.reaper import Reaper
from devstack.stack import ROOT, Stack
from tests.conftest import fresh_ip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def api(stack: Stack) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, **stack.env(), "INSTANODE_PUBLIC_BASE_URL": base}
    log = open(stack.state / "api-integration.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "devstack", "serve", "--profile", stack.profile.name, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(base, server)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
        _expire_everything(stack)


def _wait_healthy(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, "the API server exited; see api-integration.log in the stack state dir"
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError("the API server did not become healthy")


def _expire_everything(stack: Stack) -> None:
    """Drop what this session provisioned: reap as if three days had passed."""
    from chalicelib import deps

    saved = dict(os.environ)
    os.environ.update(stack.env())
    try:
        deps.reset()
        Reaper(
            deps.get_settings(),
            deps.get_dynamo(),
            deps.get_provider,
            lambda: time.time() + 3 * 86400,
        ).run()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        deps.reset()


def provision(api: str, path: str, name: str = "it", ip: str | None = None, **headers: str) -> Any:
    hdrs = {"X-Forwarded-For": ip or fresh_ip(), "Connection": "close", **headers}
    return requests.post(f"{api}{path}", json={"name": name}, headers=hdrs, timeout=30)
