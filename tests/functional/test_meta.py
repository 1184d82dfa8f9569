"""Health, readiness, capabilities and the machine-readable docs."""

from __future__ import annotations

import json

import pytest
from chalice.test import Client

from app import app
from chalicelib import deps

pytestmark = pytest.mark.usefixtures("app_env")


def test_healthz_reports_build_and_reaches_dynamodb(client: Client) -> None:
    body = client.http.get("/healthz").json_body
    assert body["ok"] is True and {"commit_id", "build_time", "version"} <= body.keys()


def test_readyz_checks_dynamodb_and_every_backend(client: Client) -> None:
    resp = client.http.get("/readyz")
    assert resp.status_code == 200
    body = resp.json_body
    assert body["overall"] == "ok"
    assert {"platform_db", "postgres:pg1", "postgres:pg2", "vector:pg1"} <= body["checks"].keys()
    check = body["checks"]["postgres:pg1"]
    assert check["status"] == "ok" and check["latency_ms"] >= 0 and check["last_checked"]


def test_readyz_is_degraded_not_down_when_a_backend_is_down(
    client: Client, monkeypatch: pytest.MonkeyPatch, app_env: dict[str, str]
) -> None:
    backends = json.loads(app_env["INSTANODE_POSTGRES_BACKENDS"])
    backends.append(
        {"name": "dead", "admin_url": "postgresql://p:x@127.0.0.1:9/p", "public_host": "x"}
    )
    monkeypatch.setenv("INSTANODE_POSTGRES_BACKENDS", json.dumps(backends))
    deps.reset()
    resp = client.http.get("/readyz")
    assert resp.status_code == 200
    assert resp.json_body["overall"] == "degraded"
    assert resp.json_body["checks"]["postgres:dead"]["status"] == "down"
    assert "p:x@" not in resp.body.decode()


def test_capabilities_serves_the_tier_table(client: Client) -> None:
    body = client.http.get("/api/v1/capabilities").json_body
    assert body["tiers"]["anonymous"]["kinds"]["postgres"]["storage_mb"] == 10
    assert body["resource_count_limit"]["pro"]["postgres"] == 5


def test_capabilities_shows_the_operators_overrides(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = {"free": {"deploys": {"apps": 1}, "kinds": {"postgres": {"max_resources": 3}}}}
    monkeypatch.setenv("INSTANODE_PLANS_OVERRIDES", json.dumps(overrides))
    deps.reset()
    body = client.http.get("/api/v1/capabilities").json_body
    assert body["tiers"]["free"]["deploys"]["apps"] == 1
    assert body["tiers"]["free"]["deploys"]["stack_ttl_hours"] == 6  # the rest: plans.yaml
    assert body["resource_count_limit"]["free"]["postgres"] == 3
    assert body["tiers"]["anonymous"]["deploys"]["apps"] == 0


def test_openapi_json_is_served_for_this_deployment(
    client: Client, app_env: dict[str, str]
) -> None:
    body = client.http.get("/openapi.json").json_body
    assert body["openapi"].startswith("3.1")
    assert body["servers"][0]["url"] == app_env["INSTANODE_PUBLIC_BASE_URL"]
    assert set(body["paths"]) == set(app.routes)


def test_llms_txt_names_this_deployments_base_url(client: Client, app_env: dict[str, str]) -> None:
    resp = client.http.get("/llms.txt")
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert f"POST {app_env['INSTANODE_PUBLIC_BASE_URL']}/db/new" in resp.body.decode()
