"""The API served over HTTP by the local stack's server, for the integration and browser tiers
(a plugin of tests/conftest.py: one server per test session)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from chalicelib.jobs.reaper import Reaper
from devstack.stack import ROOT, Stack


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
    serve = ["devstack", "serve", "--profile", stack.profile.name, "--port", str(port)]
    server = subprocess.Popen(
        [sys.executable, "-m", *serve],
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
        assert server.poll() is None, "the API server exited; see <state dir>/api-integration.log"
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
