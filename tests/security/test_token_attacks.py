"""Attacks on the API's bearer credentials, over HTTP with ``requests`` as an attacker sends them
(issue 12: token guessing, JWT forgeries, cross-team access). Each asserts the denial.

- Token guessing: on every route that takes a resource token, random and near-miss tokens, the
  token of another kind, of a deleted resource or rotated away, the resource id and what a copy
  of the table holds (the token's hash) all get the same quick 404 envelope, never a 500, and
  nothing in the answer tells a known token from an unknown one.
- JWT forgeries: sessions with ``alg: none``, another key, another algorithm (RS256 with an
  embedded key, HS512), tampered claims or a past expiry; an upgrade JWT offered as a session
  and a session offered as an upgrade JWT. The signing key is an HMAC secret the server never
  publishes, so the RS/HS confusion (verifying HS256 with a public key) has nothing to work on:
  the RS256 case shows the algorithm is pinned. (The service-level forgeries of
  tests/unit/test_tokens.py, and tests/functional/test_accounts.py ``BAD_SESSIONS`` /
  test_claims.py ``BAD_TOKENS`` in process, are not repeated here.)
- Cross-team: team A's API key reads, deletes and rotates team B's resources and reads, changes
  and deletes team B's deploys and stacks: each answer matches the one for an id that does not
  exist, and B's records are unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from chalicelib.deploy.backend import DeployStatus
from chalicelib.deploy.stack_store import SEAL_LABEL as STACK_SEAL_LABEL
from chalicelib.deploy.stack_store import ServiceState, Stack, StackStore
from chalicelib.sealing import Sealer
from chalicelib.tokens import Signer
from devstack.stack import Stack as LocalStack
from tests.security.test_tokens_at_rest import (
    Platform,
    Team,
    bearer,
    made,
    platform_of,
    sign_in,
    team_app,
)

pytestmark = pytest.mark.integration
FAST_SECONDS = 2.0  # a guess is answered at once (no lookup slower than one DynamoDB read)


def answer(reply: requests.Response, *ids: str) -> tuple[int, str, dict[str, Any]]:
    """What a reply tells its caller: status, content type and the JSON envelope without its
    request id (and with ``ids`` replaced, to compare answers about different ids)."""
    text = reply.text
    for i in ids:
        text = text.replace(i, "<id>")
    body = json.loads(text)
    body.pop("request_id", None)
    return reply.status_code, reply.headers.get("Content-Type", ""), body


@pytest.fixture(scope="module")
def platform(stack: LocalStack) -> Platform:
    return platform_of(stack)


# -- token guessing -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def team(api: str, stack: LocalStack) -> Team:
    return sign_in(api, stack)


@pytest.fixture(scope="module")
def guesses(api: str, team: Team) -> dict[str, str]:
    """Tokens an attacker may try, each against live storage and webhook resources."""
    storage, inbox = made(api, "/storage/new"), made(api, "/webhook/new")
    token = inbox["token"]
    gone = team.session.post(f"{api}/webhook/new", json={"name": "gone"}, timeout=30).json()
    assert team.session.delete(f"{api}/api/v1/resources/{gone['id']}", timeout=10).ok
    kept = team.session.post(f"{api}/storage/new", json={"name": "kept"}, timeout=30).json()
    rotate = f"{api}/api/v1/resources/{kept['id']}/rotate-credentials"
    assert team.session.post(rotate, timeout=10).ok
    return {
        "random": str(uuid.uuid4()),
        "last character changed": token[:-1] + ("0" if token[-1] != "0" else "1"),
        "upper case": token.upper(),
        "with a suffix": token + "0",
        "storage token on the webhook routes": storage["token"],
        "webhook token on the storage route": token,
        "deleted resource": gone["token"],
        "rotated away": kept["token"],
        "resource id": inbox["id"],
        "token hash (a table copy)": hashlib.sha256(token.encode()).hexdigest(),
        "upgrade jwt": inbox["upgrade_jwt"],
        "long": "a" * 2000,
        "unicode": "t%C3%B6k%C3%A9n",
        "nul byte": "%00",
        "percent signs": "%25%25",
    }


TOKEN_ROUTES: dict[str, Callable[[str, str], requests.Response]] = {
    "presign": lambda api, t: requests.post(
        f"{api}/storage/{t}/presign", json={"operation": "GET", "key": "a.txt"}, timeout=10
    ),
    "receive": lambda api, t: requests.post(f"{api}/webhook/receive/{t}", data=b"x", timeout=10),
    "receive GET": lambda api, t: requests.get(f"{api}/webhook/receive/{t}", timeout=10),
    "list requests": lambda api, t: requests.get(f"{api}/api/v1/webhooks/{t}/requests", timeout=10),
}


@pytest.mark.parametrize("route", TOKEN_ROUTES, ids=TOKEN_ROUTES.keys())
def test_guessed_tokens_get_one_quick_not_found_that_tells_nothing(
    api: str, guesses: dict[str, str], route: str
) -> None:
    wrong = {
        name: guess
        for name, guess in guesses.items()
        if not (route == "presign" and name.startswith("storage token"))
        and not (route != "presign" and name.startswith("webhook token"))
    }
    answers: dict[Any, list[str]] = {}
    for name, guess in wrong.items():
        started = time.monotonic()
        reply = TOKEN_ROUTES[route](api, guess)
        elapsed = time.monotonic() - started
        assert reply.status_code == 404, (name, reply.status_code, reply.text)
        assert elapsed < FAST_SECONDS, (name, elapsed)
        status, content_type, body = answer(reply)
        assert content_type.startswith("application/json") and body["ok"] is False
        answers.setdefault(json.dumps([status, body], sort_keys=True), []).append(name)
    assert len(answers) == 1, answers  # unknown, deleted, rotated, other kind: one answer


def test_guessed_tokens_capture_nothing(api: str, guesses: dict[str, str]) -> None:
    inbox = made(api, "/webhook/new")
    for guess in guesses.values():
        requests.post(f"{api}/webhook/receive/{guess}", data=b"x", timeout=10)
    listed = requests.get(f"{api}/api/v1/webhooks/{inbox['token']}/requests", timeout=10)
    assert listed.json()["requests"] == []


# -- JWT forgeries ------------------------------------------------------------------------------
def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def tampered(token: str, **changes: Any) -> str:
    """``token`` with its claims changed and its signature kept."""
    header, _, signature = token.split(".")
    return ".".join([header, b64({**claims_of(token), **changes}), signature])


def rs256_with_embedded_key(token: str) -> str:
    """Signed by the attacker's RSA key, which the header carries (``jwk``)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return jwt.encode(claims_of(token), key, algorithm="RS256", headers={"jwk": jwk})


