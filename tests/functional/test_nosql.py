"""POST /nosql/new through the app, on the stack's real MongoDB-wire server."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pymongo
import pytest
from pymongo.errors import OperationFailure

from chalicelib import deps
from chalicelib.dynamo import Dynamo
from chalicelib.jobs.reaper import Reaper
from chalicelib.models import Kind
from tests.conftest import fresh_ip
from tests.functional.conftest import Post, caller, key_for, make_service, request, settings

pytestmark = pytest.mark.usefixtures("app_env")


def client_of(url: str) -> pymongo.MongoClient[dict[str, object]]:
    return pymongo.MongoClient(url, serverSelectionTimeoutMS=3000)


def test_nosql_new_returns_a_database_with_its_own_user(post: Post) -> None:
    resp = post("/nosql/new", {"name": "docs"})
    assert resp.status_code == 201
    body = resp.json_body
    assert body["connection_url"].startswith("mongodb://mu_")
    assert body["limits"] == {"storage_mb": 5, "connections": 2}
    db_name = urlsplit(body["connection_url"]).path.lstrip("/")
    client = client_of(body["connection_url"])
    client[db_name].notes.insert_one({"text": "hello"})
    assert client[db_name].notes.find_one({}, {"_id": 0}) == {"text": "hello"}
    client.close()


def test_nosql_tenant_cannot_reach_another_tenants_database(post: Post) -> None:
    a = post("/nosql/new", {"name": "a"}).json_body["connection_url"]
    b = post("/nosql/new", {"name": "b"}).json_body["connection_url"]
    client = client_of(a)
    with pytest.raises(OperationFailure):
        client[urlsplit(b).path.lstrip("/")].notes.insert_one({"x": 1})
    client.close()


def test_second_nosql_of_a_network_is_resource_limit_reached(post: Post) -> None:
    ip = fresh_ip()
    assert post("/nosql/new", {"name": "a"}, ip=ip).status_code == 201
    assert post("/nosql/new", {"name": "b"}, ip=ip).status_code == 402


def test_reaper_drops_an_expired_nosql_database(dynamo: Dynamo) -> None:
    svc = make_service(clock=lambda: time.time() - 2 * 86400)
    who, req = caller(), request(Kind.MONGODB)
    url = svc.provision(who, req, key_for(who, req)).body["connection_url"]
    assert Reaper(settings(), dynamo, deps.get_provider, time.time).run().expired == 1
    with pytest.raises(OperationFailure):
        client_of(url)[urlsplit(url).path.lstrip("/")].notes.find_one()
