"""Rotating INSTANODE_JWT_SECRET: with the old secret listed in INSTANODE_JWT_PREVIOUS_SECRETS,
what it signed (sessions, upgrade JWTs) still verifies and what it sealed (idempotency replays,
the outbox, resource tokens) still opens; once it is dropped, its tokens are refused. API keys
are found by an unkeyed hash, so they outlive any rotation. Key A is the stack's own secret."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

from chalicelib import deps
from chalicelib.config import Settings
from devstack.stack import Stack
from tests.conftest import fresh_ip, magic_link
from tests.functional.accounts_fixtures import (
    api_key,
    call,
    claim,
    follow,
    made,
    new_email,
    session_of,
    sign_in,
)
from tests.functional.conftest import scan, settings

KEY_B = "rotated-signing-key-" + "b" * 32
KEY_C = "another-signing-key-" + "c" * 32
Rotate = Callable[..., None]


@pytest.fixture
def rotate(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Rotate:
    """``rotate(current, *previous)``: the app's secrets from now on (mail back on the stack's
    server), as an operator's new deployment would have them."""

    def _rotate(current: str, *previous: str) -> None:
        monkeypatch.setenv("INSTANODE_JWT_SECRET", current)
        monkeypatch.setenv("INSTANODE_JWT_PREVIOUS_SECRETS", json.dumps(previous))
        monkeypatch.setenv("INSTANODE_MAIL_URL", app_env["INSTANODE_MAIL_URL"])
        deps.reset()

    return _rotate


@pytest.fixture
def key_a(app_env: dict[str, str]) -> str:
    return app_env["INSTANODE_JWT_SECRET"]


def me(client: Client, bearer: str) -> tuple[int, str | None]:
    reply = call(client, "GET", "/auth/me", bearer=bearer)
    return reply.error


# -- tokens -------------------------------------------------------------------------------------
def test_session_under_the_old_key_works_while_listed_and_not_after(
    client: Client, stack: Stack, rotate: Rotate, key_a: str
) -> None:
    session = sign_in(client, stack)
    rotate(KEY_B, key_a)
    assert me(client, session) == (200, None)
    assert me(client, sign_in(client, stack)) == (200, None)  # new ones are signed with B
    rotate(KEY_B)
    assert me(client, session) == (401, "unauthorized")


def test_upgrade_jwt_under_the_old_key_claims_while_listed(
    client: Client, stack: Stack, rotate: Rotate, key_a: str
) -> None:
    upgrade_jwt = made(client, "/webhook/new")["upgrade_jwt"]
    rotate(KEY_B, key_a)
    preview = call(client, "GET", f"/claim/preview?t={upgrade_jwt}").body
    assert preview["token_valid"] and preview["resource"]
    session = claim(client, stack, upgrade_jwt)
    [listed] = call(client, "GET", "/api/v1/resources", bearer=session).body["items"]
    assert listed["token"]  # the resource token, sealed under A, opens under B+A


def test_upgrade_jwt_under_a_dropped_key_is_refused(
    client: Client, rotate: Rotate, key_a: str
) -> None:
    upgrade_jwt = made(client, "/webhook/new")["upgrade_jwt"]
    deploy = {"upload_key": "uploads/none"}
    rotate(KEY_B, key_a)
    accepted = call(client, "POST", "/deploy/new", deploy, bearer=upgrade_jwt)
    assert accepted.error == (400, "bad_request")  # past the caller check, stopped at the upload
    rotate(KEY_B, KEY_C)
    assert call(client, "POST", "/deploy/new", deploy, bearer=upgrade_jwt).error == (
        401,
        "unauthorized",
    )
    claimed = call(client, "POST", "/claim", {"token": upgrade_jwt, "email": new_email()})
    assert claimed.error == (400, "invalid_token")
    assert not call(client, "GET", f"/claim/preview?t={upgrade_jwt}").body["token_valid"]


def test_api_key_outlives_the_rotation_and_the_drop(
    client: Client, stack: Stack, rotate: Rotate, key_a: str
) -> None:
    key = api_key(client, sign_in(client, stack))["api_token"]
    rotate(KEY_B, key_a)
    assert me(client, key) == (200, None)
    rotate(KEY_B)
    assert me(client, key) == (200, None)


# -- seals --------------------------------------------------------------------------------------
def test_idempotent_replay_sealed_under_the_old_key_replays(
    client: Client, rotate: Rotate, key_a: str
) -> None:
    ip = fresh_ip()
    first = call(client, "POST", "/db/new", {"name": "rot"}, ip=ip, Idempotency_Key="rot-1")
    assert first.status == 201 and urlsplit(first.body["connection_url"]).password
    rotate(KEY_B, key_a)
    again = call(client, "POST", "/db/new", {"name": "rot"}, ip=ip, Idempotency_Key="rot-1")
    assert (again.status, again.body) == (201, first.body)
    assert again.headers["x-idempotent-replay"] == "true"


def test_outbox_mail_sealed_under_the_old_key_is_delivered(
    client: Client, stack: Stack, monkeypatch: pytest.MonkeyPatch, rotate: Rotate, key_a: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("INSTANODE_MAIL_URL", f"smtp://127.0.0.1:{s.getsockname()[1]}")
    deps.reset()
    email = new_email()
    assert call(client, "POST", "/auth/email/start", {"email": email}).status == 200
    [pending] = [i for i in scan(deps.get_dynamo(), settings().accounts_table) if "sealed" in i]
    assert pending["pending"] == "1"
    rotate(KEY_B, key_a)
    report = deps.get_outbox().retry_pending(int(time.time()) + 120)
    assert (report.sent, report.failed) == (1, 0)
    assert session_of(follow(client, magic_link(stack, email)))


# -- configuration ------------------------------------------------------------------------------
def test_previous_secrets_come_as_a_list_from_secrets_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    value = {"INSTANODE_JWT_SECRET": KEY_B, "INSTANODE_JWT_PREVIOUS_SECRETS": [KEY_C]}
    with mock_aws():
        sm = boto3.client("secretsmanager")
        arn = sm.create_secret(Name="instanode/prod", SecretString=json.dumps(value))["ARN"]
        assert Settings.from_env({"INSTANODE_SECRETS_ARN": arn}).jwt_keys == (KEY_B, KEY_C)