def forgeries(token: str, key: str) -> dict[str, str]:
    """JWTs an attacker makes from one of their own (``key``, the server's secret, signs only
    the case that shows another check than the signature: the pinned algorithm)."""
    claims = claims_of(token)
    return {
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "another key": jwt.encode(claims, "attacker-key-" + "k" * 32, algorithm="HS256"),
        "empty signature": ".".join([b64({"alg": "HS256", "typ": "JWT"}), b64(claims), ""]),
        "RS256 with an embedded key": rs256_with_embedded_key(token),
        "HS512 with the right key": jwt.encode(claims, key, algorithm="HS512"),
        "longer expiry (tampered)": tampered(token, exp=claims["exp"] + 365 * 24 * 3600),
    }


def session_forgeries(session: str, key: str) -> dict[str, str]:
    claims, past = claims_of(session), int(time.time()) - 2 * 24 * 3600
    signer = Signer(key)
    return {
        **forgeries(session, key),
        "another team (tampered)": tampered(session, team="team_" + "0" * 20),
        "expired": signer.session_token(claims["sub"], claims["team"], claims["email"], past),
    }


def upgrade_forgeries(upgrade_jwt: str, key: str) -> dict[str, str]:
    claims, past = claims_of(upgrade_jwt), int(time.time()) - 8 * 24 * 3600
    return {
        **forgeries(upgrade_jwt, key),
        "another network (tampered)": tampered(upgrade_jwt, own="fp:10.0.0.0/24"),
        "another resource (tampered)": tampered(upgrade_jwt, sub="res_" + "0" * 20),
        "expired": Signer(key).upgrade_token(claims["sub"], claims["own"], past),
    }


