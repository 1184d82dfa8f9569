"""A thin typed layer over the low-level DynamoDB client: plain dicts in, plain dicts out.

Writes that must happen together go through ``transact`` (one round trip); a cancelled
transaction raises ``TransactionCancelled`` with one ``Reason`` per item, in order.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

Item = dict[str, Any]

_ser = TypeSerializer()
_de = TypeDeserializer()


def shard_of(key: str, shards: int) -> str:
    """The partition of a sharded sparse index (``expiry_shard`` and the like) ``key`` falls in."""
    return str(zlib.crc32(key.encode()) % shards)


def to_wire(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in values.items()}


def from_wire(values: Mapping[str, Any]) -> Item:
    return {k: _plain(_de.deserialize(v)) for k, v in values.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


@dataclass(frozen=True)
class Reason:
    code: str
    item: Item | None

    @property
    def failed(self) -> bool:
        return self.code not in ("None", "")


class TransactionCancelled(Exception):
    def __init__(self, reasons: Sequence[Reason]) -> None:
        super().__init__(", ".join(r.code for r in reasons))
        self.reasons = list(reasons)


def put(
    table: str,
    item: Mapping[str, Any],
    condition: str | None = None,
    values: Mapping[str, Any] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A transaction item that writes a whole record (returns the old one if the check fails)."""
    op: dict[str, Any] = {"TableName": table, "Item": to_wire(item)}
    _add_condition(op, condition, values, names)
    return {"Put": op}


def update(
    table: str,
    key: Mapping[str, Any],
    expression: str,
    values: Mapping[str, Any] | None = None,
    condition: str | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"TableName": table, "Key": to_wire(key), "UpdateExpression": expression}
    _add_condition(op, condition, values, names)
    return {"Update": op}


def delete(
    table: str,
    key: Mapping[str, Any],
    condition: str | None = None,
    values: Mapping[str, Any] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"TableName": table, "Key": to_wire(key)}
    _add_condition(op, condition, values, names)
    return {"Delete": op}


