"""Two-step deletion of an app or a stack (spec "Deleting a deployment"), the part both share.

``DELETE`` by a team with an email on file mints a 15-minute token, keeps only its hash on the
record (``PendingDeletion``) and mails the token; the app keeps its slot. The token coming back
(``POST .../confirm-deletion?token=``) deletes; ``DELETE .../confirm-deletion`` cancels; a token
past its 15 minutes is refused, and the record then reads ``deletion_status: expired`` until a
new ``DELETE`` mints a fresh one. ``X-Skip-Email-Confirmation: yes``, or no email on file (an
anonymous stack), deletes at once.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from chalicelib import errors
from chalicelib.accounts import secret_hash
from chalicelib.deploy.records import PendingDeletion
from chalicelib.mail import Message
from chalicelib.outbox import Outbox
from chalicelib.service import iso

DELETION_TOKEN_SECONDS = 15 * 60


@dataclass(frozen=True)
class Subject:
    """What is to be deleted, as the mail and the 202 answer name it."""

    kind: str  # "app" | "stack"
    key_field: str  # "id" | "slug": how answers name it
    key: str
    name: str
    url: str | None
    confirm_path: str  # where the token goes: ".../confirm-deletion"


def requested(now: int) -> tuple[str, PendingDeletion]:
    """A fresh token, and what the record keeps of it."""
    token = secrets.token_urlsafe(24)
    return token, PendingDeletion(secret_hash(token), now + DELETION_TOKEN_SECONDS)


def check(pending: PendingDeletion | None, token: str, now: int) -> None:
    """Refuse a token that is not the pending deletion's, or came too late."""
    valid = (
        pending is not None
        and now < pending.expires_at
        and hmac.compare_digest(pending.token_hash, secret_hash(token))
    )
    if not valid:
        raise errors.InvalidConfirmationTokenError(
            "The confirmation token is wrong or expired.",
            agent_action="Run DELETE again to mail a fresh token.",
        )


def pending_answer(subject: Subject, email: str, pending: PendingDeletion) -> dict[str, object]:
    """The 202 body: nothing is deleted yet, and what the user must do."""
    return {
        "ok": True,
        subject.key_field: subject.key,
        "deletion_status": "pending_confirmation",
        "confirmation_expires_at": iso(pending.expires_at),
        "agent_action": f"Tell the user to confirm deleting the {subject.kind} "
        f"'{subject.name}' with the link or token emailed to {email} within 15 minutes; "
        "until then nothing is deleted.",
    }


def mail_token(
    outbox: Outbox, base_url: str, email: str, subject: Subject, token: str, now: int
) -> None:
    where = f" ({subject.url})" if subject.url else ""
    text = (
        f"Someone asked to delete the {subject.kind} '{subject.name}'{where} on instanode.\n\n"
        f"Confirmation token (15 minutes): {token}\n\n"
        f"curl -X POST '{base_url}{subject.confirm_path}?token={token}' "
        "-H 'Authorization: Bearer <your API key>'\n\n"
        "If you did not ask for this, ignore this email: nothing is deleted without it.\n"
    )
    outbox.send(Message(email, f"Confirm deleting {subject.name}", text), now)