SESSION_ROUTES = {
    "me": ("GET", "/auth/me"),
    "resources": ("GET", "/api/v1/resources"),
    "new api key": ("POST", "/api/v1/api-keys"),
}


@pytest.mark.parametrize("route", SESSION_ROUTES, ids=SESSION_ROUTES.keys())
@pytest.mark.parametrize("carrier", ["bearer", "cookie"])
def test_forged_sessions_are_refused(
    api: str, stack: LocalStack, team: Team, route: str, carrier: str
) -> None:
    method, path = SESSION_ROUTES[route]
    session = team.session.cookies["instanode_session"]
    key = stack.env()["INSTANODE_JWT_SECRET"]
    for name, forged in session_forgeries(session, key).items():
        sent = (
            {"headers": {"Authorization": f"Bearer {forged}"}}
            if carrier == "bearer"
            else {"cookies": {"instanode_session": forged}}
        )
        reply = requests.request(method, f"{api}{path}", json={"name": "k"}, timeout=10, **sent)
        assert (reply.status_code, reply.json()["error"]) == (401, "unauthorized"), name


@pytest.mark.parametrize("route", SESSION_ROUTES, ids=SESSION_ROUTES.keys())
def test_upgrade_jwt_is_not_a_session(api: str, route: str) -> None:
    method, path = SESSION_ROUTES[route]
    upgrade_jwt = made(api, "/webhook/new")["upgrade_jwt"]
    for sent in (
        {"headers": {"Authorization": f"Bearer {upgrade_jwt}"}},
        {"cookies": {"instanode_session": upgrade_jwt}},
    ):
        reply = requests.request(method, f"{api}{path}", json={"name": "k"}, timeout=10, **sent)
        assert (reply.status_code, reply.json()["error"]) == (401, "unauthorized"), sent


def test_session_is_not_an_upgrade_jwt(api: str, team: Team) -> None:
    session = team.session.cookies["instanode_session"]
    claim = {"token": session, "email": "someone@example.com"}
    reply = requests.post(f"{api}/claim", json=claim, timeout=10)
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_token")
    preview = requests.get(f"{api}/claim/preview", params={"t": session}, timeout=10).json()
    assert preview["token_valid"] is False and preview["items"] == []


def test_forged_upgrade_jwts_cannot_deploy_or_claim(api: str, stack: LocalStack) -> None:
    upgrade_jwt = made(api, "/webhook/new")["upgrade_jwt"]
    key = stack.env()["INSTANODE_JWT_SECRET"]
    for name, forged in upgrade_forgeries(upgrade_jwt, key).items():
        headers = {"Authorization": f"Bearer {forged}"}
        deploy = requests.post(f"{api}/deploy/new", headers=headers, timeout=10)
        assert (deploy.status_code, deploy.json()["error"]) == (401, "unauthorized"), name
        claim = requests.post(
            f"{api}/claim", json={"token": forged, "email": "x@example.com"}, timeout=10
        )
        assert (claim.status_code, claim.json()["error"]) == (400, "invalid_token"), name


# -- cross-team access --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teams(api: str, stack: LocalStack) -> tuple[Team, Team]:
    return sign_in(api, stack), sign_in(api, stack)


def stacks(platform: Platform) -> StackStore:
    s = platform.settings
    sealer = Sealer(s.jwt_secret, STACK_SEAL_LABEL)
    return StackStore(platform.db, s.stacks_table, s.counters_table, sealer, s.expiry_shards)


def team_stack(platform: Platform, owner: str) -> Stack:
    """A recorded stack of ``owner`` (a finished, failed build: no backend is asked)."""
    now, slug = int(time.time()), f"web-{secrets.token_hex(3)}"
    service = ServiceState("web", f"{slug}-web", 8080, True, 1, "ctx", DeployStatus.FAILED)
    failed = DeployStatus.FAILED
    stack = Stack(slug, owner, "web", False, False, "free", (service,), failed, now, now)
    assert stacks(platform).create(stack, max_apps=100)
    return stack


