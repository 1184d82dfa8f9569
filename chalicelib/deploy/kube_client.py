"""The Kubernetes API calls of ``KubeBackend``, in one namespace, over the REST API with
``requests`` (the ``kubernetes`` package and its dependencies would be most of the Lambda
package): each with a timeout, a missing object read as None, an existing one on create left
alone or replaced.

Objects are the JSON the API answers with, as dicts (``Obj``; ``field`` reads a nested value).
Label selectors are sent and also re-checked here, so a server that ignores them (kmock) gives
the same answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from chalicelib.config import DeploySettings
from chalicelib.deploy.manifests import Manifest
from chalicelib.errors import ConfigError

REQUEST_TIMEOUT = 10.0  # seconds per API call: a Lambda must not hang on a slow cluster
Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """Where the objects of a kind are: ``<api>/namespaces/<namespace>/<plural>``."""

    api: str  # "api/v1" for the core group, else "apis/<group>/<version>"
    plural: str


PODS = Kind("api/v1", "pods")
SECRETS = Kind("api/v1", "secrets")
SERVICES = Kind("api/v1", "services")
JOBS = Kind("apis/batch/v1", "jobs")
DEPLOYMENTS = Kind("apis/apps/v1", "deployments")
INGRESSES = Kind("apis/networking.k8s.io/v1", "ingresses")
NETWORK_POLICIES = Kind("apis/networking.k8s.io/v1", "networkpolicies")


class KubeError(Exception):
    """The API refused a call with a status the call does not expect."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status


def field(obj: Obj | None, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, None where a level is missing or null."""
    value: Any = obj
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def name_of(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def trust_of(settings: DeploySettings) -> str | bool:
    """What ``requests`` verifies the API's certificate against: ``kube_ca_data`` (written once
    to a file named by its digest, as ``requests`` takes only paths), else ``kube_ca_file``,
    else nothing (test servers only: a prod stage refuses that configuration)."""
    if not settings.kube_ca_data:
        return settings.kube_ca_file or False
    try:
        pem = base64.b64decode(settings.kube_ca_data, validate=True)
    except binascii.Error as exc:
        raise ConfigError("INSTANODE_KUBE_CA_DATA is not base64") from exc
    path = (
        Path(tempfile.gettempdir())
        / f"instanode-kube-ca-{hashlib.sha256(pem).hexdigest()[:16]}.pem"
    )
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}")
        partial.write_bytes(pem)
        partial.replace(path)  # whole or not at all, whatever runs beside
    return str(path)


class KubeClient:
    """One ``requests.Session`` to ``settings.kube_api_url`` with the bearer token; TLS verified
    against the cluster's CA (``trust_of``)."""

    def __init__(self, settings: DeploySettings) -> None:
        self.namespace = settings.kube_namespace
        self._base = settings.kube_api_url.rstrip("/")
        self._session = requests.Session()
        # no proxy, .netrc or CA bundle from the environment (REQUESTS_CA_BUNDLE would replace
        # ``verify``): the settings alone say where the API is and whom to trust
        self._session.trust_env = False
        self._session.headers["Authorization"] = f"Bearer {settings.kube_token}"
        self._session.verify = trust_of(settings)

    def read(self, kind: Kind, name: str) -> Obj | None:
        """The object, or None when there is none of that name."""
        answer = self._call("GET", self._path(kind, name), allowed=(404,))
        return _obj(answer) if answer.ok else None

    def create(self, kind: Kind, body: Manifest) -> bool:
        """Create ``body``; False, with nothing changed, when its name is taken already."""
        return self._call("POST", self._path(kind), allowed=(409,), json=body).ok

    def upsert(self, kind: Kind, body: Manifest) -> None:
        if not self.create(kind, body):
            self._call("PUT", self._path(kind, body["metadata"]["name"]), json=body)

    def delete(self, kind: Kind, name: str) -> None:
        """Delete the object and, in the background, what it owns; gone already is fine."""
        params = {"propagationPolicy": "Background"}
        self._call("DELETE", self._path(kind, name), allowed=(404,), params=params)

    def select(self, kind: Kind, wanted: dict[str, str]) -> list[Obj]:
        """The objects carrying every label in ``wanted``."""
        selector = ",".join(f"{k}={v}" for k, v in wanted.items())
        answer = self._call("GET", self._path(kind), params={"labelSelector": selector})
        items: list[Obj] = _obj(answer).get("items") or []
        return [item for item in items if _labels_match(item, wanted)]

    def pods(self, wanted: dict[str, str]) -> list[Obj]:
        return self.select(PODS, wanted)

    def pod_log(
        self, pod: Obj, container: str, *, tail: int | None = None, previous: bool = False
    ) -> list[str]:
        """The container's log lines (the last ``tail``; of its previous run if ``previous``);
        none while it has not started or once the pod is gone."""
        params: dict[str, str | int] = {"container": container}
        if tail is not None:
            params["tailLines"] = tail
        if previous:
            params["previous"] = "true"
        path = self._path(PODS, name_of(pod)) + "/log"
        answer = self._call("GET", path, allowed=(400, 404), params=params)
        return answer.text.splitlines() if answer.ok else []

    def _path(self, kind: Kind, name: str | None = None) -> str:
        path = f"/{kind.api}/namespaces/{self.namespace}/{kind.plural}"
        return path if name is None else f"{path}/{name}"

    def _call(
        self, method: str, path: str, allowed: tuple[int, ...] = (), **kwargs: Any
    ) -> requests.Response:
        """The answer: a success or one of the ``allowed`` statuses; KubeError otherwise."""
        url = self._base + path
        answer = self._session.request(method, url, timeout=REQUEST_TIMEOUT, **kwargs)
        if not answer.ok and answer.status_code not in allowed:
            raise KubeError(method, path, answer.status_code, _message(answer))
        return answer


def _obj(answer: requests.Response) -> Obj:
    body: Obj = answer.json()
    return body


def _message(answer: requests.Response) -> str:
    """The ``message`` of the Status the API answers a refused call with (or the reason)."""
    try:
        message = field(answer.json(), "message")
    except ValueError:
        message = None
    return str(message or answer.reason)


def _labels_match(obj: Obj, wanted: dict[str, str]) -> bool:
    labels = field(obj, "metadata", "labels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())
