"""The accounts API's bad input and edges: sessions, API keys, the CLI device flow, the team's
resources, tiers and billing (the happy paths over HTTP are in
tests/integration/test_accounts_http.py)."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import deps, errors
from chalicelib.billing import razorpay_signature
from chalicelib.devices import MAX_CODE_ATTEMPTS, SESSION_SECONDS, DeviceFlow
from chalicelib.models import team_owner
from chalicelib.store import ResourceStore
from chalicelib.tokens import Signer
from devstack.stack import Stack
from tests.functional.accounts_fixtures import (
    OTHER_KEY,
    SESSION_COOKIE,
    Reply,
    api_key,
    call,
    claims_of,
    made,
    provision,
    sign_in,
    signed,
)
from tests.functional.conftest import settings

DAY = 24 * 3600


@pytest.fixture
def session(client: Client, stack: Stack) -> Iterator[str]:
    """A signed-in session of a new user (and team) on the free tier. Afterwards the team's
    live resources are deleted (paid tiers never expire them, so the reaper would not)."""
    token = sign_in(client, stack)
    yield token
    owner = team_owner(claims_of(token)["team"])
    for r in ResourceStore(deps.get_dynamo(), settings()).active_owned(owner):
        deps.get_resources().delete(owner, r.id)


def me(client: Client, bearer: str | None = None, **headers: str) -> Reply:
    return call(client, "GET", "/auth/me", bearer=bearer, **headers)


def team_id_of(client: Client, session: str) -> str:
    team_id: str = me(client, session).body["team"]["id"]
    return team_id


# -- sessions -----------------------------------------------------------------------------------
def test_get_me_without_credentials_is_unauthorized(client: Client) -> None:
    assert me(client).error == (401, "unauthorized")


def expired_session(token: str) -> str:
    claims = claims_of(token)
    issued = int(time.time()) - DAY - 60
    return Signer(settings().jwt_secret).session_token(
        claims["sub"], claims["team"], claims["email"], issued
    )


BAD_SESSIONS = {
    "other_key": lambda t: signed(claims_of(t), OTHER_KEY),
    "alg_none": lambda t: signed(claims_of(t), algorithm="none"),
    "expired": expired_session,
}


@pytest.mark.parametrize("make_bad", BAD_SESSIONS.values(), ids=BAD_SESSIONS.keys())
def test_get_me_with_forged_or_expired_session_is_unauthorized(
    client: Client, session: str, make_bad: Any
) -> None:
    bad = make_bad(session)
    assert me(client, bad).error == (401, "unauthorized")
    assert me(client, Cookie=f"{SESSION_COOKIE}={bad}").error == (401, "unauthorized")


def test_get_me_with_upgrade_jwt_cookie_is_unauthorized(client: Client) -> None:
    upgrade_jwt = made(client, "/webhook/new")["upgrade_jwt"]
    assert me(client, Cookie=f"{SESSION_COOKIE}={upgrade_jwt}").error == (401, "unauthorized")


def test_logout_twice_is_unauthorized_the_second_time(client: Client, session: str) -> None:
    assert call(client, "POST", "/auth/logout", bearer=session).status == 200
    assert call(client, "POST", "/auth/logout", bearer=session).error == (401, "unauthorized")


def test_get_me_with_non_bearer_scheme_is_unauthorized(client: Client, session: str) -> None:
    assert me(client, Authorization=f"Basic {session}").error == (401, "unauthorized")


# -- API keys -----------------------------------------------------------------------------------
@pytest.fixture
def team_webhook(client: Client, session: str) -> dict[str, Any]:
    """A webhook inbox of the session's team."""
    return made(client, "/webhook/new", name="team-hook", bearer=session)


@pytest.mark.parametrize("method,suffix", [("DELETE", ""), ("POST", "/rotate-credentials")])
def test_change_resource_with_read_key_is_forbidden(
    client: Client, session: str, team_webhook: dict[str, Any], method: str, suffix: str
) -> None:
    key = api_key(client, session, "read")["api_token"]
    path = f"/api/v1/resources/{team_webhook['id']}{suffix}"
    assert call(client, method, path, bearer=key).error == (403, "insufficient_scope")


