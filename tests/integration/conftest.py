"""Integration tier: the API served over HTTP by the local stack's server (the ``api`` fixture of
tests/api_server.py), as an agent sees it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import requests

from devstack.stack import ROOT, Stack
from tests.conftest import fresh_ip


def admin(stack: Stack, *args: str) -> dict[str, Any]:
    """What ``python -m chalicelib.admin <args>`` prints (JSON), run against ``stack``."""
    out = subprocess.run(
        [sys.executable, "-m", "chalicelib.admin", *args],
        cwd=ROOT,
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


def provision(api: str, path: str, name: str = "it", ip: str | None = None, **headers: str) -> Any:
    hdrs = {"X-Forwarded-For": ip or fresh_ip(), "Connection": "close", **headers}
    return requests.post(f"{api}{path}", json={"name": name}, headers=hdrs, timeout=30)
