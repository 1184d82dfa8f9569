"""Storage attacks with the tools a tenant has (``requests``, its presigned URLs) against the live
stack: the API over HTTP and the S3-only server tenants reach, which checks every signature as
S3 does (devstack/s3_auth.py). Each attack asserts S3's refusal and that the victim's object is
untouched.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import boto3
import pytest
import requests
from botocore.config import Config

from devstack.stack import Stack
from tests.conftest import fresh_ip
from tests.integration.conftest import provision

pytestmark = pytest.mark.integration
SECRET = b"the victim's secret"


@dataclass(frozen=True)
class Tenant:
    token: str
    prefix: str
    bucket: str
    endpoint: str


def presign(api: str, token: str, **body: Any) -> dict[str, Any]:
    r = requests.post(f"{api}/storage/{token}/presign", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def new_tenant(api: str) -> Tenant:
    r = provision(api, "/storage/new", name="files", ip=fresh_ip())
    assert r.status_code == 201, r.text
    body = r.json()
    parts = urlsplit(body["connection_url"])
    return Tenant(body["token"], body["prefix"], parts.path.split("/")[1], body["endpoint"])


def put(api: str, tenant: Tenant, key: str, data: bytes) -> None:
    url = presign(api, tenant.token, operation="PUT", key=key, content_length=len(data))["url"]
    assert requests.put(url, data=data, timeout=30).status_code == 200


def refused(response: requests.Response, status: int, code: str) -> bool:
    """The S3 XML error ``code`` with ``status`` (HEAD answers carry no body)."""
    body_ok = response.request.method == "HEAD" or f"<Code>{code}</Code>" in response.text
    return response.status_code == status and body_ok


@pytest.fixture
def victim(api: str) -> Iterator[Tenant]:
    tenant = new_tenant(api)
    put(api, tenant, "secret.txt", SECRET)
    yield tenant
    got = presign(api, tenant.token, operation="GET", key="secret.txt")["url"]
    assert requests.get(got, timeout=30).content == SECRET, "the victim's object changed"


@pytest.fixture
def attacker(api: str) -> Tenant:
    return new_tenant(api)


def admin_keys(stack: Stack) -> list[str]:
    env = stack.env()
    backend = json.loads(env["INSTANODE_STORAGE_BACKENDS"])[0]
    s3 = boto3.client(
        "s3",
        endpoint_url=backend["admin_url"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=backend["bucket"])
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


# -- keys that would leave the prefix ---------------------------------------------------------
@pytest.mark.parametrize("key", ["../x", "a/../../x", "/abs", "./x", "a\\..\\x", "a/./b"])
def test_presign_refuses_keys_that_leave_the_prefix(api: str, attacker: Tenant, key: str) -> None:
    for operation in ("GET", "PUT", "POST"):
        r = requests.post(
            f"{api}/storage/{attacker.token}/presign",
            json={"operation": operation, "key": key, "content_length": 1},
            timeout=30,
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_key", r.text


@pytest.mark.parametrize(
    "key", ["{victim}/secret.txt", "..%2F{victim_id}%2Fsecret.txt", "%2e%2e/{victim_id}/x"]
)
def test_another_tenants_prefix_as_a_key_stays_under_ones_own(
    api: str, stack: Stack, victim: Tenant, attacker: Tenant, key: str
) -> None:
    """A key naming the victim's prefix, literally or with encoded slashes and dots, is a key
    under the attacker's prefix: that is where the upload lands, the victim's object is kept."""
    key = key.format(victim=victim.prefix, victim_id=victim.prefix.split("/")[1])
    signed = presign(api, attacker.token, operation="PUT", key=key, content_length=4)
    assert signed["key"] == f"{attacker.prefix}/{key}"
    assert urlsplit(signed["url"]).path == quote(f"/{attacker.bucket}/{signed['key']}", safe="/~")
    assert requests.put(signed["url"], data=b"evil", timeout=30).status_code == 200
    assert f"{attacker.prefix}/{key}" in admin_keys(stack)


# -- edited URLs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "edit",
    [
        "/{bucket}/{victim}/secret.txt",
        "/{bucket}/{attacker}/..%2F..%2F{victim}/secret.txt",
        "/{bucket}/{attacker}/../../{victim}/secret.txt",
        "/{bucket}/{victim}%2Fsecret.txt",
    ],
)
def test_presigned_get_with_its_path_edited_is_refused(
    api: str, victim: Tenant, attacker: Tenant, edit: str
) -> None:
    url = presign(api, attacker.token, operation="GET", key="mine.txt")["url"]
    path = edit.format(bucket=attacker.bucket, victim=victim.prefix, attacker=attacker.prefix)
    r = requests.get(with_path(url, path), timeout=30)
    assert refused(r, 403, "SignatureDoesNotMatch"), r.text
    assert SECRET not in r.content


@pytest.mark.parametrize(
    "extra", ["&response-content-type=text%2Fhtml", "&list-type=2", "&acl", "&X-Amz-Expires=9"]
)
def test_presigned_get_with_its_query_edited_is_refused(
    api: str, victim: Tenant, extra: str
) -> None:
    url = presign(api, victim.token, operation="GET", key="secret.txt")["url"]
    r = requests.get(url + extra, timeout=30)
    assert r.status_code in (400, 403) and SECRET not in r.content, r.text
    assert "SignatureDoesNotMatch" in r.text or "InvalidArgument" in r.text


@pytest.mark.parametrize("method", ["PUT", "DELETE", "HEAD", "POST"])
def test_url_signed_for_get_is_refused_for_other_methods(
    api: str, victim: Tenant, method: str
) -> None:
    url = presign(api, victim.token, operation="GET", key="secret.txt")["url"]
    r = requests.request(
        method, url, data=b"evil" if method in ("PUT", "POST") else None, timeout=30
    )
    assert refused(r, 403, "SignatureDoesNotMatch"), r.text


def test_expired_url_is_refused(api: str, victim: Tenant) -> None:
    url = presign(api, victim.token, operation="GET", key="secret.txt", expires_in=1)["url"]
    time.sleep(2.2)
    r = requests.get(url, timeout=30)
    assert refused(r, 403, "AccessDenied") and "Request has expired" in r.text, r.text


def test_url_signed_with_a_guessed_key_is_refused(victim: Tenant) -> None:
    """The attacker signs its own URL with boto3: moto's default key id and a guessed secret."""
    for key_id, secret in (("test", "guessed"), ("AKIAIOSFODNN7EXAMPLE", "test")):
        s3 = boto3.client(
            "s3",
            endpoint_url=victim.endpoint,
            region_name="us-east-1",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        params = {"Bucket": victim.bucket, "Key": f"{victim.prefix}/secret.txt"}
        r = requests.get(s3.generate_presigned_url("get_object", Params=params), timeout=30)
        code = "SignatureDoesNotMatch" if key_id == "test" else "InvalidAccessKeyId"
        assert refused(r, 403, code), r.text


# -- no signature at all -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/{bucket}/{victim}/secret.txt"),
        ("PUT", "/{bucket}/{victim}/secret.txt"),
        ("DELETE", "/{bucket}/{victim}/secret.txt"),
        ("GET", "/{bucket}"),
        ("GET", "/{bucket}?list-type=2&prefix=anon/"),
        ("GET", "/"),
        ("POST", "/{bucket}?delete"),
    ],
)
def test_unsigned_requests_are_refused(victim: Tenant, method: str, path: str) -> None:
    url = victim.endpoint + path.format(bucket=victim.bucket, victim=victim.prefix)
    r = requests.request(method, url, data=b"evil" if method != "GET" else None, timeout=30)
    assert refused(r, 403, "AccessDenied"), r.text
    assert SECRET not in r.content and victim.prefix not in r.text


