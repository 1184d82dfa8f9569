"""Mail URLs pick and configure a sender; bad URLs and recipients fail before any connection."""

from __future__ import annotations

import pytest

from chalicelib.errors import ConfigError
from chalicelib.mail import MailError, Message, SesSender, SmtpSender, build_sender


def smtp(url: str) -> SmtpSender:
    sender = build_sender(url)
    assert isinstance(sender, SmtpSender)
    return sender


def test_build_sender_reads_plain_smtp_host_and_port() -> None:
    sender = smtp("smtp://127.0.0.1:2525")
    assert (sender.security, sender.host, sender.port, sender.username) == (
        "smtp",
        "127.0.0.1",
        2525,
        None,
    )


def test_build_sender_defaults_the_port_per_scheme() -> None:
    ports = {s: smtp(f"{s}://mail.example").port for s in ("smtp", "smtps", "smtp+starttls")}
    assert ports == {"smtp": 25, "smtps": 465, "smtp+starttls": 587}


def test_build_sender_decodes_percent_escaped_credentials() -> None:
    sender = smtp("smtp+starttls://apikey%40example.com:p%2Fw@smtp.example.com:587")
    assert (sender.security, sender.username) == ("smtp+starttls", "apikey@example.com")


def test_build_sender_uses_the_region_of_an_ses_url() -> None:
    sender = build_sender("ses://eu-west-1")
    assert isinstance(sender, SesSender)
    assert sender.client.meta.region_name == "eu-west-1"


def test_build_sender_accepts_bare_ses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    sender = build_sender("ses:")
    assert isinstance(sender, SesSender)
    assert sender.client.meta.region_name == "us-west-2"


@pytest.mark.parametrize(
    "url",
    ["", "http://mail.example", "mailto:a@b.example", "smtp://", "smtp://h:port", "smtp://h:0x"],
)
def test_build_sender_rejects_malformed_url(url: str) -> None:
    with pytest.raises(ConfigError):
        build_sender(url)


def test_build_sender_keeps_the_password_out_of_errors() -> None:
    with pytest.raises(ConfigError) as raised:
        build_sender("smtp://user:hunter2secret@mail.example:99999")
    assert "hunter2secret" not in str(raised.value)


def test_message_repr_hides_text_and_html() -> None:
    message = Message("a@b.example", "Sign in", "https://x/login?t=SECRET1", "<a>SECRET2</a>")
    assert "SECRET" not in repr(message)
    assert "a@b.example" in repr(message)


@pytest.mark.parametrize(
    "to",
    [
        "",
        "a@b.example, c@d.example",
        "a@b.example\r\nBcc: c@d.example",
        "Eve <a@b.example>",
        "a",
        "@b.example",
    ],
)
def test_send_rejects_anything_but_one_plain_recipient(to: str) -> None:
    sender = SmtpSender("smtp://127.0.0.1:9")  # never reached: the check comes first
    with pytest.raises(MailError, match="one plain email address"):
        sender.send(Message(to, "Sign in", "link"), "noreply@instanode.localhost")
