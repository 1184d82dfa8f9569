"""Fixtures of the client package's tests (SDK, CLI, MCP) against the live test stack over HTTP.

- ``api``: the real API (tests/api_server.py, through the root conftest's plugin).
- ``network_api``: the same API behind a local proxy that stamps ``X-Forwarded-For`` with a
  fresh address, so each test is an anonymous network of its own (the daily and per-kind caps
  count per network; a CLI or MCP server subprocess cannot send that header itself).
- ``client``: ``Client(network_api)``.
- ``run_cli(*args, env=None, input=None)``: ``python -m instanode.cli`` as a subprocess against
  ``network_api``, with HOME and XDG_CONFIG_HOME in a fresh tmp dir.
- ``sign_in(email=None)``: a session token of a new user, through the emailed magic link.
- ``Proxy``: the proxy itself, with ``fail(n, status, retry_after)`` to answer the next ``n``
  requests itself (a gateway's 503) and ``seen`` to read what reached it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import requests
from instanode import Client

from devstack.stack import ROOT, Stack
from tests.conftest import fresh_ip, magic_link

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"}
)
SESSION_COOKIE = "instanode_session"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    answered_by_proxy: bool


class Proxy:
    """A forwarding HTTP proxy in front of ``upstream`` on a free local port."""

    def __init__(self, upstream: str, forwarded_for: str | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.forwarded_for = forwarded_for
        self.seen: list[Seen] = []
        self._faults: list[tuple[int, str | None]] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=self.upstream, timeout=120)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def fail(self, times: int, status: int = 503, retry_after: str | None = "1") -> None:
        """Answer the next ``times`` requests with ``status`` (a bare gateway error)."""
        with self._lock:
            self._faults.extend([(status, retry_after)] * times)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def _next_fault(self) -> tuple[int, str | None] | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                fault = proxy._next_fault()
                proxy.seen.append(Seen(self.command, self.path, headers, fault is not None))
                if fault is not None:
                    status, retry_after = fault
                    text = b"<html><body>503 Service Temporarily Unavailable</body></html>"
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                sent = {k: v for k, v in headers.items() if k not in HOP_BY_HOP}
                if proxy.forwarded_for:
                    sent["x-forwarded-for"] = proxy.forwarded_for
                reply = proxy._http.request(self.command, self.path, content=body, headers=sent)
                self.send_response(reply.status_code)
                for name, value in reply.headers.multi_items():
                    if name.lower() not in HOP_BY_HOP | {"content-encoding"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _relay

        return Handler


@pytest.fixture
def proxy(api: str) -> Iterator[Proxy]:
    """The API behind a proxy of its own, as a fresh network."""
    p = Proxy(api, forwarded_for=fresh_ip())
    yield p
    p.close()


@pytest.fixture
def network_api(proxy: Proxy) -> str:
    return proxy.url


@pytest.fixture
def client(network_api: str) -> Iterator[Client]:
    with Client(network_api, token="") as c:
        yield c


@pytest.fixture
def run_cli(network_api: str, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)

    def run(
        *args: str, env: dict[str, str] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("INSTANODE_")}
        full = {
            **base,
            "INSTANODE_API": network_api,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            **(env or {}),
        }
        return subprocess.run(
            [sys.executable, "-m", "instanode.cli", *args],
            cwd=tmp_path,
            env=full,
            input=input,
            capture_output=True,
            text=True,
            timeout=600,
        )

    return run


def new_email() -> str:
    return f"sdk{uuid.uuid4().hex[:12]}@example.com"


def follow_link(stack: Stack, email: str) -> str:
    """The session token the newest magic link mailed to ``email`` signs in with."""
    reply = requests.get(magic_link(stack, email), allow_redirects=False, timeout=10)
    assert reply.status_code == 302, reply.text
    token = reply.cookies.get(SESSION_COOKIE)
    assert token, reply.headers
    return str(token)


@pytest.fixture
def sign_in(api: str, stack: Stack) -> Callable[..., str]:
    """``sign_in(email=None)``: a session token (send it as ``Bearer``) of a new user."""

    def run(email: str | None = None) -> str:
        address = email or new_email()
        assert requests.post(f"{api}/auth/email/start", json={"email": address}, timeout=10).ok
        return follow_link(stack, address)

    return run


def set_tier(stack: Stack, email: str, tier: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "chalicelib.admin", "set-tier", "--email", email, "--tier", tier],
        cwd=ROOT,
        env={**os.environ, **stack.env()},
        capture_output=True,
        check=True,
    )