def test_list_resources_with_read_key_succeeds(
    client: Client, session: str, team_webhook: dict[str, Any]
) -> None:
    key = api_key(client, session, "read")["api_token"]
    listed = call(client, "GET", "/api/v1/resources", bearer=key)
    assert listed.status == 200 and [i["id"] for i in listed.body["items"]] == [team_webhook["id"]]


def test_use_deleted_key_is_unauthorized(client: Client, session: str) -> None:
    key = api_key(client, session, "write")
    assert call(client, "DELETE", f"/api/v1/api-keys/{key['id']}", bearer=session).status == 200
    assert me(client, key["api_token"]).error == (401, "unauthorized")


def test_create_key_with_api_key_is_forbidden(client: Client, session: str) -> None:
    key = api_key(client, session, "admin")["api_token"]
    reply = call(client, "POST", "/api/v1/api-keys", {"name": "x"}, bearer=key)
    assert reply.error == (403, "insufficient_scope")


def test_create_key_rejects_unknown_scope(client: Client, session: str) -> None:
    reply = call(client, "POST", "/api/v1/api-keys", {"name": "x", "scope": "root"}, bearer=session)
    assert reply.error == (400, "bad_request")


def test_list_keys_never_shows_the_secret(client: Client, session: str) -> None:
    secrets = [api_key(client, session, scope)["api_token"] for scope in ("read", "write")]
    listed = call(client, "GET", "/api/v1/api-keys", bearer=session)
    assert listed.status == 200 and len(listed.body["items"]) == 2
    assert not any(s in json.dumps(listed.body) for s in secrets)
    assert all(set(k) == {"id", "name", "scope"} for k in listed.body["items"])


# -- the CLI device flow ------------------------------------------------------------------------
USER_CODE = re.compile(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}")


def cli_start(client: Client) -> dict[str, Any]:
    """A new device-flow session: session_id, user_code, auth_url, expires_at."""
    started = call(client, "POST", "/auth/cli")
    assert started.status == 200, started
    body: dict[str, Any] = started.body
    return body


def cli_approve(client: Client, session_id: str, bearer: str, user_code: Any) -> Reply:
    body = {} if user_code is None else {"user_code": user_code}
    return call(client, "POST", f"/auth/cli/{session_id}/approve", body, bearer=bearer)


def cli_poll(client: Client, session_id: str) -> dict[str, Any]:
    polled = call(client, "GET", f"/auth/cli/{session_id}")
    assert polled.status == 200, polled
    body: dict[str, Any] = polled.body
    return body


def wrong_code(user_code: str) -> str:
    """Another well-formed code."""
    first = "C" if user_code[0] == "B" else "B"
    return first + user_code[1:]


def flow_at(now: float) -> DeviceFlow:
    """The device flow as deps builds it, on another clock."""
    return DeviceFlow(deps.get_settings(), deps.get_accounts(), lambda: now)


def test_start_cli_session_returns_a_user_code_the_auth_url_lacks(client: Client) -> None:
    cli = cli_start(client)
    assert USER_CODE.fullmatch(cli["user_code"])
    assert set(cli) >= {"session_id", "auth_url", "expires_at"}
    assert cli["auth_url"].endswith(f"/cli/approve?session={cli['session_id']}")
    assert cli["user_code"] != cli_start(client)["user_code"]


@pytest.mark.parametrize("session_id", ["not-a-uuid", str(uuid.uuid4())], ids=["malformed", "new"])
def test_poll_unknown_cli_session_is_not_found(client: Client, session_id: str) -> None:
    assert call(client, "GET", f"/auth/cli/{session_id}").error == (404, "session_not_found")


def test_poll_cli_session_after_five_minutes_is_expired(client: Client) -> None:
    session_id = cli_start(client)["session_id"]
    polled = flow_at(time.time() + SESSION_SECONDS + 1).poll(session_id)
    assert polled["status"] == "expired" and "api_token" not in polled


def test_approve_cli_session_with_the_right_code_hands_the_cli_a_key_once(
    client: Client, session: str
) -> None:
    cli = cli_start(client)
    typed = " " + cli["user_code"].lower().replace("-", "") + " "  # as a person may type it
    assert cli_approve(client, cli["session_id"], session, typed).body["status"] == "approved"
    first, second = cli_poll(client, cli["session_id"]), cli_poll(client, cli["session_id"])
    assert first["status"] == "approved" and first["api_token"].startswith("ink_")
    assert second["status"] == "approved" and "api_token" not in second