def test_sigv2_is_refused(victim: Tenant) -> None:
    url = f"{victim.endpoint}/{victim.bucket}/{victim.prefix}/secret.txt"
    query = {"AWSAccessKeyId": "test", "Expires": str(int(time.time()) + 60), "Signature": "x"}
    r = requests.get(url, params=query, timeout=30)
    assert refused(r, 400, "InvalidRequest"), r.text


def test_listing_the_bucket_with_a_get_url_is_refused(api: str, attacker: Tenant) -> None:
    url = presign(api, attacker.token, operation="GET", key="x")["url"]
    parts = urlsplit(url)
    for listing in (f"/{attacker.bucket}", f"/{attacker.bucket}/", "/"):
        r = requests.get(urlunsplit(parts._replace(path=listing)), timeout=30)
        assert refused(r, 403, "SignatureDoesNotMatch"), r.text
        assert "<Key>" not in r.text


# -- uploads beyond what was signed ------------------------------------------------------------
@pytest.mark.parametrize("size", [1001, 999, 0, 10 * 1024 * 1024])
def test_put_of_another_size_than_signed_is_refused(
    api: str, stack: Stack, attacker: Tenant, size: int
) -> None:
    url = presign(api, attacker.token, operation="PUT", key="a.bin", content_length=1000)["url"]
    r = requests.put(url, data=secrets.token_bytes(size), timeout=60)
    assert refused(r, 403, "SignatureDoesNotMatch"), r.text
    assert f"{attacker.prefix}/a.bin" not in admin_keys(stack)
    assert requests.put(url, data=b"x" * 1000, timeout=30).status_code == 200


