"""The claim flow's bad input and edges: POST /claim, GET /claim/preview, sign-in links,
POST /auth/email/start, the recycle rule and the mail outbox (the happy paths over HTTP are in
tests/integration/test_accounts_http.py)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError
from chalice.test import Client

from chalicelib import deps
from chalicelib.accounts import SEAL_LABEL, Link, LinkPurpose
from chalicelib.claims import (
    LINK_LEASE_SECONDS,
    LINK_TTL_SECONDS,
    MAILS_PER_HOUR,
    ClaimService,
    LinkRefused,
    SignedIn,
)
from chalicelib.dynamo import Dynamo
from chalicelib.jobs.reaper import Reaper
from chalicelib.mail import build_sender
from chalicelib.models import team_owner
from chalicelib.outbox import Outbox
from chalicelib.routes import auth as auth_routes
from chalicelib.sealing import Sealer
from chalicelib.store import ResourceStore
from chalicelib.teams import TeamService
from chalicelib.tiers import all_tiers
from chalicelib.tokens import Signer
from devstack.stack import Stack
from tests.conftest import fresh_ip, magic_link
from tests.functional.accounts_fixtures import (
    OTHER_KEY,
    Reply,
    call,
    claims_of,
    follow,
    made,
    new_email,
    provision,
    session_of,
    sign_in,
    signed,
)
from tests.functional.conftest import scan, settings

DAY = 24 * 3600
LOGIN_INVALID = f"/login?error={LinkRefused.INVALID}"


def claim_with(client: Client, **body: Any) -> Reply:
    return call(client, "POST", "/claim", body)


@pytest.fixture
def upgrade_jwt(client: Client) -> str:
    """The upgrade_jwt of a fresh anonymous webhook inbox (no backend server involved)."""
    token: str = made(client, "/webhook/new")["upgrade_jwt"]
    return token


# -- POST /claim --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "email",
    [
        "",
        "plain",
        "a@b",
        "a b@example.com",
        "a@example.com\n",
        "<a@example.com>",
        "a" * 243 + "@example.com",  # 255 characters
        "a@-x.com",
        "a@[1.2.3.4]",
        123,
    ],
)
def test_claim_rejects_malformed_email(client: Client, upgrade_jwt: str, email: Any) -> None:
    reply = claim_with(client, token=upgrade_jwt, email=email)
    assert reply.error == (400, "invalid_email_format")


def test_claim_accepts_email_with_surrounding_spaces(
    client: Client, stack: Stack, upgrade_jwt: str
) -> None:
    email = new_email()
    reply = claim_with(client, token=upgrade_jwt, email=f"  {email}  ")
    assert reply.status == 200 and reply.body["email"] == email
    assert magic_link(stack, email)


def test_claim_accepts_jwt_alias(client: Client, upgrade_jwt: str) -> None:
    assert claim_with(client, jwt=upgrade_jwt, email=new_email()).status == 200


def test_claim_prefers_good_token_over_bad_jwt(client: Client, upgrade_jwt: str) -> None:
    reply = claim_with(client, token=upgrade_jwt, jwt="not-a-jwt", email=new_email())
    assert reply.status == 200


def test_claim_prefers_bad_token_over_good_jwt(client: Client, upgrade_jwt: str) -> None:
    reply = claim_with(client, token="not-a-jwt", jwt=upgrade_jwt, email=new_email())
    assert reply.error == (400, "invalid_token")


def tampered(token: str) -> str:
    """The token naming another network, its signature kept."""
    header, _, signature = token.split(".")
    claims = {**claims_of(token), "own": "fp:10.0.0.0/24"}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return ".".join([header, payload, signature])


def session_token(_: str) -> str:
    return Signer(settings().jwt_secret).session_token(
        "usr_x", "team_x", "a@x.com", int(time.time())
    )


def expired(token: str) -> str:
    claims = claims_of(token)
    issued = int(time.time()) - 8 * DAY
    return Signer(settings().jwt_secret).upgrade_token(claims["sub"], claims["own"], issued)


BAD_TOKENS: dict[str, Callable[[str], str]] = {
    "tampered": tampered,
    "other_key": lambda t: signed(claims_of(t), OTHER_KEY),
    "alg_none": lambda t: signed(claims_of(t), algorithm="none"),
    "session_jwt": session_token,
    "expired": expired,
}


@pytest.mark.parametrize("make_bad", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_claim_rejects_invalid_token(
    client: Client, upgrade_jwt: str, make_bad: Callable[[str], str]
) -> None:
    reply = claim_with(client, token=make_bad(upgrade_jwt), email=new_email())
    assert reply.error == (400, "invalid_token")


def test_claim_rejects_invalid_team_name(client: Client, upgrade_jwt: str) -> None:
    reply = claim_with(client, token=upgrade_jwt, email=new_email(), team_name="<b>team</b>")
    assert reply.error == (400, "invalid_name")


def test_claim_rejects_non_json_body(client: Client) -> None:
    reply = call(client, "POST", "/claim", "token=x&email=a@example.com")
    assert reply.error == (400, "invalid_json")


# -- GET /claim/preview -------------------------------------------------------------------------
def preview(client: Client, token: str | None) -> Reply:
    return call(client, "GET", "/claim/preview" + (f"?t={token}" if token else ""))


def test_preview_requires_token(client: Client) -> None:
    assert preview(client, None).error == (400, "bad_request")


@pytest.mark.parametrize("make_bad", [tampered, expired], ids=["bad", "expired"])
def test_preview_reports_invalid_token_without_items(
    client: Client, upgrade_jwt: str, make_bad: Callable[[str], str]
) -> None:
    reply = preview(client, make_bad(upgrade_jwt))
    assert reply.status == 200
    assert reply.body["token_valid"] is False and reply.body["items"] == []


def keys_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_in(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_in(v)}
    return set()


def test_preview_lists_only_the_networks_items_without_tokens(client: Client) -> None:
    ip = fresh_ip()
    first = made(client, "/webhook/new", name="first", ip=ip)
    second = made(client, "/webhook/new", name="second", ip=ip)
    other = made(client, "/webhook/new")
    reply = preview(client, first["upgrade_jwt"])
    assert reply.status == 200 and reply.body["token_valid"] is True
    assert sorted(i["id"] for i in reply.body["items"]) == sorted([first["id"], second["id"]])
    assert "token" not in keys_in(reply.body)
    text = json.dumps(reply.body)
    assert not any(r["token"] in text for r in (first, second, other))


def test_preview_has_no_side_effects(client: Client, stack: Stack, upgrade_jwt: str) -> None:
    tables = [settings().resources_table, settings().counters_table, settings().accounts_table]
    before = [scan(deps.get_dynamo(), t) for t in tables]
    mails = len(stack.smtp.messages())
    assert preview(client, upgrade_jwt).status == 200
    assert [scan(deps.get_dynamo(), t) for t in tables] == before
    assert len(stack.smtp.messages()) == mails


# -- sign-in links ------------------------------------------------------------------------------
def claim_service(clock: Callable[[], float]) -> ClaimService:
    """The service as deps builds it, on another clock."""
    store = ResourceStore(deps.get_dynamo(), settings())
    return ClaimService(
        settings(), deps.get_accounts(), store, deps.get_teams(), deps.get_outbox, clock
    )


def test_follow_expired_link_lands_on_login_without_cookie(client: Client, stack: Stack) -> None:
    email = new_email()
    sent_at = time.time() - LINK_TTL_SECONDS - 60
    claim_service(lambda: sent_at).start_login(email, None)
    reply = follow(client, magic_link(stack, email))
    assert reply.status == 302 and reply.headers["location"] == LOGIN_INVALID
    assert "set-cookie" not in reply.headers


def test_follow_unknown_link_lands_on_login_without_cookie(client: Client) -> None:
    reply = follow(client, "/auth/email/callback?token=" + "A" * 43)
    assert reply.status == 302 and reply.headers["location"] == LOGIN_INVALID
    assert "set-cookie" not in reply.headers


def landing(client: Client, stack: Stack, next_path: str) -> str:
    email = new_email()
    call(client, "POST", "/auth/email/start", {"email": email, "next": next_path})
    reply = follow(client, magic_link(stack, email))
    session_of(reply)
    return reply.headers["location"]


@pytest.mark.parametrize("next_path", ["//evil.example", "https://evil.example"])
def test_follow_link_ignores_offsite_next(client: Client, stack: Stack, next_path: str) -> None:
    assert landing(client, stack, next_path) == "/dashboard"


def test_follow_link_keeps_same_site_next(client: Client, stack: Stack) -> None:
    assert landing(client, stack, "/cli/approve?session=x") == "/cli/approve?session=x"


class Crash(BaseException):
    """The process dying midway (a Lambda timeout, a crash): nothing after it runs."""


class FlakyDynamo(Dynamo):
    """The real DynamoDB, except that its ``fail_on``-th transaction raises ``failure`` (once),
    as a throttled or failing DynamoDB (or a dying process) would."""

    def __init__(self, real: Dynamo, fail_on: int, failure: BaseException) -> None:
        super().__init__(real.client)
        self.transactions = 0
        self._fail_on = fail_on
        self._failure = failure

    def transact(self, items: Sequence[dict[str, Any]]) -> None:
        self.transactions += 1
        if self.transactions == self._fail_on:
            raise self._failure
        super().transact(items)


class GatedDynamo(Dynamo):
    """The real DynamoDB, except that the first transaction waits until ``go`` is set."""

    def __init__(self, real: Dynamo) -> None:
        super().__init__(real.client)
        self.waiting = threading.Event()
        self.go = threading.Event()

    def transact(self, items: Sequence[dict[str, Any]]) -> None:
        if not self.waiting.is_set():
            self.waiting.set()
            assert self.go.wait(30)
        super().transact(items)


INJECTED = ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "Transact")


def claim_service_moving_with(db: Dynamo, clock: Callable[[], float] = time.time) -> ClaimService:
    """The service as deps builds it, except that adoption moves resources through ``db``."""
    teams = TeamService(settings(), db, deps.get_accounts(), all_tiers(), deps.get_provider)
    store = ResourceStore(deps.get_dynamo(), settings())
    return ClaimService(settings(), deps.get_accounts(), store, teams, deps.get_outbox, clock)


def claim_service_failing_move(nth: int, failure: BaseException = INJECTED) -> ClaimService:
    """The service as deps builds it, except that adoption fails its ``nth`` resource move."""
    return claim_service_moving_with(FlakyDynamo(deps.get_dynamo(), nth, failure))


def pending_claim(client: Client, stack: Stack) -> tuple[list[dict[str, Any]], str, str]:
    """Three anonymous resources of one network, claimed by mail: them, their owner and the
    sign-in link (not followed yet)."""
    ip = fresh_ip()
    network = [made(client, path, ip=ip) for path in ("/webhook/new", "/storage/new", "/db/new")]
    email = new_email()
    assert claim_with(client, token=network[0]["upgrade_jwt"], email=email).status == 200
    return network, claims_of(network[0]["upgrade_jwt"])["own"], magic_link(stack, email)


def secret_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def refused(reply: Reply, why: LinkRefused) -> bool:
    return reply.headers["location"] == f"/login?error={why}" and "set-cookie" not in reply.headers


def team_resource_ids(link: Link) -> set[str]:
    user = deps.get_accounts().user_by_email(link.email)
    assert user is not None
    store = ResourceStore(deps.get_dynamo(), settings())
    return {r.id for r in store.active_owned(team_owner(user.team_id))}


def test_follow_claim_link_again_after_failure_midway_finishes_the_claim(
    client: Client, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    network, owner, link = pending_claim(client, stack)
    store = ResourceStore(deps.get_dynamo(), settings())
    failing = claim_service_failing_move(2)
    monkeypatch.setattr(auth_routes, "get_claims", lambda: failing)

    assert refused(follow(client, link), LinkRefused.INCOMPLETE)  # not a 500 page
    assert len(store.active_owned(owner)) == 2  # the first resource moved, then the failure

    monkeypatch.undo()
    session = session_of(follow(client, link))  # the same link again, at once
    listed = call(client, "GET", "/api/v1/resources", bearer=session)
    assert sorted(i["id"] for i in listed.body["items"]) == sorted(r["id"] for r in network)
    assert store.active_owned(owner) == []

    assert refused(follow(client, link), LinkRefused.INVALID)


def test_follow_claim_link_after_a_crash_midway_finishes_once_the_hold_lapses(
    client: Client, stack: Stack
) -> None:
    network, owner, link = pending_claim(client, stack)
    store = ResourceStore(deps.get_dynamo(), settings())
    with pytest.raises(Crash):
        claim_service_failing_move(2, Crash()).follow(secret_of(link))
    assert len(store.active_owned(owner)) == 2

    assert refused(follow(client, link), LinkRefused.IN_USE)  # the dead follow still holds it
    assert len(store.active_owned(owner)) == 2

    lapsed = time.time() + LINK_LEASE_SECONDS + 1
    signed_in = claim_service(lambda: lapsed).follow(secret_of(link))
    assert isinstance(signed_in, SignedIn) and signed_in.claimed == 2
    assert store.active_owned(owner) == []
    stored = deps.get_accounts().link(secret_of(link))
    assert stored is None  # used up

    assert refused(follow(client, link), LinkRefused.INVALID)


def test_follow_link_while_another_follow_holds_it_signs_in_and_adopts_once(
    client: Client, stack: Stack
) -> None:
    network, owner, link = pending_claim(client, stack)
    store = ResourceStore(deps.get_dynamo(), settings())
    held = deps.get_accounts().link(secret_of(link))
    assert held is not None
    gated = GatedDynamo(deps.get_dynamo())
    results: list[SignedIn | LinkRefused] = []
    first = threading.Thread(
        target=lambda: results.append(claim_service_moving_with(gated).follow(secret_of(link)))
    )
    first.start()
    try:
        assert gated.waiting.wait(30)  # the first follow holds the link, about to move
        assert refused(follow(client, link), LinkRefused.IN_USE)
        assert len(store.active_owned(owner)) == len(network)  # the second one moved nothing
    finally:
        gated.go.set()
        first.join(30)
    [signed_in] = results
    assert isinstance(signed_in, SignedIn) and signed_in.claimed == len(network)
    assert team_resource_ids(held) == {r["id"] for r in network}

    assert refused(follow(client, link), LinkRefused.INVALID)


def test_follow_link_past_its_expiry_is_invalid_even_after_a_crash(
    client: Client, stack: Stack
) -> None:
    _, _, link = pending_claim(client, stack)
    with pytest.raises(Crash):
        claim_service_failing_move(1, Crash()).follow(secret_of(link))
    past_expiry = time.time() + LINK_TTL_SECONDS + 1
    assert claim_service(lambda: past_expiry).follow(secret_of(link)) is LinkRefused.INVALID


@pytest.mark.usefixtures("app_env")
def test_link_is_held_by_one_follow_at_a_time_until_its_hold_lapses() -> None:
    accounts, now = deps.get_accounts(), int(time.time())
    accounts.put_link("s3cret", Link(new_email(), LinkPurpose.LOGIN, now + LINK_TTL_SECONDS))
    assert accounts.lease_link("s3cret", now, now + 60)
    assert not accounts.lease_link("s3cret", now, now + 60)  # the same instant: one wins
    assert not accounts.lease_link("s3cret", now + 59, now + 119)
    accounts.release_link("s3cret", now + 61)  # not this hold: it stays
    assert not accounts.lease_link("s3cret", now + 1, now + 61)
    assert accounts.lease_link("s3cret", now + 60, now + 120)  # lapsed
    accounts.release_link("s3cret", now + 120)
    assert accounts.lease_link("s3cret", now + 61, now + 121)  # let go
    assert not accounts.lease_link("s3cret", now + LINK_TTL_SECONDS, now + 2000)  # expired
    assert not accounts.lease_link("unknown", now, now + 60)
    assert accounts.link("unknown") is None


# -- POST /auth/email/start ---------------------------------------------------------------------
@pytest.mark.parametrize("known", [False, True], ids=["unknown", "known"])
def test_start_email_sign_in_answers_the_same_whether_known(
    client: Client, stack: Stack, known: bool
) -> None:
    email = new_email()
    if known:
        sign_in(client, stack, email)
    reply = call(client, "POST", "/auth/email/start", {"email": email})
    assert (reply.status, reply.body) == (200, {"ok": True})


def test_start_email_sign_in_rejects_malformed_email(client: Client) -> None:
    reply = call(client, "POST", "/auth/email/start", {"email": "not an email"})
    assert reply.error == (400, "invalid_email_format")


def test_start_email_sign_in_mails_an_address_at_most_five_times_an_hour(
    client: Client, stack: Stack
) -> None:
    email = new_email()
    replies = [call(client, "POST", "/auth/email/start", {"email": email}) for _ in range(7)]
    assert all((r.status, r.body) == (200, {"ok": True}) for r in replies)  # no difference shown
    stack.smtp.wait_for(email)
    assert sum(m["To"] == email for m in stack.smtp.messages()) == MAILS_PER_HOUR


def test_claim_past_the_hourly_mail_cap_is_rate_limited(client: Client, upgrade_jwt: str) -> None:
    email = new_email()
    replies = [claim_with(client, token=upgrade_jwt, email=email) for _ in range(6)]
    assert [r.status for r in replies] == [200] * MAILS_PER_HOUR + [429]
    assert replies[-1].error == (429, "rate_limited") and replies[-1].body["agent_action"]


def test_claim_accepts_team_name_with_apostrophe_and_ampersand(
    client: Client, upgrade_jwt: str
) -> None:
    reply = claim_with(client, token=upgrade_jwt, email=new_email(), team_name="Bob's R&D")
    assert reply.status == 200


# -- the recycle rule ---------------------------------------------------------------------------
def expire_everything() -> None:
    reaper = Reaper(
        settings(), deps.get_dynamo(), deps.get_provider, lambda: time.time() + DAY + 3600
    )
    assert reaper.run().expired >= 1


@pytest.fixture
def recycled(client: Client) -> str:
    """A network whose anonymous resource the reaper expired unclaimed."""
    ip = fresh_ip()
    made(client, "/webhook/new", ip=ip)
    expire_everything()
    return ip


@pytest.mark.parametrize("path", ["/db/new", "/cache/new"])
def test_provision_after_unclaimed_expiry_requires_claim(
    client: Client, recycled: str, path: str
) -> None:
    reply = provision(client, path, ip=recycled)
    assert reply.error == (402, "free_tier_recycle_requires_claim")
    assert urlsplit(reply.body["claim_url"]).path == "/start"
    assert reply.body["agent_action"].startswith("Tell the user")


def claim_url_token(reply: Reply) -> str:
    return parse_qs(urlsplit(reply.body["claim_url"]).query)["t"][0]


def test_preview_of_recycle_claim_url_shows_blocked(client: Client, recycled: str) -> None:
    token = claim_url_token(provision(client, "/db/new", ip=recycled))
    assert preview(client, token).body["recycle_blocked"] is True


def test_provision_after_recycle_claim_succeeds(
    client: Client, stack: Stack, recycled: str
) -> None:
    token = claim_url_token(provision(client, "/db/new", ip=recycled))
    email = new_email()
    assert claim_with(client, token=token, email=email).status == 200
    session_of(follow(client, magic_link(stack, email)))
    assert provision(client, "/db/new", ip=recycled).status == 201


def test_recycle_refusal_is_not_stored_against_the_idempotency_key(
    client: Client, stack: Stack, recycled: str
) -> None:
    """A 402 the user can lift is not an answer to replay: after the claim, the very same
    request (same key) provisions."""
    refused = call(client, "POST", "/db/new", {"name": "f"}, ip=recycled, Idempotency_Key="rk")
    assert refused.error == (402, "free_tier_recycle_requires_claim")
    assert refused.headers["x-idempotency-source"] == "explicit"
    email = new_email()
    assert claim_with(client, token=claim_url_token(refused), email=email).status == 200
    session_of(follow(client, magic_link(stack, email)))
    again = call(client, "POST", "/db/new", {"name": "f"}, ip=recycled, Idempotency_Key="rk")
    assert again.status == 201 and "x-idempotent-replay" not in again.headers


def test_provision_from_other_network_is_not_blocked(client: Client, recycled: str) -> None:
    assert provision(client, "/db/new").status == 201


# -- the outbox ---------------------------------------------------------------------------------
@pytest.fixture
def mail_down(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """INSTANODE_MAIL_URL names a port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("INSTANODE_MAIL_URL", f"smtp://127.0.0.1:{port}")
    deps.reset()


