"""Webhook inboxes: /webhook/new, capturing every method, listing, the ring buffer, expiry."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from chalice.test import Client

from chalicelib import deps
from chalicelib.jobs.reaper import Reaper
from chalicelib.models import BackendRef, Kind
from chalicelib.routes.webhooks import RECEIVE_METHODS
from chalicelib.store import ResourceStore
from tests.functional.conftest import Post, scan, settings

pytestmark = pytest.mark.usefixtures("app_env")
MIB = 1024 * 1024
BINARY = bytes(range(256))


def new_inbox(post: Post, name: str = "hooks") -> dict[str, Any]:
    resp = post("/webhook/new", {"name": name})
    assert resp.status_code in (200, 201), resp.body
    body: dict[str, Any] = json.loads(resp.body)
    return body


def receive_path(inbox: dict[str, Any]) -> str:
    return urlparse(str(inbox["receive_url"])).path


def send(client: Client, inbox: dict[str, Any], method: str = "POST", **kw: Any) -> Any:
    query = kw.pop("query", "")
    return client.http.request(method, receive_path(inbox) + query, **kw)


def listing(client: Client, token: str, query: str = "") -> Any:
    return client.http.get(f"/api/v1/webhooks/{token}/requests{query}")


def requests_of(client: Client, token: str, query: str = "") -> dict[str, Any]:
    resp = listing(client, token, query)
    assert resp.status_code == 200, resp.body
    body: dict[str, Any] = json.loads(resp.body)
    return body


@pytest.fixture
def inbox(post: Post) -> dict[str, Any]:
    return new_inbox(post)


def test_new_returns_receive_url_and_no_connection_urls(inbox: dict[str, Any]) -> None:
    assert inbox["receive_url"].endswith(f"/webhook/receive/{inbox['token']}")
    assert "connection_url" not in inbox and "internal_url" not in inbox
    assert inbox["kind"] == "webhook"
    assert inbox["limits"] == {"storage_mb": 1, "kept_requests": 100}


@pytest.mark.parametrize("method", RECEIVE_METHODS)
def test_every_method_is_captured_with_query_headers_and_binary_body(
    client: Client, inbox: dict[str, Any], method: str
) -> None:
    headers = {"Content-Type": "application/octet-stream", "X-Signature": "sig-1"}
    resp = send(client, inbox, method, query="?a=1&a=2&b=x", headers=headers, body=BINARY)
    assert resp.status_code == 200, resp.body
    assert json.loads(resp.body) == {"ok": True, "received": True, "seq": 1}
    (got,) = requests_of(client, inbox["token"])["requests"]
    assert got["method"] == method and got["seq"] == 1
    assert got["query"] == {"a": ["1", "2"], "b": ["x"]}
    assert got["headers"]["x-signature"] == "sig-1"
    assert base64.b64decode(got["body"]) == BINARY
    assert "body_text" not in got and got["body_size"] == 256
    assert got["path"].startswith("/webhook/receive/")
    assert abs(got["received_at"] - time.time() * 1000) < 60_000


def test_text_body_is_also_returned_as_text(client: Client, inbox: dict[str, Any]) -> None:
    send(client, inbox, headers={"Content-Type": "application/json"}, body=b'{"event":"paid"}')
    (got,) = requests_of(client, inbox["token"])["requests"]
    assert got["body_text"] == '{"event":"paid"}'
    assert json.loads(base64.b64decode(got["body"])) == {"event": "paid"}


def test_body_over_one_mib_is_413_and_not_stored(client: Client, inbox: dict[str, Any]) -> None:
    resp = send(client, inbox, body=b"x" * (MIB + 1))
    assert resp.status_code == 413
    assert json.loads(resp.body)["error"] == "payload_too_large"
    ok = send(client, inbox, body=b"y" * MIB)
    assert ok.status_code == 200
    (got,) = requests_of(client, inbox["token"])["requests"]
    assert got["body_size"] == MIB and got["body_truncated"] is True


def test_last_100_are_kept_newest_first_with_pagination(
    client: Client, inbox: dict[str, Any]
) -> None:
    for i in range(105):
        assert send(client, inbox, body=f"n={i}".encode()).status_code == 200
    assert len(scan(deps.get_dynamo(), settings().webhook_requests_table)) == 100
    seqs: list[int] = []
    query = "?limit=30"
    while True:
        page = requests_of(client, inbox["token"], query)
        seqs += [r["seq"] for r in page["requests"]]
        if page["next_before"] is None:
            break
        query = f"?limit=30&before={page['next_before']}"
    assert seqs == list(range(105, 5, -1))
    first = requests_of(client, inbox["token"])
    assert len(first["requests"]) == 20 and first["next_before"] == 86
    assert first["requests"][0]["body_text"] == "n=104"


def test_a_token_never_sees_another_inboxs_requests(client: Client, post: Post) -> None:
    a, b = new_inbox(post, "a"), new_inbox(post, "b")
    send(client, a, body=b"for-a")
    send(client, b, body=b"for-b")
    assert [r["body_text"] for r in requests_of(client, a["token"])["requests"]] == ["for-a"]
    assert [r["body_text"] for r in requests_of(client, b["token"])["requests"]] == ["for-b"]


def test_unknown_token_is_404_on_both_routes(client: Client) -> None:
    for resp in (client.http.post("/webhook/receive/nope", body=b"x"), listing(client, "nope")):
        assert resp.status_code == 404
        assert json.loads(resp.body)["error"] == "not_found"


def test_bad_limit_is_400(client: Client, inbox: dict[str, Any]) -> None:
    for query in ("?limit=0", "?limit=101", "?limit=x", "?before=0"):
        assert listing(client, inbox["token"], query).status_code == 400


@pytest.fixture
def dynamo_calls() -> Iterator[list[str]]:
    calls: list[str] = []

    def hook(model: Any, **_: Any) -> None:
        calls.append(model.name)

    events = deps.get_dynamo().client.meta.events
    events.register("before-call.dynamodb.*", hook)
    yield calls
    events.unregister("before-call.dynamodb.*", hook)


WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


def test_a_receive_makes_at_most_two_dynamodb_writes(
    client: Client, inbox: dict[str, Any], dynamo_calls: list[str]
) -> None:
    assert send(client, inbox, body=b"count me").status_code == 200
    writes = [c for c in dynamo_calls if c in WRITES]
    assert writes == ["UpdateItem", "PutItem"]
    assert len(dynamo_calls) - len(writes) == 1  # the resource lookup


def test_reaper_deletes_stored_requests_and_expires_the_token(
    client: Client, inbox: dict[str, Any]
) -> None:
    for _ in range(3):
        send(client, inbox, body=b"soon gone")
    ref = _ref_of(inbox)
    (backend,) = settings().backends_for(Kind.WEBHOOK)
    assert deps.get_provider(Kind.WEBHOOK).usage(backend, ref) == 27
    report = Reaper(
        settings(), deps.get_dynamo(), deps.get_provider, lambda: time.time() + 3 * 86400
    ).run()
    assert report.expired >= 1 and report.failed == 0
    assert scan(deps.get_dynamo(), settings().webhook_requests_table) == []
    counters = [c["pk"] for c in scan(deps.get_dynamo(), settings().counters_table)]
    assert f"inbox#{ref.namespace}" not in counters
    assert listing(client, inbox["token"]).status_code == 404
    assert send(client, inbox, body=b"late").status_code == 404


def _ref_of(inbox: dict[str, Any]) -> BackendRef:
    found = ResourceStore(deps.get_dynamo(), settings()).get(inbox["id"])
    assert found is not None and found.ref.namespace.startswith("w_")
    return found.ref
