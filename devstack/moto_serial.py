"""moto in server mode, handling one request at a time, and no client able to stall it.

Real DynamoDB runs a TransactWriteItems atomically: its conditions and writes cannot interleave
with another request's. moto's threaded server does not serialise them, so two concurrent
conditional claims of one idempotency key can both pass. Serialising requests (moto is CPU-bound
under the GIL anyway) gives the local stack the transaction semantics production has.

Only moto's own work is serialised: each connection's thread first reads its whole request body
(``read_body``: at most ``MAX_BODY_BYTES``, each read within ``READ_TIMEOUT_SECONDS`` and the
whole body within a deadline), so a client that holds a request open or trickles its body holds
only its own thread, never the lock. moto then reads the body from memory (a form content type
on a binary body, which once left moto waiting on the socket for ever, gets its answer).

    python -m devstack.moto_serial PORT [s3]

With ``s3`` it serves S3 alone (every request is read as an S3 call, and there is no
``/moto-api``): the endpoint tenants' presigned URLs name, apart from the platform's tables.
That server checks every request's signature first, as S3 does (devstack/s3_auth.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import IO, Any

from moto.backends import SERVICE_NAMES
from moto.moto_server.werkzeug_app import (
    BackendRequest,
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

from devstack.s3_auth import authenticate
from devstack.s3_request import Received, S3Error, denied, too_large

READ_TIMEOUT_SECONDS = 10  # the longest a client may stay silent (request line, headers, body)
MIN_BODY_RATE = 256 * 1024  # bytes/s a body must average, after BODY_GRACE_SECONDS
BODY_GRACE_SECONDS = 30
MAX_BODY_BYTES = 256 * 1024 * 1024  # far above every tier's upload locally; S3's is 5 GB
SPOOL_BYTES = 8 * 1024 * 1024  # bodies up to this stay in memory, larger ones go to a temp file
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_lock = threading.Lock()


class _SocketReader(io.RawIOBase):
    """A socket's reads, still possible after one timed out (``socket.SocketIO`` refuses every
    read after a timeout, and werkzeug reads what is left of a request after answering it)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)


class Handler(MotoRequestHandler):
    """moto's request handler with a timeout on every socket read and write."""

    timeout = READ_TIMEOUT_SECONDS

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(_SocketReader(self.connection))


def _timed_out() -> S3Error:
    return S3Error(
        400,
        "RequestTimeout",
        "Your socket connection to the server was not read from or written to within the "
        "timeout period.",
    )


def read_body(environ: dict[str, Any]) -> IO[bytes]:
    """The request's whole body (``Content-Length`` bytes), read within the time limits."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        raise S3Error(
            501,
            "NotImplemented",
            "A header you provided implies functionality that is not "
            "implemented: Transfer-Encoding.",
        )
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > MAX_BODY_BYTES:
        raise too_large()
    body = tempfile.SpooledTemporaryFile(SPOOL_BYTES)  # noqa: SIM115 (``buffered`` closes it)
    try:
        _fill(body, environ["wsgi.input"], environ.get("werkzeug.socket"), length)
    except BaseException:
        body.close()
        raise
    body.seek(0)
    return body


def _fill(body: IO[bytes], stream: Any, sock: socket.socket | None, length: int) -> None:
    """Copy ``length`` bytes of ``stream`` to ``body``, each read within READ_TIMEOUT_SECONDS
    and all within the body's deadline."""
    deadline = time.monotonic() + BODY_GRACE_SECONDS + length / MIN_BODY_RATE
    try:
        while body.tell() < length:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _timed_out()
            if sock is not None:
                sock.settimeout(min(READ_TIMEOUT_SECONDS, left))
            chunk = stream.read1(min(length - body.tell(), 1 << 20))
            if not chunk:
                raise S3Error(
                    400,
                    "IncompleteBody",
                    "You did not provide the number of bytes specified by the Content-Length "
                    "HTTP header.",
                )
            body.write(chunk)
    except TimeoutError:
        raise _timed_out() from None
    finally:
        if sock is not None:
            sock.settimeout(READ_TIMEOUT_SECONDS)


def buffered(app: WSGIApp) -> WSGIApp:
    """``app`` called once the request body is read, with the body in memory (or a temp file)."""

    def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            body = read_body(environ)
        except S3Error as exc:
            _stop_reading(environ)
            return exc.respond(start_response)
        environ["wsgi.input"] = body
        try:
            return list(app(environ, start_response))
        finally:
            body.close()

    return handle


def _stop_reading(environ: dict[str, Any]) -> None:
    """Read nothing more of a refused request: werkzeug would read the rest of a held or
    trickled body after the answer, the thread held as long as the client keeps sending."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)


def authenticated(app: WSGIApp) -> WSGIApp:
    """``app`` reached only by requests S3 would accept (devstack/s3_auth.py)."""

    def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            authenticate(Received.of(environ), datetime.now(UTC))
        except S3Error as exc:
            return exc.respond(start_response)
        environ["wsgi.input"].seek(0)
        return app(environ, start_response)

    return handle


def serialised(app: WSGIApp) -> WSGIApp:
    def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with _lock:
            return list(app(environ, start_response))

    return handle


class Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, leaving the body for the backend when it peeks at it to route.

    moto reads a form-encoded body to find an ``Action``, and on a body that is not UTF-8
    (binary data sent with curl's default content type) it kept nothing of it: the backend then
    waited for bytes the client had already sent. The body is a file here: rewind it."""

    def _get_body(self, environ: dict[str, Any]) -> str | None:
        body: str | None = super()._get_body(environ)
        environ["wsgi.input"].seek(0)
        return body


S3_APPS = ("s3", "s3bucket_path")  # moto's S3 backends: virtual-hosted and path-style


class S3Request(BackendRequest):
    """S3 reads a body as a form only in a POST upload: a PUT's body is the object, whatever its
    content type (moto parsed a form-encoded PUT as a form and stored nothing of it)."""

    @property
    def want_form_data_parsed(self) -> bool:
        return self.method == "POST" and bool(super().want_form_data_parsed)


def create_s3_app(service: SERVICE_NAMES) -> Any:
    app = create_backend_app(service)
    app.request_class = S3Request
    return app


class S3Only(Dispatcher):
    """moto's dispatcher answering only what it would hand to S3 (not ``/moto-api``)."""

    def get_application(self, environ: dict[str, Any]) -> Any:
        app = super().get_application(environ)
        if getattr(app, "service", None) in S3_APPS:
            return app
        return lambda _environ, start_response: denied("S3 only here").respond(start_response)


def app_for(only: str | None) -> WSGIApp:
    if only is None:
        return buffered(serialised(Dispatcher(create_backend_app)))
    if only == "s3":
        return buffered(authenticated(serialised(S3Only(create_s3_app))))
    raise SystemExit(f"moto_serial serves everything, or s3 alone: not {only!r}")


def main(port: int, only: str | None = None) -> None:
    app = app_for(only)
    os.environ.setdefault("MOTO_PORT", str(port))
    run_simple("127.0.0.1", port, app, threaded=True, request_handler=Handler)


if __name__ == "__main__":
    main(int(sys.argv[1]), *sys.argv[2:3])