def as_team(api: str, team: Team, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {**bearer(team), **kwargs.pop("headers", {})}
    return requests.request(method, f"{api}{path}", headers=headers, timeout=10, **kwargs)


RESOURCE_ROUTES = [
    ("GET", "/api/v1/resources/{id}"),
    ("DELETE", "/api/v1/resources/{id}"),
    ("POST", "/api/v1/resources/{id}/rotate-credentials"),
]
DEPLOY_ROUTES = [
    ("GET", "/api/v1/deployments/{id}"),
    ("GET", "/api/v1/deployments/{id}/events"),
    ("GET", "/deploy/{id}/logs"),
    ("POST", "/deploy/{id}/redeploy"),
    ("PATCH", "/deploy/{id}/env"),
    ("DELETE", "/api/v1/deployments/{id}"),
    ("POST", "/api/v1/deployments/{id}/confirm-deletion?token=x"),
    ("DELETE", "/api/v1/deployments/{id}/confirm-deletion"),
]
STACK_ROUTES = [
    ("GET", "/api/v1/stacks/{id}"),
    ("GET", "/stacks/{id}/logs/web"),
    ("PATCH", "/stacks/{id}/env"),
    ("POST", "/stacks/{id}/redeploy"),
    ("DELETE", "/api/v1/stacks/{id}"),
    ("POST", "/api/v1/stacks/{id}/confirm-deletion?token=x"),
    ("DELETE", "/api/v1/stacks/{id}/confirm-deletion"),
]
CHANGE = {"json": {"env_vars": {"X": "1"}}, "headers": {"X-Skip-Email-Confirmation": "yes"}}


def assert_like_missing(
    api: str, attacker: Team, routes: list[tuple[str, str]], theirs: str, missing: str
) -> None:
    """Every route answers about ``theirs`` exactly as about ``missing``: a 404."""
    for method, template in routes:
        replies = [
            as_team(api, attacker, method, template.format(id=i), **CHANGE)
            for i in (theirs, missing)
        ]
        got = [answer(r, theirs, missing) for r in replies]
        assert got[0] == got[1], (method, template, got)
        assert got[0][0] == 404, (method, template, got[0])


def test_another_teams_resources_cannot_be_read_deleted_or_rotated(
    api: str, teams: tuple[Team, Team]
) -> None:
    a, b = teams
    inbox = as_team(api, b, "POST", "/webhook/new", json={"name": "b-hook"}).json()
    assert_like_missing(api, a, RESOURCE_ROUTES, inbox["id"], "res_" + "0" * 20)
    listed = as_team(api, a, "GET", "/api/v1/resources").json()["items"]
    assert inbox["id"] not in {r["id"] for r in listed}
    after = as_team(api, b, "GET", f"/api/v1/resources/{inbox['id']}").json()
    assert after["status"] == "active" and after["token"] == inbox["token"]
    assert requests.post(inbox["receive_url"], data=b"still b's", timeout=10).ok


def test_another_teams_deploys_cannot_be_read_changed_or_deleted(
    api: str, teams: tuple[Team, Team], platform: Platform
) -> None:
    a, b = teams
    app = team_app(platform, b.owner)
    assert_like_missing(api, a, DEPLOY_ROUTES, app.id, "app_" + "0" * 16)
    assert as_team(api, b, "GET", f"/api/v1/deployments/{app.id}").status_code == 200
    assert platform.deployments().get(app.id) == app  # unchanged: same version, no deletion


def test_another_teams_stacks_cannot_be_read_changed_or_deleted(
    api: str, teams: tuple[Team, Team], platform: Platform
) -> None:
    a, b = teams
    stack = team_stack(platform, b.owner)
    assert_like_missing(api, a, STACK_ROUTES, stack.slug, "web-000000")
    assert stacks(platform).get(stack.slug) == stack
