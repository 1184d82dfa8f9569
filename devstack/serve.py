"""The local API server: `chalice local`, made to answer as API Gateway and infra/terraform do.

- Routing (devstack/routing.py): API Gateway's greedy last segment ``{path+}`` too, and an
  unknown route is a 404 envelope, as our Terraform's gateway response makes it.
- Malformed requests (a broken request line, an unknown method, a request or header line over
  64 KiB, a bad Content-Length or chunked framing) get a status and the JSON error envelope, never
  http.server's HTML page or a dropped connection; an answer to HEAD has headers only.
- Request bodies come with a Content-Length or chunked (de-chunked before the app sees them), and
  at most ``MAX_BODY_BYTES``, API Gateway's payload limit: a larger one is answered 413 at once.
- No client can hold a connection's thread for long: every read and write has a timeout
  (``READ_TIMEOUT_SECONDS`` of silence, an idle keep-alive connection too), and a request body
  must arrive within a deadline that grows with its size; a body too slow is answered 408.
- Concurrent requests each see their own ``current_request`` (chalice's ``LocalChalice``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import traceback
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from io import BufferedIOBase
from typing import Any

from chalice.app import Chalice
from chalice.cli.factory import CLIFactory
from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    LocalChalice,
    LocalDevServer,
    LocalGatewayException,
    ThreadedHTTPServer,
)

from chalicelib import errors
from devstack.routing import Gateway
from devstack.stack import ROOT

READ_TIMEOUT_SECONDS = 30  # the longest a client may stay silent on a connection
MIN_BODY_RATE = 64 * 1024  # bytes/s a request body must average, after BODY_GRACE_SECONDS
BODY_GRACE_SECONDS = 30
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
MAX_CHUNK_LINE = 4096  # a chunk-size line (with extensions) or a trailer line

# Resource tokens are bearer capabilities (presign, webhook inbox), and query strings carry
# claim JWTs and sign-in links: never write either to the log.
_TOKEN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_QUERY_VALUE = re.compile(r"([?&][^=&\s]*=)[^&\s]*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,20}")


def redact(text: str) -> str:
    return _QUERY_VALUE.sub(r"\1<redacted>", _TOKEN.sub("<token>", text))


class GatewayError(errors.ApiError):
    """An error API Gateway itself answers, before any Lambda runs (a timeout, a framing error)."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = status.name.lower()  # bad_request, request_timeout, ...


def _too_large() -> errors.ApiError:
    # infra/terraform/gateway_responses.tf's REQUEST_TOO_LARGE, word for word
    return errors.PayloadTooLargeError("The request is over API Gateway's 10 MB payload limit.")


def _timed_out() -> errors.ApiError:
    return GatewayError(
        HTTPStatus.REQUEST_TIMEOUT,
        f"The request body did not arrive in time ({READ_TIMEOUT_SECONDS} s without data, "
        "or too slow overall).",
    )


# -- request bodies ----------------------------------------------------------------------------