def check(
    table: str,
    key: Mapping[str, Any],
    condition: str,
    values: Mapping[str, Any] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A transaction item that writes nothing and cancels the transaction unless ``condition``."""
    op: dict[str, Any] = {"TableName": table, "Key": to_wire(key)}
    _add_condition(op, condition, values, names)
    return {"ConditionCheck": op}


@dataclass(frozen=True)
class Page:
    items: list[Item]
    next_key: Item | None  # pass back as ``start`` for the next page; None on the last one


def _add_condition(
    op: dict[str, Any],
    condition: str | None,
    values: Mapping[str, Any] | None,
    names: Mapping[str, str] | None,
) -> None:
    if condition:
        op["ConditionExpression"] = condition
        op["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    if values:
        op["ExpressionAttributeValues"] = to_wire(values)
    if names:
        op["ExpressionAttributeNames"] = dict(names)


class Dynamo:
    """Typed get/query/transact over one low-level client (one call = one round trip)."""

    def __init__(self, client: DynamoDBClient) -> None:
        self.client = client

    def transact(self, items: Sequence[dict[str, Any]]) -> None:
        try:
            self.client.transact_write_items(TransactItems=list(items))  # type: ignore[arg-type]
        except self.client.exceptions.TransactionCanceledException as exc:
            raw = exc.response.get("CancellationReasons", [])
            raise TransactionCancelled(
                [
                    Reason(r.get("Code", ""), from_wire(r["Item"]) if "Item" in r else None)
                    for r in raw
                ]
            ) from exc

    def get(self, table: str, key: Mapping[str, Any], consistent: bool = False) -> Item | None:
        out = self.client.get_item(TableName=table, Key=to_wire(key), ConsistentRead=consistent)
        return from_wire(out["Item"]) if "Item" in out else None

    def batch_get(self, table: str, keys: Sequence[Mapping[str, Any]]) -> list[Item]:
        if not keys:
            return []
        out = self.client.batch_get_item(RequestItems={table: {"Keys": [to_wire(k) for k in keys]}})
        return [from_wire(i) for i in out["Responses"].get(table, [])]

    def query(
        self,
        table: str,
        index: str,
        condition: str,
        values: Mapping[str, Any],
        names: Mapping[str, str] | None = None,
        filter_expression: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Item]:
        """Every matching item, following LastEvaluatedKey page by page."""
        kwargs: dict[str, Any] = {
            "TableName": table,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": to_wire(values),
            "Limit": page_size,
        }
        if names:
            kwargs["ExpressionAttributeNames"] = dict(names)
        if filter_expression:
            kwargs["FilterExpression"] = filter_expression
        while True:
            page = self.client.query(**kwargs)
            yield from (from_wire(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def scan(self, table: str, attributes: Sequence[str]) -> Iterator[Item]:
        """Every item of ``table``, only ``attributes`` of each, page by page (for jobs that
        must see a whole table, such as the reconciler; never on a request's path)."""
        names = {f"#a{i}": a for i, a in enumerate(attributes)}
        kwargs: dict[str, Any] = {
            "TableName": table,
            "ProjectionExpression": ", ".join(names),
            "ExpressionAttributeNames": names,
            "ConsistentRead": True,
        }
        while True:
            page = self.client.scan(**kwargs)
            yield from (from_wire(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def page(
        self,
        table: str,
        index: str,
        condition: str,
        values: Mapping[str, Any],
        limit: int,
        start: Mapping[str, Any] | None = None,
        names: Mapping[str, str] | None = None,
        newest_first: bool = True,
    ) -> Page:
        """One page of a query (for APIs that paginate with a cursor)."""
        kwargs: dict[str, Any] = {
            "TableName": table,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": to_wire(values),
            "Limit": limit,
            "ScanIndexForward": not newest_first,
        }
        if names:
            kwargs["ExpressionAttributeNames"] = dict(names)
        if start:
            kwargs["ExclusiveStartKey"] = to_wire(start)
        out = self.client.query(**kwargs)
        last = out.get("LastEvaluatedKey")
        return Page([from_wire(i) for i in out.get("Items", [])], from_wire(last) if last else None)

    def put_if(
        self,
        table: str,
        item: Mapping[str, Any],
        condition: str,
        values: Mapping[str, Any] | None = None,
        names: Mapping[str, str] | None = None,
    ) -> bool:
        """A conditional put on its own; False when the condition does not hold."""
        op = dict(put(table, item, condition, values, names)["Put"])
        op.pop("ReturnValuesOnConditionCheckFailure", None)
        try:
            self.client.put_item(**op)
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def take(
        self,
        table: str,
        key: Mapping[str, Any],
        condition: str,
        values: Mapping[str, Any] | None = None,
        names: Mapping[str, str] | None = None,
    ) -> Item | None:
        """Delete an item if ``condition`` holds and return it: a single-use read (None when it
        was absent or the condition failed, e.g. a link already used or expired)."""
        op = dict(delete(table, key, condition, values, names)["Delete"])
        op.pop("ReturnValuesOnConditionCheckFailure", None)
        try:
            out = self.client.delete_item(**op, ReturnValues="ALL_OLD")
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return from_wire(out["Attributes"]) if "Attributes" in out else None

    def put_item(self, table: str, item: Mapping[str, Any]) -> None:
        self.client.put_item(TableName=table, Item=to_wire(item))

    def update_item(
        self,
        table: str,
        key: Mapping[str, Any],
        expression: str,
        values: Mapping[str, Any],
        names: Mapping[str, str] | None = None,
    ) -> None:
        op = dict(update(table, key, expression, values, names=names)["Update"])
        self.client.update_item(**op)

    def delete_item(self, table: str, key: Mapping[str, Any]) -> None:
        self.client.delete_item(TableName=table, Key=to_wire(key))

    def update_if(
        self,
        table: str,
        key: Mapping[str, Any],
        expression: str,
        condition: str,
        values: Mapping[str, Any],
        names: Mapping[str, str] | None = None,
    ) -> bool:
        """A conditional single-item update; False when the condition does not hold."""
        return self.apply_if(update(table, key, expression, values, condition, names))

    def update_returning(self, item: Mapping[str, Any]) -> Item | None:
        """Run one conditional ``update`` transaction item on its own; the attributes it
        changed, as they are now, or None when the condition does not hold."""
        op = dict(item["Update"])
        op.pop("ReturnValuesOnConditionCheckFailure", None)
        try:
            out = self.client.update_item(**op, ReturnValues="UPDATED_NEW")
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return from_wire(out.get("Attributes", {}))

    def apply_if(self, item: Mapping[str, Any]) -> bool:
        """Run one conditional ``update`` transaction item on its own (no transaction)."""
        op = dict(item["Update"])
        op.pop("ReturnValuesOnConditionCheckFailure", None)
        try:
            self.client.update_item(**op)
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True
