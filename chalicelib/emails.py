"""Email address validation, as the spec's claim flow describes it: the address must parse as an
RFC 5322 addr-spec, be at most 254 characters (RFC 5321 4.5.3.1.3), have a dotted domain of
hostname labels, and hold no whitespace (surrounding spaces and tabs are trimmed, as Go's
``mail.ParseAddress`` skips them; line breaks are refused)."""

from __future__ import annotations

import re
from typing import Any

from chalicelib import errors

MAX_LENGTH = 254
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def valid_email(value: Any) -> str:
    """The address, trimmed and lower-cased (one account per mailbox); else 400
    ``invalid_email_format``."""
    if not isinstance(value, str) or not value.strip():
        raise _invalid("An 'email' is required.")
    address = value.strip(" \t")  # surrounding blanks only: a line break is never ours to drop
    if len(address) > MAX_LENGTH:
        raise _invalid(f"The email address is longer than {MAX_LENGTH} characters.")
    if any(ch.isspace() or ord(ch) < 32 for ch in address):
        raise _invalid("The email address must not contain whitespace.")
    from email.errors import HeaderParseError, MessageDefect
    from email.headerregistry import Address

    try:
        parsed = Address(addr_spec=address)
    except (HeaderParseError, MessageDefect, ValueError, IndexError) as exc:
        raise _invalid("The email address does not parse as an RFC 5322 address.") from exc
    labels = parsed.domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise _invalid("The email address needs a dotted domain such as example.com.")
    return address.lower()


def _invalid(message: str) -> errors.ApiError:
    return errors.InvalidEmailFormatError(
        message,
        agent_action="Ask the user for their email address (like you@example.com) and retry.",
    )
