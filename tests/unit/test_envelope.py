from __future__ import annotations

import logging

import pytest
from chalice.app import Request, Response

from chalicelib import errors
from chalicelib.envelope import envelope


def make_request() -> Request:
    event = {
        "multiValueQueryStringParameters": None,
        "headers": {},
        "pathParameters": {},
        "requestContext": {"httpMethod": "POST", "resourcePath": "/db/new", "requestId": "req-1"},
        "body": None,
        "stageVariables": {},
    }
    return Request(event)


def test_envelope_hides_unexpected_errors(caplog: pytest.LogCaptureFixture) -> None:
    def boom(_: Request) -> Response:
        raise RuntimeError("password=hunter2 in a driver message")

    with caplog.at_level(logging.ERROR):
        resp = envelope(make_request(), boom)
    assert resp.status_code == 500
    assert resp.body == {
        "ok": False,
        "error": "internal_error",
        "message": "An internal error occurred.",
        "request_id": "req-1",
    }
    assert "hunter2" not in str(resp.body)


def test_envelope_renders_api_errors_with_extra_fields() -> None:
    def limited(_: Request) -> Response:
        raise errors.DailyLimitReachedError(
            "limit",
            agent_action="Tell the user.",
            headers={"Retry-After": "9"},
            retry_after_seconds=9,
        )

    resp = envelope(make_request(), limited)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "9"
    assert resp.body["retry_after_seconds"] == 9 and resp.body["agent_action"] == "Tell the user."
    assert resp.headers["X-Request-Id"] == "req-1"


def test_envelope_rewrites_chalice_error_bodies() -> None:
    def chalice_415(_: Request) -> Response:
        return Response({"Code": "UnsupportedMediaType", "Message": "nope"}, status_code=415)

    resp = envelope(make_request(), chalice_415)
    assert resp.status_code == 415 and resp.body["error"] == "unsupported_content_type"


def test_envelope_passes_success_through() -> None:
    resp = envelope(make_request(), lambda _: Response({"ok": True}, status_code=201))
    assert resp.status_code == 201 and resp.body == {"ok": True}
