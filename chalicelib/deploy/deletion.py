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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from chalicelib import errors
from chalicelib.accounts import secret_hash
from chalicelib.deploy.records import PendingDeletion, changed_meanwhile
from chalicelib.mail import Message
from chalicelib.outbox import Outbox
from chalicelib.service import iso

DELETION_TOKEN_SECONDS = 15 * 60
Answer = dict[str, Any]


@dataclass(frozen=True)
class Subject:
    """What is to be deleted, as the mail and the 202 answer name it."""

    kind: str  # "app" | "stack"
    key_field: str  # "id" | "slug": how answers name it
    key: str
    name: str
    url: str | None
    confirm_path: str  # where the token goes: ".../confirm-deletion"


class Deletable(Protocol):
    @property
    def deletion(self) -> PendingDeletion | None: ...


R = TypeVar("R", bound=Deletable)


class TwoStepDeletion(Generic[R]):
    """The flow over one kind of record: ``mark`` stores a record's pending deletion (None
    clears it) if the record is still as read; ``remove`` retires it and removes what runs."""

    def __init__(
        self,
        base_url: str,
        outbox: Callable[[], Outbox],
        clock: Callable[[], float],
        mark: Callable[[R, PendingDeletion | None], bool],
        remove: Callable[[R, int], bool],
    ) -> None:
        self._base_url = base_url
        self._outbox = outbox
        self._clock = clock
        self._mark = mark
        self._remove = remove

    def ask(self, record: R, subject: Subject, email: str, at_once: bool) -> tuple[int, Answer]:
        """``DELETE``: at once (200), or a mailed token and ``pending_confirmation`` (202)."""
        now = int(self._clock())
        if at_once or not email:
            return 200, self._removed(record, subject, now)
        token = secrets.token_urlsafe(24)
        pending = PendingDeletion(secret_hash(token), now + DELETION_TOKEN_SECONDS)
        if not self._mark(record, pending):
            raise changed_meanwhile(subject.kind)
        self._mail(email, subject, token, now)
        return 202, {
            "ok": True,
            subject.key_field: subject.key,
            "deletion_status": "pending_confirmation",
            "confirmation_expires_at": iso(pending.expires_at),
            "agent_action": f"Tell the user to confirm deleting the {subject.kind} "
            f"'{subject.name}' with the link or token emailed to {email} within 15 minutes; "
            "until then nothing is deleted.",
        }

    def confirm(self, record: R, subject: Subject, token: str) -> Answer:
        now = int(self._clock())
        pending = record.deletion
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
        return self._removed(record, subject, now)

    def cancel(self, record: R, subject: Subject) -> Answer:
        if record.deletion is not None and not self._mark(record, None):
            raise changed_meanwhile(subject.kind)
        return {"ok": True, subject.key_field: subject.key, "deletion_status": "cancelled"}

    def _removed(self, record: R, subject: Subject, now: int) -> Answer:
        if not self._remove(record, now):
            raise changed_meanwhile(subject.kind)
        return {"ok": True, subject.key_field: subject.key, "deletion_status": "deleted"}

    def _mail(self, email: str, subject: Subject, token: str, now: int) -> None:
        where = f" ({subject.url})" if subject.url else ""
        text = (
            f"Someone asked to delete the {subject.kind} '{subject.name}'{where} on "
            f"instanode.\n\nConfirmation token (15 minutes): {token}\n\n"
            f"curl -X POST '{self._base_url}{subject.confirm_path}?token={token}' "
            "-H 'Authorization: Bearer <your API key>'\n\n"
            "If you did not ask for this, ignore this email: nothing is deleted without it.\n"
        )
        self._outbox().send(Message(email, f"Confirm deleting {subject.name}", text), now)
