"""KubeBackend against kmock's KubernetesEmulator: a real HTTP server speaking the Kubernetes API
with objects kept in memory, reached through the backend's REST client (``kube_client``).

kmock runs no controllers, so the tests play them: they patch a Job's status (the Job
controller), add the build or app pod with its log (the kubelet) and set the Deployment's
status (the Deployment controller). kmock 0.8 does not serve PUT (replace) or the ``pods/log``
subresource; ``Cluster`` below adds both, in the emulator's own terms (a PUT stores the body as
the object's next version; a log is text the test put there). Label selectors are ignored by
kmock: the backend filters by labels itself, which the tests rely on (pods of other jobs and
apps are present). See infra/terraform/README.md for what this does not prove.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp.web
import attrs
import kmock
import pytest

from chalicelib.config import DeploySettings
from chalicelib.deploy import manifests as m
from chalicelib.deploy.backend import BuildSpec, DeployStatus, Observed, PodLimits
from chalicelib.deploy.classify import classify_build, classify_runtime
from chalicelib.deploy.kube import KubeBackend
from chalicelib.deploy.kube_policies import BUILDS_POLICY

NS = "apps-test"
NOW = 1_750_000_000
JOBS = "batch/v1/jobs"
PODS = "v1/pods"
SECRETS = "v1/secrets"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
INGRESSES = "networking.k8s.io/v1/ingresses"
NETWORK_POLICIES = "networking.k8s.io/v1/networkpolicies"
T = TypeVar("T")


@attrs.define(kw_only=True)
class Cluster(kmock.KubernetesEmulator):
    """The emulator plus PUT (replace) and pod logs keyed (namespace, pod, container, previous)."""

    pod_logs: dict[tuple[str, str, str, bool], str] = attrs.field(factory=dict)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        named = request.resource is not None and request.name and not request.subresource
        if named and request.method == kmock.method.PUT:
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                raise kmock.KubernetesObjectNotFoundError()
            old = self.objects[key].raw
            new = dict(request.data)  # a PUT keeps the status and bumps the generation
            new["status"] = old.get("status", {})
            generation = old.get("metadata", {}).get("generation", 1) + 1
            new["metadata"] = {**new.get("metadata", {}), "generation": generation}
            self.objects[key].create(new)
            return aiohttp.web.json_response(self.objects[key].raw)
        if request.subresource == "log" and request.method == kmock.method.GET:
            previous = request.params.get("previous", "") == "true"
            container = request.params.get("container", "")
            log_key = (request.namespace or "", request.name or "", container, previous)
            if log_key not in self.pod_logs:
                raise kmock.KubernetesObjectNotFoundError()
            text = self.pod_logs[log_key]
            tail = request.params.get("tailLines")
            if tail is not None:
                text = "\n".join(text.splitlines()[-int(tail) :])
            return aiohttp.web.Response(text=text, content_type="text/plain")
        return await super()._handle(request)


class ClusterThread:
    """The emulator served on a free 127.0.0.1 port by its own event loop in a thread; the test
    touches its objects only through ``call`` (on that loop)."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._cluster: Cluster | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with Cluster() as cluster, kmock.Server(cluster, host="127.0.0.1") as server:
            cluster.resources.load_bundled()  # lists of kinds with no objects yet are empty
            self._cluster = cluster
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ClusterThread:
        self._thread.start()
        assert self._ready.wait(10), "kmock did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn: Callable[[Cluster], T]) -> T:
        assert self._loop is not None and self._cluster is not None
        cluster = self._cluster

        async def run() -> T:
            return fn(cluster)

        future: Future[T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(10)

    # --- reading and playing the controllers -------------------------------------------

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        def read(c: Cluster) -> dict[str, Any] | None:
            key = (kmock.resource(resource), NS, name)
            if key not in c.objects or c.objects[key].deleted:
                return None
            return dict(c.objects[key].raw)

        return self.call(read)

    def names(self, resource: str) -> list[str]:
        return self.call(
            lambda c: sorted(
                name
                for (res, _ns, name), obj in c.objects.items()
                if res == kmock.resource(resource) and not obj.deleted
            )
        )

    def versions(self, resource: str, name: str) -> int:
        return self.call(lambda c: len(c.objects[resource, NS, name].history))

    def patch(self, resource: str, name: str, changes: dict[str, Any]) -> None:
        self.call(lambda c: c.objects[resource, NS, name].patch(changes))

    def put(self, resource: str, obj: dict[str, Any]) -> None:
        """Store ``obj`` as a controller would make it (no API call, no version check)."""
        key = (resource, NS, obj["metadata"]["name"])
        self.call(lambda c: c.objects.__setitem__(key, obj))

    def add_pod(self, name: str, labels: dict[str, str], container: dict[str, Any]) -> None:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"containers": [{"name": container["name"], "image": container["image"]}]},
            "status": {"phase": "Running", "containerStatuses": [container]},
        }
        self.put(PODS, pod)

    def issue_certificate(self, slug: str) -> None:
        """What cert-manager makes for an app's Ingress: the TLS Secret it names."""
        name = m.tls_secret_name(slug)
        meta = {"name": name, "namespace": NS}
        self.put(
            SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque"}
        )

    def add_log(self, pod: str, container: str, lines: list[str], previous: bool = False) -> None:
        text = "\n".join(lines) + "\n"
        self.call(lambda c: c.pod_logs.__setitem__((NS, pod, container, previous), text))


