"""Multi-service stacks through the API with the local backend (real buildah/podman, the locally
made busybox base image): a two-service stack with service:// resolution, anonymous stacks
(6h TTL, immutable), a team stack's env merged and applied by a redeploy, manifest validation,
per-service logs, and the expiry job removing a stack's containers."""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from chalice.test import Client
from requests_toolbelt.multipart.encoder import MultipartEncoder

from chalicelib import deps
from chalicelib.deploy.podman import podman
from chalicelib.jobs.deploys import reap_stacks
from chalicelib.routes.stacks import UNCOUNTED_STACKS_PER_DAY
from devstack.stack import Stack
from tests.conftest import fresh_ip
from tests.functional import test_deploys
from tests.functional.accounts_fixtures import Reply, call, sign_in
from tests.functional.test_deploys import (
    BASE,
    DEADLINE_SECONDS,
    context,
    get_app,
    magic_link_token,
    site,
)

base_image = test_deploys.base_image  # fixtures, shared (not copied)
hobby = test_deploys.hobby

TWO = """
services:
  web:
    port: 8080
    env: {API_URL: "service://api", GREETING: "hi"}
  api:
    port: 9000
"""


def shell_site(script: str, port: int = 8080) -> bytes:
    """A busybox app that runs ``script`` (with the env) and then serves /www on ``port``."""
    cmd = json.dumps(["sh", "-c", f"mkdir -p /www; {script}; exec httpd -f -p {port} -h /www"])
    return context({"Dockerfile": f"FROM {BASE}\nCMD {cmd}\n"})


def new_stack(
    client: Client,
    manifest: str | bytes,
    tarballs: dict[str, bytes],
    token: str | None = None,
    name: str = "my stack",
    ip: str | None = None,
) -> Reply:
    fields: list[tuple[str, Any]] = [("name", name)]
    fields.append(("instant.yaml", ("instant.yaml", manifest, "application/yaml")))
    fields += [(svc, (f"{svc}.tar.gz", data, "application/gzip")) for svc, data in tarballs.items()]
    form = MultipartEncoder(fields=fields)
    headers = {"Content_Type": form.content_type}
    return call(client, "POST", "/stacks/new", form.to_string(), bearer=token, ip=ip, **headers)


