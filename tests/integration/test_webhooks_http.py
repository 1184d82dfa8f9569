"""An agent's view of /webhook/new: curl-like calls to receive_url, then listing them back."""

from __future__ import annotations

import base64

import pytest
import requests

from tests.integration.conftest import provision

pytestmark = pytest.mark.integration
BINARY = bytes(range(256)) * 4


def test_json_form_and_binary_bodies_are_listed_back_newest_first(api: str) -> None:
    resp = provision(api, "/webhook/new", "payments-hooks")
    assert resp.status_code in (200, 201), resp.text
    body = resp.json()
    url, token = body["receive_url"], body["token"]
    assert url.startswith(api) and "connection_url" not in body
    close = {"Connection": "close"}
    sent = [
        requests.post(f"{url}?source=stripe", json={"event": "paid"}, headers=close, timeout=10),
        requests.put(url, data={"a": "1", "b": "two"}, headers=close, timeout=10),
        requests.patch(
            url,
            data=BINARY,
            headers={**close, "Content-Type": "application/octet-stream"},
            timeout=10,
        ),
    ]
    assert [r.status_code for r in sent] == [200, 200, 200]
    assert [r.json()["seq"] for r in sent] == [1, 2, 3]

    listed = requests.get(f"{api}/api/v1/webhooks/{token}/requests", headers=close, timeout=10)
    assert listed.status_code == 200
    binary, form, json_ = listed.json()["requests"]
    assert [r["method"] for r in (binary, form, json_)] == ["PATCH", "PUT", "POST"]
    assert base64.b64decode(binary["body"]) == BINARY and "body_text" not in binary
    assert form["body_text"] == "a=1&b=two"
    assert form["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert json_["query"] == {"source": ["stripe"]}
    assert json_["body_text"].replace(" ", "") == '{"event":"paid"}'

    page = requests.get(
        f"{api}/api/v1/webhooks/{token}/requests?limit=1&before=3", headers=close, timeout=10
    ).json()
    assert [r["seq"] for r in page["requests"]] == [2] and page["next_before"] == 2


def test_unknown_token_is_404(api: str) -> None:
    resp = requests.post(f"{api}/webhook/receive/unknown", data=b"x", timeout=10)
    assert resp.status_code == 404 and resp.json()["error"] == "not_found"


def test_sub_paths_head_and_options_are_captured_too(api: str) -> None:
    """The spec's receive_url captures any method: senders that append their own path
    (receive_url + "/github/push") and probes with HEAD or OPTIONS included."""
    body = provision(api, "/webhook/new", "any-path").json()
    url, token = body["receive_url"], body["token"]
    close = {"Connection": "close"}
    pushed = requests.post(
        f"{url}/github/push?x=1", json={"ref": "main"}, headers=close, timeout=10
    )
    head = requests.head(f"{url}/a/b", headers=close, timeout=10)
    options = requests.options(url, headers=close, timeout=10)
    assert [r.status_code for r in (pushed, head, options)] == [200, 200, 200]
    assert head.content == b""
    listed = requests.get(f"{api}/api/v1/webhooks/{token}/requests", headers=close, timeout=10)
    got = [(r["method"], r["path"]) for r in listed.json()["requests"]]
    assert got == [
        ("OPTIONS", "/webhook/receive/{token}"),
        ("HEAD", "/webhook/receive/{token}/a/b"),
        ("POST", "/webhook/receive/{token}/github/push"),
    ]
    elsewhere = requests.post(f"{api}/webhook/receive/unknown/github/push", timeout=10)
    assert elsewhere.status_code == 404 and elsewhere.json()["error"] == "not_found"