def test_chunked_put_without_a_length_is_refused(api: str, attacker: Tenant) -> None:
    url = presign(api, attacker.token, operation="PUT", key="a.bin", content_length=4)["url"]
    r = requests.put(url, data=iter([b"ab", b"cd"]), timeout=30)  # Transfer-Encoding: chunked
    assert refused(r, 501, "NotImplemented"), r.text


def test_unsigned_amz_headers_are_refused(api: str, victim: Tenant, attacker: Tenant) -> None:
    """A copy onto one's own key would read the victim's object: x-amz-* headers must be
    signed, and the platform signs none."""
    url = presign(api, attacker.token, operation="PUT", key="copy.txt", content_length=0)["url"]
    for header, value in (
        ("x-amz-copy-source", f"{victim.bucket}/{victim.prefix}/secret.txt"),
        ("x-amz-acl", "public-read"),
        ("x-amz-meta-owner", "someone-else"),
    ):
        r = requests.put(url, data=b"", headers={header: value}, timeout=30)
        assert refused(r, 403, "AccessDenied") and "not signed" in r.text, r.text


def test_presigned_post_policy_holds(
    api: str, stack: Stack, victim: Tenant, attacker: Tenant
) -> None:
    form = presign(api, attacker.token, operation="POST", key="up.bin", content_length=100)
    url, fields = form["url"], form["fields"]

    def send(data: dict[str, str], body: bytes) -> requests.Response:
        return requests.post(url, data=data, files={"file": ("up.bin", body)}, timeout=30)

    assert refused(send(fields, b"x" * 101), 400, "EntityTooLarge")
    other = {**fields, "key": f"{victim.prefix}/secret.txt"}
    assert refused(send(other, b"evil"), 403, "AccessDenied")
    assert refused(send({**fields, "acl": "public-read"}, b"x"), 403, "AccessDenied")
    policy = json.loads(base64.b64decode(fields["policy"]))
    policy["conditions"] = [c for c in policy["conditions"] if "content-length-range" not in c]
    forged = {**fields, "policy": base64.b64encode(json.dumps(policy).encode()).decode()}
    assert refused(send(forged, b"x" * 101), 403, "SignatureDoesNotMatch")
    unsigned = {k: v for k, v in fields.items() if k != "x-amz-signature"}
    assert refused(send(unsigned, b"x"), 400, "InvalidArgument")
    assert f"{attacker.prefix}/up.bin" not in admin_keys(stack)
    assert send(fields, b"x" * 100).status_code == 204
