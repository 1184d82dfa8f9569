"""The local API server (devstack/serve.py) over raw sockets: every malformed request gets a status
and the JSON error envelope (never http.server's HTML page or a dropped connection), an answer to
HEAD has no body, chunked bodies reach the app de-chunked, bodies are capped at API Gateway's
10 MiB, and concurrent requests do not see each other's. Its greedy route matcher is tested on
its own (no app route has a ``{name+}`` segment to go through)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest

from devstack.routing import GreedyRouteMatcher
from devstack.serve import MAX_BODY_BYTES
from tests.conftest import fresh_ip
from tests.security.test_stalls import read_answer

pytestmark = pytest.mark.integration

Reply = tuple[int, dict[str, str], bytes]  # status, headers (lower-case names), what follows
MIB = 1024 * 1024
CHUNKED = "Transfer-Encoding: chunked"
JSON = "Content-Type: application/json"


def exchange(api: str, raw: bytes, within: float = 10) -> bytes:
    """Send ``raw`` on a new connection; what the server answers until it closes it."""
    parts = urlsplit(api)
    with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=5) as sock:
        sock.sendall(raw)
        return read_answer(sock, time.monotonic() + within)


def request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    """A request with ``Connection: close`` (the server ends the exchange)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse(raw: bytes) -> Reply:
    """The first response in ``raw``."""
    head, blank, rest = raw.partition(b"\r\n\r\n")
    assert blank, f"no complete response head in {raw[:300]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), status_line
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest


def first_response(raw: bytes) -> tuple[bytes, bytes]:
    """``raw`` split after its first response (as long as its Content-Length says)."""
    _, headers, rest = parse(raw)
    end = len(raw) - len(rest) + int(headers["content-length"])
    return raw[:end], raw[end:]


def envelope(raw: bytes, status: int, error: str, *, closes: bool = True) -> dict[str, Any]:
    """The error envelope ``raw`` is (all of it), after checking its status and headers."""
    got, headers, rest = parse(raw)
    assert got == status, raw[:500]
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(rest), raw[:500]
    assert (headers.get("connection") == "close") is closes
    body: dict[str, Any] = json.loads(rest)
    assert body["ok"] is False and body["error"] == error, body
    assert body["request_id"] == headers["x-request-id"] == str(uuid.UUID(body["request_id"]))
    return body


def chunked(*chunks: bytes, end: bytes = b"0\r\n\r\n") -> bytes:
    """``chunks`` as a chunked body, ``end`` after them (by default the last chunk, no trailer)."""
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + end


# -- the request line and header lines ---------------------------------------------------------


@pytest.mark.parametrize("line", ["TRACE / HTTP/1.1", "FOO /x HTTP/1.1"])
def test_unknown_method_is_a_405_envelope(api: str, line: str) -> None:
    reply = exchange(api, f"{line}\r\nHost: localhost\r\n\r\n".encode())
    body = envelope(reply, 405, "method_not_allowed")
    assert body["message"] == f"Unsupported method: {line.split()[0]}"
    assert parse(reply)[1]["allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n",  # TLS
        b"GET\r\n\r\n",
        b"GET / HTTP/1.x\r\n\r\n",
    ],
    ids=["tls-client-hello", "method-alone", "bad-version"],
)
def test_garbage_request_line_is_a_400_envelope(api: str, raw: bytes) -> None:
    envelope(exchange(api, raw), 400, "bad_request")


def test_unsupported_http_version_is_a_505_envelope(api: str) -> None:
    reply = exchange(api, b"GET / HTTP/9.9\r\nHost: localhost\r\n\r\n")
    envelope(reply, 505, "http_version_not_supported")


def test_request_line_over_64k_is_a_414_envelope(api: str) -> None:
    reply = exchange(api, request("GET", "/" + "a" * 70_000))
    envelope(reply, 414, "request_uri_too_long")


def test_header_line_over_64k_is_a_431_envelope(api: str) -> None:
    reply = exchange(api, request("GET", "/healthz", "X-Big: " + "a" * 70_000))
    envelope(reply, 431, "request_header_fields_too_large")


def test_unknown_route_is_a_404_envelope_on_a_kept_connection(api: str) -> None:
    # an Authorization header took chalice local down another path, which crashed on non-ASCII
    first = b"GET /no/such/route HTTP/1.1\r\nHost: localhost\r\nAuthorization: \xe9\r\n\r\n"
    not_found, then = first_response(exchange(api, first + request("GET", "/healthz")))
    envelope(not_found, 404, "not_found", closes=False)
    assert parse(then)[0] == 200


# -- request bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "framing",
    [
        ["Content-Length: abc"],
        ["Content-Length: -1"],
        ["Content-Length: +5"],
        ["Content-Length: 5", "Content-Length: 6"],
        ["Content-Length: 5", CHUNKED],
        ["Transfer-Encoding: gzip, chunked"],
    ],
    ids=["not-a-number", "negative", "signed", "two-lengths", "length-and-chunked", "gzip"],
)
def test_bad_body_framing_is_a_400_envelope(api: str, framing: list[str]) -> None:
    reply = exchange(api, request("POST", "/webhook/new", *framing, body=b"hello"))
    envelope(reply, 400, "bad_request")


def test_chunked_body_reaches_the_app(api: str) -> None:
    body = chunked(b'{"name"', b': "-no"}')  # an invalid name: without the body, name_required
    reply = exchange(api, request("POST", "/webhook/new", JSON, CHUNKED, body=body))
    envelope(reply, 400, "invalid_name", closes=False)


