"""A local SMTP server that keeps every message it receives as a file, for tests to read.

    python -m devstack.smtp_sink --port N --maildir DIR

It listens on 127.0.0.1 only, accepts any sender and recipient (no AUTH, no TLS) and delivers
nowhere: each message's bytes land in DIR as ``<time_ns>-<n>.eml``, written under a dot-name and
then renamed, so a reader never sees half a message.
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class Maildir:
    """The aiosmtpd handler: one file per message."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._count = itertools.count()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.store(envelope.original_content or b"")
        return "250 Message accepted for delivery"

    def store(self, raw: bytes) -> Path:
        name = f"{time.time_ns()}-{next(self._count)}.eml"
        partial = self.root / f".{name}.part"
        partial.write_bytes(raw)
        return partial.replace(self.root / name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="devstack.smtp_sink")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args(argv)
    args.maildir.mkdir(mode=0o700, parents=True, exist_ok=True)  # sign-in links live here
    controller = Controller(
        Maildir(args.maildir),
        hostname="127.0.0.1",
        port=args.port,
        server_hostname="localhost",  # not socket.getfqdn(), which may wait on DNS
    )
    controller.start()
    try:
        threading.Event().wait()  # until SIGINT (``Service.down``)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
