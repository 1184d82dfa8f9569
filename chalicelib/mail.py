"""Email delivery (magic links): one ``Sender`` interface, over SMTP or Amazon SES.

``build_sender(url)`` reads a mail URL: ``ses:`` or ``ses://<region>`` for SES; ``smtp://host:port``
(plain), ``smtps://user:pass@host:465`` (TLS from the first byte) or
``smtp+starttls://user:pass@host:587`` for SMTP. A failed delivery raises ``MailError``; neither
its text nor anything else here ever carries a message's body or the URL's password.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from chalicelib.errors import ConfigError

if TYPE_CHECKING:
    from mypy_boto3_ses import SESClient
    from mypy_boto3_ses.type_defs import BodyTypeDef

SMTP_TIMEOUT_SECONDS = 10.0
DEFAULT_PORTS = {"smtp": 25, "smtps": 465, "smtp+starttls": 587}


class MailError(Exception):
    """A message could not be handed to the mail server or service."""


@dataclass(frozen=True)
class Message:
    to: str
    subject: str
    text: str = field(repr=False)  # a magic link is a credential
    html: str | None = field(default=None, repr=False)


class Sender(Protocol):
    def send(self, message: Message, sender: str) -> str:
        """Deliver ``message`` from ``sender``; return the provider's message id."""
        ...


class SmtpSender:
    """Delivers over one SMTP connection per message (``smtplib``)."""

    def __init__(self, url: str, timeout: float = SMTP_TIMEOUT_SECONDS) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ConfigError("mail URL: expected smtp://, smtps:// or smtp+starttls://<host>")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError("mail URL: the SMTP port is not a number in 1-65535") from None
        self.security = parts.scheme
        self.host = parts.hostname
        self.port = port or DEFAULT_PORTS[parts.scheme]
        self.username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password or "")
        self._timeout = timeout

    def send(self, message: Message, sender: str) -> str:
        mime = _mime(message, sender)
        try:
            with self._connect() as smtp:
                if self.security == "smtp+starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self._password)
                smtp.send_message(mime)
        except (smtplib.SMTPException, OSError) as exc:
            raise MailError(f"SMTP {self.host}:{self.port}: {type(exc).__name__}: {exc}") from exc
        return str(mime["Message-ID"])

    def _connect(self) -> smtplib.SMTP:
        if self.security == "smtps":
            context = ssl.create_default_context()
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self._timeout, context=context)
        return smtplib.SMTP(self.host, self.port, timeout=self._timeout)


class SesSender:
    """Delivers through Amazon SES ``SendEmail`` (the sender must be a verified identity)."""

    def __init__(self, client: SESClient | None = None, region: str | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("ses", region_name=region)
        self.client = client

    def send(self, message: Message, sender: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        body: BodyTypeDef = {"Text": {"Data": message.text, "Charset": "UTF-8"}}
        if message.html is not None:
            body["Html"] = {"Data": message.html, "Charset": "UTF-8"}
        try:
            sent = self.client.send_email(
                Source=sender,
                Destination={"ToAddresses": [_recipient(message.to)]},
                Message={"Subject": {"Data": message.subject, "Charset": "UTF-8"}, "Body": body},
            )
        except (BotoCoreError, ClientError) as exc:
            raise MailError(f"SES: {type(exc).__name__}: {exc}") from exc
        return sent["MessageId"]


def build_sender(url: str) -> Sender:
    """The sender a mail URL names (see the module docstring)."""
    parts = urlsplit(url)
    if parts.scheme == "ses":
        return SesSender(region=parts.hostname)
    if parts.scheme in DEFAULT_PORTS:
        return SmtpSender(url)
    raise ConfigError(
        f"mail URL: unsupported scheme {parts.scheme!r} "
        "(use ses:, ses://<region>, smtp://, smtps:// or smtp+starttls://)"
    )


def _recipient(to: str) -> str:
    """``to`` when it is exactly one plain address: no display name, no list, no header break."""
    local, _, domain = to.rpartition("@")
    if not (local and domain) or parseaddr(to)[1] != to:
        raise MailError("the recipient must be one plain email address")
    return to


def _mime(message: Message, sender: str) -> EmailMessage:
    mime = EmailMessage()
    mime["From"] = sender
    mime["To"] = _recipient(message.to)
    mime["Subject"] = message.subject
    mime["Date"] = formatdate(usegmt=True)
    domain = parseaddr(sender)[1].rpartition("@")[2]
    mime["Message-ID"] = make_msgid(domain=domain or "localhost")  # no slow getfqdn() lookup
    mime.set_content(message.text)
    if message.html is not None:
        mime.add_alternative(message.html, subtype="html")
    return mime
