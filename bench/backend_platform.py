"""The backends of ``/storage/new`` (S3 prefixes in one bucket, moto here) and ``/webhook/new``
(no server: inboxes live in the platform's DynamoDB tables)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection, Mapping
from typing import Any

import boto3
from botocore.config import Config

from bench.backends import RAW_PREFIX, ms_since
from chalicelib.providers.storage import ANONYMOUS_PREFIX

STORAGE_PREFIX = ANONYMOUS_PREFIX + "s_"  # chalicelib.providers.storage.StorageProvider.new_ref
INBOX_COUNTER = "inbox#"  # chalicelib.inbox.counter_key: made by the first received request


class StorageBench:
    """The provider's provision is one ``head_bucket`` (a prefix needs no object): that is the
    raw operation, over a client the bench holds open."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.bucket = bucket
        self.client: Any = boto3.client(
            "s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"})
        )
        self.client.head_bucket(Bucket=bucket)

    def raw(self) -> float:
        start = time.perf_counter()
        self.client.head_bucket(Bucket=self.bucket)
        return ms_since(start)

    def drop_raw(self) -> None:
        """``head_bucket`` makes nothing."""

    def made_by(self, answer: Mapping[str, Any]) -> str:
        """The prefix (``anon/s_<hex>``), as the response names it."""
        return str(answer["prefix"])

    def _prefixes(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=ANONYMOUS_PREFIX, Delimiter="/"
        )
        return [p["Prefix"].rstrip("/") for page in pages for p in page.get("CommonPrefixes", [])]

    def tenants(self) -> int:
        return sum(p.startswith(STORAGE_PREFIX) for p in self._prefixes())

    def left(self, made: Collection[str]) -> int:
        """Prefixes of the bench's resources holding objects (the bench uploads none)."""
        return len(set(made) & set(self._prefixes()))

    def close(self) -> None:
        self.client.close()


class WebhookBench:
    """No backend server: the raw operation is one DynamoDB ``PutItem`` on the counters table
    through the app's client (a receive writes there; a provision writes nothing outside its
    own transactions). ``tenants`` counts inbox counters; ``left`` counts the raw items and the
    inbox counters made since the bench started (the receive test's inbox)."""

    def __init__(self) -> None:
        from chalicelib import deps
        from chalicelib.config import get_settings

        self.client = deps.get_dynamo().client
        self.table = get_settings().counters_table
        self._start = set(self._keys(INBOX_COUNTER))

    def raw(self) -> float:
        item = {"pk": {"S": f"{RAW_PREFIX}{secrets.token_hex(10)}"}, "n": {"N": "1"}}
        start = time.perf_counter()
        self.client.put_item(TableName=self.table, Item=item)
        return ms_since(start)

    def _keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("scan").paginate(
            TableName=self.table,
            FilterExpression="begins_with(pk, :p)",
            ExpressionAttributeValues={":p": {"S": prefix}},
            ProjectionExpression="pk",
        )
        return [str(item["pk"]["S"]) for page in pages for item in page["Items"]]

    def drop_raw(self) -> None:
        for key in self._keys(RAW_PREFIX):
            self.client.delete_item(TableName=self.table, Key={"pk": {"S": key}})

    def made_by(self, answer: Mapping[str, Any]) -> str:
        return str(answer["receive_url"]).rsplit("/", 1)[-1]

    def tenants(self) -> int:
        return len(self._keys(INBOX_COUNTER))

    def left(self, made: Collection[str]) -> int:
        new = set(self._keys(INBOX_COUNTER)) - self._start
        return len(self._keys(RAW_PREFIX)) + len(new)

    def close(self) -> None:
        """The app's client stays open."""
