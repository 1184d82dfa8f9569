"""Received webhook requests: a ring buffer per inbox in DynamoDB.

Table ``<prefix>-webhook-requests``: pk ``inbox`` (the resource's ``ref.namespace``, ``w_<hex>``),
sk ``slot`` (N); GSI ``by_seq`` (inbox, seq) serves newest-first reads. Receiving a request is
exactly two writes: ``ADD n 1`` on the counter item ``inbox#<inbox>`` in the counters table
(the request's sequence number), then a PutItem at ``slot = seq % kept`` that overwrites the
oldest entry, so the newest ``kept`` requests stay without any delete.

Bodies are stored as binary; at most ``INLINE_BODY_BYTES`` of a body is kept (DynamoDB items
are limited to 400 KB) and ``body_truncated`` says when the rest was dropped.
A stored request never holds the inbox's token (its credential): the path keeps
``/webhook/receive/{token}`` in its place. ``redact_token_paths`` rewrites the requests stored
before that, in one pass.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from chalicelib.dynamo import Dynamo, from_wire, to_wire

INLINE_BODY_BYTES = 256 * 1024
HEADERS_MAX_BYTES = 16 * 1024
PAGE_MAX_BODY_BYTES = 4 * 1024 * 1024  # one listing stays well under Lambda's 6 MB response
SEQ_INDEX = "by_seq"
_BATCH = 25
_RECEIVE_TOKEN = re.compile(r"(/webhook/receive/)[^/?#]+")


@dataclass(frozen=True)
class Received:
    """One request as the receive route saw it."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    source_ip: str
    received_at_ms: int


def cap_headers(headers: Mapping[str, str], limit: int = HEADERS_MAX_BYTES) -> dict[str, str]:
    """Every header name kept; values cut short once the total passes ``limit`` bytes."""
    out: dict[str, str] = {}
    budget = limit
    for name, value in headers.items():
        budget -= len(name.encode())
        room = max(0, budget)
        raw = value.encode()
        kept = raw[:room].decode("utf-8", "ignore")
        out[name] = kept
        budget -= len(raw)
    return out


def counter_key(inbox: str) -> str:
    return f"inbox#{inbox}"


def without_token(path: str) -> str:
    """``path`` with the receive URL's token replaced by ``{token}``."""
    return _RECEIVE_TOKEN.sub(r"\1{token}", path)