def test_approve_cli_session_with_a_wrong_code_is_refused_and_may_be_retried(
    client: Client, session: str
) -> None:
    cli = cli_start(client)
    refused = cli_approve(client, cli["session_id"], session, wrong_code(cli["user_code"]))
    assert refused.error == (400, "invalid_user_code")
    assert refused.body["attempts_left"] == 4 and refused.body["agent_action"]
    assert cli_poll(client, cli["session_id"]) == {
        "ok": True,
        "status": "pending",
        "expires_at": cli["expires_at"],
    }
    assert cli_approve(client, cli["session_id"], session, cli["user_code"]).status == 200
    assert cli_poll(client, cli["session_id"])["api_token"]


@pytest.mark.parametrize("user_code", [None, "", 42], ids=["missing", "empty", "number"])
def test_approve_cli_session_without_a_code_is_a_bad_request_not_an_attempt(
    client: Client, session: str, user_code: Any
) -> None:
    cli = cli_start(client)
    for _ in range(MAX_CODE_ATTEMPTS):
        reply = cli_approve(client, cli["session_id"], session, user_code)
        assert reply.error == (400, "bad_request") and reply.body["agent_action"]
    assert cli_approve(client, cli["session_id"], session, cli["user_code"]).status == 200


def test_approve_cli_session_after_five_wrong_codes_is_closed(client: Client, session: str) -> None:
    cli = cli_start(client)
    wrong = wrong_code(cli["user_code"])
    replies = [
        cli_approve(client, cli["session_id"], session, wrong) for _ in range(MAX_CODE_ATTEMPTS)
    ]
    assert {r.error for r in replies} == {(400, "invalid_user_code")}
    assert [r.body["attempts_left"] for r in replies] == [4, 3, 2, 1, 0]
    right = cli_approve(client, cli["session_id"], session, cli["user_code"])
    assert right.error == (409, "session_not_pending")
    polled = cli_poll(client, cli["session_id"])
    assert polled["status"] == "expired" and "api_token" not in polled


def test_approve_expired_cli_session_conflicts(client: Client, session: str) -> None:
    cli = cli_start(client)
    principal = deps.get_authenticator().require_session({"authorization": f"Bearer {session}"})
    with pytest.raises(errors.SessionNotPendingError):
        flow_at(time.time() + SESSION_SECONDS + 1).approve(
            principal, cli["session_id"], cli["user_code"]
        )


def test_approve_cli_session_twice_conflicts(client: Client, session: str) -> None:
    cli = cli_start(client)
    assert cli_approve(client, cli["session_id"], session, cli["user_code"]).status == 200
    again = cli_approve(client, cli["session_id"], session, cli["user_code"])
    assert again.error == (409, "session_not_pending")


def test_approve_cli_session_without_session_is_unauthorized(client: Client) -> None:
    cli = cli_start(client)
    reply = call(client, "POST", f"/auth/cli/{cli['session_id']}/approve", cli)
    assert reply.error == (401, "unauthorized")


def test_approve_cli_session_with_api_key_is_forbidden(client: Client, session: str) -> None:
    key = api_key(client, session, "admin")["api_token"]
    cli = cli_start(client)
    reply = cli_approve(client, cli["session_id"], key, cli["user_code"])
    assert reply.error == (403, "insufficient_scope")


# -- the team's resources -----------------------------------------------------------------------
def resources(client: Client, session: str, query: str = "") -> Reply:
    return call(client, "GET", f"/api/v1/resources{query}", bearer=session)


