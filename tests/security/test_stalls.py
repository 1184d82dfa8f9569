"""No client can stall the stack: a request held open (headers and half its body, then silence),
a body trickled a byte a second, or binary data sent with curl's default form content type,
against the storage endpoint, the platform's moto and the API. Meanwhile ``/healthz``, a
provision and another tenant's uploads answer at once, and the held request itself gets an
answer when its time is up (devstack/moto_serial.py, devstack/serve.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from devstack import moto_serial, serve
from devstack.stack import Stack
from tests.conftest import fresh_ip
from tests.integration.conftest import provision

pytestmark = pytest.mark.integration
BODY = 1024 * 1024
QUICK = 3.0  # seconds any request may take while another one is held


def presign(api: str, token: str, **body: Any) -> dict[str, Any]:
    r = requests.post(f"{api}/storage/{token}/presign", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def storage_token(api: str) -> str:
    r = provision(api, "/storage/new", name="files", ip=fresh_ip())
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def raw_request(url: str, method: str, headers: dict[str, str]) -> tuple[socket.socket, bytes]:
    """A connection to ``url``'s server and the request line and headers for it."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=5)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return sock, ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answer(sock: socket.socket, deadline: float) -> bytes:
    """What the server sends until it closes the connection (or ``deadline``)."""
    reply = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        reply += chunk
    return reply


@contextmanager
def held(url: str, method: str = "PUT", **headers: str) -> Iterator[Callable[[float], bytes]]:
    """A request sending half of its ``BODY``-byte body, then nothing; yields a function that
    waits (at most the seconds given) for the server's answer."""
    sock, head = raw_request(
        url,
        method,
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": str(BODY),
            **headers,
        },
    )
    sock.sendall(head + b"\xff" * (BODY // 2))

    def answer(within: float) -> bytes:
        return read_answer(sock, time.monotonic() + within)

    try:
        yield answer
    finally:
        sock.close()


def quickly(call: Callable[[], requests.Response], status: int) -> float:
    """``call`` answers ``status`` within QUICK seconds; how long it took."""
    started = time.monotonic()
    r = call()
    took = time.monotonic() - started
    assert r.status_code == status, r.text
    assert took < QUICK, f"took {took:.1f}s while a request was held"
    return took


def the_stack_answers(api: str, other_token: str) -> None:
    """/healthz, two provisions (one touches the storage server) and another tenant's upload."""
    quickly(lambda: requests.get(f"{api}/healthz", timeout=QUICK), 200)
    quickly(lambda: provision(api, "/webhook/new", name="hook", ip=fresh_ip()), 201)
    quickly(lambda: provision(api, "/storage/new", name="files", ip=fresh_ip()), 201)
    data = os.urandom(4096)
    url = presign(api, other_token, operation="PUT", key="ok.bin", content_length=len(data))["url"]
    quickly(lambda: requests.put(url, data=data, timeout=QUICK), 200)
    got = presign(api, other_token, operation="GET", key="ok.bin")["url"]
    assert requests.get(got, timeout=QUICK).content == data


def test_held_put_on_the_storage_endpoint_stalls_nothing(api: str) -> None:
    url = presign(api, storage_token(api), operation="PUT", key="held.bin", content_length=BODY)
    other = storage_token(api)
    with held(url["url"]) as answer:
        the_stack_answers(api, other)
        reply = answer(moto_serial.READ_TIMEOUT_SECONDS + 5)
    assert reply.startswith(b"HTTP/1.1 400") and b"<Code>RequestTimeout</Code>" in reply


def test_held_put_on_the_platform_moto_stalls_nothing(api: str, stack: Stack) -> None:
    url = f"http://127.0.0.1:{stack.profile.moto_port}/instanode-storage/held.bin"
    other = storage_token(api)
    with held(url) as answer:
        the_stack_answers(api, other)
        reply = answer(moto_serial.READ_TIMEOUT_SECONDS + 5)
    assert reply.startswith(b"HTTP/1.1 400") and b"<Code>RequestTimeout</Code>" in reply


def test_held_request_on_the_api_stalls_nothing(api: str) -> None:
    other = storage_token(api)
    with held(f"{api}/webhook/new", method="POST", **{"X-Forwarded-For": fresh_ip()}) as answer:
        the_stack_answers(api, other)
        reply = answer(serve.READ_TIMEOUT_SECONDS + 5)
    assert reply.startswith(b"HTTP/1.0 408") or reply.startswith(b"HTTP/1.1 408"), reply
    assert b'"request_timeout"' in reply


def test_trickled_body_stalls_nothing_and_is_cut_off(api: str) -> None:
    url = presign(api, storage_token(api), operation="PUT", key="slow.bin", content_length=BODY)
    other = storage_token(api)
    sock, head = raw_request(url["url"], "PUT", {"Content-Length": str(BODY)})
    sock.sendall(head)
    started, reply = time.monotonic(), b""
    sock.settimeout(0.9)
    limit = moto_serial.BODY_GRACE_SECONDS + BODY / moto_serial.MIN_BODY_RATE + 10
    try:
        while not reply and time.monotonic() - started < limit:
            sock.sendall(b"x")  # a byte a second: never silent long enough for the idle timeout
            if time.monotonic() - started < 2:
                the_stack_answers(api, other)
            with suppress(TimeoutError):
                reply = sock.recv(65536)
        reply += read_answer(sock, time.monotonic() + 5)
    finally:
        sock.close()
    assert b"<Code>RequestTimeout</Code>" in reply, reply
    assert time.monotonic() - started < limit


def test_binary_put_with_curls_default_form_content_type_is_answered(
    api: str, tmp_path: Any
) -> None:
    token = storage_token(api)
    data = bytes(range(256)) * 64 + b"&=%+\x00"
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    url = presign(api, token, operation="PUT", key="blob.bin", content_length=len(data))["url"]
    curl = ["curl", "-sS", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"]
    done = subprocess.run([*curl, "--data-binary", f"@{path}", url], capture_output=True, text=True)
    assert done.stdout == "200", done.stderr
    got = presign(api, token, operation="GET", key="blob.bin")["url"]
    assert requests.get(got, timeout=30).content == data
