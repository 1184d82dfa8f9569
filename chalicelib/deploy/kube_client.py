"""The Kubernetes API calls of ``KubeBackend``, in one namespace: each with a timeout, a missing
object read as None, an existing one on create left alone or replaced.

The ``kubernetes`` package is imported only when a client is first made (it costs the cold
start ~0.5 s otherwise). Label selectors are sent and also re-checked here, so a server that
ignores them (kmock) gives the same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.config import DeploySettings
from chalicelib.deploy.manifests import Manifest

REQUEST_TIMEOUT = 10.0  # seconds per API call: a Lambda must not hang on a slow cluster


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


class KubeClient:
    """The typed APIs (``core``, ``batch``, ``apps``, ``net``) and the calls made with them.
    A call takes the API method (``client.core.read_namespaced_pod``) and fills in the
    namespace and the timeout."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.net = client.NetworkingV1Api(api_client)
        self.namespace = namespace

    def read(self, read: Callable[..., Any], name: str) -> Any:
        """The object, or None when there is none of that name."""
        try:
            return read(name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            if _status_of(exc) == 404:
                return None
            raise

    def create(self, create: Callable[..., Any], body: Manifest) -> bool:
        """Create ``body``; False, with nothing changed, when its name is taken already."""
        try:
            create(self.namespace, body, _request_timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            if _status_of(exc) != 409:
                raise
            return False
        return True

    def upsert(
        self, create: Callable[..., Any], replace: Callable[..., Any], body: Manifest
    ) -> None:
        if not self.create(create, body):
            name = body["metadata"]["name"]
            replace(name, self.namespace, body, _request_timeout=REQUEST_TIMEOUT)

    def delete(self, delete: Callable[..., Any], name: str) -> None:
        """Delete the object and, in the background, what it owns; gone already is fine."""
        try:
            delete(
                name,
                self.namespace,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except Exception as exc:
            if _status_of(exc) != 404:
                raise

    def select(self, list_: Callable[..., Any], wanted: dict[str, str]) -> list[Any]:
        """The objects carrying every label in ``wanted``."""
        selector = ",".join(f"{k}={v}" for k, v in wanted.items())
        found = list_(self.namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT)
        return [item for item in found.items or [] if _labels_match(item, wanted)]

    def pods(self, wanted: dict[str, str]) -> list[Any]:
        return self.select(self.core.list_namespaced_pod, wanted)

    def pod_log(
        self, pod: Any, container: str, *, tail: int | None = None, previous: bool = False
    ) -> list[str]:
        """The container's log lines (the last ``tail``; of its previous run if ``previous``);
        none while it has not started or once the pod is gone."""
        kwargs: dict[str, Any] = {"container": container, "_request_timeout": REQUEST_TIMEOUT}
        if tail is not None:
            kwargs["tail_lines"] = tail
        if previous:
            kwargs["previous"] = True
        try:
            text = self.core.read_namespaced_pod_log(pod.metadata.name, self.namespace, **kwargs)
        except Exception as exc:
            if _status_of(exc) in (400, 404):
                return []
            raise
        return str(text or "").splitlines()


def _status_of(exc: Exception) -> int | None:
    from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

    return int(exc.status) if isinstance(exc, ApiException) else None


def _labels_match(obj: Any, wanted: dict[str, str]) -> bool:
    labels = (obj.metadata.labels if obj.metadata else None) or {}
    return all(labels.get(k) == v for k, v in wanted.items())
