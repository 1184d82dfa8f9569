"""Container deploys through the API with the local backend: real buildah/podman builds from a
locally made busybox base image, the app answering over HTTP, classified failures, redeploys
in place, two-step deletion and TTL expiry."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from chalice.test import Client
from requests_toolbelt.multipart.encoder import MultipartEncoder

from chalicelib import deps
from chalicelib.jobs.deploys import poll_deploys, reap_deploys
from devstack.stack import Stack
from tests.functional.accounts_fixtures import Reply, api_key, call, made, new_email, sign_in
from tests.functional.test_errors import MULTIPART_WITHOUT_BOUNDARY

BASE = "localhost/instanode/busybox:latest"
HTTPD = '["httpd", "-f", "-p", "8080", "-h", "/www"]'
DEADLINE_SECONDS = 90


def context(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def site(body: str, dockerfile_extra: str = "") -> bytes:
    dockerfile = f"FROM {BASE}\nCOPY index.html /www/index.html\n{dockerfile_extra}CMD {HTTPD}\n"
    return context({"Dockerfile": dockerfile, "index.html": body})


def deploy(
    client: Client,
    token: str,
    tarball: bytes,
    name: str = "web",
    idempotency_key: str | None = None,
    **fields: str,
) -> Reply:
    form = MultipartEncoder(
        fields={"name": name, **fields, "tarball": ("app.tar.gz", tarball, "application/gzip")}
    )
    headers = {"Idempotency_Key": idempotency_key} if idempotency_key else {}
    return call(
        client,
        "POST",
        "/deploy/new",
        form.to_string(),
        bearer=token,
        Content_Type=form.content_type,
        **headers,
    )


def wait_for(client: Client, token: str, app_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        body: dict[str, Any] = call(
            client, "GET", f"/api/v1/deployments/{app_id}", bearer=token
        ).body
        if body["status"] in statuses or time.monotonic() > deadline:
            assert body["status"] in statuses, body
            return body
        time.sleep(0.5)


@pytest.fixture(scope="module")
def base_image() -> None:
    from chalicelib.deploy.baseimage import ensure_busybox_image

    assert ensure_busybox_image() == BASE


@pytest.fixture
def hobby(client: Client, stack: Stack, base_image: None) -> Iterator[str]:
    """A session of a team on Hobby (1 app); its apps are removed afterwards."""
    boto3.client("s3").create_bucket(Bucket=deps.get_settings().deploy.bucket)
    token = sign_in(client, stack)
    team = call(client, "GET", "/auth/me", bearer=token).body["team"]["id"]
    deps.get_teams().set_tier(team, "hobby")
    yield token
    for app in call(client, "GET", "/api/v1/deployments", bearer=token).body["items"]:
        path = f"/api/v1/deployments/{app['id']}"
        call(client, "DELETE", path, bearer=token, X_Skip_Email_Confirmation="yes")


def get_app(url: str, path: str = "/index.html") -> str:
    """GET the app at its URL: *.localhost is loopback (browsers know it; glibc does not, so
    connect to 127.0.0.1 and send the URL's host)."""
    parts = urlsplit(url)
    assert parts.hostname and parts.hostname.endswith(".localhost"), url
    local = f"http://127.0.0.1:{parts.port}{path}"
    return requests.get(local, headers={"Host": parts.netloc}, timeout=5).text


def test_deploy_serves_the_app_at_its_url(client: Client, hobby: str) -> None:
    started = deploy(client, hobby, site("hello from v1"))
    assert started.status == 202 and started.body["status"] == "building"
    healthy = wait_for(client, hobby, started.body["id"], "healthy", "failed")
    assert healthy["status"] == "healthy", healthy
    assert get_app(healthy["url"]) == "hello from v1"


def test_redeploy_keeps_id_and_url_and_serves_the_new_version(client: Client, hobby: str) -> None:
    first = deploy(client, hobby, site("v1")).body
    wait_for(client, hobby, first["id"], "healthy")
    again = deploy(client, hobby, site("v2"), redeploy="true")
    assert again.status == 202 and again.body["redeployed"] is True
    assert (again.body["id"], again.body["url"]) == (first["id"], first["url"])
    wait_for(client, hobby, first["id"], "healthy")
    assert get_app(first["url"]) == "v2"
    assert [k.split("/")[2].split("-")[0] for k in contexts_of(first["id"])] == ["2"]


def contexts_of(app_id: str) -> list[str]:
    """The build contexts of ``app_id`` in the deploy bucket."""
    bucket = deps.get_settings().deploy.bucket
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"deploys/{app_id}/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_redeploy_of_unknown_name_is_not_found(client: Client, hobby: str) -> None:
    reply = deploy(client, hobby, site("x"), name="nothing-here", redeploy="true")
    assert reply.error == (404, "no_existing_deployment_to_redeploy")


def test_broken_dockerfile_fails_with_a_classified_event(client: Client, hobby: str) -> None:
    bad = context({"Dockerfile": f"FROM {BASE}\nRUNN echo hi\n"})
    app_id = deploy(client, hobby, bad).body["id"]
    failed = wait_for(client, hobby, app_id, "failed", "healthy")
    assert failed["status"] == "failed" and failed["error_message"]
    events = call(client, "GET", f"/api/v1/deployments/{app_id}/events", bearer=hobby).body
    event = events["events"][-1]
    assert event["reason"] != "Unknown" and event["hint"] and event["last_lines"]


def test_second_app_over_the_hobby_cap_is_refused(client: Client, hobby: str) -> None:
    first = deploy(client, hobby, site("one"), name="one").body
    assert deploy(client, hobby, site("two"), name="two").error == (402, "resource_limit_reached")
    bucket = deps.get_settings().deploy.bucket
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="deploys/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert [k.rsplit("-", 1)[0] for k in keys] == [f"deploys/{first['id']}/1"]  # refused: none


def test_identical_deploy_retried_is_a_replay_not_a_second_app(client: Client, hobby: str) -> None:
    tarball = site("once")  # a retry sends the same bytes (in a new multipart boundary)
    first = deploy(client, hobby, tarball, name="once")
    assert (first.status, first.headers["x-idempotency-source"]) == (202, "miss")
    again = deploy(client, hobby, tarball, name="once")
    assert again.status == 202 and again.headers["x-idempotent-replay"] == "true"
    assert again.headers["x-idempotency-source"] == "fingerprint"
    assert again.body["id"] == first.body["id"]
    listed = call(client, "GET", "/api/v1/deployments", bearer=hobby).body["items"]
    assert [a["id"] for a in listed] == [first.body["id"]]


def test_idempotency_key_reused_with_another_tarball_is_a_conflict(
    client: Client, hobby: str
) -> None:
    assert deploy(client, hobby, site("a"), name="k", idempotency_key="deploy-k1").status == 202
    other = deploy(client, hobby, site("b"), name="k", idempotency_key="deploy-k1")
    assert other.error == (409, "idempotency_key_conflict")


def test_a_refused_deploy_does_not_hold_its_idempotency_key(client: Client, hobby: str) -> None:
    bad = context({"index.html": "no dockerfile"})
    for _ in range(2):  # the retry is checked again, not answered from a stored failure
        assert deploy(client, hobby, bad, idempotency_key="deploy-k2").error == (
            400,
            "dockerfile_not_found",
        )
    good = deploy(client, hobby, site("fixed"), idempotency_key="deploy-k3")
    assert good.status == 202 and "x-idempotent-replay" not in good.headers


def test_deploy_needs_a_paid_tier(client: Client, stack: Stack) -> None:
    upgrade_jwt = made(client, "/webhook/new")["upgrade_jwt"]  # an anonymous resource's
    assert deploy(client, upgrade_jwt, site("x")).error == (402, "deploy_requires_paid_tier")
    free = sign_in(client, stack)
    assert deploy(client, free, site("x")).error == (402, "deploy_requires_paid_tier")


def test_deploy_refusal_names_stacks_and_the_operator_without_billing(
    client: Client, stack: Stack
) -> None:
    """The default table (free: no apps), no checkout: the 402 names what works here."""
    base = deps.get_settings().public_base_url
    email = new_email()
    refused = deploy(client, sign_in(client, stack, email), site("x"))
    assert refused.error == (402, "deploy_requires_paid_tier")
    action = refused.body["agent_action"]
    assert action.startswith("Tell the user") and len(action) < 280
    assert f"POST {base}/stacks/new" in action and "6h" in action
    assert f"python -m chalicelib.admin set-tier --email {email} --tier hobby" in action
    assert "/dashboard" not in action


def test_deploy_refusal_names_the_checkout_when_billing_is_configured(
    client: Client, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the local stack already has the webhook secret and plans; a checkout page completes it
    monkeypatch.setenv("INSTANODE_BILLING_URL", "https://billing.example.com/checkout")
    deps.reset()
    refused = deploy(client, sign_in(client, stack), site("x"))
    assert refused.error == (402, "deploy_requires_paid_tier")
    action = refused.body["agent_action"]
    assert "upgrade the team to hobby at https://billing.example.com/checkout" in action
    assert f"{deps.get_settings().public_base_url}/stacks/new" in action
    assert "set-tier" not in action and "/dashboard" not in action


def test_deploy_by_a_free_team_passes_the_tier_check_with_an_override(
    client: Client, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the operator's override a free team gets past the tier check: the same request
    then stops at the next check (a bad ttl_policy, so nothing is built)."""
    free = sign_in(client, stack)
    assert deploy(client, free, site("x"), ttl_policy="bogus").error[0] == 402
    monkeypatch.setenv("INSTANODE_PLANS_OVERRIDES", json.dumps({"free": {"deploys": {"apps": 1}}}))
    deps.reset()
    assert deps.get_settings().tiers["free"].deploys.apps == 1
    assert deploy(client, free, site("x"), ttl_policy="bogus").error == (400, "bad_request")


def test_deploy_refusal_tells_an_anonymous_caller_a_claim_is_enough_when_free_deploys(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make run's choice (free teams run an app): claiming is the whole way there."""
    monkeypatch.setenv("INSTANODE_PLANS_OVERRIDES", json.dumps({"free": {"deploys": {"apps": 1}}}))
    deps.reset()
    upgrade_jwt = made(client, "/webhook/new")["upgrade_jwt"]  # an anonymous resource's
    refused = deploy(client, upgrade_jwt, site("x"))
    assert refused.error == (402, "deploy_requires_paid_tier")
    action = refused.body["agent_action"]
    assert "claim via the resource's 'upgrade' link (a free team has it here)" in action
    assert "operator" not in action and "/dashboard" not in action


def test_deploy_without_credentials_is_unauthorized(client: Client) -> None:
    form = MultipartEncoder(fields={"name": "x", "tarball": ("a.tgz", site("x"), "a/b")})
    reply = call(client, "POST", "/deploy/new", form.to_string(), Content_Type=form.content_type)
    assert reply.error == (401, "unauthorized")


@pytest.mark.parametrize(
    ("tarball", "code"),
    [
        (b"not a tarball", "invalid_tarball"),
        (context({"index.html": "no dockerfile"}), "dockerfile_not_found"),
        (context({"Dockerfile": "FROM x", "../escape": "x"}), "invalid_tarball"),
    ],
    ids=["not-gzip", "no-dockerfile", "traversal"],
)
def test_deploy_refuses_bad_contexts(client: Client, hobby: str, tarball: bytes, code: str) -> None:
    assert deploy(client, hobby, tarball).error == (400, code)


def test_deploy_refuses_bad_env_keys(client: Client, hobby: str) -> None:
    reply = deploy(client, hobby, site("x"), env_vars=json.dumps({"lower": "x"}))
    assert reply.error == (400, "invalid_env_key")


def test_delete_asks_for_email_confirmation_then_frees_the_slot(
    client: Client, stack: Stack, hobby: str
) -> None:
    app_id = deploy(client, hobby, site("x"), name="to-delete").body["id"]
    pending = call(client, "DELETE", f"/api/v1/deployments/{app_id}", bearer=hobby)
    assert pending.status == 202 and pending.body["deletion_status"] == "pending_confirmation"
    email = call(client, "GET", "/auth/me", bearer=hobby).body["user"]["email"]
    token = magic_link_token(stack, email)
    wrong = call(
        client, "POST", f"/api/v1/deployments/{app_id}/confirm-deletion?token=x", bearer=hobby
    )
    assert wrong.error == (400, "invalid_confirmation_token")
    done = call(
        client, "POST", f"/api/v1/deployments/{app_id}/confirm-deletion?token={token}", bearer=hobby
    )
    assert done.body["deletion_status"] == "deleted"
    assert contexts_of(app_id) == []
    assert deploy(client, hobby, site("y"), name="next").status == 202  # the slot is free


def magic_link_token(stack: Stack, email: str) -> str:
    """The deletion token in the newest mail to ``email``."""
    text = stack.smtp.wait_for(email).get_body(("plain",))
    assert text is not None
    line = next(ln for ln in text.get_content().splitlines() if ln.startswith("Confirmation token"))
    return line.rsplit(" ", 1)[-1]


def test_paid_team_defaults_to_permanent_apps(client: Client, hobby: str) -> None:
    app = deploy(client, hobby, site("x"), name="kept").body
    assert (app["ttl_policy"], app["expires_at"]) == ("permanent", None)


def test_auto_24h_app_expires_and_frees_the_slot(client: Client, hobby: str) -> None:
    app_id = deploy(client, hobby, site("x"), name="short-lived", ttl_policy="auto_24h").body["id"]
    service = deps.get_deploys()
    report = reap_deploys(
        service.store, service, deps.get_settings().expiry_shards, lambda: time.time() + 25 * 3600
    )
    assert report.expired >= 1
    gone = call(client, "GET", f"/api/v1/deployments/{app_id}", bearer=hobby)
    assert gone.error == (404, "not_found")


def test_deploy_by_upload_key_builds_the_uploaded_context(client: Client, hobby: str) -> None:
    issued = call(client, "POST", "/deploy/upload-url", {}, bearer=hobby).body
    assert issued["method"] == "PUT" and issued["upload_key"] in issued["upload_url"]
    bucket = deps.get_settings().deploy.bucket
    # the agent's PUT to upload_url, made here with the SDK (in-process moto serves botocore)
    boto3.client("s3").put_object(Bucket=bucket, Key=issued["upload_key"], Body=site("uploaded"))
    body = {"name": "big-app", "upload_key": issued["upload_key"]}
    started = call(client, "POST", "/deploy/new", body, bearer=hobby)
    assert started.status == 202, started
    healthy = wait_for(client, hobby, started.body["id"], "healthy", "failed")
    assert get_app(healthy["url"]) == "uploaded"
    gone = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=issued["upload_key"])
    assert gone["KeyCount"] == 0  # the app has its own copy


@pytest.mark.parametrize("key", ["uploads/someone-else/x.tar.gz", None], ids=["foreign", "none"])
def test_deploy_refuses_upload_keys_of_others(client: Client, hobby: str, key: Any) -> None:
    reply = call(client, "POST", "/deploy/new", {"name": "x", "upload_key": key}, bearer=hobby)
    assert reply.error == (400, "bad_request")


def test_deploy_refuses_an_upload_key_with_nothing_uploaded(client: Client, hobby: str) -> None:
    key = call(client, "POST", "/deploy/upload-url", {}, bearer=hobby).body["upload_key"]
    reply = call(client, "POST", "/deploy/new", {"name": "x", "upload_key": key}, bearer=hobby)
    assert reply.error == (400, "bad_request")


def test_paid_upgrade_makes_auto_24h_apps_permanent(client: Client, hobby: str) -> None:
    app = deploy(client, hobby, site("x"), name="promoted", ttl_policy="auto_24h").body
    assert app["expires_at"] is not None
    team = call(client, "GET", "/auth/me", bearer=hobby).body["team"]["id"]
    assert deps.get_teams().set_tier(team, "pro").deploys_made_permanent == 1
    after = call(client, "GET", f"/api/v1/deployments/{app['id']}", bearer=hobby).body
    assert (after["ttl_policy"], after["expires_at"]) == ("permanent", None)


def test_custom_ttl_sets_the_expiry_hours_ahead(client: Client, hobby: str) -> None:
    app = deploy(client, hobby, site("x"), name="c", ttl_policy="custom", ttl_hours="48").body
    created = time.time()
    expires = time.mktime(time.strptime(app["expires_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert app["ttl_policy"] == "custom" and abs(expires - created - 48 * 3600) < 120


@pytest.mark.parametrize(
    "hours",
    [None, "0", "9999", "9" * 5000, "٤٨"],
    ids=["missing", "zero", "too-long", "5000-digits", "arabic"],
)
def test_custom_ttl_needs_sensible_hours(client: Client, hobby: str, hours: str | None) -> None:
    fields = {"ttl_policy": "custom", **({"ttl_hours": hours} if hours else {})}
    assert deploy(client, hobby, site("x"), **fields).error == (400, "bad_request")


@pytest.mark.parametrize("port", ["0", "65536", "9" * 5000, "٨٠", "80x"])
def test_port_out_of_range_or_not_ascii_digits_is_400(
    client: Client, hobby: str, port: str
) -> None:
    assert deploy(client, hobby, site("x"), port=port).error == (400, "bad_request")


def test_multipart_without_a_boundary_is_400(client: Client, hobby: str) -> None:
    reply = call(
        client,
        "POST",
        "/deploy/new",
        MULTIPART_WITHOUT_BOUNDARY,
        bearer=hobby,
        Content_Type="multipart/form-data",
    )
    assert reply.error == (400, "bad_request")


def test_multipart_over_the_request_cap_names_the_upload_path(client: Client, hobby: str) -> None:
    reply = deploy(client, hobby, os.urandom(4_500_000))
    assert reply.error == (413, "tarball_too_large") and "upload-url" in reply.body["agent_action"]


def test_poller_advances_an_app_nobody_polls(client: Client, hobby: str) -> None:
    app_id = deploy(client, hobby, site("polled"), name="unwatched").body["id"]
    service = deps.get_deploys()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (app := service.store.get(app_id)) is not None and app.status.value != "healthy":
        assert time.monotonic() < deadline, app
        poll_deploys(service.store, service, deps.get_settings().expiry_shards)
        time.sleep(0.5)
    polled = poll_deploys(service.store, service, deps.get_settings().expiry_shards)
    assert polled["polled"] == 0  # healthy apps leave the by_progress index


def test_upgrade_jwt_deploys_but_cannot_read_or_delete_apps(client: Client, hobby: str) -> None:
    upgrade_jwt = made(client, "/webhook/new", bearer=hobby)["upgrade_jwt"]  # the team's
    app = deploy(client, upgrade_jwt, site("by jwt"), name="by-jwt")
    assert app.status == 202
    path = f"/api/v1/deployments/{app.body['id']}"
    assert call(client, "GET", "/api/v1/deployments", bearer=upgrade_jwt).status == 401
    deleted = call(client, "DELETE", path, bearer=upgrade_jwt, X_Skip_Email_Confirmation="yes")
    assert deleted.error == (401, "unauthorized")
    assert call(client, "GET", path, bearer=hobby).body["status"] in ("building", "healthy")


def test_read_scope_key_lists_deployments(client: Client, hobby: str) -> None:
    key = api_key(client, hobby, "read")["api_token"]
    assert call(client, "GET", "/api/v1/deployments", bearer=key).status == 200
    assert deploy(client, key, site("x")).error == (403, "insufficient_scope")
