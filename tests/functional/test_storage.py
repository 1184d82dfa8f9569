"""Storage in broker mode: /storage/new, POST /storage/{token}/presign, upload reservations,
deprovision, usage, inventory.

S3 is moto in-process. moto checks neither signatures nor expiry, so signed URLs are verified
with botocore's own signer (re-signed at the same time with the same credentials); the local
S3-only server checks them on the wire (tests/security/test_storage_attacks.py).
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


def test_presign_takes_whole_number_floats_as_json_schema_integers(s3: Any, post: Post) -> None:
    token = new_storage(post)["token"]
    status, body, _ = presign(
        post, token, operation="PUT", key="a.txt", expires_in=120.0, content_length=42.0
    )
    assert status == 200, body
    assert presign(post, token, operation="GET", key="a", expires_in=60.5)[0] == 400


def test_presign_refuses_a_20_mb_key_before_reading_it_through(
    s3: Any, post: Post, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The length is checked first: no character of an over-long key is looked at (unicodedata
    over 20 MB took 4.4 s; bench/hostile.py times it now)."""

    def category(ch: str) -> str:
        raise AssertionError("a character of an over-long key was classified")

    monkeypatch.setattr(storage_routes.unicodedata, "category", category)
    token = new_storage(post)["token"]
    status, body, _ = presign(post, token, operation="GET", key="\u00e9" * 20_000_000)
    assert (status, body["error"]) == (400, "invalid_key") and "bytes" in body["message"]


def test_a_key_sent_back_with_its_prefix_is_not_prefixed_twice(s3: Any, post: Post) -> None:
    created = new_storage(post)
    prefix = created["prefix"]
    for key in ("a/b.txt", f"{prefix}/a/b.txt"):
        status, body, _ = presign(post, created["token"], operation="GET", key=key)
        assert (status, body["key"]) == (200, f"{prefix}/a/b.txt")
    escape = f"{prefix}/../{prefix[:-1]}x/b.txt"
    assert presign(post, created["token"], operation="GET", key=escape)[1]["error"] == "invalid_key"


def test_unknown_token_is_404(s3: Any, post: Post) -> None:
    status, body, _ = presign(post, "no-such-token", operation="GET", key="a")
    assert status == 404 and body["error"] == "not_found"


def _resign(
    url: str, method: str, amz_date: str, monkeypatch: pytest.MonkeyPatch, size: int | None = None
) -> str:
    """The URL botocore's signer makes for the same request, credentials and time."""
    stamp = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: stamp)
    parts = urlsplit(url)
    expires = int(parse_qs(parts.query)["X-Amz-Expires"][0])
    headers = {} if size is None else {"Content-Length": str(size)}
    request = AWSRequest(
        method=method, url=f"{parts.scheme}://{parts.netloc}{parts.path}", headers=headers
    )
    creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    S3SigV4QueryAuth(creds, "s3", "us-east-1", expires=expires).add_auth(request)
    return str(request.prepare().url)


