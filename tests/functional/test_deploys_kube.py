"""The deploy API with the Kubernetes backend (INSTANODE_DEPLOY_BACKEND=kubernetes), against
kmock's emulator with the controllers played by the test (see test_kube_backend.py): the
route, service, store and backend together, from POST /deploy/new to healthy, a redeploy in
place and a deletion that leaves no object behind."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import boto3
import pytest
from chalice.test import Client

from chalicelib import deps
from devstack.stack import Stack
from tests.functional.accounts_fixtures import call, sign_in
from tests.functional.test_deploys import deploy, site
from tests.functional.test_kube_backend import (
    DEPLOYMENTS,
    INGRESSES,
    JOBS,
    NS,
    SPEC,
    ClusterThread,
    cluster,
    finish_build,
    make_available,
)

__all__ = ["cluster"]  # the fixture, imported for pytest


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
    first = deploy(client, kube_team, site("v1")).body
    spec = replace(SPEC, slug=first["slug"], revision=1)
    finish_build(cluster, spec)
    status(client, kube_team, first["id"])
    make_available(cluster, spec)
    assert status(client, kube_team, first["id"]) == "healthy"
    again = deploy(client, kube_team, site("v2"), redeploy="true").body
    assert (again["id"], again["url"], again["revision"]) == (first["id"], first["url"], 2)
    assert len(cluster.names(JOBS)) == 2  # one build Job per revision
    assert status(client, kube_team, first["id"]) == "building"


def test_delete_removes_every_object(
    client: Client, kube_team: str, cluster: ClusterThread
) -> None:
    app = deploy(client, kube_team, site("v1")).body
    spec = replace(SPEC, slug=app["slug"], revision=1)
    finish_build(cluster, spec)
    status(client, kube_team, app["id"])
    path = f"/api/v1/deployments/{app['id']}"
    gone = call(client, "DELETE", path, bearer=kube_team, X_Skip_Email_Confirmation="yes")
    assert gone.body["deletion_status"] == "deleted"
    assert cluster.names(DEPLOYMENTS) == [] and cluster.names(JOBS) == []
