"""Rotating INSTANODE_JWT_SECRET: with the old secret listed in INSTANODE_JWT_PREVIOUS_SECRETS,
what it signed (sessions, upgrade JWTs, CLI user codes) still verifies and what it sealed
(idempotency replays, the outbox, resource tokens) still opens; once it is dropped, its tokens
are refused. ``python -m chalicelib.admin reseal`` moves what lives as long as its record to the
new key first, and the outbox gives up a mail that no key opens. API keys are found by an
unkeyed hash, so they outlive any rotation. Key A is the stack's own secret."""

from __future__ import annotations

import json
import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from urllib.parse import urlsplit

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

from chalicelib import admin, deps
from chalicelib.config import Settings
from chalicelib.deploy.backend import DeployStatus
from chalicelib.deploy.stack_store import ServiceState, StackEnv
from chalicelib.deploy.stack_store import Stack as AppStack
from chalicelib.deploy.store import SEAL_LABEL, DeploymentStore
from chalicelib.dynamo import Dynamo, Item
from chalicelib.sealing import ResealReport, Sealer
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
from tests.functional.test_accounts import cli_approve, cli_start
from tests.functional.test_deploy_records import new_app

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


def pending_mail(client: Client, monkeypatch: pytest.MonkeyPatch, email: str) -> str:
    """The outbox id of a sign-in mail to ``email`` recorded while the mail server is down
    (sealed under the current secret); ``rotate`` brings the server back."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("INSTANODE_MAIL_URL", f"smtp://127.0.0.1:{s.getsockname()[1]}")
    deps.reset()

    def outbox() -> set[str]:
        return {
            i["pk"] for i in scan(deps.get_dynamo(), settings().accounts_table) if "sealed" in i
        }

    known = outbox()
    assert call(client, "POST", "/auth/email/start", {"email": email}).status == 200
    [new] = outbox() - known
    return new


def test_outbox_gives_up_a_mail_no_key_opens_and_delivers_the_next(
    client: Client,
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    rotate: Rotate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    lost_email, kept_email = new_email(), new_email()
    lost = pending_mail(client, monkeypatch, lost_email)  # under A, dropped below
    rotate(KEY_B)
    kept = pending_mail(client, monkeypatch, kept_email)  # under B
    rotate(KEY_B)
    with caplog.at_level(logging.ERROR, "chalicelib.outbox"):
        report = deps.get_outbox().retry_pending(int(time.time()) + 120)
    assert (report.sent, report.failed) == (1, 1)
    assert session_of(follow(client, magic_link(stack, kept_email)))
    items = {i["pk"]: i for i in scan(deps.get_dynamo(), settings().accounts_table)}
    assert "pending" not in items[lost] and "pending" not in items[kept]
    assert lost in caplog.text and lost_email not in caplog.text
    again = deps.get_outbox().retry_pending(int(time.time()) + 120)
    assert (again.sent, again.failed) == (0, 0)  # given up, not retried


# -- the CLI device flow --------------------------------------------------------------------------
def test_cli_code_made_under_the_old_key_approves_while_listed_and_not_after(
    client: Client, stack: Stack, rotate: Rotate, key_a: str
) -> None:
    early, late = cli_start(client), cli_start(client)  # codes derived under A
    rotate(KEY_B, key_a)
    approved = cli_approve(client, early["session_id"], sign_in(client, stack), early["user_code"])
    assert approved.status == 200, approved
    rotate(KEY_B)
    refused = cli_approve(client, late["session_id"], sign_in(client, stack), late["user_code"])
    assert refused.error == (400, "invalid_user_code")


def test_cli_code_made_during_the_rotation_is_under_the_new_key(
    client: Client, stack: Stack, rotate: Rotate, key_a: str
) -> None:
    rotate(KEY_B, key_a)
    cli = cli_start(client)
    rotate(KEY_B)
    approved = cli_approve(client, cli["session_id"], sign_in(client, stack), cli["user_code"])
    assert approved.status == 200, approved


# -- reseal: step 2, before the previous secret is dropped ---------------------------------------
def reseal(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, dict[str, int]]]:
    """``python -m chalicelib.admin reseal`` in this process (moto's tables): the exit status
    and the counts it prints."""
    capsys.readouterr()
    status = admin.main(["reseal"])
    return status, json.loads(capsys.readouterr().out)


def app_stack(env: dict[str, str]) -> AppStack:
    """A recorded stack (a failed build: no backend is asked) with ``env`` sealed in it."""
    now, slug = int(time.time()), f"web-{secrets.token_hex(3)}"
    service = ServiceState("web", f"{slug}-web", 8080, True, 1, "ctx", DeployStatus.FAILED)
    failed = DeployStatus.FAILED
    stack = AppStack(slug, "team:t", "web", False, False, "free", (service,), failed, now, now)
    stack = replace(stack, env=StackEnv({"web": env}, {"SHARED": "s"}))
    assert deps.get_stacks().store.create(stack, max_apps=100)
    return stack


def counts(resealed: int = 0, current: int = 0, failed: int = 0) -> dict[str, int]:
    return {"resealed": resealed, "current": current, "failed": failed, "changed": 0}


def test_reseal_then_drop_the_old_key_keeps_tokens_and_env(
    client: Client,
    stack: Stack,
    rotate: Rotate,
    key_a: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    email, made_ = new_email(), made(client, "/webhook/new")
    claim(client, stack, made_["upgrade_jwt"], email)
    app = new_app(deps.get_deploys().store, "team:t")
    stacked = app_stack({"DB_PASSWORD": "hunter2"})
    rotate(KEY_B, key_a)
    assert reseal(capsys) == (
        0,
        {"resources": counts(1), "deployments": counts(1), "stacks": counts(1)},
    )
    rotate(KEY_B)
    listed = call(client, "GET", "/api/v1/resources", bearer=sign_in(client, stack, email))
    assert listed.status == 200, listed
    assert [r["token"] for r in listed.body["items"]] == [made_["token"]]
    stored_app, stored_stack = (
        deps.get_deploys().store.get(app.id),
        deps.get_stacks().store.get(stacked.slug),
    )
    assert stored_app is not None and stored_app.env == {"SECRET": "s3cret"}
    assert stored_stack is not None and stored_stack.env == stacked.env
    assert reseal(capsys) == (
        0,
        {
            "resources": counts(current=1),
            "deployments": counts(current=1),
            "stacks": counts(current=1),
        },
    )


def test_without_reseal_dropping_the_old_key_fails_and_reseal_reports_it(
    client: Client, stack: Stack, rotate: Rotate, capsys: pytest.CaptureFixture[str]
) -> None:
    email, made_ = new_email(), made(client, "/webhook/new")
    claim(client, stack, made_["upgrade_jwt"], email)
    rotate(KEY_B)  # A dropped at once
    listed = call(client, "GET", "/api/v1/resources", bearer=sign_in(client, stack, email))
    assert listed.status == 500
    status, printed = reseal(capsys)
    assert (status, printed["resources"]) == (1, counts(failed=1))


class WritesDuringScan(Dynamo):
    """The table as a reseal reads it, with ``write`` run once the whole scan was read: a
    change the API makes between the reseal's read and its write."""

    def __init__(self, db: Dynamo, write: Callable[[], None]) -> None:
        super().__init__(db.client)
        self._write = write

    def scan(self, table: str, attributes: Sequence[str]) -> Iterator[Item]:
        items = list(super().scan(table, attributes))
        self._write()
        return iter(items)


def test_reseal_loses_to_a_write_made_since_its_read(rotate: Rotate, key_a: str) -> None:
    app = new_app(deps.get_deploys().store, "team:t")
    rotate(KEY_B, key_a)
    store = deps.get_deploys().store
    seen = store.get(app.id)
    assert seen is not None

    def redeploy() -> None:
        assert store.save(replace(seen, env={"SECRET": "new"}), seen)

    s = settings()
    racing = DeploymentStore(
        WritesDuringScan(deps.get_dynamo(), redeploy),
        s.deployments_table,
        s.counters_table,
        Sealer(s.jwt_keys, SEAL_LABEL),
        s.expiry_shards,
    )
    assert racing.reseal_env() == ResealReport(changed=1)
    stored = store.get(app.id)
    assert stored is not None and stored.env == {"SECRET": "new"}


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