@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_signed_url_names_exactly_the_prefixed_key(
    s3: Any, post: Post, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = new_storage(post)
    prefix, key = created["prefix"], "reports/2024/a b+c.txt"
    size = 42 if method == "PUT" else None
    sized = {} if size is None else {"content_length": size}
    status, body, _ = presign(
        post, created["token"], operation=method, key=key, expires_in=120, **sized
    )
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
    # A PUT is signed for its size: content-length is a signed header.
    assert query["X-Amz-SignedHeaders"] == ("content-length;host" if size else "host")
    assert query["X-Amz-Credential"].endswith("/us-east-1/s3/aws4_request")
    assert "AWSAccessKeyId" not in query  # not SigV2
    if size:
        assert body["content_length"] == size and body["headers"] == {"Content-Length": "42"}

    date = query["X-Amz-Date"]
    resigned = _resign(body["url"], method, date, monkeypatch, size)
    assert parse_qs(urlsplit(resigned).query) == parse_qs(url.query)
    # The same signature does not cover another tenant's key, the other method or another size.
    other = body["url"].replace(prefix, "anon/s_" + "0" * 20)
    assert _sig(_resign(other, method, date, monkeypatch, size)) != _sig(body["url"])
    flipped = "GET" if method == "PUT" else "PUT"
    assert _sig(_resign(body["url"], flipped, date, monkeypatch, size)) != _sig(body["url"])
    if size:
        assert _sig(_resign(body["url"], method, date, monkeypatch, size + 1)) != _sig(body["url"])


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
        status, body, _ = presign(
            post, created["token"], operation=op, key="more.bin", content_length=0
        )
        assert status == 403, body
        assert body["error"] == "storage_quota_exceeded" and body["agent_action"]
    status, body, _ = presign(post, created["token"], operation="GET", key="big.bin")
    assert status == 200 and body["method"] == "GET"


@pytest.mark.parametrize("value", [None, -1, "10", 1.5, True])
def test_put_presign_needs_an_exact_content_length(s3: Any, post: Post, value: Any) -> None:
    token = new_storage(post)["token"]
    sized = {} if value is None else {"content_length": value}
    status, body, _ = presign(post, token, operation="PUT", key="a.bin", **sized)
    assert status == 400 and body["error"] == "bad_request", body
    assert "content_length" in body["message"] and "content_length" in body["agent_action"]


def test_upload_larger_than_the_bytes_left_is_refused(s3: Any, post: Post) -> None:
    created = new_storage(post)
    s3.put_object(Bucket=BUCKET, Key=f"{created['prefix']}/old.bin", Body=b"x" * 1000)
    left = 10 * MIB - 1000
    for op in ("PUT", "POST"):
        status, body, _ = presign(
            post, created["token"], operation=op, key="new.bin", content_length=left + 1
        )
        assert status == 403 and body["error"] == "storage_quota_exceeded", body
        assert body["remaining_bytes"] == left and body["used_bytes"] == 1000
        assert str(left) in body["agent_action"]


def test_live_upload_urls_reserve_their_bytes(s3: Any, post: Post) -> None:
    """URLs minted before any upload cannot together carry more than the limit."""
    token = new_storage(post)["token"]
    six = 6 * MIB
    assert presign(post, token, operation="PUT", key="a.bin", content_length=six)[0] == 200
    status, body, _ = presign(post, token, operation="PUT", key="b.bin", content_length=six)
    assert status == 403 and body["reserved_bytes"] == six, body
    assert body["remaining_bytes"] == 10 * MIB - six
    # The same key again costs nothing more: it holds one object at a time.
    assert presign(post, token, operation="PUT", key="a.bin", content_length=six)[0] == 200
    status, body, _ = presign(post, token, operation="POST", key="c.bin")
    assert status == 200 and body["max_bytes"] == 10 * MIB - six
    status, body, _ = presign(post, token, operation="PUT", key="d.bin", content_length=1)
    assert status == 403 and body["remaining_bytes"] == 0, body
    assert presign(post, token, operation="GET", key="a.bin")[0] == 200


def test_reservations_end_with_their_urls(
    s3: Any, post: Post, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = float(int(time.time()))
    monkeypatch.setattr(storage_routes, "time", SimpleNamespace(time=lambda: now))
    token = new_storage(post)["token"]
    status, _, _ = presign(post, token, operation="POST", key="a.bin", expires_in=60)
    assert status == 200
    assert presign(post, token, operation="PUT", key="b.bin", content_length=1)[0] == 403
    monkeypatch.setattr(storage_routes, "time", SimpleNamespace(time=lambda: now + 61))
    status, body, _ = presign(post, token, operation="PUT", key="b.bin", content_length=MIB)
    assert status == 200, body


def test_a_stored_key_counts_once_against_its_reservation(s3: Any, post: Post) -> None:
    created = new_storage(post)
    token = created["token"]
    assert presign(post, token, operation="PUT", key="a.bin", content_length=4 * MIB)[0] == 200
    s3.put_object(Bucket=BUCKET, Key=f"{created['prefix']}/a.bin", Body=b"\0" * (4 * MIB))
    status, body, _ = presign(post, token, operation="PUT", key="b.bin", content_length=6 * MIB)
    assert status == 200, body


def test_post_form_accepts_a_smaller_maximum(s3: Any, post: Post) -> None:
    token = new_storage(post)["token"]
    status, body, _ = presign(post, token, operation="POST", key="a.bin", content_length=1000)
    assert status == 200 and body["max_bytes"] == 1000
    policy = json.loads(base64.b64decode(body["fields"]["policy"]))
    assert ["content-length-range", 0, 1000] in policy["conditions"]


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


def test_inventory_lists_every_tenant_prefix_holding_objects(s3: Any) -> None:
    from chalicelib.providers.base import Inventoried

    provider = deps.get_provider(Kind.STORAGE)
    assert isinstance(provider, Inventoried)
    refs = [provider.new_ref(backend()) for _ in range(3)]
    for i, ref in enumerate(refs):
        for n in range(i + 1):
            s3.put_object(Bucket=BUCKET, Key=f"{ref.namespace}/d/{n}.txt", Body=b"x")
    for other in ("deploy/ctx.tar.gz", "anon/not-a-tenant/x", "anon/s_short/x", "top.txt"):
        s3.put_object(Bucket=BUCKET, Key=other, Body=b"x")
    listed = provider.inventory(backend())
    assert sorted(r.namespace for r in listed) == sorted(r.namespace for r in refs)
    assert all(r.backend == "s3" and r.principal == "" for r in listed)

    for ref in listed:
        provider.deprovision(backend(), ref)
    assert provider.inventory(backend()) == []
    left = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert left == {"deploy/ctx.tar.gz", "anon/not-a-tenant/x", "anon/s_short/x", "top.txt"}


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
