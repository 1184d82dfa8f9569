"""S3 key-prefix tenants in one shared bucket per backend, in ``broker`` mode.

A resource is the prefix ``anon/s_<20 hex>/`` of the backend's bucket: nothing exists in S3 until
the tenant uploads (a prefix needs no object). Every resource is made anonymous; the bucket's
lifecycle rule (infra/terraform/s3.tf) deletes objects under ``anon/`` after a day, a backstop
to the reaper. A claim does not move the objects yet: a claimed prefix keeps its ``anon/`` name,
so the rule applies to it too. ``inventory`` lists every prefix holding objects (reconciler).
No credential is handed out; the tenant asks this API
for short-lived presigned URLs (``POST /storage/{token}/presign``), which the platform signs with
its own key for keys under the tenant's prefix only: a PUT for one exact ``Content-Length``
(``content-length`` is a signed header, so S3 refuses a body of any other size), a POST form
with a ``content-length-range``.

Presigned URLs are signed for ``public_host`` (the endpoint agents reach), which may differ from
``admin_url`` (the endpoint this API uses): then a second client does the signing.
S3 does not enforce a prefix quota: the presign route signs no upload past the bytes left
(chalicelib/upload_reservations.py), and ``enforce`` measures each tenant.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import ConfigError
from chalicelib.models import Backend, BackendRef, Credentials, Kind
from chalicelib.providers.base import BackendDownError, Tenant, Usage
from chalicelib.tiers import KindLimits

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes
MODE = "broker"
ANONYMOUS_PREFIX = "anon/"  # matched by the bucket's 1-day lifecycle rule
TENANT_PREFIX = re.compile(rf"{ANONYMOUS_PREFIX}s_[0-9a-f]{{20}}/")  # what ``new_ref`` makes
_CONFIG = Config(
    signature_version="s3v4",
    s3={"addressing_style": "path"},
    connect_timeout=5,
    read_timeout=10,
    retries={"max_attempts": 2, "mode": "standard"},
)


def bucket_of(backend: Backend) -> str:
    bucket = backend.secrets.get("bucket")
    if not bucket:
        raise ConfigError(f"storage backend {backend.name} needs a 'bucket'")
    return bucket


def object_key(ref: BackendRef, key: str) -> str:
    """The full object key of ``key`` (already validated) under the tenant's prefix."""
    return f"{ref.namespace}/{key}"


class StorageProvider:
    kind = Kind.STORAGE

    def new_ref(self, backend: Backend) -> BackendRef:
        return BackendRef(
            backend=backend.name,
            namespace=f"{ANONYMOUS_PREFIX}s_{secrets.token_hex(10)}",
            principal="",
        )

    def provision(self, backend: Backend, ref: BackendRef, limits: KindLimits) -> Credentials:
        self.check(backend)
        endpoint = backend.public_host.rstrip("/")
        return Credentials(
            connection_url=f"{endpoint}/{bucket_of(backend)}/{ref.namespace}/",
            internal_url="",
            extra={
                "endpoint": endpoint,
                "prefix": ref.namespace,
                "mode": MODE,
                "agent_action": "use_presign_endpoint",
            },
        )

    def deprovision(self, backend: Backend, ref: BackendRef) -> None:
        bucket = bucket_of(backend)
        with admin_client(backend) as client:
            keys = [key for key, _ in _objects(client, bucket, ref.namespace)]
            it = iter(keys)
            while batch := list(islice(it, DELETE_BATCH)):
                client.delete_objects(
                    Bucket=bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )

    def usage(self, backend: Backend, ref: BackendRef) -> int:
        return sum(self.sizes(backend, ref).values())

    def sizes(self, backend: Backend, ref: BackendRef) -> dict[str, int]:
        """The size of every object under the prefix, by full object key."""
        with admin_client(backend) as client:
            return dict(_objects(client, bucket_of(backend), ref.namespace))

    def inventory(self, backend: Backend) -> list[BackendRef]:
        """Every tenant prefix holding objects in the bucket (an empty one is no object)."""
        bucket = bucket_of(backend)
        with admin_client(backend) as client:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=ANONYMOUS_PREFIX, Delimiter="/"
            )
            prefixes = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
        return [
            BackendRef(backend.name, prefix.rstrip("/"), "")
            for prefix in prefixes
            if TENANT_PREFIX.fullmatch(prefix)
        ]

    def check(self, backend: Backend) -> None:
        with admin_client(backend) as client:
            client.head_bucket(Bucket=bucket_of(backend))

    def enforce(self, backend: Backend, tenants: Sequence[Tenant]) -> list[Usage]:
        usages = []
        for tenant in tenants:
            used = self.usage(backend, tenant.ref)
            usages.append(Usage.of(tenant, used))
        return usages

    # -- broker mode: short-lived URLs signed for the public endpoint ----------------------
    def presign_get(self, backend: Backend, ref: BackendRef, key: str, expires_in: int) -> str:
        """A presigned GET URL of ``key`` (relative to the tenant's prefix)."""
        url: str = _signer(backend).generate_presigned_url(
            "get_object",
            Params={"Bucket": bucket_of(backend), "Key": object_key(ref, key)},
            ExpiresIn=expires_in,
            HttpMethod="GET",
        )
        return url

    def presign_put(
        self, backend: Backend, ref: BackendRef, key: str, expires_in: int, content_length: int
    ) -> str:
        """A presigned PUT URL of ``key`` for a body of exactly ``content_length`` bytes."""
        params = {
            "Bucket": bucket_of(backend),
            "Key": object_key(ref, key),
            "ContentLength": content_length,  # a signed header: S3 refuses any other size
        }
        url: str = _signer(backend).generate_presigned_url(
            "put_object", Params=params, ExpiresIn=expires_in, HttpMethod="PUT"
        )
        return url

    def presign_post(
        self, backend: Backend, ref: BackendRef, key: str, expires_in: int, max_bytes: int
    ) -> dict[str, Any]:
        """A presigned POST form ({url, fields}) accepting at most ``max_bytes`` bytes."""
        post: dict[str, Any] = _signer(backend).generate_presigned_post(
            Bucket=bucket_of(backend),
            Key=object_key(ref, key),
            Conditions=[["content-length-range", 0, max_bytes]],
            ExpiresIn=expires_in,
        )
        return post


def _objects(client: S3Client, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under ``prefix/``, page by page."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    for page in pages:
        for obj in page.get("Contents", []):
            yield obj["Key"], int(obj.get("Size", 0))


# -- clients: one per (backend, endpoint); boto3 clients are thread-safe --------------------
_clients: dict[tuple[str, str], S3Client] = {}
_clients_lock = threading.Lock()


def _client(backend: Backend, endpoint: str) -> S3Client:
    key = (backend.name, endpoint)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = boto3.client(
                "s3",
                endpoint_url=endpoint or None,
                region_name=backend.secrets.get("region"),
                config=_CONFIG,
            )
        return _clients[key]


def _signer(backend: Backend) -> S3Client:
    """The client whose presigned URLs name ``public_host`` (signing needs no round trip)."""
    return _client(backend, backend.public_host.rstrip("/"))


@contextmanager
def admin_client(backend: Backend) -> Iterator[S3Client]:
    """The backend's admin client; an unreachable or refusing endpoint is BackendDownError."""
    try:
        yield _client(backend, backend.admin_url)
    except (BotoCoreError, ClientError) as exc:
        raise BackendDownError(f"cannot reach S3 backend {backend.name}") from exc


def reset_clients() -> None:
    """Forget cached clients (tests that switch endpoints or credentials)."""
    with _clients_lock:
        _clients.clear()