def wait_stack(client: Client, slug: str, token: str | None, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        body: dict[str, Any] = call(client, "GET", f"/api/v1/stacks/{slug}", bearer=token).body
        if body["status"] in statuses or time.monotonic() > deadline:
            assert body["status"] in statuses, body
            return body
        time.sleep(0.5)


def containers_of(slug: str) -> list[str]:
    done = podman("ps", "-aq", "--filter", f"name=instanode-{slug}-")
    return done.stdout.split()


@pytest.fixture
def stacks(client: Client, base_image: None) -> Iterator[list[str]]:
    """Slugs the test made: every service of them is removed afterwards."""
    import boto3

    boto3.client("s3").create_bucket(Bucket=deps.get_settings().deploy.bucket)
    made: list[str] = []
    yield made
    service = deps.get_stacks()
    for slug in made:
        stack = service.store.get(slug)
        if stack is not None and stack.status.value != "expired":
            service.expire(stack, int(time.time()))


def test_two_service_stack_resolves_service_urls(client: Client, stacks: list[str]) -> None:
    web = shell_site('echo "$API_URL" > /www/api.txt; echo "$GREETING" > /www/g.txt')
    api = shell_site("echo api-index > /www/index.html", port=9000)
    started = new_stack(client, TWO, {"web": web, "api": api})
    assert started.status == 202, started
    body = started.body
    stacks.append(body["slug"])
    assert body["status"] == "building"
    assert [s["name"] for s in body["services"]] == ["web", "api"]
    assert body["stack_url"] == body["services"][0]["url"] and body["services"][1]["url"] is None
    healthy = wait_stack(client, body["slug"], None, "healthy", "failed")
    assert healthy["status"] == "healthy", healthy
    assert [s["status"] for s in healthy["services"]] == ["healthy", "healthy"]
    assert healthy["manifest"]["services"]["web"]["env"] == ["API_URL", "GREETING"]
    assert "service://api" not in json.dumps(healthy) and "hi" not in healthy["env_vars"]

    backend = deps.get_deploy_backend()
    api_slug = f"{body['slug']}-api"
    assert get_app(healthy["stack_url"], "/g.txt") == "hi\n"
    # The resolved value: the api's host port through podman's name for the host (that it
    # answers from inside the web container: test_stack_network.py).
    resolved = get_app(healthy["stack_url"], "/api.txt").strip()
    assert resolved == backend.internal_url_of(api_slug)
    assert resolved == f"http://host.containers.internal:{backend.host_port(api_slug)}"  # type: ignore[attr-defined]
    api = healthy["services"][1]  # not exposed: private, reached only at its internal URL
    assert api["url"] is None and api["internal_url"] == resolved and api["expose"] is False
    with pytest.raises(requests.ConnectionError):
        get_app(backend.url_of(api_slug))

    logs = call(client, "GET", f"/stacks/{body['slug']}/logs/api")
    assert logs.status == 200 and logs.headers["content-type"].startswith("text/plain"), logs
    assert isinstance(logs.body, str) and len(logs.body.splitlines()) > 1
    sse = call(client, "GET", f"/stacks/{body['slug']}/logs/web", Accept="text/event-stream")
    assert sse.headers["content-type"] == "text/event-stream"
    assert "id: 0\ndata: " in sse.body and "event: status\ndata: healthy" in sse.body
    unknown = call(client, "GET", f"/stacks/{body['slug']}/logs/db")
    assert unknown.error == (404, "not_found")


def test_anonymous_stack_expires_in_6h_and_is_immutable(client: Client, stacks: list[str]) -> None:
    before = time.time()
    body = new_stack(client, "services: {web: {}}", {"web": site("anon")}).body
    stacks.append(body["slug"])
    assert body["anonymous"] is True
    expires = calendar.timegm(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert before + 6 * 3600 - 5 <= expires <= time.time() + 6 * 3600 + 5
    slug = body["slug"]
    patched = call(client, "PATCH", f"/stacks/{slug}/env", {"env_vars": {"A": "b"}})
    assert patched.error == (403, "stack_immutable")
    assert call(client, "POST", f"/stacks/{slug}/redeploy").error == (403, "stack_immutable")
    seen = call(client, "GET", f"/api/v1/stacks/{slug}")  # anyone holding the slug, another IP
    assert seen.status == 200 and seen.body["slug"] == slug


def test_failed_service_reports_the_raw_error(client: Client, stacks: list[str]) -> None:
    bad = context({"Dockerfile": f"FROM {BASE}\nRUNN echo hi\n"})
    body = new_stack(client, "services: {web: {}}", {"web": bad}).body
    stacks.append(body["slug"])
    failed = wait_stack(client, body["slug"], None, "failed", "healthy")
    service = failed["services"][0]
    assert service["status"] == "failed" and service["error_message"]
    assert failed["error_message"].startswith("web: ")


def test_team_stack_env_merges_and_redeploy_applies_it(
    client: Client, hobby: str, stacks: list[str]
) -> None:
    app = shell_site('echo "$GREETING/$EXTRA" > /www/g.txt')
    body = new_stack(client, "services: {web: {env: {GREETING: hi}}}", {"web": app}, hobby).body
    slug = body["slug"]
    stacks.append(slug)
    assert body["anonymous"] is False and body["expires_at"] is None
    first = wait_stack(client, slug, hobby, "healthy", "failed")
    assert get_app(first["stack_url"], "/g.txt") == "hi/\n"

    path = f"/stacks/{slug}/env"
    merged = call(
        client, "PATCH", path, {"env_vars": {"GREETING": "hello", "EXTRA": "x"}}, bearer=hobby
    )
    assert merged.status == 200 and merged.body["env_vars"] == ["EXTRA", "GREETING"], merged
    deleted = call(client, "PATCH", path, {"env_vars": {"EXTRA": ""}}, bearer=hobby)
    assert deleted.body["env_vars"] == ["GREETING"]
    bad = call(client, "PATCH", path, {"env_vars": {"lower": "x"}}, bearer=hobby)
    assert bad.error == (400, "invalid_env_key")
    big = call(client, "PATCH", path, {"env_vars": {"BIG": "x" * 70_000}}, bearer=hobby)
    assert big.error == (400, "bad_request")
    assert call(client, "PATCH", path, {"env_vars": {"A": "b"}}).error == (404, "not_found")

    again = call(client, "POST", f"/stacks/{slug}/redeploy", bearer=hobby)
    assert again.status == 202 and again.body["redeployed"] is True
    second = wait_stack(client, slug, hobby, "healthy", "failed")
    assert second["services"][0]["revision"] == 2 and second["env_vars"] == ["GREETING"]
    deadline = time.monotonic() + DEADLINE_SECONDS  # the new container replaces the old one
    while get_app(second["stack_url"], "/g.txt") != "hello/\n" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert get_app(second["stack_url"], "/g.txt") == "hello/\n"


def test_team_stack_counts_as_one_app(client: Client, hobby: str, stacks: list[str]) -> None:
    first = new_stack(client, "services: {a: {}, b: {}}", {"a": site("a"), "b": site("b")}, hobby)
    assert first.status == 202
    stacks.append(first.body["slug"])
    again = new_stack(client, "services: {a: {}}", {"a": site("a")}, hobby)
    assert again.error == (402, "resource_limit_reached")


def test_another_teams_stack_is_not_found(
    client: Client, stack: Stack, hobby: str, stacks: list[str]
) -> None:
    slug = new_stack(client, "services: {web: {}}", {"web": site("x")}, hobby).body["slug"]
    stacks.append(slug)
    assert call(client, "GET", f"/api/v1/stacks/{slug}", bearer=hobby).status == 200
    other = sign_in(client, stack)
    assert call(client, "GET", f"/api/v1/stacks/{slug}", bearer=other).error == (404, "not_found")
    assert call(client, "GET", f"/api/v1/stacks/{slug}").error == (404, "not_found")
    patched = call(client, "PATCH", f"/stacks/{slug}/env", {"env_vars": {}}, bearer=other)
    assert patched.error == (404, "not_found")
    assert call(client, "GET", "/api/v1/stacks/nope-000000").error == (404, "not_found")


@pytest.mark.parametrize(
    ("manifest", "tarballs", "code"),
    [
        ("services: [web", ["web"], "invalid_manifest"),
        (b"\xff\xfe", ["web"], "invalid_manifest"),
        ("- web", ["web"], "invalid_manifest"),
        ("services: {web: {}}\nversion: 2", ["web"], "invalid_manifest"),
        ("services: {web: {replicas: 2}}", ["web"], "invalid_manifest"),
        ("services: {web: {port: 70000}}", ["web"], "invalid_manifest"),
        ("services: {web: {expose: maybe}}", ["web"], "invalid_manifest"),
        ("services: {web: {env: {lower: x}}}", ["web"], "invalid_env_key"),
        ("services: {web: {env: {N: 1}}}", ["web"], "invalid_manifest"),
        ("services: {web: {env: {U: 'service://db'}}}", ["web"], "invalid_manifest"),
        ("services: {}", [], "invalid_manifest"),
        ("services: {" + ", ".join(f"s{i}: {{}}" for i in range(6)) + "}", [], "invalid_manifest"),
        ("services: {Web: {}}", ["Web"], "invalid_manifest"),
        ("services: {web-: {}}", ["web-"], "invalid_manifest"),
        ("services: {" + "a" * 32 + ": {}}", ["a" * 32], "invalid_manifest"),
        ("services: {name: {}}", [], "invalid_manifest"),
        ("services: {web: {}}", ["web", "api"], "bad_request"),
        ("services: {web: {}, api: {}}", ["web"], "bad_request"),
        ("services: {web: {port: " + "9" * 5000 + "}}", ["web"], "invalid_manifest"),
        ("a: " + "[" * 10_000 + "]" * 10_000, ["web"], "invalid_manifest"),
        ("services: {web: {env: {A: " + "x" * 70_000 + "}}}", ["web"], "invalid_manifest"),
    ],
    ids=[
        "not-yaml",
        "not-utf8",
        "not-a-mapping",
        "unknown-top-key",
        "unknown-service-key",
        "bad-port",
        "bad-expose",
        "bad-env-key",
        "non-string-env",
        "unknown-service-ref",
        "no-services",
        "six-services",
        "upper-case-name",
        "trailing-hyphen",
        "long-name",
        "reserved-name",
        "tarball-without-service",
        "service-without-tarball",
        "5000-digit-port",
        "nested-10000-deep",
        "over-64k",
    ],
)
def test_bad_manifests_are_refused(
    client: Client, manifest: str | bytes, tarballs: list[str], code: str
) -> None:
    reply = new_stack(client, manifest, {svc: site("x") for svc in tarballs})
    assert reply.error == (400, code), reply


def test_stack_needs_a_name_and_a_manifest(client: Client) -> None:
    assert new_stack(client, "services: {web: {}}", {"web": site("x")}, name="").error == (
        400,
        "name_required",
    )
    form = MultipartEncoder(fields={"name": "x", "web": ("w.tgz", site("x"), "a/b")})
    reply = call(client, "POST", "/stacks/new", form.to_string(), Content_Type=form.content_type)
    assert reply.error == (400, "bad_request")
    broken = new_stack(client, "services: {web: {}}", {"web": b"not a tarball"})
    assert broken.error == (400, "invalid_tarball")


def test_expiry_job_removes_an_expired_stacks_containers(client: Client, stacks: list[str]) -> None:
    two = "services: {web: {}, api: {}}"
    body = new_stack(client, two, {"web": site("w"), "api": site("a")}).body
    slug = body["slug"]
    stacks.append(slug)
    wait_stack(client, slug, None, "healthy")
    assert len(containers_of(slug)) == 2
    service = deps.get_stacks()
    shards = deps.get_settings().expiry_shards
    early = reap_stacks(service.store, service, shards, lambda: time.time() + 5 * 3600)
    assert early.stacks_expired == 0
    report = reap_stacks(service.store, service, shards, lambda: time.time() + 7 * 3600)
    assert report.stacks_expired >= 1
    assert containers_of(slug) == []
    assert call(client, "GET", f"/api/v1/stacks/{slug}").error == (404, "not_found")
    expired = service.store.get(slug)
    assert expired is not None and expired.status.value == "expired"


def test_delete_team_stack_in_two_steps_frees_its_slot_and_containers(
    client: Client, stack: Stack, hobby: str, stacks: list[str]
) -> None:
    slug = new_stack(client, "services: {web: {}}", {"web": site("x")}, hobby).body["slug"]
    stacks.append(slug)
    assert wait_stack(client, slug, hobby, "healthy", "failed")["status"] == "healthy"
    other = sign_in(client, stack)
    assert call(client, "DELETE", f"/api/v1/stacks/{slug}", bearer=other).error == (
        404,
        "not_found",
    )
    pending = call(client, "DELETE", f"/api/v1/stacks/{slug}", bearer=hobby)
    assert pending.status == 202 and pending.body["deletion_status"] == "pending_confirmation"
    assert containers_of(slug) != []  # nothing is deleted until the token comes back
    email = call(client, "GET", "/auth/me", bearer=hobby).body["user"]["email"]
    token = magic_link_token(stack, email)
    confirm = f"/api/v1/stacks/{slug}/confirm-deletion"
    assert call(client, "POST", f"{confirm}?token={token}", bearer=other).error == (
        404,
        "not_found",
    )
    wrong = call(client, "POST", f"{confirm}?token=x", bearer=hobby)
    assert wrong.error == (400, "invalid_confirmation_token")
    gone = call(client, "POST", f"{confirm}?token={token}", bearer=hobby)
    assert gone.body == {"ok": True, "slug": slug, "deletion_status": "deleted"}
    assert containers_of(slug) == []
    again = new_stack(client, "services: {a: {}}", {"a": site("a")}, hobby)
    assert again.status == 202  # the slot is free again
    stacks.append(again.body["slug"])


def test_cancelled_stack_deletion_keeps_it_and_the_token_stops_working(
    client: Client, stack: Stack, hobby: str, stacks: list[str]
) -> None:
    slug = new_stack(client, "services: {web: {}}", {"web": site("x")}, hobby).body["slug"]
    stacks.append(slug)
    assert call(client, "DELETE", f"/api/v1/stacks/{slug}", bearer=hobby).status == 202
    email = call(client, "GET", "/auth/me", bearer=hobby).body["user"]["email"]
    token = magic_link_token(stack, email)
    confirm = f"/api/v1/stacks/{slug}/confirm-deletion"
    cancelled = call(client, "DELETE", confirm, bearer=hobby)
    assert cancelled.body["deletion_status"] == "cancelled"
    late = call(client, "POST", f"{confirm}?token={token}", bearer=hobby)
    assert late.error == (400, "invalid_confirmation_token")
    assert call(client, "GET", f"/api/v1/stacks/{slug}", bearer=hobby).body["status"] != "deleted"
    skipped = call(
        client, "DELETE", f"/api/v1/stacks/{slug}", bearer=hobby, X_Skip_Email_Confirmation="yes"
    )
    assert skipped.body["deletion_status"] == "deleted" and containers_of(slug) == []


def test_delete_anonymous_stack_only_from_its_network(client: Client, stacks: list[str]) -> None:
    ip = fresh_ip()
    made = new_stack(client, "services: {web: {}}", {"web": site("x")}, ip=ip).body["slug"]
    stacks.append(made)
    assert call(client, "DELETE", f"/api/v1/stacks/{made}").error == (404, "not_found")
    assert call(client, "DELETE", f"/api/v1/stacks/{made}", ip=ip).status == 200


def test_fourth_anonymous_stack_of_a_network_in_a_day_is_rate_limited(
    client: Client, stacks: list[str]
) -> None:
    ip = fresh_ip()
    for n in range(UNCOUNTED_STACKS_PER_DAY):  # different stacks (a same one is a replay)
        made = new_stack(client, "services: {web: {}}", {"web": site(f"x{n}")}, ip=ip)
        assert made.status == 202
        stacks.append(made.body["slug"])
    over = new_stack(client, "services: {web: {}}", {"web": site("over")}, ip=ip)
    assert over.error == (429, "rate_limited") and over.headers["retry-after"]


def test_rejected_stacks_use_none_of_the_days_slots(client: Client, stacks: list[str]) -> None:
    ip = fresh_ip()
    for _ in range(UNCOUNTED_STACKS_PER_DAY + 1):
        bad = new_stack(client, "services: {web: {}}", {"web": b"not a tarball"}, ip=ip)
        assert bad.error == (400, "invalid_tarball")
    made = new_stack(client, "services: {web: {}}", {"web": site("after")}, ip=ip)
    assert made.status == 202, made
    stacks.append(made.body["slug"])


def test_identical_stack_retried_is_a_replay_and_takes_no_second_slot(
    client: Client, stacks: list[str]
) -> None:
    ip, tarball = fresh_ip(), site("x")  # a retry sends the same bytes
    first = new_stack(client, "services: {web: {}}", {"web": tarball}, ip=ip)
    assert first.status == 202
    stacks.append(first.body["slug"])
    again = new_stack(client, "services: {web: {}}", {"web": tarball}, ip=ip)
    assert again.status == 202 and again.headers["x-idempotent-replay"] == "true"
    assert again.body["slug"] == first.body["slug"]
    for n in range(UNCOUNTED_STACKS_PER_DAY - 1):  # the replay used none of the day's slots
        made = new_stack(client, "services: {web: {}}", {"web": site(f"other {n}")}, ip=ip)
        assert made.status == 202, made
        stacks.append(made.body["slug"])


def test_team_stack_over_the_cap_is_refused_and_leaves_no_context(
    client: Client, hobby: str, stacks: list[str]
) -> None:
    import boto3

    first = new_stack(client, "services: {web: {}}", {"web": site("x")}, hobby)
    assert first.status == 202
    stacks.append(first.body["slug"])
    bucket = deps.get_settings().deploy.bucket
    before = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="stacks/")["KeyCount"]
    over = new_stack(client, "services: {a: {}, b: {}}", {"a": site("a"), "b": site("b")}, hobby)
    assert over.error == (402, "resource_limit_reached")
    after = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="stacks/")["KeyCount"]
    assert after == before
