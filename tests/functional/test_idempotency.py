"""Spec convention 7: Idempotency-Key for 24h, a body fingerprint for 120 s."""

from __future__ import annotations

import time
from dataclasses import replace
from urllib.parse import urlsplit

import pytest

from chalicelib.dynamo import Dynamo
from chalicelib.models import Kind
from chalicelib.tiers import KindLimits, get_tier
from tests.conftest import fresh_ip
from tests.functional.conftest import Post, caller, key_for, make_service, request, settings

pytestmark = pytest.mark.usefixtures("app_env")


def test_same_key_same_body_replays_the_first_response(post: Post) -> None:
    ip = fresh_ip()
    first = post("/db/new", {"name": "a"}, ip=ip, Idempotency_Key="key-1")
    again = post("/db/new", {"name": "a"}, ip=ip, Idempotency_Key="key-1")
    assert first.status_code == again.status_code == 201
    assert again.json_body == first.json_body
    assert again.headers["X-Idempotent-Replay"] == "true"
    assert again.headers["X-Idempotency-Source"] == "explicit"
    assert "X-Idempotent-Replay" not in first.headers


def test_same_key_other_body_is_a_conflict(post: Post) -> None:
    ip = fresh_ip()
    post("/db/new", {"name": "a"}, ip=ip, Idempotency_Key="key-2")
    resp = post("/db/new", {"name": "b"}, ip=ip, Idempotency_Key="key-2")
    assert resp.status_code == 409
    assert resp.json_body["error"] == "idempotency_key_conflict"


def test_same_key_from_another_network_is_not_a_replay(post: Post) -> None:
    first = post("/db/new", {"name": "a"}, Idempotency_Key="shared")
    other = post("/db/new", {"name": "a"}, Idempotency_Key="shared")
    assert other.status_code == 201 and other.json_body["id"] != first.json_body["id"]


def test_identical_body_without_key_replays_within_120s(post: Post) -> None:
    ip = fresh_ip()
    first = post("/vector/new", {"name": "v"}, ip=ip)
    again = post("/vector/new", {"name": "v"}, ip=ip)
    assert again.json_body == first.json_body
    assert again.headers["X-Idempotency-Source"] == "fingerprint"


def test_identical_body_without_key_provisions_again_after_120s() -> None:
    anon = get_tier("anonymous")
    lim = KindLimits(storage_mb=10, connections=2, max_resources=5)
    tiers = {"anonymous": replace(anon, kinds=dict.fromkeys(Kind, lim))}
    now = [time.time()]
    svc = make_service(tiers=tiers, clock=lambda: now[0])
    who, req = caller(), request()
    first = svc.provision(who, req, key_for(who, req))
    now[0] += 121
    second = svc.provision(who, req, key_for(who, req))
    assert second.status_code == 201 and second.body["id"] != first.body["id"]


def test_explicit_key_still_replays_after_120s() -> None:
    now = [time.time()]
    svc = make_service(clock=lambda: now[0])
    who, req = caller(), request()
    first = svc.provision(who, req, key_for(who, req, "long-lived"))
    now[0] += 23 * 3600
    again = svc.provision(who, req, key_for(who, req, "long-lived"))
    assert again.body == first.body and again.headers["X-Idempotent-Replay"] == "true"


def test_stored_response_for_replays_holds_no_password(post: Post, dynamo: Dynamo) -> None:
    ip = fresh_ip()
    first = post("/db/new", {"name": "sealed"}, ip=ip, Idempotency_Key="seal-1").json_body
    password = urlsplit(first["connection_url"]).password
    items = dynamo.client.scan(TableName=settings().idempotency_table)["Items"]
    assert password and items and all(password not in str(item) for item in items)
    again = post("/db/new", {"name": "sealed"}, ip=ip, Idempotency_Key="seal-1").json_body
    assert again["connection_url"] == first["connection_url"]
