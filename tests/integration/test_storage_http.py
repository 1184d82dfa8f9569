"""Storage over HTTP as an agent sees it: provision, presign, upload and download with plain
``requests`` against the stack's S3-only server, which checks signatures, expiry and a presigned
POST's policy as S3 does (devstack/s3_auth.py); the attacks are tests/security/."""

from __future__ import annotations

import base64
import json
import os
import secrets
from typing import Any
from urllib.parse import urlsplit

import boto3
import requests
from botocore.config import Config

from devstack.stack import Stack
from tests.conftest import fresh_ip
from tests.integration.conftest import provision

MIB = 1024 * 1024


def _presign(api: str, token: str, **body: Any) -> Any:
    r = requests.post(f"{api}/storage/{token}/presign", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _admin_s3(stack: Stack) -> Any:
    """The storage backend's own S3 (the S3-only server, not the platform's moto)."""
    env = stack.env()
    return boto3.client(
        "s3",
        endpoint_url=json.loads(env["INSTANODE_STORAGE_BACKENDS"])[0]["admin_url"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def test_put_then_get_through_presigned_urls(api: str) -> None:
    r = provision(api, "/storage/new", name="files", ip=fresh_ip())
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["mode"] == "broker" and "access_key_id" not in created
    data = os.urandom(4096) + "é/ünïcode".encode()

    put = _presign(
        api,
        created["token"],
        operation="PUT",
        key="dir/blob.bin",
        expires_in=60,
        content_length=len(data),
    )
    assert put["key"] == f"{created['prefix']}/dir/blob.bin"
    assert requests.put(put["url"], data=data, timeout=30).status_code == 200

    get = _presign(api, created["token"], operation="GET", key="dir/blob.bin")
    fetched = requests.get(get["url"], timeout=30)
    assert fetched.status_code == 200 and fetched.content == data
    assert created["connection_url"].endswith(f"/{created['prefix']}/")


def test_presigned_post_within_and_over_the_limit(api: str, stack: Stack) -> None:
    created = provision(api, "/storage/new", name="posts", ip=fresh_ip()).json()
    token, prefix = created["token"], created["prefix"]
    bucket = urlsplit(created["connection_url"]).path.split("/")[1]

    small = b"within the limit"
    form = _presign(api, token, operation="POST", key="small.txt", content_length=len(small))
    assert form["max_bytes"] == len(small)  # a form reserves its maximum until it expires
    files = {"file": ("small.txt", small)}
    ok = requests.post(form["url"], data=form["fields"], files=files, timeout=30)
    assert ok.status_code in (200, 201, 204), ok.text
    got = requests.get(_presign(api, token, operation="GET", key="small.txt")["url"], timeout=30)
    assert got.content == b"within the limit"

    # Fill the prefix to 10 bytes below its limit, then try to POST 11 bytes.
    filler = 10 * MIB - 10 - len(small)
    _admin_s3(stack).put_object(Bucket=bucket, Key=f"{prefix}/filler.bin", Body=b"\0" * filler)
    form = _presign(api, token, operation="POST", key="big.bin")
    assert form["max_bytes"] == 10
    policy = json.loads(base64.b64decode(form["fields"]["policy"]))
    assert ["content-length-range", 0, 10] in policy["conditions"]
    over = requests.post(
        form["url"],
        data=form["fields"],
        files={"file": ("big.bin", secrets.token_bytes(11))},
        timeout=30,
    )
    assert over.status_code == 400 and "EntityTooLarge" in over.text

    # The 10 bytes are reserved by that form until it expires: no other upload is signed, and
    # downloads still work.
    refused = requests.post(
        f"{api}/storage/{token}/presign",
        json={"operation": "PUT", "key": "x", "content_length": 1},
        timeout=30,
    )
    assert refused.status_code == 403 and refused.json()["error"] == "storage_quota_exceeded"
    assert _presign(api, token, operation="GET", key="filler.bin")["method"] == "GET"
