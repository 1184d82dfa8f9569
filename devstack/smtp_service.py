"""The local stack's mail server: ``devstack.smtp_sink`` (aiosmtpd) on 127.0.0.1, which keeps
every message it receives as ``<state>/smtp/maildir/<time_ns>-<n>.eml`` instead of delivering it.
Tests read them back with ``messages()`` and ``wait_for(address)``.
"""

from __future__ import annotations

import sys
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from devstack.services import Service

ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.05


class SmtpServer(Service):
    name = "smtp"

    def __init__(self, state: Path, port: int) -> None:
        super().__init__(state)
        self.port = port
        self.maildir = self.dir / "maildir"

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def launch(self) -> int:
        cmd = [sys.executable, "-m", "devstack.smtp_sink", "--port", str(self.port)]
        return self.spawn([*cmd, "--maildir", str(self.maildir)], cwd=ROOT).pid

    def messages(self) -> list[EmailMessage]:
        """Every message received since the last ``clear()``, oldest first."""
        files = sorted(self.maildir.glob("*.eml"), key=_arrival)
        return [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]

    def wait_for(self, to: str, timeout: float = 10) -> EmailMessage:
        """The newest message addressed to ``to``, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages() if _addressed_to(m, to)]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no message to {to} arrived within {timeout:g}s")
            time.sleep(POLL_SECONDS)

    def clear(self) -> None:
        """Delete every received message."""
        for path in self.maildir.glob("*.eml"):
            path.unlink(missing_ok=True)


def _arrival(path: Path) -> tuple[int, int]:
    stamp, _, n = path.stem.partition("-")
    return int(stamp), int(n)


def _addressed_to(message: EmailMessage, to: str) -> bool:
    header = message.get("To")
    addresses = header.addresses if header is not None else ()
    return any(a.addr_spec.lower() == to.lower() for a in addresses)
