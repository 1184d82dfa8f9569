"""`chalice local`, plus the API Gateway gateway responses that infra/terraform configures.

chalice local answers an unknown route with 403 "Missing Authentication Token", as API Gateway
does by default; our Terraform turns that gateway response into a 404 envelope, and so does this
handler, so the local API behaves like the deployed one.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping
from typing import Any

from chalice.cli.factory import CLIFactory
from chalice.local import ChaliceRequestHandler, LocalDevServer, ThreadedHTTPServer

from devstack.stack import ROOT

# Resource tokens are bearer capabilities (presign, webhook inbox), and query strings carry
# claim JWTs and sign-in links: never write either to the log.
_TOKEN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_QUERY_VALUE = re.compile(r"([?&][^=&\s]*=)[^&\s]*")


def redact(text: str) -> str:
    return _QUERY_VALUE.sub(r"\1<redacted>", _TOKEN.sub("<token>", text))


class GatewayResponsesHandler(ChaliceRequestHandler):
    disable_nagle_algorithm = True  # headers and body go out in separate writes

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