class BodyReader:
    """Reads one request body within a deadline: ``BODY_GRACE_SECONDS``, plus the time its
    announced size takes at ``MIN_BODY_RATE``; every read waits ``READ_TIMEOUT_SECONDS`` at most."""

    def __init__(self, rfile: BufferedIOBase, connection: socket.socket) -> None:
        self._rfile = rfile
        self._connection = connection
        self._deadline = time.monotonic() + BODY_GRACE_SECONDS
        self._announced = 0

    def fixed(self, length: int) -> bytes:
        self._announce(length)
        return self._exactly(length)

    def chunked(self) -> bytes:
        body = bytearray()
        while size := self._chunk_size():
            self._announce(size)
            body += self._exactly(size)
            if self._exactly(2) != b"\r\n":
                raise errors.BadRequestError("A chunk's data is not followed by CRLF.")
        while self._line() != b"\r\n":  # trailer fields, ignored
            pass
        return bytes(body)

    def _announce(self, size: int) -> None:
        self._announced += size
        if self._announced > MAX_BODY_BYTES:
            raise _too_large()
        self._deadline += size / MIN_BODY_RATE

    def _chunk_size(self) -> int:
        found = _CHUNK_SIZE.fullmatch(self._line())
        if found is None:
            raise errors.BadRequestError("Malformed chunk-size line in a chunked request body.")
        return int(found[1], 16)

    def _line(self) -> bytes:
        line = bytearray()
        while not line.endswith(b"\n"):
            if len(line) >= MAX_CHUNK_LINE:
                raise errors.BadRequestError(
                    f"A chunked body's line is over {MAX_CHUNK_LINE} bytes."
                )
            line += self._some(1)
        return bytes(line)

    def _exactly(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            data += self._some(min(size - len(data), 1 << 16))
        return bytes(data)

    def _some(self, most: int) -> bytes:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request body too slow")
        self._connection.settimeout(min(READ_TIMEOUT_SECONDS, left))
        data = self._rfile.read1(most)
        if not data:
            raise ConnectionAbortedError("the client closed the connection mid-body")
        return data


# -- the handler -------------------------------------------------------------------------------


class GatewayResponsesHandler(ChaliceRequestHandler):
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    timeout = READ_TIMEOUT_SECONDS  # set on the socket: every read and write

    def __init__(
        self,
        request: socket.socket,
        client_address: tuple[str, int],
        server: HTTPServer,
        app_object: Chalice,
        config: Config,
    ) -> None:
        # chalice's __init__ with our Gateway: BaseHTTPRequestHandler.__init__ serves the
        # connection, so the gateway cannot be swapped in after it
        self.local_gateway = Gateway(app_object, config)
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def _generic_handle(self) -> None:
        try:
            headers, body = self._parse_payload()
        except errors.ApiError as refused:  # the body is not (all) read: the connection ends
            self._send_envelope(refused, close=True)
            return
        except ConnectionError as gone:  # the client closed or reset its connection mid-body
            self.log_error("%s", gone)
            self.close_connection = True
            return
        try:
            response = self.local_gateway.handle_request(self.command, self.path, headers, body)
        except LocalGatewayException as error:  # an authorizer's answer
            self._send_error_response(error)
        except errors.ApiError as error:  # no route (Gateway)
            self._send_envelope(error)
        except Exception:
            self.log_error("%s", traceback.format_exc())
            self._send_envelope(errors.InternalError("An internal error occurred."), close=True)
        else:
            self._send_lambda_response(response)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle

    def _parse_payload(self) -> tuple[dict[str, str], bytes | None]:
        """The request's headers and body (de-chunked), the body read within its deadline."""
        length = self._content_length()
        reader = BodyReader(self.rfile, self.connection)
        try:
            body = reader.chunked() if length is None else reader.fixed(length)
        except TimeoutError as slow:
            raise _timed_out() from slow
        finally:
            self.connection.settimeout(READ_TIMEOUT_SECONDS)
        headers = {k: v for k, v in dict(self.headers).items() if k.lower() != "transfer-encoding"}
        if length is None:
            headers["Content-Length"] = str(len(body))
        return headers, body or None

    def _content_length(self) -> int | None:
        """The body's Content-Length, 0 without one, None if it is chunked; else 400 or 413."""
        lengths = {value.strip() for value in self.headers.get_all("Content-Length", [])}
        encodings = self.headers.get_all("Transfer-Encoding", [])
        if encodings:
            if lengths:
                raise errors.BadRequestError(
                    "Send either Content-Length or Transfer-Encoding, not both."
                )
            if [e.strip().lower() for e in encodings] != ["chunked"]:
                raise errors.BadRequestError("The only Transfer-Encoding accepted is 'chunked'.")
            return None
        if len(lengths) > 1:
            raise errors.BadRequestError("The request has differing Content-Length headers.")
        length = lengths.pop() if lengths else "0"
        if not _CONTENT_LENGTH.fullmatch(length):
            raise errors.BadRequestError("Content-Length must be a non-negative integer.")
        if int(length) > MAX_BODY_BYTES:
            raise _too_large()
        return int(length)

    def handle_expect_100(self) -> bool:
        """Refuse a body before the client sends it (``Expect: 100-continue``), if it will be."""
        try:
            self._content_length()
        except errors.ApiError as refused:
            self._send_envelope(refused, close=True)
            return False
        return bool(super().handle_expect_100())

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (request line, header lines, method) as the envelope."""
        refusal = self._refusal(HTTPStatus(code), message)
        self.log_error("code %d, message %s", refusal.status, message)
        # a status line and headers even when the request line was too broken to name a version
        # (http.server would answer as to HTTP/0.9: a bare body)
        self.request_version = self.protocol_version
        self._send_envelope(refusal, close=True)

    def _refusal(self, status: HTTPStatus, message: str | None) -> errors.ApiError:
        if status == HTTPStatus.NOT_IMPLEMENTED:  # no do_<method>: a method no route has
            allow = ", ".join(sorted(name[3:] for name in dir(self) if name.startswith("do_")))
            return errors.MethodNotAllowedError(
                f"Unsupported method: {self.command}", headers={"Allow": allow}
            )
        return GatewayError(status, f"{status.phrase}: {message or status.description}.")

    def _send_envelope(self, error: errors.ApiError, *, close: bool = False) -> None:
        """``error`` as the JSON envelope, under a new request id."""
        request_id = str(uuid.uuid4())
        headers = {**error.headers, "Content-Type": "application/json", "X-Request-Id": request_id}
        if close:
            headers["Connection"] = "close"  # send_header sets close_connection
        body = json.dumps(error.body(request_id), separators=(",", ":"))
        self._send_http_response(error.status, headers, body)

    def _send_lambda_response(self, response: dict[str, Any]) -> None:
        headers = {**response["headers"], **response["multiValueHeaders"]}
        self._send_http_response(
            response["statusCode"], headers, self._handle_binary(response)["body"]
        )

    def _send_http_response_with_body(
        self, code: int, headers: dict[str, Any], body: str | bytes
    ) -> None:
        """chalice's, but an answer to HEAD has no body (only the Content-Length GET's has)."""
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
        self._send_headers(headers)
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        """http.server's log line, formatted first (its args: ints, HTTPStatus...), redacted."""
        try:
            line = format % args
        except (TypeError, ValueError):
            line = " ".join([format, *map(str, args)])
        super().log_message("%s", redact(line))


class Server(ThreadedHTTPServer):
    request_queue_size = 128  # the default of 5 resets bursts of concurrent agents


def serve(env: Mapping[str, str], port: int, host: str = "127.0.0.1", stage: str = "local") -> None:
    os.environ.update(env)
    factory = CLIFactory(project_dir=str(ROOT), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    app = config.chalice_app
    # as `chalice local` does: current_request per thread, else concurrent requests mix
    app.__class__ = type("LocalApp", (LocalChalice, type(app)), {})
    server = LocalDevServer(app, config, host, port, GatewayResponsesHandler, Server)
    server.serve_forever()
