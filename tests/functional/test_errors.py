"""Every bad input gets the JSON envelope with the right status and code."""

from __future__ import annotations

import json

import pytest
from chalice.test import Client

from tests.conftest import fresh_ip
from tests.functional.conftest import Post

pytestmark = pytest.mark.usefixtures("app_env")

MULTIPART_WITHOUT_BOUNDARY = b"--x\r\n\r\n--x--\r\n"
BAD_BODIES = [
    ({}, 400, "name_required"),
    ({"name": ""}, 400, "name_required"),
    ({"name": None}, 400, "name_required"),
    ({"name": "x" * 65}, 400, "invalid_name"),
    ({"name": "-x"}, 400, "invalid_name"),
    ({"name": 7}, 400, "invalid_name"),
    ("{not json", 400, "invalid_json"),
    ("[1, 2]", 400, "invalid_json"),
    ('"just a string"', 400, "invalid_json"),
    (b"\xff\xfe", 400, "invalid_json"),
    ("[" * 100_000 + "]" * 100_000, 400, "invalid_json"),  # json.loads: RecursionError
    ('{"a":' * 5_000 + "1" + "}" * 5_000, 400, "invalid_json"),
]


def assert_envelope(resp: object, status: int, code: str) -> dict[str, object]:
    body = json.loads(resp.body)  # type: ignore[attr-defined]
    assert resp.status_code == status, body  # type: ignore[attr-defined]
    assert body["ok"] is False and body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert body["request_id"] == resp.headers["X-Request-Id"]  # type: ignore[attr-defined]
    return body


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES)
@pytest.mark.parametrize("path", ["/db/new", "/vector/new"])
def test_bad_body_gets_envelope(
    post: Post, path: str, body: object, status: int, code: str
) -> None:
    assert_envelope(post(path, body), status, code)


def test_missing_name_tells_the_agent_what_to_do(post: Post) -> None:
    body = assert_envelope(post("/db/new", {}), 400, "name_required")
    action = str(body["agent_action"])
    assert "name" in action and len(action) <= 280


def test_empty_body_without_content_type_is_name_required(client: Client) -> None:
    resp = client.http.post("/db/new", headers={"X-Forwarded-For": fresh_ip()}, body=b"")
    assert_envelope(resp, 400, "name_required")


def test_form_encoded_body_is_unsupported_content_type(client: Client) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    resp = client.http.post("/db/new", headers=headers, body=b"name=x")
    body = assert_envelope(resp, 415, "unsupported_content_type")
    assert "application/json" in str(body["agent_action"])


def test_wrong_method_is_405_envelope(client: Client) -> None:
    resp = client.http.get("/db/new")
    assert_envelope(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "POST"


def test_multipart_without_a_boundary_is_400(client: Client) -> None:
    headers = {"Content-Type": "multipart/form-data", "X-Forwarded-For": fresh_ip()}
    resp = client.http.post("/stacks/new", headers=headers, body=MULTIPART_WITHOUT_BOUNDARY)
    assert_envelope(resp, 400, "bad_request")


def test_charset_in_json_content_type_is_accepted(post: Post) -> None:
    resp = post("/db/new", {"name": "a"}, Content_Type="application/json; charset=utf-8")
    assert resp.status_code == 201