@pytest.fixture
def cluster() -> Iterator[ClusterThread]:
    with ClusterThread() as running:
        yield running


@pytest.fixture
def settings(cluster: ClusterThread) -> DeploySettings:
    return DeploySettings(
        backend="kubernetes",
        domain="deployment.example.dev",
        bucket="instanode-deploys",
        state_dir="/nonexistent",
        port_range=(31000, 31999),
        kube_api_url=cluster.url,
        kube_token="test-token",
        kube_namespace=NS,
        kube_ca_file="",
        registry="registry.example.dev/instanode",
        kaniko_image="gcr.io/kaniko-project/executor:v1.23.2",
        ingress_class="nginx",
        cluster_issuer="letsencrypt",
    )


@pytest.fixture
def backend(settings: DeploySettings) -> KubeBackend:
    return KubeBackend(settings, clock=lambda: NOW)


SPEC = BuildSpec(
    app_id="app_0123abcd",
    slug="expense-tracker-7f3a",
    revision=1,
    bucket="instanode-deploys",
    context_key="deploys/app_0123abcd/1.tar.gz",
    port=8080,
    limits=PodLimits(cpu_millis=500, memory_mb=512),
    env={"DATABASE_URL": "postgres://u:p@db/x", "MODE": "prod"},
)
SPEC2 = replace(SPEC, revision=2, context_key="deploys/app_0123abcd/2.tar.gz", env={"MODE": "v2"})


def build_pod_labels(job: str) -> dict[str, str]:
    return {"job-name": job, "batch.kubernetes.io/job-name": job}


