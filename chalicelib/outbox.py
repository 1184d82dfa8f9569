"""The mail outbox: every message is recorded before it is sent, and stays marked pending until
the sender accepts it, so a mail server that is down delays a sign-in link instead of losing it
(the ``deliver_mail`` job retries pending messages).

Message bodies carry sign-in links, so they are stored sealed (AES-GCM, bound to the record) and
never logged; the log names only the message id.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass

from chalicelib.dynamo import Dynamo
from chalicelib.mail import MailError, Message, Sender
from chalicelib.sealing import Sealer

log = logging.getLogger(__name__)

RETENTION_SECONDS = 7 * 24 * 3600
MAX_ATTEMPTS = 10
RETRY_AFTER_SECONDS = 60


@dataclass(frozen=True)
class DeliveryReport:
    sent: int = 0
    failed: int = 0


class Outbox:
    def __init__(
        self, db: Dynamo, table: str, sealer: Sealer, sender: Sender, mail_from: str
    ) -> None:
        self._db = db
        self._table = table
        self._sealer = sealer
        self._sender = sender
        self._from = mail_from

    def send(self, message: Message, now: int) -> str:
        """Record the message, then try to deliver it at once. Returns the outbox id."""
        message_id = "msg_" + secrets.token_hex(10)
        pk = f"outbox#{message_id}"
        body = json.dumps({"text": message.text, "html": message.html}).encode()
        self._db.put_item(
            self._table,
            {
                "pk": pk,
                "to": message.to,
                "subject": message.subject,
                "sealed": self._sealer.seal(body, pk),
                "pending": "1",
                "created_at": now,
                "attempts": 0,
                "ttl": now + RETENTION_SECONDS,
            },
        )
        self._deliver(pk, message)
        return message_id

    def retry_pending(self, now: int) -> DeliveryReport:
        """Deliver messages still pending a minute after they were recorded. One that no key
        opens (sealed under a secret since dropped) is given up, and the others go on."""
        from nacl.exceptions import CryptoError

        sent = failed = 0
        items = self._db.query(
            self._table,
            "by_pending",
            "pending = :p AND created_at <= :due",
            {":p": "1", ":due": now - RETRY_AFTER_SECONDS},
        )
        for item in items:
            try:
                body = json.loads(self._sealer.open(bytes(item["sealed"]), item["pk"]))
            except CryptoError:
                self._give_up_unreadable(item["pk"])
                failed += 1
                continue
            message = Message(item["to"], item["subject"], body["text"], body["html"])
            if self._deliver(item["pk"], message, int(item.get("attempts", 0))):
                sent += 1
            else:
                failed += 1
        return DeliveryReport(sent, failed)

    def _give_up_unreadable(self, pk: str) -> None:
        log.error("mail %s opens under no key (its secret was dropped): not delivered", pk)
        self._db.update_item(self._table, {"pk": pk}, "REMOVE pending", {})

    def _deliver(self, pk: str, message: Message, attempts: int = 0) -> bool:
        try:
            provider_id = self._sender.send(message, self._from)
        except MailError as exc:
            gave_up = attempts + 1 >= MAX_ATTEMPTS
            log.warning("mail %s not delivered (attempt %d): %s", pk, attempts + 1, exc)
            expression = "SET attempts = :a" + (" REMOVE pending" if gave_up else "")
            self._db.update_item(self._table, {"pk": pk}, expression, {":a": attempts + 1})
            return False
        self._db.update_item(
            self._table,
            {"pk": pk},
            "SET provider_id = :id, attempts = :a REMOVE pending, sealed",
            {":id": provider_id, ":a": attempts + 1},
        )
        log.info("mail %s delivered", pk)
        return True