def outbox_items() -> list[dict[str, Any]]:
    items = scan(deps.get_dynamo(), settings().accounts_table)
    return [i for i in items if i["pk"].startswith("outbox#")]


def working_outbox(stack: Stack) -> Outbox:
    s = settings()
    sealer = Sealer(s.jwt_secret, SEAL_LABEL)
    return Outbox(
        deps.get_dynamo(), s.accounts_table, sealer, build_sender(stack.smtp.url), s.mail_from
    )


@pytest.mark.usefixtures("mail_down")
def test_claim_with_mail_down_answers_and_keeps_the_mail_pending(
    client: Client, upgrade_jwt: str
) -> None:
    assert claim_with(client, token=upgrade_jwt, email=new_email()).status == 200
    [item] = outbox_items()
    assert item["pending"] == "1" and item["attempts"] == 1


@pytest.mark.usefixtures("mail_down")
def test_retry_pending_delivers_a_working_link_once_mail_is_back(
    client: Client, stack: Stack, upgrade_jwt: str
) -> None:
    email = new_email()
    claim_with(client, token=upgrade_jwt, email=email)
    report = working_outbox(stack).retry_pending(int(time.time()) + 120)
    assert (report.sent, report.failed) == (1, 0)
    reply = follow(client, magic_link(stack, email))
    assert session_of(reply) and reply.headers["location"] == "/dashboard"


@pytest.mark.usefixtures("mail_down")
def test_send_claim_mail_never_stores_the_link_in_plain_text(
    client: Client, stack: Stack, upgrade_jwt: str
) -> None:
    email = new_email()
    claim_with(client, token=upgrade_jwt, email=email)
    pending = scan(deps.get_dynamo(), settings().accounts_table)
    working_outbox(stack).retry_pending(int(time.time()) + 120)
    secret = parse_qs(urlsplit(magic_link(stack, email)).query)["token"][0]
    delivered = scan(deps.get_dynamo(), settings().accounts_table)
    assert not any(secret in repr(item) for item in pending + delivered)
