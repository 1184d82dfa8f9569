"""Mail really leaves: SMTP into the stack's sink (read back from its maildir), SES into moto."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from chalicelib.mail import MailError, Message, SmtpSender, build_sender
from devstack.stack import Stack

SENDER = "noreply@instanode.localhost"
REGION = "us-east-1"


def address() -> str:
    return f"u{uuid.uuid4().hex[:12]}@example.com"


def login_mail(to: str, html: str | None = None) -> Message:
    return Message(to, "Your instanode sign-in link", "https://instanode.localhost/l?t=abc", html)


def test_send_delivers_text_and_html_through_the_stack_mail_url(stack: Stack) -> None:
    env = stack.env()
    to = address()
    sent_id = build_sender(env["INSTANODE_MAIL_URL"]).send(
        login_mail(to, "<p><a href='https://instanode.localhost/l?t=abc'>Sign in</a></p>"),
        env["INSTANODE_MAIL_FROM"],
    )
    got = stack.smtp.wait_for(to)
    assert (got["Message-ID"], got["To"], got["From"]) == (sent_id, to, env["INSTANODE_MAIL_FROM"])
    assert got["Subject"] == "Your instanode sign-in link"
    assert got.get_content_type() == "multipart/alternative"
    text, html = got.get_body(("plain",)), got.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == "https://instanode.localhost/l?t=abc"
    assert "<a href='https://instanode.localhost/l?t=abc'>" in html.get_content()


def test_send_delivers_text_only_message_as_one_part(stack: Stack) -> None:
    to = address()
    SmtpSender(stack.smtp.url).send(login_mail(to), SENDER)
    got = stack.smtp.wait_for(to)
    assert got.get_content_type() == "text/plain"
    assert got.get_content().strip() == "https://instanode.localhost/l?t=abc"


def test_send_keeps_non_ascii_subject_and_text(stack: Stack) -> None:
    to = address()
    SmtpSender(stack.smtp.url).send(Message(to, "Connexion à instanode ✓", "Voilà: ✓"), SENDER)
    got = stack.smtp.wait_for(to)
    assert got["Subject"] == "Connexion à instanode ✓"
    assert got.get_content().strip() == "Voilà: ✓"


def test_wait_for_returns_the_newest_message_to_an_address(stack: Stack) -> None:
    to, other = address(), address()
    sender = SmtpSender(stack.smtp.url)
    for subject, rcpt in (("first", to), ("second", to), ("third", other)):
        sender.send(Message(rcpt, subject, "body"), SENDER)
    assert stack.smtp.wait_for(other)["Subject"] == "third"
    assert stack.smtp.wait_for(to)["Subject"] == "second"
    subjects = [m["Subject"] for m in stack.smtp.messages()]
    assert subjects.index("first") < subjects.index("second") < subjects.index("third")


def test_wait_for_raises_when_nothing_arrives(stack: Stack) -> None:
    with pytest.raises(TimeoutError):
        stack.smtp.wait_for(address(), timeout=0.2)


def test_clear_empties_the_maildir(stack: Stack) -> None:
    to = address()
    SmtpSender(stack.smtp.url).send(login_mail(to), SENDER)
    stack.smtp.wait_for(to)
    stack.smtp.clear()
    assert stack.smtp.messages() == []


def test_send_raises_when_the_server_is_down() -> None:
    with socket.socket() as bound:  # bound but not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        with pytest.raises(MailError, match="ConnectionRefusedError"):
            SmtpSender(f"smtp://127.0.0.1:{port}").send(login_mail(address()), SENDER)


def test_send_raises_when_the_server_lacks_starttls(stack: Stack) -> None:
    to = address()
    url = f"smtp+starttls://127.0.0.1:{stack.smtp.port}"
    with pytest.raises(MailError, match="STARTTLS"):
        SmtpSender(url).send(login_mail(to), SENDER)
    assert not [m for m in stack.smtp.messages() if m["To"] == to]


@pytest.fixture
def ses(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield


def test_send_through_ses_returns_the_message_id(ses: None) -> None:
    boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
    to = address()
    sent_id = build_sender(f"ses://{REGION}").send(login_mail(to, "<p>link</p>"), SENDER)
    [sent] = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    assert (sent.id, sent.source, sent.subject) == (sent_id, SENDER, "Your instanode sign-in link")
    assert sent.destinations["ToAddresses"] == [to]


def test_send_through_ses_raises_for_an_unverified_sender(ses: None) -> None:
    with pytest.raises(MailError, match="MessageRejected"):
        build_sender(f"ses://{REGION}").send(login_mail(address()), SENDER)
