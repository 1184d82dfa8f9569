"""KubeClient's requests and how it reads the answers: against kmock's emulator (see
test_kube_backend.py) for what it sends, and against a one-status HTTP(S) server of this file
for TLS, timeouts and the statuses kmock does not answer with."""

from __future__ import annotations

import base64
import http.server
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3

from chalicelib.config import DeploySettings
from chalicelib.deploy import kube_client
from chalicelib.deploy.kube_client import JOBS, PODS, SECRETS, KubeClient, KubeError
from chalicelib.errors import ConfigError
from tests.functional.test_kube_backend import NS, ClusterThread, cluster, settings

__all__ = ["cluster", "settings"]  # the fixtures, imported for pytest


def secret(name: str, labels: dict[str, str]) -> dict[str, Any]:
    meta = {"name": name, "namespace": NS, "labels": labels}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": {"k": name}}


def sent(cluster: ClusterThread) -> list[Any]:
    """The requests kmock received, oldest first."""
    return cluster.call(lambda c: list(c))


def test_every_call_carries_the_bearer_token(
    settings: DeploySettings, cluster: ClusterThread
) -> None:
    kube = KubeClient(settings)
    kube.create(SECRETS, secret("a", {}))
    kube.read(SECRETS, "a")
    kube.delete(SECRETS, "a")

    assert [r.headers["Authorization"] for r in sent(cluster)] == ["Bearer test-token"] * 3


def test_create_of_a_taken_name_is_false_and_changes_nothing(
    settings: DeploySettings, cluster: ClusterThread
) -> None:
    kube = KubeClient(settings)
    assert kube.create(SECRETS, secret("a", {"v": "1"})) is True

    assert kube.create(SECRETS, secret("a", {"v": "2"})) is False
    assert cluster.versions("v1/secrets", "a") == 1
    found = kube.read(SECRETS, "a")
    assert found is not None and found["metadata"]["labels"] == {"v": "1"}


def test_upsert_creates_then_replaces(settings: DeploySettings, cluster: ClusterThread) -> None:
    kube = KubeClient(settings)
    kube.upsert(SECRETS, secret("a", {"v": "1"}))
    kube.upsert(SECRETS, secret("a", {"v": "2"}))

    found = kube.read(SECRETS, "a")
    assert found is not None and found["metadata"]["labels"] == {"v": "2"}
    assert [r.method.value for r in sent(cluster)][:3] == ["POST", "POST", "PUT"]


def test_select_sends_the_selector_and_rechecks_the_labels(
    settings: DeploySettings, cluster: ClusterThread
) -> None:
    kube = KubeClient(settings)
    kube.create(SECRETS, secret("mine", {"app": "x", "rev": "1"}))
    kube.create(SECRETS, secret("other-rev", {"app": "x", "rev": "2"}))
    kube.create(SECRETS, secret("unlabelled", {}))

    found = kube.select(SECRETS, {"app": "x", "rev": "1"})

    assert [s["metadata"]["name"] for s in found] == ["mine"]
    assert sent(cluster)[-1].params == {"labelSelector": "app=x,rev=1"}  # kmock ignores it


def test_delete_is_background_and_of_a_missing_object_fine(
    settings: DeploySettings, cluster: ClusterThread
) -> None:
    kube = KubeClient(settings)
    kube.create(JOBS, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}})

    kube.delete(JOBS, "j")
    kube.delete(JOBS, "j")

    assert cluster.names("batch/v1/jobs") == []
    deletes = [r for r in sent(cluster) if r.method.value == "DELETE"]
    assert [r.params for r in deletes] == [{"propagationPolicy": "Background"}] * 2
    assert kube.read(JOBS, "j") is None


def test_pod_log_sends_tail_and_previous(settings: DeploySettings, cluster: ClusterThread) -> None:
    cluster.add_log("p", "app", ["one", "two", "three"], previous=True)
    pod = {"metadata": {"name": "p"}}

    assert KubeClient(settings).pod_log(pod, "app", tail=2, previous=True) == ["two", "three"]
    assert sent(cluster)[-1].params == {"container": "app", "tailLines": "2", "previous": "true"}
    assert KubeClient(settings).pod_log(pod, "app") == []  # no log of the current run: 404


# --- a server answering every request with one status ---------------------------------------


class OneStatus(http.server.BaseHTTPRequestHandler):
    status = 404

    def do_GET(self) -> None:
        body = json.dumps({"kind": "Status", "code": self.status, "message": "said the server"})
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(status: int, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    handler = type("Handler", (OneStatus,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def self_signed(directory: Path, name: str) -> Path:
    """A certificate for 127.0.0.1 (its key beside it), its own CA."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path]:
    """The server's certificate and another one."""
    return self_signed(tmp_path, "server"), self_signed(tmp_path, "other")


@pytest.fixture
def https_url(certs: tuple[Path, Path]) -> Iterator[str]:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certs[0], certs[0].with_suffix(".key"))
    with serving(404, tls) as url:
        yield url


def at(settings: DeploySettings, url: str, ca_file: str = "") -> KubeClient:
    return KubeClient(replace(settings, kube_api_url=url, kube_ca_file=ca_file))


def test_tls_is_verified_against_the_ca_file(
    settings: DeploySettings, https_url: str, certs: tuple[Path, Path]
) -> None:
    server, other = certs
    assert at(settings, https_url, str(server)).read(SECRETS, "a") is None  # 404: it answered
    with pytest.raises(requests.exceptions.SSLError):
        at(settings, https_url, str(other)).read(SECRETS, "a")


def test_tls_is_verified_against_the_ca_data_a_kubeconfig_carries(
    settings: DeploySettings, https_url: str, certs: tuple[Path, Path]
) -> None:
    """In Lambda there is no file: the CA comes base64-encoded in the settings."""
    server, other = (base64.b64encode(c.read_bytes()).decode() for c in certs)
    trusting = replace(settings, kube_api_url=https_url, kube_ca_data=server)
    assert KubeClient(trusting).read(SECRETS, "a") is None
    with pytest.raises(requests.exceptions.SSLError):
        KubeClient(replace(trusting, kube_ca_data=other)).read(SECRETS, "a")
    with pytest.raises(ConfigError, match="not base64"):
        KubeClient(replace(trusting, kube_ca_data="not base64!"))


def test_no_ca_file_is_tls_unverified(settings: DeploySettings, https_url: str) -> None:
    with pytest.warns(urllib3.exceptions.InsecureRequestWarning):
        assert at(settings, https_url).read(SECRETS, "a") is None


@pytest.mark.parametrize("status", [400, 404])
def test_pod_log_of_a_container_not_started_or_gone_is_empty(
    settings: DeploySettings, status: int
) -> None:
    with serving(status) as url:
        assert at(settings, url).pod_log({"metadata": {"name": "p"}}, "app") == []


def test_a_refusal_the_call_does_not_expect_raises_with_the_status_message(
    settings: DeploySettings,
) -> None:
    with serving(403) as url:
        kube = at(settings, url)
        with pytest.raises(KubeError, match="403 said the server") as refused:
            kube.read(SECRETS, "a")
        assert refused.value.status == 403
        with pytest.raises(KubeError):
            kube.pod_log({"metadata": {"name": "p"}}, "app")
        with pytest.raises(KubeError):
            kube.select(PODS, {})


def test_a_server_that_does_not_answer_times_out(
    settings: DeploySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube_client, "REQUEST_TIMEOUT", 0.3)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts in the backlog, never reads
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            at(settings, url).read(SECRETS, "a")
        assert time.monotonic() - started < 3