def test_list_resources_by_pages_visits_each_once(client: Client, session: str) -> None:
    ids = {made(client, "/webhook/new", name=f"hook-{i}", bearer=session)["id"] for i in range(3)}
    seen: list[str] = []
    cursor = None
    for _ in range(len(ids) + 1):
        page = resources(client, session, "?limit=1" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status == 200 and len(page.body["items"]) <= 1
        seen += [i["id"] for i in page.body["items"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert cursor is None and sorted(seen) == sorted(ids)


@pytest.mark.parametrize("limit", ["0", "101", "x", "%C2%B2"], ids=["0", "101", "x", "superscript"])
def test_list_resources_rejects_bad_limit(client: Client, session: str, limit: str) -> None:
    assert resources(client, session, f"?limit={limit}").error == (400, "bad_request")


def tampered_cursor(client: Client, session: str, **changes: Any) -> str:
    """A next_cursor this API returned to ``session``, with ``changes`` made to its key."""
    for i in range(2):
        made(client, "/webhook/new", name=f"hook-{i}", bearer=session)
    cursor = resources(client, session, "?limit=1").body["next_cursor"]
    key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    forged = json.dumps({**key, **changes}).encode()
    return base64.urlsafe_b64encode(forged).decode().rstrip("=")


def test_list_resources_rejects_cursor_of_other_owner(client: Client, session: str) -> None:
    cursor = tampered_cursor(client, session, owner=team_owner("team_someone_else"))
    assert resources(client, session, f"?cursor={cursor}").error == (400, "bad_request")


@pytest.mark.parametrize("change", [{"id": 5}, {"created_at": "x"}, {"created_at": 1.5}])
def test_list_resources_rejects_cursor_with_mistyped_key(
    client: Client, session: str, change: dict[str, Any]
) -> None:
    cursor = tampered_cursor(client, session, **change)
    assert resources(client, session, f"?cursor={cursor}").error == (400, "bad_request")


def test_get_other_teams_resource_matches_missing_resource(
    client: Client, stack: Stack, session: str
) -> None:
    theirs = made(client, "/webhook/new", bearer=sign_in(client, stack))["id"]
    missing = "res_" + "0" * 20
    replies = [
        call(client, "GET", f"/api/v1/resources/{i}", bearer=session) for i in (theirs, missing)
    ]
    assert [r.error for r in replies] == [(404, "not_found")] * 2
    bodies = [{k: v for k, v in r.body.items() if k != "request_id"} for r in replies]
    assert json.dumps(bodies[0]).replace(theirs, "<id>") == json.dumps(bodies[1]).replace(
        missing, "<id>"
    )


def presign(client: Client, token: str) -> int:
    body = {"operation": "GET", "key": "a.txt"}
    return call(client, "POST", f"/storage/{token}/presign", body).status


def test_rotate_storage_token_retires_the_old_presign(client: Client, session: str) -> None:
    storage = made(client, "/storage/new", bearer=session)
    rotated = call(
        client, "POST", f"/api/v1/resources/{storage['id']}/rotate-credentials", bearer=session
    )
    assert rotated.status == 200 and rotated.body["token"] != storage["token"]
    assert presign(client, storage["token"]) == 404
    assert presign(client, rotated.body["token"]) == 200


def test_get_deleted_resource_shows_status_deleted(
    client: Client, session: str, team_webhook: dict[str, Any]
) -> None:
    path = f"/api/v1/resources/{team_webhook['id']}"
    assert call(client, "DELETE", path, bearer=session).status == 200
    got = call(client, "GET", path, bearer=session)
    assert got.status == 200 and got.body["status"] == "deleted" and "token" not in got.body


def test_delete_resource_twice_is_not_found(
    client: Client, session: str, team_webhook: dict[str, Any]
) -> None:
    path = f"/api/v1/resources/{team_webhook['id']}"
    assert call(client, "DELETE", path, bearer=session).status == 200
    assert call(client, "DELETE", path, bearer=session).error == (404, "not_found")


# -- tiers and team settings --------------------------------------------------------------------
def test_set_tier_rejects_unknown_tier(client: Client, session: str) -> None:
    with pytest.raises(errors.BadRequestError):
        deps.get_teams().set_tier(team_id_of(client, session), "platinum")


def test_set_tier_pro_clears_expiry_and_makes_deployments_permanent(
    client: Client, session: str, team_webhook: dict[str, Any]
) -> None:
    change = deps.get_teams().set_tier(team_id_of(client, session), "pro")
    assert (change.resources, change.failed) == (1, 0)
    got = call(client, "GET", f"/api/v1/resources/{team_webhook['id']}", bearer=session)
    assert got.body["tier"] == "pro" and got.body["expires_at"] is None
    assert me(client, session).body["team"]["default_deployment_ttl_policy"] == "permanent"


def settings_patch(client: Client, bearer: str, policy: Any) -> Reply:
    body = {"default_deployment_ttl_policy": policy}
    return call(client, "PATCH", "/api/v1/team/settings", body, bearer=bearer)


def test_patch_team_settings_restores_auto_24h(client: Client, session: str) -> None:
    deps.get_teams().set_tier(team_id_of(client, session), "pro")
    reply = settings_patch(client, session, "auto_24h")
    assert reply.status == 200 and reply.body["team"]["default_deployment_ttl_policy"] == "auto_24h"
    assert me(client, session).body["team"]["default_deployment_ttl_policy"] == "auto_24h"


def test_patch_team_settings_rejects_unknown_policy(client: Client, session: str) -> None:
    assert settings_patch(client, session, "forever").error == (400, "bad_request")


def test_patch_team_settings_with_read_key_is_forbidden(client: Client, session: str) -> None:
    key = api_key(client, session, "read")["api_token"]
    assert settings_patch(client, key, "permanent").error == (403, "insufficient_scope")


def test_provision_third_postgres_on_hobby_is_refused_without_claim_url(
    client: Client, session: str
) -> None:
    deps.get_teams().set_tier(team_id_of(client, session), "hobby")
    for i in range(2):
        made(client, "/db/new", name=f"db-{i}", bearer=session)
    reply = provision(client, "/db/new", name="db-2", bearer=session)
    assert reply.error == (402, "resource_limit_reached") and "claim_url" not in reply.body


# -- billing ------------------------------------------------------------------------------------
def razorpay(client: Client, event: dict[str, Any], signature: str | None = "sign") -> Reply:
    body = json.dumps(event).encode()
    headers = {}
    if signature == "sign":
        secret = settings().razorpay_webhook_secret
        headers["X_Razorpay_Signature"] = razorpay_signature(body, secret)
    elif signature is not None:
        headers["X_Razorpay_Signature"] = signature
    return call(client, "POST", "/webhooks/razorpay", body, **headers)


def charged(plan_id: str, team_id: str = "team_x") -> dict[str, Any]:
    entity = {"plan_id": plan_id, "notes": {"team_id": team_id}}
    return {"event": "subscription.charged", "payload": {"subscription": {"entity": entity}}}


def test_receive_razorpay_event_without_signature_is_refused(client: Client) -> None:
    reply = razorpay(client, charged("plan_local_pro"), signature=None)
    assert reply.error == (401, "invalid_signature")


def test_receive_razorpay_event_with_non_ascii_signature_is_refused(client: Client) -> None:
    reply = razorpay(client, charged("plan_local_pro"), signature="é" * 64)
    assert reply.error == (401, "invalid_signature")


def test_receive_razorpay_charge_of_unexpected_shape_is_not_matched(client: Client) -> None:
    event = {"event": "subscription.charged", "payload": {"subscription": "sub_1"}}
    reply = razorpay(client, event)
    assert (reply.status, reply.body["matched"]) == (200, False)


def test_receive_razorpay_other_event_is_skipped(client: Client) -> None:
    reply = razorpay(client, {"event": "payment.failed", "payload": {}})
    assert (reply.status, reply.body["skipped"]) == (200, True)


def test_receive_razorpay_charge_of_unknown_plan_is_not_matched(
    client: Client, session: str
) -> None:
    reply = razorpay(client, charged("plan_unknown", team_id_of(client, session)))
    assert (reply.status, reply.body["matched"]) == (200, False)
    assert me(client, session).body["team"]["tier"] == "free"


def validate_promotion(client: Client, body: dict[str, Any]) -> Reply:
    return call(client, "POST", "/api/v1/billing/promotion/validate", body)


def test_validate_promotion_ignores_case(client: Client) -> None:
    reply = validate_promotion(client, {"code": "earlybird"})
    assert reply.status == 200 and reply.body["discount_percent"] == 20


def test_validate_promotion_rejects_unknown_code(client: Client) -> None:
    reply = validate_promotion(client, {"code": "NOSUCHCODE"})
    assert reply.error == (400, "invalid_promo_code")


def test_validate_promotion_requires_code(client: Client) -> None:
    assert validate_promotion(client, {}).error == (400, "bad_request")
