"""DeployBackend on a Kubernetes cluster: kaniko builds each revision in a Job, then a
Deployment, a Service and an Ingress (cert-manager TLS) run it at ``https://<slug>.<domain>``.

Stateless: the Job of a revision is its record (its annotation holds the port and limits the
Deployment needs), so ``observe`` works from any Lambda. The ``kubernetes`` package is imported
only when a client is first needed (it costs the cold start ~0.5 s otherwise). Label selectors
are sent and also re-checked here, so a server that ignores them (kmock) gives the same answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from chalicelib.config import DeploySettings
from chalicelib.deploy import manifests as m
from chalicelib.deploy.backend import BuildSpec, DeployStatus, Event, Observed
from chalicelib.deploy.classify import classify_build, classify_runtime

REQUEST_TIMEOUT = 10.0  # seconds per API call: a Lambda must not hang on a slow cluster
LOG_TAIL = 500  # lines of a failed pod's log handed to the classifier
MAX_RESTARTS = 3
# waiting states that do not clear up by themselves (the image is missing, the env is unusable)
STUCK = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "CreateContainerConfigError"})


def default_api_client(settings: DeploySettings) -> Any:
    """An ``ApiClient`` for ``settings.kube_api_url`` with the bearer token; TLS verified
    against ``kube_ca_file``, or not at all when it is "" (test servers only)."""
    from kubernetes import client  # type: ignore[import-untyped]

    config = client.Configuration()
    config.host = settings.kube_api_url
    config.api_key = {"authorization": settings.kube_token}
    config.api_key_prefix = {"authorization": "Bearer"}
    if settings.kube_ca_file:
        config.ssl_ca_cert = settings.kube_ca_file
    else:
        config.verify_ssl = False
    return client.ApiClient(config)


class _Apis:
    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.net = client.NetworkingV1Api(api_client)


def _status_of(exc: Exception) -> int | None:
    from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

    return int(exc.status) if isinstance(exc, ApiException) else None


def _labels_match(obj: Any, wanted: dict[str, str]) -> bool:
    labels = (obj.metadata.labels if obj.metadata else None) or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def _selector(wanted: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in wanted.items())


class KubeBackend:
    name = "kubernetes"

    def __init__(
        self,
        settings: DeploySettings,
        api_client_factory: Callable[[DeploySettings], Any] = default_api_client,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._factory = api_client_factory
        self._clock = clock
        self._apis: _Apis | None = None

    @property
    def _api(self) -> _Apis:
        if self._apis is None:
            self._apis = _Apis(self._factory(self._settings))
        return self._apis

    @property
    def _ns(self) -> str:
        return self._settings.kube_namespace

    def url_of(self, slug: str) -> str:
        return f"https://{m.host_of(slug, self._settings.domain)}"

    def internal_url_of(self, slug: str) -> str:
        """The app's ClusterIP Service (port 80) by its cluster DNS name."""
        return f"http://{m.app_name(slug)}.{self._ns}.svc.cluster.local"

    # --- start ---------------------------------------------------------------------------

    def start(self, spec: BuildSpec) -> None:
        if self._read(self._api.batch.read_namespaced_job, m.job_name(spec.slug, spec.revision)):
            return  # this revision is building or built already
        secret = m.env_secret(spec, self._settings)
        self._upsert(
            self._api.core.create_namespaced_secret,
            self._api.core.replace_namespaced_secret,
            secret,
        )
        try:
            self._api.batch.create_namespaced_job(
                self._ns, m.build_job(spec, self._settings), _request_timeout=REQUEST_TIMEOUT
            )
        except Exception as exc:
            if _status_of(exc) != 409:  # a concurrent start of the same revision won
                raise

    # --- observe -------------------------------------------------------------------------

    def observe(self, slug: str, revision: int) -> Observed:
        dep = self._read(self._api.apps.read_namespaced_deployment, m.app_name(slug))
        running = _revision_of(dep)
        if running is not None and running > revision:
            return _superseded(revision, running, int(self._clock()))
        if running == revision:
            return self._app_status(slug, revision, dep)
        job = self._read(self._api.batch.read_namespaced_job, m.job_name(slug, revision))
        if job is None:
            return _no_build(revision, int(self._clock()))
        state = _job_state(job)
        if state == "failed":
            return self._build_failed(slug, revision, job)
        if state == "running":
            return Observed(DeployStatus.BUILDING)
        annotations = job.metadata.annotations or {}
        spec = m.spec_from_annotation(slug, revision, annotations[m.SPEC])
        self._apply_app(spec)
        return Observed(DeployStatus.DEPLOYING)

    def _build_failed(self, slug: str, revision: int, job: Any) -> Observed:
        pod = self._newest(self._pods({"job-name": m.job_name(slug, revision)}))
        lines: list[str] = []
        exit_code: int | None = None
        if pod is not None:
            lines = self._pod_log(pod, "kaniko", tail=LOG_TAIL)
            exit_code = _exit_code(pod, "kaniko")
        if not lines:
            lines = _failed_condition_lines(job)
        event = classify_build(lines, exit_code, int(self._clock()))
        return Observed(DeployStatus.FAILED, event.message, (event,))

    def _apply_app(self, spec: BuildSpec) -> None:
        """Service and Ingress first, the Deployment last: a Deployment on this revision is
        what ``observe`` takes as "applied", so an interrupted apply is redone."""
        api = self._api
        self._upsert(
            api.core.create_namespaced_service,
            api.core.replace_namespaced_service,
            m.service(spec, self._settings),
        )
        self._upsert(
            api.net.create_namespaced_ingress,
            api.net.replace_namespaced_ingress,
            m.ingress(spec, self._settings),
        )
        self._upsert(
            api.apps.create_namespaced_deployment,
            api.apps.replace_namespaced_deployment,
            m.deployment(spec, self._settings),
        )
        self._prune_env_secrets(spec.slug, keep_from=spec.revision - 1)

    def _app_status(self, slug: str, revision: int, dep: Any) -> Observed:
        if _rolled_out(dep):
            return Observed(DeployStatus.HEALTHY)
        port = _container_port(dep)
        for pod in self._app_pods(slug, revision):
            for status in (pod.status.container_statuses if pod.status else None) or []:
                if _crashing(status):
                    return self._app_failed(pod, status, port)
        return Observed(DeployStatus.DEPLOYING)

    def _app_failed(self, pod: Any, status: Any, port: int | None) -> Observed:
        previous = bool(status.restart_count)
        lines = self._pod_log(pod, "app", tail=LOG_TAIL, previous=previous)
        if not lines and previous:
            lines = self._pod_log(pod, "app", tail=LOG_TAIL)
        if not lines:
            lines = _waiting_lines(status)
        event = classify_runtime(
            lines,
            _terminated_exit_code(status),
            int(self._clock()),
            oom=_oom_killed(status),
            listening=None,
            port=port,
        )
        return Observed(DeployStatus.FAILED, event.message, (event,))

    # --- logs and remove -----------------------------------------------------------------

    def logs(self, slug: str, revision: int, since_line: int = 0) -> list[str]:
        lines: list[str] = []
        build = self._newest(self._pods({"job-name": m.job_name(slug, revision)}))
        if build is not None:
            lines += self._pod_log(build, "kaniko")
        app = self._newest(self._app_pods(slug, revision))
        if app is not None:
            lines += self._pod_log(app, "app")
        return lines[since_line:]

    def remove(self, slug: str) -> None:
        api = self._api
        name = m.app_name(slug)
        self._delete(api.net.delete_namespaced_ingress, name)
        self._delete(api.core.delete_namespaced_service, name)
        self._delete(api.apps.delete_namespaced_deployment, name)
        self._delete(api.core.delete_namespaced_secret, m.tls_secret_name(slug))  # cert-manager's
        owned = {m.NAME: name}
        for secret in self._list(api.core.list_namespaced_secret, owned):
            self._delete(api.core.delete_namespaced_secret, secret.metadata.name)
        for job in self._list(api.batch.list_namespaced_job, owned):
            self._delete(api.batch.delete_namespaced_job, job.metadata.name)

    # --- helpers -------------------------------------------------------------------------

    def _read(self, read: Callable[..., Any], name: str) -> Any:
        try:
            return read(name, self._ns, _request_timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            if _status_of(exc) == 404:
                return None
            raise

    def _upsert(
        self, create: Callable[..., Any], replace: Callable[..., Any], body: m.Manifest
    ) -> None:
        try:
            create(self._ns, body, _request_timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            if _status_of(exc) != 409:
                raise
            replace(body["metadata"]["name"], self._ns, body, _request_timeout=REQUEST_TIMEOUT)

    def _delete(self, delete: Callable[..., Any], name: str) -> None:
        try:
            delete(
                name,
                self._ns,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except Exception as exc:
            if _status_of(exc) != 404:
                raise

    def _list(self, list_: Callable[..., Any], wanted: dict[str, str]) -> list[Any]:
        found = list_(self._ns, label_selector=_selector(wanted), _request_timeout=REQUEST_TIMEOUT)
        return [item for item in found.items or [] if _labels_match(item, wanted)]

    def _pods(self, wanted: dict[str, str]) -> list[Any]:
        return self._list(self._api.core.list_namespaced_pod, wanted)

    def _app_pods(self, slug: str, revision: int) -> list[Any]:
        return self._pods(m.selector(slug) | {m.REVISION: str(revision)})

    @staticmethod
    def _newest(pods: Iterable[Any]) -> Any:
        ordered = sorted(
            pods,
            key=lambda p: (
                p.metadata.creation_timestamp is not None,
                p.metadata.creation_timestamp or 0,
            ),
        )
        return ordered[-1] if ordered else None

    def _pod_log(
        self, pod: Any, container: str, *, tail: int | None = None, previous: bool = False
    ) -> list[str]:
        kwargs: dict[str, Any] = {"container": container, "_request_timeout": REQUEST_TIMEOUT}
        if tail is not None:
            kwargs["tail_lines"] = tail
        if previous:
            kwargs["previous"] = True
        try:
            text = self._api.core.read_namespaced_pod_log(pod.metadata.name, self._ns, **kwargs)
        except Exception as exc:
            if _status_of(exc) in (400, 404):  # not started yet, or gone
                return []
            raise
        return str(text or "").splitlines()

    def _prune_env_secrets(self, slug: str, keep_from: int) -> None:
        """Env Secrets of revisions older than ``keep_from`` (the one being replaced stays until
        the rollout is over: its pods may restart meanwhile)."""
        api = self._api
        for secret in self._list(api.core.list_namespaced_secret, {m.NAME: m.app_name(slug)}):
            rev = (secret.metadata.labels or {}).get(m.REVISION, "")
            if rev.isdigit() and int(rev) < keep_from:
                self._delete(api.core.delete_namespaced_secret, secret.metadata.name)


# --- reading objects ---------------------------------------------------------------------


def _revision_of(dep: Any) -> int | None:
    if dep is None or dep.spec is None or dep.spec.template.metadata is None:
        return None
    rev = (dep.spec.template.metadata.labels or {}).get(m.REVISION, "")
    return int(rev) if rev.isdigit() else None


def _job_state(job: Any) -> str:
    status = job.status
    if status is None:
        return "running"
    for cond in status.conditions or []:
        if cond.status == "True" and cond.type in ("Failed", "Complete"):
            return "failed" if cond.type == "Failed" else "succeeded"
    if status.succeeded:
        return "succeeded"
    if status.failed:
        return "failed"
    return "running"


def _failed_condition_lines(job: Any) -> list[str]:
    conditions = (job.status.conditions if job.status else None) or []
    return [f"{c.reason}: {c.message}" for c in conditions if c.type == "Failed" and c.reason]


def _rolled_out(dep: Any) -> bool:
    """The rollout of the Deployment's current template is over (as ``kubectl rollout status``
    decides it): every replica updated, the old ones gone, at least one available."""
    status, spec = dep.status, dep.spec
    if status is None:
        return False
    generation = dep.metadata.generation
    if generation is not None and (status.observed_generation or 0) < generation:
        return False
    want = spec.replicas if spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    available = status.available_replicas or 0
    total = status.replicas or 0
    return updated >= want and total <= updated and available >= max(updated, 1)


def _container_port(dep: Any) -> int | None:
    for container in dep.spec.template.spec.containers or []:
        for port in container.ports or []:
            return int(port.container_port)
    return None


def _crashing(status: Any) -> bool:
    waiting = status.state.waiting if status.state else None
    return (
        (waiting is not None and waiting.reason in STUCK)
        or _oom_killed(status)
        or (status.restart_count or 0) > MAX_RESTARTS
    )


def _waiting_lines(status: Any) -> list[str]:
    waiting = status.state.waiting if status.state else None
    if waiting is None or not waiting.reason:
        return []
    return [f"{waiting.reason}: {waiting.message}" if waiting.message else str(waiting.reason)]


def _terminations(status: Any) -> list[Any]:
    found = []
    for state in (status.state, status.last_state):
        if state is not None and state.terminated is not None:
            found.append(state.terminated)
    return found


def _oom_killed(status: Any) -> bool:
    return any(t.reason == "OOMKilled" for t in _terminations(status))


def _terminated_exit_code(status: Any) -> int | None:
    for terminated in _terminations(status):
        return int(terminated.exit_code)
    return None


def _exit_code(pod: Any, container: str) -> int | None:
    for status in (pod.status.container_statuses if pod.status else None) or []:
        if status.name == container:
            return _terminated_exit_code(status)
    return None


def _superseded(revision: int, running: int, at: int) -> Observed:
    message = f"Revision {revision} was replaced by revision {running}."
    event = Event(
        reason="Superseded",
        message=message,
        exit_code=None,
        last_lines=(),
        hint="Look at the newest revision of this deployment instead.",
        at=at,
    )
    return Observed(DeployStatus.FAILED, message, (event,))


def _no_build(revision: int, at: int) -> Observed:
    message = f"No build of revision {revision} is on the cluster (it expired or was removed)."
    event = Event(
        reason="BuildNotFound",
        message=message,
        exit_code=None,
        last_lines=(),
        hint="Redeploy the app to build it again.",
        at=at,
    )
    return Observed(DeployStatus.FAILED, message, (event,))
