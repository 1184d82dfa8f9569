"""DynamoDB tables and the S3 bucket, created in moto the way infra/terraform creates them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import boto3

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def _attr(name: str, kind: str = "S") -> dict[str, str]:
    return {"AttributeName": name, "AttributeType": kind}


def _index(name: str, pk: str, sk: str) -> dict[str, Any]:
    return {
        "IndexName": name,
        "KeySchema": [
            {"AttributeName": pk, "KeyType": "HASH"},
            {"AttributeName": sk, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    }


def table_specs(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "TableName": f"{prefix}-resources",
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "AttributeDefinitions": [
                _attr("id"),
                _attr("owner"),
                _attr("created_at", "N"),
                _attr("expiry_shard"),
                _attr("expires_at", "N"),
                _attr("placement"),
            ],
            "GlobalSecondaryIndexes": [
                _index("by_owner", "owner", "created_at"),
                _index("by_expiry", "expiry_shard", "expires_at"),
                _index("by_placement", "placement", "created_at"),
            ],
        },
        {
            "TableName": f"{prefix}-idempotency",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [_attr("pk")],
        },
        {
            "TableName": f"{prefix}-counters",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [_attr("pk")],
        },
        {
            "TableName": f"{prefix}-webhook-requests",
            "KeySchema": [
                {"AttributeName": "inbox", "KeyType": "HASH"},
                {"AttributeName": "slot", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [_attr("inbox"), _attr("slot", "N"), _attr("seq", "N")],
            "GlobalSecondaryIndexes": [_index("by_seq", "inbox", "seq")],
        },
        {
            "TableName": f"{prefix}-accounts",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [
                _attr("pk"),
                _attr("team_id"),
                _attr("created_at", "N"),
                _attr("pending"),
            ],
            "GlobalSecondaryIndexes": [
                _index("by_team", "team_id", "created_at"),
                _index("by_pending", "pending", "created_at"),
            ],
        },
        {
            "TableName": f"{prefix}-deployments",
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "AttributeDefinitions": [
                _attr("id"),
                _attr("owner"),
                _attr("owner_name"),
                _attr("created_at", "N"),
                _attr("expiry_shard"),
                _attr("expires_at", "N"),
                _attr("progress_shard"),
                _attr("updated_at", "N"),
            ],
            "GlobalSecondaryIndexes": [
                _index("by_owner", "owner", "created_at"),
                _index("by_name", "owner_name", "created_at"),
                _index("by_expiry", "expiry_shard", "expires_at"),
                _index("by_progress", "progress_shard", "updated_at"),
            ],
        },
        {
            "TableName": f"{prefix}-stacks",
            "KeySchema": [{"AttributeName": "slug", "KeyType": "HASH"}],
            "AttributeDefinitions": [
                _attr("slug"),
                _attr("owner"),
                _attr("created_at", "N"),
                _attr("expiry_shard"),
                _attr("expires_at", "N"),
            ],
            "GlobalSecondaryIndexes": [
                _index("by_owner", "owner", "created_at"),
                _index("by_expiry", "expiry_shard", "expires_at"),
            ],
        },
    ]


def create_tables(client: DynamoDBClient, prefix: str) -> None:
    existing = set(client.list_tables()["TableNames"])
    for spec in table_specs(prefix):
        if spec["TableName"] in existing:
            continue
        client.create_table(BillingMode="PAY_PER_REQUEST", **spec)
        client.update_time_to_live(
            TableName=spec["TableName"],
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"},
        )


def ensure_aws_resources(env: Mapping[str, str]) -> None:
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    endpoint = env["AWS_ENDPOINT_URL"]
    create_tables(session.client("dynamodb", endpoint_url=endpoint), env["INSTANODE_TABLE_PREFIX"])
    wanted = [(endpoint, env["INSTANODE_BUCKET"])]  # build contexts and uploads
    wanted += [(b["admin_url"], b["bucket"]) for b in json.loads(env["INSTANODE_STORAGE_BACKENDS"])]
    for url, bucket in wanted:
        s3 = session.client("s3", endpoint_url=url)
        if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=bucket)


def empty_storage(env: Mapping[str, str]) -> None:
    """Delete every object of the storage backends' buckets (the S3-only server has no
    ``/moto-api/reset``: tenants reach it)."""
    for backend in json.loads(env["INSTANODE_STORAGE_BACKENDS"]):
        bucket = boto3.resource(
            "s3",
            endpoint_url=backend["admin_url"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        ).Bucket(backend["bucket"])
        bucket.objects.all().delete()
