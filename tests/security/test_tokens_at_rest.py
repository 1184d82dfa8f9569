"""No bearer secret can be read from a copy of any table (issue 12, item 7).

Over HTTP against the local stack, as tenants do: one resource of every kind (with an
``Idempotency-Key``, so each sealed response is stored for replays), a team signed in by its
emailed link with an API key, a CLI logged in by the device flow, a claim and a sign-in link
left unfollowed, a captured webhook request, a rotated storage token and a deletion asked for by
mail. Then every item of every DynamoDB table (boto3 against the stack's moto server) is
searched for each raw secret: resource tokens (current and rotated away), upgrade JWTs, backend
passwords and the NATS seed, the session JWT, API keys, CLI session ids, sign-in link secrets
and the deletion token.

The migration: a record written as the old code wrote it (``token`` in clear) and a stored
request whose path holds the token keep working, and hold no plaintext after the first read
(the lazy rewrite) or one pass of ``seal_plain_tokens`` / ``redact_token_paths``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
import requests

from chalicelib.config import Settings
from chalicelib.deploy.backend import DeployStatus
from chalicelib.deploy.store import SEAL_LABEL, Deployment, DeploymentStore
from chalicelib.dynamo import Dynamo, from_wire, to_wire
from chalicelib.inbox import Inbox
from chalicelib.sealing import Sealer
from chalicelib.store import ResourceStore
from devstack.stack import Stack
from tests.conftest import fresh_ip, magic_link
from tests.integration.conftest import admin, provision

pytestmark = pytest.mark.integration
KINDS = (
    "/db/new",
    "/vector/new",
    "/cache/new",
    "/nosql/new",
    "/queue/new",
    "/storage/new",
    "/webhook/new",
)
Secrets = dict[str, str]  # what it is -> its raw value


# -- the platform's own view: its tables on the stack's moto server ------------------------------
@dataclass(frozen=True)
class Platform:
    settings: Settings
    db: Dynamo

    def resources(self) -> ResourceStore:
        return ResourceStore(self.db, self.settings)

    def inbox(self) -> Inbox:
        s = self.settings
        return Inbox(self.db, s.webhook_requests_table, s.counters_table)

    def deployments(self) -> DeploymentStore:
        s = self.settings
        sealer = Sealer(s.jwt_secret, SEAL_LABEL)
        return DeploymentStore(
            self.db, s.deployments_table, s.counters_table, sealer, s.expiry_shards
        )

    def item(self, table: str, key: dict[str, Any]) -> dict[str, Any]:
        out = self.db.client.get_item(TableName=table, Key=to_wire(key), ConsistentRead=True)
        return from_wire(out["Item"])


def platform_of(stack: Stack) -> Platform:
    """The platform's tables as the API server of ``stack`` uses them."""
    env = {**os.environ, **stack.env()}
    client = boto3.client(
        "dynamodb",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    return Platform(Settings.from_env(env), Dynamo(client))


@pytest.fixture(scope="module")
def platform(stack: Stack) -> Platform:
    return platform_of(stack)


def stored_values(value: Any) -> Iterator[bytes]:
    """Every string and binary value of a DynamoDB item in wire format (keys included)."""
    if isinstance(value, dict):
        for inner in value.values():
            yield from stored_values(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from stored_values(inner)
    elif isinstance(value, str):
        yield value.encode()
    elif isinstance(value, bytes):
        yield value


def leaks(platform: Platform, found: Secrets) -> list[str]:
    """``<secret> in <table>`` for each secret whose raw value some stored item holds."""
    client = platform.db.client
    out = set()
    for table in client.list_tables()["TableNames"]:
        for page in client.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                values = list(stored_values(item))
                out |= {
                    f"{name} in {table}"
                    for name, secret in found.items()
                    if any(secret.encode() in v for v in values)
                }
    return sorted(out)


# -- tenants, as their clients see the API -------------------------------------------------------
def new_email() -> str:
    return f"rest{uuid.uuid4().hex[:12]}@example.com"


def link_secret(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


@dataclass(frozen=True)
class Team:
    email: str
    owner: str  # team:<id>, as records name it
    session: requests.Session  # signed in: carries the session cookie
    api_key: str  # scope write


def sign_in(api: str, stack: Stack, found: Secrets | None = None) -> Team:
    """A new team: signed in through its emailed link, with an API key (scope write)."""
    email = new_email()
    assert requests.post(f"{api}/auth/email/start", json={"email": email}, timeout=10).ok
    link = magic_link(stack, email)
    session = requests.Session()
    assert session.get(link, allow_redirects=False, timeout=10).status_code == 302
    made = session.post(
        f"{api}/api/v1/api-keys", json={"name": "ci", "scope": "write"}, timeout=10
    ).json()
    if found is not None:
        found["followed sign-in link"] = link_secret(link)
        found["session jwt"] = session.cookies["instanode_session"]
        found["api key"] = made["api_token"]
    me = session.get(f"{api}/auth/me", timeout=10).json()
    return Team(email, f"team:{me['team']['id']}", session, made["api_token"])


def made(api: str, path: str, name: str = "rest", **headers: str) -> dict[str, Any]:
    reply = provision(api, path, name, ip=fresh_ip(), **headers)
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


def bearer(team: Team) -> dict[str, str]:
    return {"Authorization": f"Bearer {team.api_key}"}


def team_app(platform: Platform, owner: str) -> Deployment:
    """A recorded app of ``owner`` (a finished build: no backend is asked about it)."""
    now = int(time.time())
    app_id = "app_" + secrets.token_hex(8)
    app = Deployment(
        id=app_id,
        owner=owner,
        name="web",
        slug=f"web-{app_id[4:10]}",
        url="http://web.localhost",
        port=8080,
        revision=1,
        context_key=f"deploys/{app_id}/1.tar.gz",
        status=DeployStatus.FAILED,
        ttl_policy="permanent",
        created_at=now,
        updated_at=now,
        env={"API_SECRET": "app-env-secret"},
    )
    assert platform.deployments().create(app, max_apps=100)
    return app


# -- what each flow leaves in the tables ---------------------------------------------------------
def resource_secrets(api: str) -> Secrets:
    """One resource of every kind: its token, upgrade JWT and backend credentials."""
    found: Secrets = {}
    for path in KINDS:
        kind = path.split("/")[1]
        body = made(api, path, **{"Idempotency-Key": str(uuid.uuid4())})
        found[f"{kind} token"] = body["token"]
        found[f"{kind} upgrade_jwt"] = body["upgrade_jwt"]
        password = urlsplit(body.get("connection_url", "")).password
        if password:
            found[f"{kind} password"] = unquote(password)
        if "credentials" in body:
            found[f"{kind} seed"] = body["credentials"]["nats_nkey"]
    return found


def webhook_capture_secrets(api: str) -> Secrets:
    inbox = made(api, "/webhook/new", "captured")
    sent = requests.post(f"{inbox['receive_url']}?source=ci", data=b"captured", timeout=10)
    assert sent.status_code == 200
    listed = requests.get(f"{api}/api/v1/webhooks/{inbox['token']}/requests", timeout=10)
    assert listed.json()["requests"][0]["path"].endswith("/webhook/receive/{token}")
    return {"captured webhook token": inbox["token"]}


def team_secrets(api: str, stack: Stack, platform: Platform) -> Secrets:
    """A team's session and key, a rotated storage token, a CLI login, a deletion token."""
    found: Secrets = {}
    team = sign_in(api, stack, found)
    storage = team.session.post(f"{api}/storage/new", json={"name": "kept"}, timeout=30).json()
    rotated = team.session.post(
        f"{api}/api/v1/resources/{storage['id']}/rotate-credentials", timeout=10
    ).json()
    found |= {"storage token rotated away": storage["token"], "rotated token": rotated["token"]}
    found |= cli_secrets(api, team)
    app = team_app(platform, team.owner)
    asked = team.session.delete(f"{api}/api/v1/deployments/{app.id}", timeout=10)
    assert asked.status_code == 202, asked.text
    mail = stack.smtp.wait_for(team.email).get_body(("plain",))
    assert mail is not None
    line = next(ln for ln in mail.get_content().splitlines() if ln.startswith("Confirmation"))
    found["deletion token"] = line.rsplit(" ", 1)[-1]
    found["app env value"] = "app-env-secret"
    return found


def cli_secrets(api: str, team: Team) -> Secrets:
    """A CLI login approved and polled, and one left pending."""
    started = requests.post(f"{api}/auth/cli", timeout=10).json()
    approve = f"{api}/auth/cli/{started['session_id']}/approve"
    code = {"user_code": started["user_code"]}
    assert team.session.post(approve, json=code, timeout=10).json()["status"] == "approved"
    polled = requests.get(f"{api}/auth/cli/{started['session_id']}", timeout=10).json()
    pending = requests.post(f"{api}/auth/cli", timeout=10).json()
    return {
        "cli session id": started["session_id"],
        "cli api token": polled["api_token"],
        "pending cli session id": pending["session_id"],
    }


def unfollowed_link_secrets(api: str, stack: Stack) -> Secrets:
    """A claim and a sign-in, both mailed and never followed (their links wait in the table)."""
    upgrade_jwt = made(api, "/webhook/new", "to-claim")["upgrade_jwt"]
    claimer, signer = new_email(), new_email()
    claim = {"token": upgrade_jwt, "email": claimer}
    assert requests.post(f"{api}/claim", json=claim, timeout=10).status_code == 200
    assert requests.post(f"{api}/auth/email/start", json={"email": signer}, timeout=10).ok
    return {
        "unfollowed claim link": link_secret(magic_link(stack, claimer)),
        "unfollowed sign-in link": link_secret(magic_link(stack, signer)),
    }


def test_no_table_holds_any_bearer_secret_in_clear(
    api: str, stack: Stack, platform: Platform
) -> None:
    found = {
        **resource_secrets(api),
        **webhook_capture_secrets(api),
        **team_secrets(api, stack, platform),
        **unfollowed_link_secrets(api, stack),
    }
    assert leaks(platform, found) == []


# -- the migration of old-format records ---------------------------------------------------------
def old_format(platform: Platform, record_id: str, token: str) -> str:
    """Rewrite a record as the old code stored it (its token in clear); its inbox name."""
    table = platform.settings.resources_table
    item = platform.item(table, {"id": record_id})
    legacy = {k: v for k, v in item.items() if k not in ("token_hash", "token_sealed")}
    platform.db.put_item(table, {**legacy, "token": token})
    return str(item["namespace"])


def old_capture(platform: Platform, inbox: str, token: str) -> None:
    """A request stored as the old code stored it: its path holds the inbox's token."""
    platform.db.put_item(
        platform.settings.webhook_requests_table,
        {
            "inbox": inbox,
            "slot": 0,
            "seq": 0,
            "method": "POST",
            "path": f"/webhook/receive/{token}",
            "query": {},
            "headers": {},
            "body": b"before",
            "body_size": 6,
            "source_ip": "10.0.0.1",
            "received_at": int(time.time() * 1000) - 60_000,
        },
    )


def old_inbox(api: str, platform: Platform) -> dict[str, Any]:
    """A webhook inbox whose record and stored request are of the old format."""
    inbox = made(api, "/webhook/new", "legacy")
    namespace = old_format(platform, inbox["id"], inbox["token"])
    old_capture(platform, namespace, inbox["token"])
    assert leaks(platform, {"token": inbox["token"]}) == [
        f"token in {platform.settings.resources_table}",
        f"token in {platform.settings.webhook_requests_table}",
    ]
    return inbox


def assert_record_migrated(platform: Platform, inbox: dict[str, Any]) -> None:
    record = platform.item(platform.settings.resources_table, {"id": inbox["id"]})
    assert "token" not in record
    assert record["token_hash"] == hashlib.sha256(inbox["token"].encode()).hexdigest()
    assert platform.resources().token_of(platform.resources().get(inbox["id"])) == inbox["token"]


def test_old_format_record_is_rewritten_when_first_read_and_keeps_working(
    api: str, platform: Platform
) -> None:
    inbox = old_inbox(api, platform)
    sent = requests.post(inbox["receive_url"], data=b"after", timeout=10)
    assert sent.status_code == 200
    listed = requests.get(f"{api}/api/v1/webhooks/{inbox['token']}/requests", timeout=10)
    assert [r["body_text"] for r in listed.json()["requests"]] == ["after", "before"]
    assert_record_migrated(platform, inbox)
    table = platform.settings.resources_table
    assert f"token in {table}" not in leaks(platform, {"token": inbox["token"]})


def seal_tokens(stack: Stack) -> dict[str, Any]:
    """The operator's one-off pass: ``python -m chalicelib.admin seal-tokens``."""
    return admin(stack, "seal-tokens")


def test_one_pass_rewrites_old_format_records_nobody_read(
    api: str, platform: Platform, stack: Stack
) -> None:
    inbox = old_inbox(api, platform)
    first = seal_tokens(stack)
    assert first["records_sealed"] >= 1 and first["request_paths_redacted"] >= 1, first
    assert leaks(platform, {"token": inbox["token"]}) == []
    again = seal_tokens(stack)  # and a second pass finds nothing
    assert again == {"records_sealed": 0, "request_paths_redacted": 0}, again
    assert_record_migrated(platform, inbox)
    listed = requests.get(f"{api}/api/v1/webhooks/{inbox['token']}/requests", timeout=10)
    assert [r["path"] for r in listed.json()["requests"]] == ["/webhook/receive/{token}"]