def finish_build(cluster: ClusterThread, spec: BuildSpec) -> None:
    cluster.patch(
        JOBS,
        m.job_name(spec.slug, spec.revision),
        {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
    )


def fail_build(cluster: ClusterThread, spec: BuildSpec, log: list[str], exit_code: int) -> None:
    """The build pod's kaniko exited with ``exit_code`` after printing ``log``; the Job failed."""
    job = m.job_name(spec.slug, spec.revision)
    terminated = {"terminated": {"exitCode": exit_code, "reason": "Error"}}
    cluster.add_pod(f"{job}-x7k2p", build_pod_labels(job), container_status("kaniko", terminated))
    cluster.add_log(f"{job}-x7k2p", "kaniko", log)
    failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
    cluster.patch(JOBS, job, {"status": {"failed": 1, "conditions": [failed]}})


def make_available(cluster: ClusterThread, spec: BuildSpec) -> None:
    name = m.app_name(spec.slug)
    dep = cluster.get(DEPLOYMENTS, name)
    assert dep is not None
    seen = dep["metadata"].get("generation", 1)
    counts = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    cluster.patch(DEPLOYMENTS, name, {"status": counts | {"observedGeneration": seen}})


def deploy_healthy(backend: KubeBackend, cluster: ClusterThread, spec: BuildSpec) -> None:
    backend.start(spec)
    finish_build(cluster, spec)
    assert backend.observe(spec.slug, spec.revision).status == DeployStatus.DEPLOYING
    make_available(cluster, spec)
    assert backend.observe(spec.slug, spec.revision).status == DeployStatus.HEALTHY


def test_url_of_is_the_slug_under_the_domain(backend: KubeBackend) -> None:
    assert (
        backend.url_of("expense-tracker-7f3a")
        == "https://expense-tracker-7f3a.deployment.example.dev"
    )


def test_start_creates_env_secret_and_build_job(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    backend.start(SPEC)

    secret = cluster.get(SECRETS, "expense-tracker-7f3a-env-1")
    assert secret is not None and secret["stringData"] == dict(SPEC.env)
    job = cluster.get(JOBS, "expense-tracker-7f3a-build-1")
    assert job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == [
        "--context=s3://instanode-deploys/deploys/app_0123abcd/1.tar.gz",
        "--dockerfile=Dockerfile",
        "--destination=registry.example.dev/instanode/expense-tracker-7f3a:1",
    ]
    assert container["image"] == "gcr.io/kaniko-project/executor:v1.23.2"


def test_start_job_uses_the_operator_secrets_configured(
    settings: DeploySettings, cluster: ClusterThread
) -> None:
    named = replace(
        settings, kube_build_aws_secret="ops-build-aws", kube_registry_auth_secret="ops-registry"
    )
    KubeBackend(named, clock=lambda: NOW).start(SPEC)

    job = cluster.get(JOBS, "expense-tracker-7f3a-build-1")
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "ops-build-aws"}}]
    assert [v["secret"]["secretName"] for v in pod["volumes"]] == ["ops-registry"]


def test_observe_running_job_is_building(backend: KubeBackend, cluster: ClusterThread) -> None:
    backend.start(SPEC)
    cluster.patch(JOBS, m.job_name(SPEC.slug, 1), {"status": {"active": 1}})

    assert backend.observe(SPEC.slug, 1) == Observed(DeployStatus.BUILDING)
    assert cluster.names(DEPLOYMENTS) == []


