"""Build contexts in S3: ``deploys/<app_id>/<revision>-<nonce>.tar.gz`` in the deploy bucket
(and the agents' own uploads under ``uploads/``). The Kubernetes backend's kaniko Job reads them
from there; the local backend fetches them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef


class ContextStore:
    def __init__(self) -> None:
        self._s3: S3Client | None = None

    @property
    def _client(self) -> S3Client:
        if self._s3 is None:  # boto3's S3 client loads on first use, not at cold start
            import boto3
            from botocore.config import Config

            self._s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
        return self._s3

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/gzip")

    def delete(self, bucket: str, key: str) -> None:
        self._client.delete_object(Bucket=bucket, Key=key)

    def delete_under(self, bucket: str, prefix: str) -> None:
        """Delete every object under ``prefix`` (an app's or a stack's contexts)."""
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            if "Contents" not in page:
                continue
            keys: list[ObjectIdentifierTypeDef] = [{"Key": o["Key"]} for o in page["Contents"]]
            self._client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    def get(self, bucket: str, key: str) -> bytes:
        return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def size(self, bucket: str, key: str) -> int | None:
        """Bytes of an uploaded object, None when there is none."""
        try:
            return int(self._client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except self._client.exceptions.ClientError:
            return None

    def upload_url(self, bucket: str, key: str, seconds: int) -> str:
        """A presigned PUT for an agent to upload a build context too big for a request."""
        return self._client.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=seconds
        )
