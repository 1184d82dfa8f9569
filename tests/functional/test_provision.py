"""POST /db/new and /vector/new through the Chalice app, on real Postgres servers."""

from __future__ import annotations

import time
from dataclasses import replace
from urllib.parse import urlsplit

import pytest

from chalicelib import errors
from chalicelib.dynamo import Dynamo
from chalicelib.models import Kind
from chalicelib.tiers import KindLimits, Tier, get_tier
from tests.conftest import connect, fresh_ip
from tests.functional.conftest import (
    Post,
    caller,
    key_for,
    make_service,
    request,
    scan,
    settings,
)

pytestmark = pytest.mark.usefixtures("app_env")


def roomy(daily: int | None = 5, cap: int = 10) -> dict[str, Tier]:
    """An anonymous tier with room for more than one resource per kind."""
    anon = get_tier("anonymous")
    lim = KindLimits(storage_mb=10, connections=2, max_resources=cap)
    return {"anonymous": replace(anon, daily_provisions=daily, kinds=dict.fromkeys(Kind, lim))}


def test_db_new_returns_the_spec_shape(post: Post) -> None:
    started = int(time.time())
    resp = post("/db/new", {"name": "prod-db"})
    assert resp.status_code == 201
    body = resp.json_body
    for field in (
        "ok",
        "id",
        "token",
        "name",
        "connection_url",
        "internal_url",
        "tier",
        "limits",
        "expires_at",
        "note",
        "upgrade_jwt",
        "upgrade",
    ):
        assert field in body, field
    assert body["ok"] is True and body["name"] == "prod-db" and body["tier"] == "anonymous"
    assert body["limits"] == {"storage_mb": 10, "connections": 2}
    assert body["upgrade"] == f"{settings().public_base_url}/start?t={body['upgrade_jwt']}"
    assert urlsplit(body["connection_url"]).scheme == "postgres"
    assert resp.headers["X-Idempotency-Source"] == "miss"
    expires = time.mktime(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert started + 24 * 3600 - 5 <= expires <= started + 24 * 3600 + 60


def test_db_new_connection_url_opens_an_owned_database(post: Post) -> None:
    body = post("/db/new", {"name": "app"}).json_body
    conn = connect(body["connection_url"])
    conn.run("CREATE TABLE expenses (id serial PRIMARY KEY, amount numeric)")
    conn.run("INSERT INTO expenses (amount) VALUES (12.5)")
    assert conn.run("SELECT amount FROM expenses")[0][0] == 12.5
    conn.close()


def test_vector_new_has_the_vector_extension(post: Post) -> None:
    body = post("/vector/new", {"name": "embeddings"}).json_body
    conn = connect(body["connection_url"])
    rows = conn.run("SELECT extname FROM pg_extension WHERE extname = 'vector'")
    conn.close()
    assert rows == [["vector"]]


def test_db_new_lists_ignored_fields(post: Post) -> None:
    body = post("/db/new", {"name": "x", "size": "huge", "region": "eu"}).json_body
    assert body["ignored_fields"] == ["region", "size"]


def test_second_db_of_an_anonymous_network_is_resource_limit_reached(post: Post) -> None:
    ip = fresh_ip()
    first = post("/db/new", {"name": "one"}, ip=ip).json_body
    resp = post("/db/new", {"name": "two"}, ip=ip)
    assert resp.status_code == 402
    assert resp.json_body["error"] == "resource_limit_reached"
    assert resp.json_body["existing"] == {"id": first["id"], "name": "one"}
    assert resp.json_body["claim_url"].startswith(f"{settings().public_base_url}/start?t=")
    assert resp.json_body["agent_action"].startswith("Tell the user")
    assert len(resp.json_body["agent_action"]) <= 280


def test_db_and_vector_caps_are_separate(post: Post) -> None:
    ip = fresh_ip()
    assert post("/db/new", {"name": "one"}, ip=ip).status_code == 201
    assert post("/vector/new", {"name": "two"}, ip=ip).status_code == 201


def test_provisions_spread_over_the_least_loaded_backend(post: Post) -> None:
    hosts = {
        urlsplit(post("/db/new", {"name": f"n{i}"}).json_body["connection_url"]).port
        for i in range(2)
    }
    assert len(hosts) == 2


def test_sixth_provision_of_the_day_returns_the_existing_token() -> None:
    svc = make_service(tiers=roomy(daily=5))
    who = caller()
    made = [
        svc.provision(who, request(name=f"q{i}"), key_for(who, request(name=f"q{i}")))
        for i in range(5)
    ]
    sixth = svc.provision(who, request(name="q5"), key_for(who, request(name="q5")))
    assert sixth.status_code == 200 and sixth.body["deduplicated"] is True
    assert sixth.body["token"] in {o.body["token"] for o in made}
    assert "connection_url" not in sixth.body


def test_daily_limit_without_an_existing_resource_is_429() -> None:
    svc = make_service(tiers=roomy(daily=1))
    who = caller()
    svc.provision(who, request(), key_for(who, request()))
    vec = request(Kind.VECTOR)
    with pytest.raises(errors.DailyLimitReachedError) as exc:
        svc.provision(who, vec, key_for(who, vec))
    assert exc.value.status == 429 and 0 < exc.value.fields["retry_after_seconds"] <= 86400


def test_backend_down_is_503_and_leaves_nothing(dynamo: Dynamo) -> None:
    dead = replace(
        settings().backends_for(Kind.POSTGRES)[0],
        name="dead",
        admin_url="postgresql://postgres:x@127.0.0.1:9/postgres",
    )
    config = replace(settings(), backends={Kind.POSTGRES: (dead,)})
    svc = make_service(config=config)
    who = caller()
    with pytest.raises(errors.BackendUnavailableError) as exc:
        svc.provision(who, request(), key_for(who, request()))
    assert exc.value.status == 503
    assert scan(dynamo, settings().resources_table) == []
    assert scan(dynamo, settings().idempotency_table) == []
    assert all(item["n"] == 0 for item in scan(dynamo, settings().counters_table))