class Inbox:
    def __init__(self, db: Dynamo, table: str, counters_table: str) -> None:
        self._db = db
        self._table = table
        self._counters = counters_table

    def record(self, inbox: str, kept: int, req: Received, ttl: int | None) -> int:
        """Store ``req`` in ``inbox`` (keeping the newest ``kept``); its sequence number."""
        update: dict[str, Any] = {
            "TableName": self._counters,
            "Key": to_wire({"pk": counter_key(inbox)}),
            "UpdateExpression": "ADD n :one",
            "ExpressionAttributeValues": to_wire({":one": 1}),
            "ReturnValues": "UPDATED_NEW",
        }
        if ttl is not None:
            update["UpdateExpression"] += " SET #ttl = :ttl"
            update["ExpressionAttributeValues"].update(to_wire({":ttl": ttl}))
            update["ExpressionAttributeNames"] = {"#ttl": "ttl"}
        out = self._db.client.update_item(**update)
        seq = int(from_wire(out["Attributes"])["n"])
        item: dict[str, Any] = {
            "inbox": inbox,
            "slot": seq % max(1, kept),
            "seq": seq,
            "method": req.method,
            "path": without_token(req.path),
            "query": {k: list(v) for k, v in req.query.items()},
            "headers": cap_headers(req.headers),
            "body": req.body[:INLINE_BODY_BYTES],
            "body_size": len(req.body),
            "source_ip": req.source_ip,
            "received_at": req.received_at_ms,
        }
        if ttl is not None:
            item["ttl"] = ttl
        self._db.client.put_item(TableName=self._table, Item=to_wire(item))
        return seq

    def newest(
        self, inbox: str, limit: int, before: int | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``limit`` requests with seq < ``before``, newest first, and the next cursor."""
        condition = "inbox = :i"
        values: dict[str, Any] = {":i": inbox}
        if before is not None:
            condition += " AND seq < :b"
            values[":b"] = before
        page = self._db.client.query(
            TableName=self._table,
            IndexName=SEQ_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=to_wire(values),
            ScanIndexForward=False,
            Limit=limit + 1,
        )
        items = [from_wire(i) for i in page.get("Items", [])]
        shown: list[dict[str, Any]] = []
        size = 0
        for item in items[:limit]:
            size += len(_bytes(item.get("body")))
            if shown and size > PAGE_MAX_BODY_BYTES:
                break
            shown.append(_public(item))
        more = len(shown) < len(items) or "LastEvaluatedKey" in page
        return shown, (shown[-1]["seq"] if more and shown else None)

    def stored_bytes(self, inbox: str) -> int:
        return sum(int(i.get("body_size", 0)) for i in self._items(inbox, "body_size"))

    def clear(self, inbox: str) -> None:
        """Delete every stored request of ``inbox`` and its counter (idempotent)."""
        slots = sorted({int(i["slot"]) for i in self._items(inbox, "slot")})
        for start in range(0, len(slots), _BATCH):
            self._delete_batch(inbox, slots[start : start + _BATCH])
        self._db.client.delete_item(
            TableName=self._counters, Key=to_wire({"pk": counter_key(inbox)})
        )

    def redact_token_paths(self) -> int:
        """Replace the token in the path of every stored request that still holds it (those
        received before paths were redacted); how many were rewritten. Safe to run again, and
        beside the API: a slot a new request took meanwhile is left alone."""
        scan: dict[str, Any] = {
            "TableName": self._table,
            "ProjectionExpression": "#i, #s, #p",
            "ExpressionAttributeNames": {"#i": "inbox", "#s": "slot", "#p": "path"},
        }
        rewritten = 0
        while True:
            page = self._db.client.scan(**scan)
            for item in map(from_wire, page.get("Items", [])):
                rewritten += self._redact_path(item)
            if "LastEvaluatedKey" not in page:
                return rewritten
            scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _redact_path(self, item: dict[str, Any]) -> bool:
        path = str(item.get("path", ""))
        if without_token(path) == path:
            return False
        return self._db.update_if(
            self._table,
            {"inbox": item["inbox"], "slot": item["slot"]},
            "SET #p = :redacted",
            "#p = :seen",
            {":redacted": without_token(path), ":seen": path},
            names={"#p": "path"},
        )

    def ping(self) -> None:
        self._db.client.get_item(TableName=self._table, Key=to_wire({"inbox": "-", "slot": 0}))

    def _items(self, inbox: str, attribute: str) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": SEQ_INDEX,
            "KeyConditionExpression": "inbox = :i",
            "ExpressionAttributeValues": to_wire({":i": inbox}),
            "ProjectionExpression": "#i, #s, #q, #a",
            "ExpressionAttributeNames": {"#i": "inbox", "#s": "slot", "#q": "seq", "#a": attribute},
        }
        while True:
            page = self._db.client.query(**kwargs)
            yield from (from_wire(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _delete_batch(self, inbox: str, slots: Sequence[int]) -> None:
        requests: list[Any] = [
            {"DeleteRequest": {"Key": to_wire({"inbox": inbox, "slot": s})}} for s in slots
        ]
        pending: dict[str, Any] = {self._table: requests}
        for _ in range(8):
            out = self._db.client.batch_write_item(RequestItems=pending)
            pending = dict(out.get("UnprocessedItems") or {})
            if not pending:
                return
        raise RuntimeError(f"could not delete every request of inbox {inbox}")


def _public(item: Mapping[str, Any]) -> dict[str, Any]:
    body = _bytes(item.get("body"))
    out: dict[str, Any] = {
        "seq": item["seq"],
        "method": item["method"],
        "path": item["path"],
        "query": item.get("query", {}),
        "headers": item.get("headers", {}),
        "body": base64.b64encode(body).decode(),
        "body_size": item.get("body_size", len(body)),
        "body_truncated": item.get("body_size", len(body)) > len(body),
        "source_ip": item.get("source_ip", ""),
        "received_at": item["received_at"],
    }
    with suppress(UnicodeDecodeError):
        out["body_text"] = body.decode("utf-8")
    return out


def _bytes(value: Any) -> bytes:
    """A stored binary attribute (boto3 hands back ``Binary``) as bytes."""
    if value is None:
        return b""
    return value if isinstance(value, bytes) else bytes(value.value)