def test_start_same_revision_twice_changes_nothing(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    backend.start(SPEC)
    backend.start(SPEC)

    assert cluster.names(JOBS) == ["expense-tracker-7f3a-build-1"]
    assert cluster.versions(JOBS, "expense-tracker-7f3a-build-1") == 1
    assert cluster.versions(SECRETS, "expense-tracker-7f3a-env-1") == 1


def test_observe_job_succeeded_applies_app_objects(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    backend.start(SPEC)
    finish_build(cluster, SPEC)

    assert backend.observe(SPEC.slug, 1).status == DeployStatus.DEPLOYING
    dep = cluster.get(DEPLOYMENTS, "expense-tracker-7f3a")
    assert dep is not None
    app = dep["spec"]["template"]["spec"]["containers"][0]
    assert app["image"] == "registry.example.dev/instanode/expense-tracker-7f3a:1"
    assert app["ports"][0]["containerPort"] == 8080
    assert app["envFrom"] == [{"secretRef": {"name": "expense-tracker-7f3a-env-1"}}]
    assert app["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi"}
    svc = cluster.get(SERVICES, "expense-tracker-7f3a")
    assert svc is not None and svc["spec"]["ports"][0]["targetPort"] == 8080
    ing = cluster.get(INGRESSES, "expense-tracker-7f3a")
    assert ing is not None
    assert ing["spec"]["rules"][0]["host"] == "expense-tracker-7f3a.deployment.example.dev"


def test_observe_available_deployment_is_healthy(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    backend.start(SPEC)
    finish_build(cluster, SPEC)
    backend.observe(SPEC.slug, 1)
    make_available(cluster, SPEC)

    assert backend.observe(SPEC.slug, 1).status == DeployStatus.HEALTHY
    assert cluster.versions(DEPLOYMENTS, "expense-tracker-7f3a") == 2  # created, status: no PUT


def test_observe_failed_build_classifies_pod_log(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    backend.start(SPEC)
    log = [
        "INFO Retrieving image manifest python:3.12-slim",
        "error resolving dockerfile path: please provide a valid path to a Dockerfile within"
        " the build context with --dockerfile",
    ]
    terminated = {"terminated": {"exitCode": 1, "reason": "Error"}}
    other = container_status("kaniko", terminated)
    cluster.add_pod("other-build-1-abcde", build_pod_labels("other-build-1"), other)
    fail_build(cluster, SPEC, log, exit_code=1)

    observed = backend.observe(SPEC.slug, 1)

    assert observed.status == DeployStatus.FAILED
    assert observed.events == (classify_build(log, 1, NOW),)
    assert observed.events[0].reason == "DockerfileNotFound"
    assert observed.error_message == observed.events[0].message
    assert backend.logs(SPEC.slug, 1) == log
    assert backend.logs(SPEC.slug, 1, since_line=1) == log[1:]


def test_observe_crash_looping_app_classifies_previous_log(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    backend.start(SPEC)
    finish_build(cluster, SPEC)
    backend.observe(SPEC.slug, 1)
    pod = "expense-tracker-7f3a-5d9c7b-qwert"
    labels = m.selector(SPEC.slug) | {m.REVISION: "1"}
    waiting = {"waiting": {"reason": "CrashLoopBackOff"}}
    last = {"terminated": {"exitCode": 1, "reason": "Error"}}
    cluster.add_pod(pod, labels, container_status("app", waiting, last, restarts=4))
    log = ["Traceback (most recent call last):", "ModuleNotFoundError: No module named 'fastapi'"]
    cluster.add_log(pod, "app", log, previous=True)

    observed = backend.observe(SPEC.slug, 1)

    assert observed.status == DeployStatus.FAILED
    assert observed.events == (classify_runtime(log, 1, NOW, oom=False, listening=None, port=8080),)


def test_observe_oom_killed_app_says_so(backend: KubeBackend, cluster: ClusterThread) -> None:
    backend.start(SPEC)
    finish_build(cluster, SPEC)
    backend.observe(SPEC.slug, 1)
    pod = "expense-tracker-7f3a-5d9c7b-oomed"
    oom = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    labels = m.selector(SPEC.slug) | {m.REVISION: "1"}
    cluster.add_pod(pod, labels, container_status("app", {"running": {}}, oom, restarts=1))
    cluster.add_log(pod, "app", ["loading model..."], previous=True)

    observed = backend.observe(SPEC.slug, 1)

    expected = classify_runtime(["loading model..."], 137, NOW, oom=True, listening=None, port=8080)
    assert observed.events == (expected,)


def test_observe_image_pull_backoff_fails(backend: KubeBackend, cluster: ClusterThread) -> None:
    backend.start(SPEC)
    finish_build(cluster, SPEC)
    backend.observe(SPEC.slug, 1)
    pod = "expense-tracker-7f3a-5d9c7b-nopul"
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
    cluster.add_pod(
        pod, m.selector(SPEC.slug) | {m.REVISION: "1"}, container_status("app", waiting)
    )

    observed = backend.observe(SPEC.slug, 1)

    lines = ["ImagePullBackOff: Back-off pulling image"]
    expected = classify_runtime(lines, None, NOW, oom=False, listening=None, port=8080)
    assert observed.events == (expected,)


def test_redeploy_replaces_image_and_keeps_host(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    deploy_healthy(backend, cluster, SPEC)
    host = cluster.get(INGRESSES, "expense-tracker-7f3a")

    backend.start(SPEC2)
    assert backend.observe(SPEC.slug, 2).status == DeployStatus.BUILDING
    dep = cluster.get(DEPLOYMENTS, "expense-tracker-7f3a")
    assert dep is not None and dep["spec"]["template"]["metadata"]["labels"][m.REVISION] == "1"
    finish_build(cluster, SPEC2)
    assert backend.observe(SPEC.slug, 2).status == DeployStatus.DEPLOYING

    dep = cluster.get(DEPLOYMENTS, "expense-tracker-7f3a")
    assert dep is not None
    app = dep["spec"]["template"]["spec"]["containers"][0]
    assert app["image"] == "registry.example.dev/instanode/expense-tracker-7f3a:2"
    assert app["envFrom"] == [{"secretRef": {"name": "expense-tracker-7f3a-env-2"}}]
    ing = cluster.get(INGRESSES, "expense-tracker-7f3a")
    assert host is not None and ing is not None and ing["spec"] == host["spec"]
    assert backend.url_of(SPEC2.slug) == "https://expense-tracker-7f3a.deployment.example.dev"
    make_available(cluster, SPEC2)
    assert backend.observe(SPEC.slug, 2).status == DeployStatus.HEALTHY
    assert backend.observe(SPEC.slug, 1).status == DeployStatus.FAILED  # superseded


def test_redeploy_prunes_env_secrets_two_revisions_back(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    for revision in (1, 2, 3):
        deploy_healthy(backend, cluster, replace(SPEC, revision=revision))

    assert cluster.names(SECRETS) == ["expense-tracker-7f3a-env-2", "expense-tracker-7f3a-env-3"]


def test_remove_deletes_everything_and_twice_is_fine(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    deploy_healthy(backend, cluster, SPEC)
    backend.start(SPEC2)
    other = replace(SPEC, app_id="app_other", slug="other-app-1111")
    backend.start(other)
    cluster.issue_certificate(SPEC.slug)
    assert "expense-tracker-7f3a-tls" in cluster.names(SECRETS)

    backend.remove(SPEC.slug)

    for resource in (DEPLOYMENTS, SERVICES, INGRESSES):
        assert cluster.names(resource) == []
    assert cluster.names(NETWORK_POLICIES) == [BUILDS_POLICY]  # the other app's build needs it
    assert cluster.names(JOBS) == ["other-app-1111-build-1"]
    assert cluster.names(SECRETS) == ["other-app-1111-env-1"]
    backend.remove(SPEC.slug)
    assert cluster.names(SECRETS) == ["other-app-1111-env-1"]


def test_private_app_is_healthy_with_a_service_and_no_ingress(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    private = replace(SPEC, public=False)

    deploy_healthy(backend, cluster, private)  # the rollout decides: no Ingress is waited for

    assert cluster.names(INGRESSES) == []
    svc = cluster.get(SERVICES, "expense-tracker-7f3a")
    assert svc is not None and svc["spec"]["type"] == "ClusterIP"
    assert cluster.names(DEPLOYMENTS) == ["expense-tracker-7f3a"]
    assert backend.internal_url_of(private.slug) == (
        f"http://expense-tracker-7f3a.{NS}.svc.cluster.local"
    )


def test_redeploy_as_private_deletes_the_ingress_and_its_certificate(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    deploy_healthy(backend, cluster, SPEC)
    cluster.issue_certificate(SPEC.slug)
    assert cluster.names(INGRESSES) == ["expense-tracker-7f3a"]

    deploy_healthy(backend, cluster, replace(SPEC2, public=False))

    assert cluster.names(INGRESSES) == []
    assert "expense-tracker-7f3a-tls" not in cluster.names(SECRETS)
    assert cluster.get(SERVICES, "expense-tracker-7f3a") is not None
    backend.start(replace(SPEC, revision=3, public=False))  # and again: gone already is fine
    finish_build(cluster, replace(SPEC, revision=3))
    assert backend.observe(SPEC.slug, 3).status == DeployStatus.DEPLOYING


FROM_INGRESS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
}
FROM_SHOP = {
    "podSelector": {
        "matchLabels": {"instanode.dev/stack": "shop-a1b2c3", "app.kubernetes.io/component": "app"}
    }
}
WEB = replace(SPEC, app_id="stack_shop-a1b2c3_web", slug="shop-a1b2c3-web", group="shop-a1b2c3")
API = replace(WEB, app_id="stack_shop-a1b2c3_api", slug="shop-a1b2c3-api", public=False)


def admitted(cluster: ClusterThread, spec: BuildSpec) -> list[dict[str, Any]]:
    """The peers the app's NetworkPolicy admits, after checking it guards that app's pods (and
    their port, for ingress only)."""
    policy = cluster.get(NETWORK_POLICIES, m.app_name(spec.slug))
    assert policy is not None
    assert policy["spec"]["podSelector"] == {"matchLabels": m.selector(spec.slug)}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": spec.port}]
    peers: list[dict[str, Any]] = rule["from"]
    return peers


def test_public_app_admits_only_the_ingress_controller(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    deploy_healthy(backend, cluster, SPEC)

    assert cluster.names(NETWORK_POLICIES) == ["expense-tracker-7f3a", BUILDS_POLICY]
    assert admitted(cluster, SPEC) == [FROM_INGRESS]
    dep = cluster.get(DEPLOYMENTS, "expense-tracker-7f3a")
    assert dep is not None and m.STACK not in dep["spec"]["template"]["metadata"]["labels"]


def test_stack_services_admit_their_stack_and_only_a_public_one_the_controller(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    for spec in (WEB, API):
        deploy_healthy(backend, cluster, spec)

    assert admitted(cluster, WEB) == [FROM_SHOP, FROM_INGRESS]
    assert admitted(cluster, API) == [FROM_SHOP]
    for spec in (WEB, API):  # the stack's pods are what FROM_SHOP selects
        dep = cluster.get(DEPLOYMENTS, m.app_name(spec.slug))
        assert dep is not None
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels.items() >= FROM_SHOP["podSelector"]["matchLabels"].items()
    assert cluster.names(INGRESSES) == ["shop-a1b2c3-web"]


def test_redeploy_as_private_replaces_the_policy(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    deploy_healthy(backend, cluster, WEB)
    deploy_healthy(backend, cluster, replace(WEB, revision=2, public=False))

    assert admitted(cluster, WEB) == [FROM_SHOP]
    assert cluster.versions(NETWORK_POLICIES, "shop-a1b2c3-web") == 2


def test_remove_deletes_the_policies_of_that_app_only(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    for spec in (WEB, API):
        deploy_healthy(backend, cluster, spec)

    backend.remove(API.slug)
    assert cluster.names(NETWORK_POLICIES) == [BUILDS_POLICY, "shop-a1b2c3-web"]
    backend.remove(API.slug)
    backend.remove(WEB.slug)
    assert cluster.names(NETWORK_POLICIES) == [BUILDS_POLICY]  # the namespace's, for every build


def test_start_guards_every_build_pod_before_the_first_job(
    backend: KubeBackend, cluster: ClusterThread
) -> None:
    backend.start(SPEC)

    policy = cluster.get(NETWORK_POLICIES, BUILDS_POLICY)
    assert policy is not None
    job = cluster.get(JOBS, m.job_name(SPEC.slug, SPEC.revision))
    assert job is not None
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= pod_labels.items()  # the build's pod is what it guards
    assert policy["spec"]["ingress"] == []
    assert policy["spec"]["egress"][1]["to"][0]["ipBlock"]["except"] == list(
        backend._settings.kube_build_egress_except
    )


def container_status(
    name: str, state: dict[str, Any], last: dict[str, Any] | None = None, restarts: int = 0
) -> dict[str, Any]:
    """A containerStatus as the kubelet reports it (the client requires these fields)."""
    status: dict[str, Any] = {
        "name": name,
        "image": f"registry.example.dev/{name}:1",
        "imageID": "",
        "ready": False,
        "restartCount": restarts,
        "state": state,
    }
    if last is not None:
        status["lastState"] = last
    return status
