"""moto in server mode, handling one request at a time.

Real DynamoDB runs a TransactWriteItems atomically: its conditions and writes cannot interleave
with another request's. moto's threaded server does not serialise them, so two concurrent
conditional claims of one idempotency key can both pass. Serialising requests (moto is CPU-bound
under the GIL anyway) gives the local stack the transaction semantics production has.

    python -m devstack.moto_serial PORT
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


def main(port: int) -> None:
    os.environ.setdefault("MOTO_PORT", str(port))
    app = serialised(DomainDispatcherApplication(create_backend_app))
    run_simple("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(int(sys.argv[1]))
