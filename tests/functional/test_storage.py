"""Storage in broker mode: /storage/new, POST /storage/{token}/presign, deprovision, usage.

S3 is moto in-process. moto checks neither signatures nor expiry, so signed URLs are verified
with botocore's own signer (re-signed at the same time with the same credentials).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from chalicelib import deps
from chalicelib.models import Backend, BackendRef, Kind
from chalicelib.providers import storage
from chalicelib.routes import storage as storage_routes
from chalicelib.tiers import all_tiers
from tests.functional.conftest import Post

BUCKET = "instanode-storage"
PUBLIC = "https://s3.public.example"
MIB = 1024 * 1024


@pytest.fixture
def s3(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The storage backend on in-process moto (default AWS endpoint), signing for PUBLIC."""
    backend = {"name": "s3", "admin_url": "", "public_host": PUBLIC, "bucket": BUCKET}
    monkeypatch.setenv(
        "INSTANODE_STORAGE_BACKENDS", json.dumps([{**backend, "region": "us-east-1"}])
    )
    deps.reset()
    storage.reset_clients()
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client
    storage.reset_clients()


def backend() -> Backend:
    return deps.get_settings().backends_for(Kind.STORAGE)[0]


def new_storage(post: Post) -> dict[str, Any]:
    r = post("/storage/new", {"name": "files"})
    assert r.status_code == 201, r.body
    body: dict[str, Any] = json.loads(r.body)
    return body


def presign(post: Post, token: str, **body: Any) -> Any:
    r = post(f"/storage/{token}/presign", body)
    return r.status_code, json.loads(r.body), r.headers


def test_new_storage_is_broker_mode_without_keys(s3: Any, post: Post) -> None:
    body = new_storage(post)
    prefix = body["prefix"]
    assert prefix.startswith("anon/s_") and len(prefix) == 27
    assert body["mode"] == "broker"
    assert body["agent_action"] == "use_presign_endpoint"
    assert body["endpoint"] == PUBLIC
    assert body["connection_url"] == f"{PUBLIC}/{BUCKET}/{prefix}/"
    assert body["connection_url"].endswith(f"{prefix}/")
    assert body["presign_url"].endswith(f"/storage/{body['token']}/presign")
    assert "internal_url" not in body
    assert not {"access_key_id", "secret_access_key"} & body.keys()
    assert "secret" not in json.dumps(body).lower()


@pytest.mark.parametrize(
    "key", ["", "/abs", "../x", "a/../../b", "a\\b", "tab\tkey", "x" * 1025, "nul\x00", "./a", 7]
)
def test_presign_refuses_keys_that_could_escape(s3: Any, post: Post, key: Any) -> None:
    token = new_storage(post)["token"]
    for op in ("PUT", "GET", "POST"):
        status, body, _ = presign(post, token, operation=op, key=key)
        assert status == 400, body
        assert body["error"] == "invalid_key"
        assert body["agent_action"]


@pytest.mark.parametrize(
    "extra",
    [
        {"operation": "DELETE"},
        {"operation": "put"},
        {},
        {"operation": "GET", "expires_in": 0},
        {"operation": "GET", "expires_in": 3601},
        {"operation": "GET", "expires_in": "60"},
        {"operation": "GET", "expires_in": True},
    ],
)
def test_presign_rejects_bad_operation_or_expiry(s3: Any, post: Post, extra: Any) -> None:
    token = new_storage(post)["token"]
    status, body, _ = presign(post, token, key="a.txt", **extra)
    assert status == 400 and body["error"] == "bad_request", body


def test_unknown_token_is_404(s3: Any, post: Post) -> None:
    status, body, _ = presign(post, "no-such-token", operation="GET", key="a")
    assert status == 404 and body["error"] == "not_found"


def _resign(url: str, method: str, amz_date: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL botocore's signer makes for the same request, credentials and time."""
    stamp = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: stamp)
    parts = urlsplit(url)
    expires = int(parse_qs(parts.query)["X-Amz-Expires"][0])
    request = AWSRequest(method=method, url=f"{parts.scheme}://{parts.netloc}{parts.path}")
    creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    S3SigV4QueryAuth(creds, "s3", "us-east-1", expires=expires).add_auth(request)
    return str(request.prepare().url)


