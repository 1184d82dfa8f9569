"""Integration tier: the API served over HTTP by the local stack's server (the ``api`` fixture of
tests/api_server.py), as an agent sees it."""

from __future__ import annotations

from typing import Any

import requests

from tests.conftest import fresh_ip


def provision(api: str, path: str, name: str = "it", ip: str | None = None, **headers: str) -> Any:
    hdrs = {"X-Forwarded-For": ip or fresh_ip(), "Connection": "close", **headers}
    return requests.post(f"{api}{path}", json={"name": name}, headers=hdrs, timeout=30)
