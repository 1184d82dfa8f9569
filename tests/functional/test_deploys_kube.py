"""The deploy API with the Kubernetes backend (INSTANODE_DEPLOY_BACKEND=kubernetes), against
kmock's emulator with the controllers played by the test (see test_kube_backend.py): the
route, service, store and backend together, from POST /deploy/new to healthy, a redeploy in
place, a failed build's classified events, the two-step deletion and TTL expiry, each of the
last two leaving no object behind; and a stack's services, whose NetworkPolicies admit each
other."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import boto3
import pytest
from chalice.test import Client

from chalicelib import deps
from chalicelib.deploy import manifests as m
from chalicelib.deploy.backend import DeployStatus
from chalicelib.deploy.kube_policies import BUILDS_POLICY
from chalicelib.jobs.deploys import reap_deploys
from devstack.stack import Stack
from tests.functional.accounts_fixtures import call, sign_in
from tests.functional.test_deploys import deploy, magic_link_token, site
from tests.functional.test_kube_backend import (
    DEPLOYMENTS,
    FROM_INGRESS,
    INGRESSES,
    JOBS,
    NETWORK_POLICIES,
    NS,
    SECRETS,
    SERVICES,
    SPEC,
    ClusterThread,
    cluster,
    fail_build,
    finish_build,
    make_available,
)
from tests.functional.test_stacks import TWO, new_stack

__all__ = ["cluster"]  # the fixture, imported for pytest

APP_KINDS = (DEPLOYMENTS, SERVICES, INGRESSES, NETWORK_POLICIES, SECRETS, JOBS)
NO_OBJECTS: dict[str, list[str]] = {kind: [] for kind in APP_KINDS}


@pytest.fixture
def kube_team(
    client: Client, stack: Stack, cluster: ClusterThread, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A Hobby team's session, with deploys going to the emulated cluster."""
    env = {
        "INSTANODE_DEPLOY_BACKEND": "kubernetes",
        "INSTANODE_DEPLOY_DOMAIN": "deployment.example.dev",
        "INSTANODE_KUBE_API_URL": cluster.url,
        "INSTANODE_KUBE_TOKEN": "test-token",
        "INSTANODE_KUBE_NAMESPACE": NS,
        "INSTANODE_DEPLOY_REGISTRY": "registry.example.dev/instanode",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    deps.reset()
    boto3.client("s3").create_bucket(Bucket=deps.get_settings().deploy.bucket)
    token = sign_in(client, stack)
    team = call(client, "GET", "/auth/me", bearer=token).body["team"]["id"]
    deps.get_teams().set_tier(team, "hobby")
    yield token


def status(client: Client, token: str, app_id: str) -> str:
    body = call(client, "GET", f"/api/v1/deployments/{app_id}", bearer=token).body
    return str(body["status"])


def healthy_app(
    client: Client, token: str, cluster: ClusterThread, **fields: str
) -> dict[str, Any]:
    """A new app, built, rolled out and given its certificate: every object it ever has."""
    app: dict[str, Any] = deploy(client, token, site("v1"), **fields).body
    spec = replace(SPEC, slug=app["slug"], revision=1)
    finish_build(cluster, spec)
    assert status(client, token, app["id"]) == "deploying"
    make_available(cluster, spec)
    assert status(client, token, app["id"]) == "healthy"
    cluster.issue_certificate(app["slug"])
    return app


def cluster_objects(cluster: ClusterThread) -> dict[str, list[str]]:
    """The names of every object of the kinds an app has, in the whole namespace, but the
    NetworkPolicy every build pod shares (the namespace's: it outlives any app)."""
    found = {kind: cluster.names(kind) for kind in APP_KINDS}
    found[NETWORK_POLICIES] = [n for n in found[NETWORK_POLICIES] if n != BUILDS_POLICY]
    return found


def objects_of_one_app(slug: str) -> dict[str, list[str]]:
    """What ``cluster_objects`` is with one healthy app of revision 1 on the cluster."""
    return {
        DEPLOYMENTS: [slug],
        SERVICES: [slug],
        INGRESSES: [slug],
        NETWORK_POLICIES: [slug],
        SECRETS: [f"{slug}-env-1", f"{slug}-tls"],
        JOBS: [f"{slug}-build-1"],
    }


def test_deploy_reaches_healthy_on_the_cluster(
    client: Client, kube_team: str, cluster: ClusterThread
) -> None:
    app = deploy(client, kube_team, site("v1")).body
    assert app["url"] == f"https://{app['slug']}.deployment.example.dev"
    spec = replace(SPEC, slug=app["slug"], revision=1)
    assert status(client, kube_team, app["id"]) == "building"
    finish_build(cluster, spec)
    assert status(client, kube_team, app["id"]) == "deploying"
    make_available(cluster, spec)
    assert status(client, kube_team, app["id"]) == "healthy"
    ingress = cluster.get(INGRESSES, cluster.names(INGRESSES)[0])
    assert ingress is not None
    assert ingress["spec"]["rules"][0]["host"] == f"{app['slug']}.deployment.example.dev"


def test_redeploy_builds_revision_two_at_the_same_url(
    client: Client, kube_team: str, cluster: ClusterThread
) -> None:
    first = healthy_app(client, kube_team, cluster)
    again = deploy(client, kube_team, site("v2"), redeploy="true").body
    assert (again["id"], again["url"], again["revision"]) == (first["id"], first["url"], 2)
    assert len(cluster.names(JOBS)) == 2  # one build Job per revision
    assert status(client, kube_team, first["id"]) == "building"


def test_delete_removes_every_object(
    client: Client, kube_team: str, cluster: ClusterThread
) -> None:
    app = healthy_app(client, kube_team, cluster)
    path = f"/api/v1/deployments/{app['id']}"
    gone = call(client, "DELETE", path, bearer=kube_team, X_Skip_Email_Confirmation="yes")
    assert gone.body["deletion_status"] == "deleted"
    assert cluster_objects(cluster) == NO_OBJECTS


def test_failed_build_reports_the_classified_cause(
    client: Client, kube_team: str, cluster: ClusterThread
) -> None:
    app = deploy(client, kube_team, site("v1")).body
    log = [
        "INFO[0000] Retrieving image manifest python:3.12-slim",
        "INFO[0003] RUN pip install --no-cache-dir -r requirements.txt",
        "ERROR: Could not find a version that satisfies the requirement fastapi==9.9.9 "
        "(from versions: 0.1.0, 0.115.0)",
        "ERROR: No matching distribution found for fastapi==9.9.9",
        "error building image: error building stage: failed to execute command: "
        "waiting for process to exit: exit status 1",
    ]
    fail_build(cluster, replace(SPEC, slug=app["slug"], revision=1), log, exit_code=1)

    path = f"/api/v1/deployments/{app['id']}"
    got = call(client, "GET", path, bearer=kube_team).body
    events = call(client, "GET", f"{path}/events", bearer=kube_team).body
    assert events["status"] == got["status"] == "failed"
    [event] = events["events"]
    assert (event["reason"], event["exit_code"], event["last_lines"]) == (
        "DependencyInstallFailed",
        1,
        log,
    )
    assert event["message"] == got["error_message"]
    assert got["error_message"].endswith(log[2]) and "requirements.txt" in event["hint"]


def test_delete_waits_for_the_mailed_token_then_removes_every_object(
    client: Client, stack: Stack, kube_team: str, cluster: ClusterThread
) -> None:
    app = healthy_app(client, kube_team, cluster)
    assert cluster_objects(cluster) == objects_of_one_app(app["slug"])
    path = f"/api/v1/deployments/{app['id']}"

    pending = call(client, "DELETE", path, bearer=kube_team)
    assert (pending.status, pending.body["deletion_status"]) == (202, "pending_confirmation")
    assert cluster_objects(cluster) == objects_of_one_app(app["slug"])
    assert status(client, kube_team, app["id"]) == "healthy"

    email = call(client, "GET", "/auth/me", bearer=kube_team).body["user"]["email"]
    token = magic_link_token(stack, email)
    done = call(client, "POST", f"{path}/confirm-deletion?token={token}", bearer=kube_team)
    assert (done.status, done.body["deletion_status"]) == (200, "deleted")
    assert cluster_objects(cluster) == NO_OBJECTS
    assert call(client, "GET", path, bearer=kube_team).error == (404, "not_found")
    assert deploy(client, kube_team, site("next"), name="next").status == 202  # the slot is free


def test_cancelled_deletion_leaves_every_object(
    client: Client, stack: Stack, kube_team: str, cluster: ClusterThread
) -> None:
    app = healthy_app(client, kube_team, cluster)
    path = f"/api/v1/deployments/{app['id']}"
    assert call(client, "DELETE", path, bearer=kube_team).status == 202
    email = call(client, "GET", "/auth/me", bearer=kube_team).body["user"]["email"]
    token = magic_link_token(stack, email)

    cancelled = call(client, "DELETE", f"{path}/confirm-deletion", bearer=kube_team)
    assert cancelled.body["deletion_status"] == "cancelled"
    late = call(client, "POST", f"{path}/confirm-deletion?token={token}", bearer=kube_team)
    assert late.error == (400, "invalid_confirmation_token")
    assert cluster_objects(cluster) == objects_of_one_app(app["slug"])
    assert status(client, kube_team, app["id"]) == "healthy"


@pytest.mark.parametrize(
    "ttl",
    [{"ttl_policy": "auto_24h"}, {"ttl_policy": "custom", "ttl_hours": "2"}],
    ids=["auto_24h", "custom"],
)
def test_expired_app_is_reaped_from_the_cluster_and_frees_the_slot(
    client: Client, kube_team: str, cluster: ClusterThread, ttl: dict[str, str]
) -> None:
    app = healthy_app(client, kube_team, cluster, **ttl)
    expires_at = datetime.fromisoformat(app["expires_at"]).timestamp()
    service, shards = deps.get_deploys(), deps.get_settings().expiry_shards
    full = deploy(client, kube_team, site("second"), name="second")
    assert full.error == (402, "resource_limit_reached")

    early = reap_deploys(service.store, service, shards, lambda: expires_at - 60)
    assert early.expired == 0
    assert cluster_objects(cluster) == objects_of_one_app(app["slug"])

    due = reap_deploys(service.store, service, shards, lambda: expires_at + 1)
    assert (due.expired, due.failed) == (1, 0)
    assert cluster_objects(cluster) == NO_OBJECTS
    record = service.store.get(app["id"])
    assert record is not None and record.status is DeployStatus.EXPIRED
    path = f"/api/v1/deployments/{app['id']}"
    assert call(client, "GET", path, bearer=kube_team).error == (404, "not_found")
    assert deploy(client, kube_team, site("next"), name="next").status == 202


def test_stack_services_admit_each_other_and_deleting_the_stack_removes_everything(
    client: Client, kube_team: str, cluster: ClusterThread
) -> None:
    made = new_stack(client, TWO, {"web": site("web"), "api": site("api")}, token=kube_team)
    assert made.status == 202, made
    slug = made.body["slug"]
    for svc in ("web", "api"):
        finish_build(cluster, replace(SPEC, slug=f"{slug}-{svc}", revision=1))
    path = f"/api/v1/stacks/{slug}"
    body = call(client, "GET", path, bearer=kube_team).body
    assert [s["status"] for s in body["services"]] == ["deploying", "deploying"]

    stack_pods = {"podSelector": {"matchLabels": m.group_selector(slug)}}
    admitted = {}
    for name in cluster_objects(cluster)[NETWORK_POLICIES]:
        policy = cluster.get(NETWORK_POLICIES, name)
        assert policy is not None
        admitted[name] = [rule["from"] for rule in policy["spec"]["ingress"]]
    assert admitted == {f"{slug}-api": [[stack_pods]], f"{slug}-web": [[stack_pods, FROM_INGRESS]]}
    for svc in ("web", "api"):
        dep = cluster.get(DEPLOYMENTS, f"{slug}-{svc}")
        assert dep is not None
        assert dep["spec"]["template"]["metadata"]["labels"][m.STACK] == slug

    gone = call(client, "DELETE", path, bearer=kube_team, X_Skip_Email_Confirmation="yes")
    assert gone.status == 200, gone
    assert cluster_objects(cluster) == NO_OBJECTS
