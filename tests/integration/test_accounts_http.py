"""Claim, sign-in, device flow, team API and tiers over HTTP against the real stack: mail goes
through the stack's SMTP server, credentials are tried on the real Postgres/Redis servers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pg8000.native
import pytest
import redis
import requests

from chalicelib.billing import razorpay_signature
from devstack.stack import Stack
from tests.conftest import connect, fresh_ip, magic_link
from tests.integration.conftest import admin, provision

pytestmark = pytest.mark.integration


def new_email() -> str:
    return f"it{uuid.uuid4().hex[:12]}@example.com"


def sign_in(api: str, stack: Stack, email: str) -> requests.Session:
    """A browser-like session signed in through the emailed link."""
    assert requests.post(f"{api}/auth/email/start", json={"email": email}, timeout=10).ok
    session = requests.Session()
    reply = session.get(magic_link(stack, email), allow_redirects=False, timeout=10)
    assert reply.status_code == 302 and reply.headers["Location"] == "/dashboard"
    assert "instanode_session" in session.cookies
    return session


def claim(api: str, stack: Stack, upgrade_jwt: str, email: str) -> requests.Session:
    sent = requests.post(f"{api}/claim", json={"token": upgrade_jwt, "email": email}, timeout=10)
    assert sent.status_code == 200, sent.text
    session = requests.Session()
    followed = session.get(magic_link(stack, email), allow_redirects=False, timeout=10)
    assert followed.status_code == 302 and followed.headers["Location"] == "/dashboard"
    return session


def set_tier(stack: Stack, email: str, tier: str) -> dict[str, Any]:
    return admin(stack, "set-tier", "--email", email, "--tier", tier)


def test_claim_then_upgrade_keeps_the_database_and_raises_its_limits(
    api: str, stack: Stack
) -> None:
    made = provision(api, "/db/new", name="claimed-db").json()
    preview = requests.get(f"{api}/claim/preview", params={"t": made["upgrade_jwt"]}, timeout=10)
    assert preview.json()["token_valid"] and [i["id"] for i in preview.json()["items"]] == [
        made["id"]
    ]
    email = new_email()
    session = claim(api, stack, made["upgrade_jwt"], email)
    me = session.get(f"{api}/auth/me", timeout=10).json()
    assert me["user"]["email"] == email and me["team"]["tier"] == "free"
    listed = session.get(f"{api}/api/v1/resources", timeout=10).json()["items"]
    assert [(r["id"], r["tier"]) for r in listed] == [(made["id"], "free")]
    assert listed[0]["expires_at"] == made["expires_at"]  # claiming gives an account, not time

    change = set_tier(stack, email, "hobby")

    assert change["resources"] == 1 and change["resized"] == 1 and change["failed"] == 0
    after = session.get(f"{api}/api/v1/resources/{made['id']}", timeout=10).json()
    assert after["tier"] == "hobby" and after["expires_at"] is None
    conn = connect(made["connection_url"])
    limit = conn.run("SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user")[0][0]
    conn.close()
    assert limit == 10  # hobby's Postgres connections, on the live server


def test_claim_moves_every_resource_of_the_network(api: str, stack: Stack) -> None:
    ip = fresh_ip()
    db = provision(api, "/db/new", ip=ip).json()
    cache = provision(api, "/cache/new", ip=ip).json()
    session = claim(api, stack, cache["upgrade_jwt"], new_email())
    ids = {r["id"] for r in session.get(f"{api}/api/v1/resources", timeout=10).json()["items"]}
    assert ids == {db["id"], cache["id"]}


def test_follow_link_twice_lands_on_login_with_error(api: str, stack: Stack) -> None:
    email = new_email()
    sign_in(api, stack, email)
    again = requests.get(magic_link(stack, email), timeout=10, allow_redirects=False)
    assert again.status_code == 302 and again.headers["Location"] == "/login?error=link_invalid"
    assert "instanode_session" not in again.cookies


def test_logout_revokes_the_session_everywhere(api: str, stack: Stack) -> None:
    session = sign_in(api, stack, new_email())
    token = session.cookies["instanode_session"]
    assert session.post(f"{api}/auth/logout", timeout=10).json() == {"ok": True}
    for headers in ({"Cookie": f"instanode_session={token}"}, {"Authorization": f"Bearer {token}"}):
        reply = requests.get(f"{api}/auth/me", headers=headers, timeout=10)
        assert reply.status_code == 401 and reply.json()["error"] == "unauthorized"


def test_device_flow_hands_the_cli_a_working_api_token_once(api: str, stack: Stack) -> None:
    started = requests.post(f"{api}/auth/cli", timeout=10).json()
    poll = f"{api}/auth/cli/{started['session_id']}"
    assert requests.get(poll, timeout=10).json()["status"] == "pending"
    session = sign_in(api, stack, new_email())
    code = {"user_code": started["user_code"]}
    assert session.post(f"{poll}/approve", json=code, timeout=10).json()["status"] == "approved"
    first = requests.get(poll, timeout=10).json()
    second = requests.get(poll, timeout=10).json()
    assert first["status"] == "approved" and first["api_token"].startswith("ink_")
    assert second["status"] == "approved" and "api_token" not in second
    bearer = {"Authorization": f"Bearer {first['api_token']}"}
    me = requests.get(f"{api}/auth/me", headers=bearer, timeout=10).json()
    assert me["auth"] == {"via": "api_key", "scope": "write", "expires_at": None}
    minted = requests.post(f"{api}/api/v1/api-keys", json={"name": "x"}, headers=bearer, timeout=10)
    assert minted.status_code == 403  # an API key cannot mint API keys


def test_api_key_provisions_for_its_team(api: str, stack: Stack) -> None:
    session = sign_in(api, stack, new_email())
    key = session.post(f"{api}/api/v1/api-keys", json={"name": "ci", "scope": "write"}, timeout=10)
    assert key.status_code == 201
    made = provision(
        api, "/db/new", name="team-db", Authorization=f"Bearer {key.json()['api_token']}"
    )
    assert made.status_code == 201 and made.json()["tier"] == "free"
    ids = [r["id"] for r in session.get(f"{api}/api/v1/resources", timeout=10).json()["items"]]
    assert ids == [made.json()["id"]]


def test_other_team_gets_404_for_every_resource_route(api: str, stack: Stack) -> None:
    made = provision(api, "/db/new").json()
    claim(api, stack, made["upgrade_jwt"], new_email())
    other = sign_in(api, stack, new_email())
    base = f"{api}/api/v1/resources/{made['id']}"
    replies = [
        other.get(base, timeout=10),
        other.delete(base, timeout=10),
        other.post(f"{base}/rotate-credentials", timeout=10),
    ]
    assert [(r.status_code, r.json()["error"]) for r in replies] == [(404, "not_found")] * 3
    connect(made["connection_url"]).close()  # untouched


def test_rotate_postgres_credentials_refuses_the_old_password(api: str, stack: Stack) -> None:
    made = provision(api, "/db/new").json()
    session = claim(api, stack, made["upgrade_jwt"], new_email())
    rotated = session.post(f"{api}/api/v1/resources/{made['id']}/rotate-credentials", timeout=10)
    assert rotated.status_code == 200, rotated.text
    with pytest.raises(pg8000.native.DatabaseError):
        connect(made["connection_url"])
    connect(rotated.json()["connection_url"]).close()


def test_rotate_redis_credentials_refuses_the_old_password(api: str, stack: Stack) -> None:
    made = provision(api, "/cache/new").json()
    session = claim(api, stack, made["upgrade_jwt"], new_email())
    new_url = session.post(
        f"{api}/api/v1/resources/{made['id']}/rotate-credentials", timeout=10
    ).json()["connection_url"]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(made["connection_url"]).ping()
    assert redis.Redis.from_url(new_url).ping()


def test_rotate_webhook_token_retires_the_old_receive_url(api: str, stack: Stack) -> None:
    made = provision(api, "/webhook/new").json()
    session = claim(api, stack, made["upgrade_jwt"], new_email())
    rotated = session.post(
        f"{api}/api/v1/resources/{made['id']}/rotate-credentials", timeout=10
    ).json()
    assert requests.post(made["receive_url"], data=b"x", timeout=10).status_code == 404
    assert requests.post(rotated["receive_url"], data=b"x", timeout=10).status_code == 200


def test_delete_resource_drops_the_database(api: str, stack: Stack) -> None:
    made = provision(api, "/db/new").json()
    session = claim(api, stack, made["upgrade_jwt"], new_email())
    gone = session.delete(f"{api}/api/v1/resources/{made['id']}", timeout=10).json()
    assert gone == {"ok": True, "id": made["id"], "status": "deleted"}
    with pytest.raises(pg8000.native.DatabaseError):
        connect(made["connection_url"])


def test_billing_webhook_upgrades_the_team(api: str, stack: Stack) -> None:
    made = provision(api, "/db/new").json()
    session = claim(api, stack, made["upgrade_jwt"], new_email())
    team_id = session.get(f"{api}/auth/me", timeout=10).json()["team"]["id"]
    event = {
        "event": "subscription.charged",
        "payload": {
            "subscription": {"entity": {"plan_id": "plan_local_pro", "notes": {"team_id": team_id}}}
        },
    }
    body = json.dumps(event).encode()
    secret = stack.env()["INSTANODE_RAZORPAY_WEBHOOK_SECRET"]
    forged = requests.post(
        f"{api}/webhooks/razorpay",
        data=body,
        headers={"Content-Type": "application/json", "X-Razorpay-Signature": "0" * 64},
        timeout=10,
    )
    assert forged.status_code == 401
    signed = requests.post(
        f"{api}/webhooks/razorpay",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Razorpay-Signature": razorpay_signature(body, secret),
        },
        timeout=10,
    )
    assert signed.json()["matched"] is True
    me = session.get(f"{api}/auth/me", timeout=10).json()["team"]
    assert me["tier"] == "pro" and me["default_deployment_ttl_policy"] == "permanent"
