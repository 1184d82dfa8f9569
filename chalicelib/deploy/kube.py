"""DeployBackend on a Kubernetes cluster: kaniko builds each revision in a Job, then a
Deployment, a Service and an Ingress (cert-manager TLS) run it at ``https://<slug>.<domain>``.
A private app (a stack's ``expose: false``) gets no Ingress: only its ClusterIP Service, which
its stack's other services reach at ``internal_url_of``; its health is the Deployment's rollout
either way. Every app has a NetworkPolicy: its pods admit only the ingress controller (a public
app) and the pods of its own stack (see ``manifests.network_policy``); every build pod runs
under one that lets it reach DNS and the internet only (``kube_policies``).

Stateless: the Job of a revision is its record (its annotation holds the port and limits the
Deployment needs, whether the app is public and its stack), so ``observe`` works from any
Lambda. The API calls are in ``kube_client``, the reading of what the objects say in
``kube_status``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from chalicelib.config import DeploySettings
from chalicelib.deploy import kube_status as st
from chalicelib.deploy import manifests as m
from chalicelib.deploy.backend import BuildSpec, DeployStatus, Observed
from chalicelib.deploy.classify import classify_build, classify_runtime
from chalicelib.deploy.kube_client import (
    DEPLOYMENTS,
    INGRESSES,
    JOBS,
    NETWORK_POLICIES,
    SECRETS,
    SERVICES,
    KubeClient,
    Obj,
    field,
    name_of,
)
from chalicelib.deploy.kube_policies import build_network_policy

LOG_TAIL = 500  # lines of a failed pod's log handed to the classifier


class KubeBackend:
    name = "kubernetes"

    def __init__(
        self,
        settings: DeploySettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._client: KubeClient | None = None

    @property
    def _kube(self) -> KubeClient:
        if self._client is None:
            self._client = KubeClient(self._settings)
        return self._client

    def url_of(self, slug: str) -> str:
        return f"https://{m.host_of(slug, self._settings.domain)}"

    def internal_url_of(self, slug: str) -> str:
        """The app's ClusterIP Service (port 80) by its cluster DNS name."""
        return f"http://{m.app_name(slug)}.{self._settings.kube_namespace}.svc.cluster.local"

    # --- start ---------------------------------------------------------------------------

    def start(self, spec: BuildSpec) -> None:
        kube = self._kube
        if kube.read(JOBS, m.job_name(spec.slug, spec.revision)):
            return  # this revision is building or built already
        # before the first build pod: none runs unguarded
        kube.upsert(NETWORK_POLICIES, build_network_policy(self._settings))
        kube.upsert(SECRETS, m.env_secret(spec, self._settings))
        # a concurrent start of the same revision may have made the Job first: that one runs
        kube.create(JOBS, m.build_job(spec, self._settings))

    # --- observe -------------------------------------------------------------------------

    def observe(self, slug: str, revision: int) -> Observed:
        kube = self._kube
        dep = kube.read(DEPLOYMENTS, m.app_name(slug))
        running = st.revision_of(dep)
        if running is not None and running > revision:
            return st.superseded(revision, running, int(self._clock()))
        if dep is not None and running == revision:
            return self._app_status(slug, revision, dep)
        job = kube.read(JOBS, m.job_name(slug, revision))
        if job is None:
            return st.no_build(revision, int(self._clock()))
        state = st.job_state(job)
        if state == "failed":
            return self._build_failed(slug, revision, job)
        if state == "running":
            return Observed(DeployStatus.BUILDING)
        spec = m.spec_from_annotation(slug, revision, job["metadata"]["annotations"][m.SPEC])
        self._apply_app(spec)
        return Observed(DeployStatus.DEPLOYING)

    def _build_failed(self, slug: str, revision: int, job: Obj) -> Observed:
        pod = st.newest(self._kube.pods({"job-name": m.job_name(slug, revision)}))
        lines: list[str] = []
        exit_code: int | None = None
        if pod is not None:
            lines = self._kube.pod_log(pod, "kaniko", tail=LOG_TAIL)
            exit_code = st.exit_code(pod, "kaniko")
        if not lines:
            lines = st.failed_condition_lines(job)
        event = classify_build(lines, exit_code, int(self._clock()))
        return Observed(DeployStatus.FAILED, event.message, (event,))

    def _apply_app(self, spec: BuildSpec) -> None:
        """NetworkPolicy, Service and Ingress first, the Deployment last: a Deployment on this
        revision is what ``observe`` takes as "applied", so an interrupted apply is redone (and
        no pod of it runs before its policy). A private app's Ingress (left from a public
        revision) and its certificate's Secret are deleted instead."""
        kube = self._kube
        kube.upsert(NETWORK_POLICIES, m.network_policy(spec, self._settings))
        kube.upsert(SERVICES, m.service(spec, self._settings))
        if spec.public:
            kube.upsert(INGRESSES, m.ingress(spec, self._settings))
        else:
            kube.delete(INGRESSES, m.app_name(spec.slug))
            kube.delete(SECRETS, m.tls_secret_name(spec.slug))
        kube.upsert(DEPLOYMENTS, m.deployment(spec, self._settings))
        self._prune_env_secrets(spec.slug, keep_from=spec.revision - 1)

    def _app_status(self, slug: str, revision: int, dep: Obj) -> Observed:
        if st.rolled_out(dep):
            return Observed(DeployStatus.HEALTHY)
        port = st.container_port(dep)
        for pod in self._app_pods(slug, revision):
            for status in st.container_statuses(pod):
                if st.crashing(status):
                    return self._app_failed(pod, status, port)
        return Observed(DeployStatus.DEPLOYING)

    def _app_failed(self, pod: Obj, status: Obj, port: int | None) -> Observed:
        previous = st.restarts(status) > 0
        lines = self._kube.pod_log(pod, "app", tail=LOG_TAIL, previous=previous)
        if not lines and previous:
            lines = self._kube.pod_log(pod, "app", tail=LOG_TAIL)
        if not lines:
            lines = st.waiting_lines(status)
        event = classify_runtime(
            lines,
            st.terminated_exit_code(status),
            int(self._clock()),
            oom=st.oom_killed(status),
            listening=None,
            port=port,
        )
        return Observed(DeployStatus.FAILED, event.message, (event,))

    # --- logs and remove -----------------------------------------------------------------

    def logs(self, slug: str, revision: int, since_line: int = 0) -> list[str]:
        lines: list[str] = []
        build = st.newest(self._kube.pods({"job-name": m.job_name(slug, revision)}))
        if build is not None:
            lines += self._kube.pod_log(build, "kaniko")
        app = st.newest(self._app_pods(slug, revision))
        if app is not None:
            lines += self._kube.pod_log(app, "app")
        return lines[since_line:]

    def remove(self, slug: str) -> None:
        kube = self._kube
        name = m.app_name(slug)
        for kind in (INGRESSES, SERVICES, DEPLOYMENTS, NETWORK_POLICIES):
            kube.delete(kind, name)
        kube.delete(SECRETS, m.tls_secret_name(slug))  # cert-manager's
        for kind in (SECRETS, JOBS):
            for owned in kube.select(kind, {m.NAME: name}):
                kube.delete(kind, name_of(owned))

    # --- helpers -------------------------------------------------------------------------

    def _app_pods(self, slug: str, revision: int) -> list[Obj]:
        return self._kube.pods(m.selector(slug) | {m.REVISION: str(revision)})

    def _prune_env_secrets(self, slug: str, keep_from: int) -> None:
        """Env Secrets of revisions older than ``keep_from`` (the one being replaced stays until
        the rollout is over: its pods may restart meanwhile)."""
        kube = self._kube
        for secret in kube.select(SECRETS, {m.NAME: m.app_name(slug)}):
            rev = field(secret, "metadata", "labels", m.REVISION) or ""
            if rev.isdigit() and int(rev) < keep_from:
                kube.delete(SECRETS, name_of(secret))
