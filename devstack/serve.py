"""`chalice local`, plus the API Gateway gateway responses that infra/terraform configures.

chalice local answers an unknown route with 403 "Missing Authentication Token", as API Gateway
does by default; our Terraform turns that gateway response into a 404 envelope, and so does this
handler, so the local API behaves like the deployed one.

No client can hold a connection's thread for long: every read and write has a timeout
(``READ_TIMEOUT_SECONDS`` of silence, an idle keep-alive connection too), and a request body
must arrive within a deadline that grows with its size; a body too slow is answered 408.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from chalice.cli.factory import CLIFactory
from chalice.local import ChaliceRequestHandler, LocalDevServer, ThreadedHTTPServer

from devstack.stack import ROOT

READ_TIMEOUT_SECONDS = 30  # the longest a client may stay silent on a connection
MIN_BODY_RATE = 64 * 1024  # bytes/s a request body must average, after BODY_GRACE_SECONDS
BODY_GRACE_SECONDS = 30

# Resource tokens are bearer capabilities (presign, webhook inbox), and query strings carry
# claim JWTs and sign-in links: never write either to the log.
_TOKEN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_QUERY_VALUE = re.compile(r"([?&][^=&\s]*=)[^&\s]*")


def redact(text: str) -> str:
    return _QUERY_VALUE.sub(r"\1<redacted>", _TOKEN.sub("<token>", text))


class GatewayResponsesHandler(ChaliceRequestHandler):
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    timeout = READ_TIMEOUT_SECONDS  # set on the socket: every read and write

    def _parse_payload(self) -> tuple[dict[str, str], bytes | None]:
        """The request's headers and body, the body read within its deadline (else 408)."""
        length = int(self.headers.get("content-length", "0"))
        deadline = time.monotonic() + BODY_GRACE_SECONDS + length / MIN_BODY_RATE
        body = bytearray()
        try:
            while len(body) < length:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("request body too slow")
                self.connection.settimeout(min(READ_TIMEOUT_SECONDS, left))
                chunk = self.rfile.read1(min(length - len(body), 1 << 16))
                if not chunk:
                    raise ConnectionError("client closed the connection mid-body")
                body += chunk
        except TimeoutError:
            self._request_timeout()
            raise  # http.server logs it and closes the connection
        finally:
            self.connection.settimeout(READ_TIMEOUT_SECONDS)
        return dict(self.headers), bytes(body) if length > 0 else None

    def _request_timeout(self) -> None:
        self.close_connection = True
        body = {
            "ok": False,
            "error": "request_timeout",
            "message": f"The request body did not arrive in time ({READ_TIMEOUT_SECONDS} s "
            "without data, or too slow overall).",
            "request_id": str(uuid.uuid4()),
        }
        headers = {"Content-Type": "application/json", "Connection": "close"}
        self._send_http_response(408, headers, json.dumps(body))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        super().log_message(format, *(redact(str(a)) for a in args))

    def _send_error_response(self, error: Any) -> None:
        if error.CODE == 403 and b"Missing Authentication Token" in error.body:
            body = {
                "ok": False,
                "error": "not_found",
                "message": "No route matches this method and path.",
                "request_id": str(uuid.uuid4()),
            }
            headers = {"Content-Type": "application/json"}
            self._send_http_response(404, headers, json.dumps(body))
            return
        super()._send_error_response(error)


class Server(ThreadedHTTPServer):
    request_queue_size = 128  # the default of 5 resets bursts of concurrent agents


def serve(env: Mapping[str, str], port: int, host: str = "127.0.0.1", stage: str = "local") -> None:
    os.environ.update(env)
    factory = CLIFactory(project_dir=str(ROOT), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    server = LocalDevServer(config.chalice_app, config, host, port, GatewayResponsesHandler, Server)
    server.serve_forever()