@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_signed_url_names_exactly_the_prefixed_key(
    s3: Any, post: Post, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = new_storage(post)
    prefix, key = created["prefix"], "reports/2024/a b+c.txt"
    status, body, _ = presign(post, created["token"], operation=method, key=key, expires_in=120)
    assert status == 200, body
    assert body["ok"] is True and body["method"] == method
    assert body["key"] == f"{prefix}/{key}"
    expires_at = datetime.datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(expires_at.replace(tzinfo=datetime.UTC).timestamp() - time.time() - 120) < 5

    url = urlsplit(body["url"])
    assert f"{url.scheme}://{url.netloc}" == PUBLIC
    assert url.path == quote(f"/{BUCKET}/{prefix}/{key}", safe="/~")
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "120"
    assert query["X-Amz-SignedHeaders"] == "host"
    assert query["X-Amz-Credential"].endswith("/us-east-1/s3/aws4_request")
    assert "AWSAccessKeyId" not in query  # not SigV2

    resigned = _resign(body["url"], method, query["X-Amz-Date"], monkeypatch)
    assert parse_qs(urlsplit(resigned).query) == parse_qs(url.query)
    # The same signature does not cover another tenant's key or the other method.
    other = body["url"].replace(prefix, "anon/s_" + "0" * 20)
    assert _sig(_resign(other, method, query["X-Amz-Date"], monkeypatch)) != _sig(body["url"])
    flipped = "GET" if method == "PUT" else "PUT"
    assert _sig(_resign(body["url"], flipped, query["X-Amz-Date"], monkeypatch)) != _sig(
        body["url"]
    )


def _sig(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]


def test_presigned_post_is_capped_at_remaining_quota(s3: Any, post: Post) -> None:
    created = new_storage(post)
    s3.put_object(Bucket=BUCKET, Key=f"{created['prefix']}/old.bin", Body=b"x" * 1000)
    status, body, _ = presign(post, created["token"], operation="POST", key="up.bin")
    assert status == 200, body
    assert body["url"].rstrip("/") == f"{PUBLIC}/{BUCKET}"
    assert body["fields"]["key"] == f"{created['prefix']}/up.bin"
    policy = json.loads(base64.b64decode(body["fields"]["policy"]))
    assert ["content-length-range", 0, 10 * MIB - 1000] in policy["conditions"]
    assert body["max_bytes"] == 10 * MIB - 1000


def test_over_quota_refuses_uploads_but_not_downloads(s3: Any, post: Post) -> None:
    created = new_storage(post)
    s3.put_object(Bucket=BUCKET, Key=f"{created['prefix']}/big.bin", Body=b"\0" * (10 * MIB))
    for op in ("PUT", "POST"):
        status, body, _ = presign(post, created["token"], operation=op, key="more.bin")
        assert status == 403, body
        assert body["error"] == "storage_quota_exceeded" and body["agent_action"]
    status, body, _ = presign(post, created["token"], operation="GET", key="big.bin")
    assert status == 200 and body["method"] == "GET"


def test_rate_limit_is_60_per_minute_per_token(
    s3: Any, post: Post, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = (int(time.time()) // 60) * 60 + 15  # mid-minute: Retry-After is 45
    monkeypatch.setattr(storage_routes, "time", SimpleNamespace(time=lambda: float(now)))
    token = new_storage(post)["token"]
    other = new_storage(post)["token"]
    for _ in range(60):
        assert presign(post, token, operation="GET", key="a")[0] == 200
    status, body, headers = presign(post, token, operation="GET", key="a")
    assert status == 429 and body["error"] == "rate_limited" and body["agent_action"]
    assert headers["Retry-After"] == "45"
    assert presign(post, other, operation="GET", key="a")[0] == 200  # per token
    monkeypatch.setattr(storage_routes, "time", SimpleNamespace(time=lambda: float(now + 60)))
    assert presign(post, token, operation="GET", key="a")[0] == 200  # next minute


def test_deprovision_deletes_every_object_under_the_prefix_only(s3: Any) -> None:
    provider = deps.get_provider(Kind.STORAGE)
    ref = provider.new_ref(backend())
    provider.provision(backend(), ref, all_tiers()["anonymous"].limits(Kind.STORAGE))
    keys = [f"{ref.namespace}/d{i // 100}/{i}.txt" for i in range(1005)]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"12345")
    kept = [f"{ref.namespace}x/keep.txt", f"anon/s_{'f' * 20}/keep.txt"]
    for key in kept:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"k")
    assert provider.usage(backend(), ref) == 5 * 1005

    provider.deprovision(backend(), ref)
    provider.deprovision(backend(), ref)  # idempotent

    left = s3.list_objects_v2(Bucket=BUCKET)
    assert sorted(o["Key"] for o in left.get("Contents", [])) == sorted(kept)
    assert provider.usage(backend(), ref) == 0


def test_enforce_reports_usage_and_over_quota(s3: Any) -> None:
    from chalicelib.providers.base import Enforcer, Tenant
    from chalicelib.tiers import KindLimits

    provider = deps.get_provider(Kind.STORAGE)
    assert isinstance(provider, Enforcer)
    small, big = (BackendRef("s3", f"anon/s_{c * 20}", "") for c in "ab")
    s3.put_object(Bucket=BUCKET, Key=f"{big.namespace}/x", Body=b"\0" * (MIB + 1))
    s3.put_object(Bucket=BUCKET, Key=f"{small.namespace}/x", Body=b"\0" * 10)
    limits = KindLimits(storage_mb=1, connections=0, max_resources=1)
    usages = provider.enforce(backend(), [Tenant(small, limits, {}), Tenant(big, limits, {})])
    assert [(u.used_bytes, u.over_quota) for u in usages] == [(10, False), (MIB + 1, True)]


def test_unreachable_bucket_is_backend_down(s3: Any) -> None:
    from chalicelib.providers.base import BackendDownError

    gone = Backend("s3", "", PUBLIC, PUBLIC, {"bucket": "no-such-bucket", "region": "us-east-1"})
    with pytest.raises(BackendDownError):
        deps.get_provider(Kind.STORAGE).check(gone)
