"""moto in server mode, handling one request at a time.

Real DynamoDB runs a TransactWriteItems atomically: its conditions and writes cannot interleave
with another request's. moto's threaded server does not serialise them, so two concurrent
conditional claims of one idempotency key can both pass. Serialising requests (moto is CPU-bound
under the GIL anyway) gives the local stack the transaction semantics production has.

    python -m devstack.moto_serial PORT [s3]

With ``s3`` it serves S3 alone (every request is read as an S3 call, and there is no
``/moto-api``): the endpoint tenants' presigned URLs name, apart from the platform's tables.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

_lock = threading.Lock()


def serialised(app: Callable[..., Iterable[bytes]]) -> Callable[..., list[bytes]]:
    def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with _lock:
            return list(app(environ, start_response))

    return handle


S3_APPS = ("s3", "s3bucket_path")  # moto's S3 backends: virtual-hosted and path-style


def _refused(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("403 Forbidden", [("Content-Type", "application/xml")])
    return [b"<Error><Code>AccessDenied</Code><Message>S3 only here</Message></Error>"]


class S3Only(DomainDispatcherApplication):
    """moto's dispatcher answering only what it would hand to S3 (not ``/moto-api``)."""

    def get_application(self, environ: dict[str, Any]) -> Any:
        app = super().get_application(environ)
        return app if getattr(app, "service", None) in S3_APPS else _refused


def main(port: int, only: str | None = None) -> None:
    if only not in (None, "s3"):
        raise SystemExit(f"moto_serial serves everything, or s3 alone: not {only!r}")
    os.environ.setdefault("MOTO_PORT", str(port))
    app = serialised((S3Only if only else DomainDispatcherApplication)(create_backend_app))
    run_simple("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(int(sys.argv[1]), *sys.argv[2:3])
