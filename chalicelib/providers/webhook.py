"""Webhook inboxes: no backend server, the received requests live in the platform's DynamoDB.

``namespace`` is a random inbox key (``w_<20 hex>``) used as the partition key of the
webhook-requests table and of the inbox's counter; nothing is created at provision time (the
first received request creates both), and deprovision deletes every stored request.
"""

from __future__ import annotations

import secrets

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.inbox import Inbox
from chalicelib.models import Backend, BackendRef, Credentials, Kind
from chalicelib.providers.base import BackendDownError
from chalicelib.tiers import KindLimits


def open_inbox() -> Inbox:
    """The inbox store over the process-wide DynamoDB client (imported lazily)."""
    from chalicelib.config import get_settings
    from chalicelib.deps import get_dynamo

    settings = get_settings()
    return Inbox(get_dynamo(), settings.webhook_requests_table, settings.counters_table)


class WebhookProvider:
    kind = Kind.WEBHOOK

    def new_ref(self, backend: Backend) -> BackendRef:
        return BackendRef(
            backend=backend.name, namespace=f"w_{secrets.token_hex(10)}", principal=""
        )

    def provision(self, backend: Backend, ref: BackendRef, limits: KindLimits) -> Credentials:
        return Credentials(connection_url="", internal_url="")

    def deprovision(self, backend: Backend, ref: BackendRef) -> None:
        open_inbox().clear(ref.namespace)

    def usage(self, backend: Backend, ref: BackendRef) -> int:
        return open_inbox().stored_bytes(ref.namespace)

    def check(self, backend: Backend) -> None:
        try:
            open_inbox().ping()
        except (BotoCoreError, ClientError) as exc:
            raise BackendDownError("cannot reach the webhook-requests table") from exc
