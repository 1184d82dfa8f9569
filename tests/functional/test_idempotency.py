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


def test_first_call_with_a_key_says_explicit(post: Post) -> None:
    first = post("/cache/new", {"name": "c"}, Idempotency_Key="first-explicit")
    assert first.status_code == 201
    assert first.headers["X-Idempotency-Source"] == "explicit"


@pytest.mark.parametrize(
    "value",
    ["", " ", "\t", "x" * 256, "has space", "tab\tkey"],
    ids=["empty", "space", "tab", "too-long", "inner-space", "inner-tab"],
)
def test_blank_or_malformed_key_is_invalid_idempotency_key(post: Post, value: str) -> None:
    resp = post("/db/new", {"name": "a"}, Idempotency_Key=value)
    assert resp.status_code == 400
    assert resp.json_body["error"] == "invalid_idempotency_key"
    assert resp.headers["X-Idempotency-Source"] == "explicit"


@pytest.mark.parametrize(("key", "source"), [("bad-name-key", "explicit"), (None, "miss")])
def test_create_errors_carry_the_source_header(post: Post, key: str | None, source: str) -> None:
    headers = {"Idempotency_Key": key} if key else {}
    resp = post("/db/new", {"name": "-bad"}, **headers)
    assert resp.status_code == 400 and resp.json_body["error"] == "invalid_name"
    assert resp.headers["X-Idempotency-Source"] == source


def test_replays_use_no_daily_provision_slot(post: Post) -> None:
    """Five replays of one provision, then four more kinds: the network's 5 daily slots are
    one for the replayed provision and four for the rest."""
    ip = fresh_ip()
    first = post("/db/new", {"name": "a"}, ip=ip, Idempotency_Key="slot-1")
    replays = [post("/db/new", {"name": "a"}, ip=ip, Idempotency_Key="slot-1") for _ in range(5)]
    assert {r.headers["X-Idempotent-Replay"] for r in replays} == {"true"}
    others = [post(p, {"name": "b"}, ip=ip) for p in ("/cache/new", "/nosql/new", "/webhook/new")]
    others.append(post("/storage/new", {"name": "b"}, ip=ip))
    assert [first.status_code, *(r.status_code for r in others)] == [201] * 5