def test_chunked_body_provisions(api: str) -> None:
    body = b'5;ext=1\r\n{"nam\r\n' + chunked(b'e": "chunk', b'ed-hook"}')  # with an extension
    sent = request(
        "POST", "/webhook/new", JSON, CHUNKED, f"X-Forwarded-For: {fresh_ip()}", body=body
    )
    status, _, rest = parse(exchange(api, sent))
    assert status == 201, rest
    assert json.loads(rest)["name"] == "chunked-hook"


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nab\r\n0\r\n\r\n",
        b"5\r\nabcdefgh\r\n0\r\n\r\n",
        b"0x2\r\nab\r\n0\r\n\r\n",
        b"1" * 5000,
    ],
    ids=["not-hex", "data-longer-than-size", "hex-prefix", "endless-size-line"],
)
def test_bad_chunk_framing_is_a_400_envelope(api: str, body: bytes) -> None:
    reply = exchange(api, request("POST", "/webhook/new", CHUNKED, body=body))
    envelope(reply, 400, "bad_request")


@pytest.mark.parametrize(
    ("framing", "sent"),
    [
        ([f"Content-Length: {MAX_BODY_BYTES + 1}"], b""),
        ([f"Content-Length: {MAX_BODY_BYTES + 1}", "Expect: 100-continue"], b""),
        ([CHUNKED], b"%x\r\n" % (MAX_BODY_BYTES + 1)),
        ([CHUNKED], chunked(*[b"x" * MIB] * (MAX_BODY_BYTES // MIB), end=b"1\r\n")),
    ],
    ids=["content-length", "expect-100-continue", "one-chunk", "growing-chunks"],
)
def test_body_over_10_mib_is_a_413_envelope_at_once(
    api: str, framing: list[str], sent: bytes
) -> None:
    # what is sent stops where the body goes over 10 MiB (a chunk announced, its data not
    # sent): the server must answer without waiting for the rest
    started = time.monotonic()
    reply = exchange(api, request("POST", "/webhook/new", *framing, body=sent), within=5)
    assert time.monotonic() - started < 3
    envelope(reply, 413, "payload_too_large")  # and no "100 Continue" before it


# -- responses ---------------------------------------------------------------------------------


def test_head_answer_has_no_body_bytes(api: str) -> None:
    head = b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    reply = exchange(api, head + request("GET", "/healthz"))  # both on one connection
    _, headers, rest = parse(reply)
    assert int(headers["content-length"]) > 0  # what GET's would be
    status, _, body = parse(rest)  # the GET's answer follows the HEAD's headers at once
    assert status == 200 and json.loads(body)["ok"] is True


def test_concurrent_requests_each_see_their_own(api: str) -> None:
    # the app echoes the content type it refuses; a current_request shared by the server's
    # threads mixed them up
    parts = urlsplit(api)
    mixed: list[str] = []

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        for i in range(40):
            kind = f"text/x-{n}-{i}"
            conn.request("POST", "/webhook/new", body=b"{}", headers={"Content-Type": kind})
            answer = conn.getresponse().read().decode()
            if f"(got '{kind}')" not in answer:
                mixed.append(answer)
        conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not mixed, mixed[:3]


# -- greedy path parameters (the matcher alone) ------------------------------------------------

ROUTES = [
    "/",
    "/webhook/receive/{token}",
    "/webhook/receive/{token}/{path+}",
    "/files/special",
    "/files/{path+}",
    "/{proxy+}",
    "/a/{x}/c",
    "/a/{y}/d",
]


@pytest.mark.parametrize(
    ("url", "route", "captured"),
    [
        (
            "/webhook/receive/abc/github/push",
            "/webhook/receive/{token}/{path+}",
            {"token": "abc", "path": "github/push"},
        ),
        (
            "/webhook/receive/abc/x",
            "/webhook/receive/{token}/{path+}",
            {"token": "abc", "path": "x"},
        ),
        ("/webhook/receive/abc", "/webhook/receive/{token}", {"token": "abc"}),
        ("/webhook/receive/abc/", "/webhook/receive/{token}", {"token": "abc"}),
        ("/files/special", "/files/special", {}),
        ("/files/a/b.txt", "/files/{path+}", {"path": "a/b.txt"}),
        ("/other/thing", "/{proxy+}", {"proxy": "other/thing"}),
        ("/", "/", {}),
        ("/a/1/d", "/a/{y}/d", {"y": "1"}),  # nothing left over from trying /a/{x}/c
    ],
)
def test_greedy_last_segment_matches_one_or_more_segments(
    url: str, route: str, captured: dict[str, str]
) -> None:
    match = GreedyRouteMatcher(ROUTES).match_route(url)
    assert (match.route, match.captured) == (route, captured)


def test_greedy_match_keeps_the_query_string() -> None:
    match = GreedyRouteMatcher(ROUTES).match_route("/files/a/b?x=1&y=")
    assert match.query_params == {"x": ["1"], "y": [""]}


@pytest.mark.parametrize("url", ["/files", "/webhook/receive"])
def test_greedy_segment_needs_at_least_one_segment(url: str) -> None:
    with pytest.raises(ValueError, match="No matching route"):
        GreedyRouteMatcher([r for r in ROUTES if r != "/{proxy+}"]).match_route(url)
