"""The local deploy backend against real podman and buildah (no mocks): build contexts become
containers answering on 127.0.0.1:<host port> (and, for other containers, at their internal URL;
a private app only there); failures come back classified, and a redeploy that fails to start
leaves the previous revision serving."""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from chalicelib.config import DeploySettings
from chalicelib.deploy import firewall
from chalicelib.deploy.backend import BuildSpec, DeployStatus, Observed, PodLimits
from chalicelib.deploy.baseimage import BUSYBOX_IMAGE, ensure_busybox_image
from chalicelib.deploy.local import LocalBackend, processes
from chalicelib.deploy.podman import container_of, image_of, inspect_network, network_of, spare_of

BUCKET = "deploys"
HTTPD = 'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]'


def context(dockerfile: str, **files: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in {"Dockerfile": dockerfile, **files}.items():
            data = text.encode()
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(data), 0o644
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def site(body: str, cmd: str = HTTPD) -> bytes:
    dockerfile = f"FROM {BUSYBOX_IMAGE}\nCOPY index.html /www/index.html\nEXPOSE 8080\n{cmd}\n"
    return context(dockerfile, **{"index.html": body})


# A CGI script that answers with what GET / at $API_URL (http://host:port) answers, fetched with
# busybox nc (busybox wget crashes in these containers).
FETCH_CGI = """#!/bin/sh
echo "Content-Type: text/plain"
echo ""
hostport=${API_URL#http://}
printf 'GET / HTTP/1.0\\r\\nHost: api\\r\\n\\r\\n' | nc -w 5 "${hostport%:*}" "${hostport##*:}" 2>&1
"""


def fetcher() -> bytes:
    """An app on port 8080 whose /cgi-bin/api fetches $API_URL when asked."""
    dockerfile = (
        f"FROM {BUSYBOX_IMAGE}\nCOPY api.cgi /www/cgi-bin/api\nRUN chmod 755 /www/cgi-bin/api\n"
        f"{HTTPD}\n"
    )
    return context(dockerfile, **{"api.cgi": FETCH_CGI})


class Deployer:
    """A backend on a private state dir and port range, with helpers to deploy and wait."""

    def __init__(self, state_dir: Path) -> None:
        env = {
            "INSTANODE_DEPLOY_STATE_DIR": str(state_dir),
            "INSTANODE_DEPLOY_PORTS": "41000-41099",
        }
        self.settings = DeploySettings.from_env({**env, "INSTANODE_DEPLOY_BUCKET": BUCKET})
        self.contexts: dict[tuple[str, str], bytes] = {}
        self.backend = LocalBackend(self.settings, lambda b, k: self.contexts[(b, k)])
        self.slugs: set[str] = set()

    def start(
        self,
        slug: str,
        revision: int,
        data: bytes,
        env: dict[str, str] | None = None,
        public: bool = True,
        group: str | None = None,
    ) -> None:
        key = f"deploys/app_{slug}/{revision}.tar.gz"
        self.contexts[(BUCKET, key)] = data
        self.slugs.add(slug)
        spec = BuildSpec(
            app_id=f"app_{slug}",
            slug=slug,
            revision=revision,
            bucket=BUCKET,
            context_key=key,
            port=8080,
            limits=PodLimits(cpu_millis=500, memory_mb=64),
            env=env or {},
            public=public,
            group=group,
        )
        self.backend.start(spec)

    def wait(self, slug: str, revision: int, during: Callable[[], None] = lambda: None) -> Observed:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            during()
            observed = self.backend.observe(slug, revision)
            if observed.status in (DeployStatus.HEALTHY, DeployStatus.FAILED):
                return observed
            time.sleep(0.2)
        raise AssertionError(f"{slug} revision {revision} still {observed.status}")

    def port(self, slug: str) -> int:
        return int(self.backend.url_of(slug).rsplit(":", 1)[1])

    def settle(self, slug: str, revision: int) -> None:
        """Wait until the revision's worker exited: it prunes images after the final status."""
        pid_file = Path(self.settings.state_dir) / slug / str(revision) / "worker.pid"
        pid = json.loads(pid_file.read_text())["pid"]
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}/stat").exists() and not _zombie(pid):
            assert time.monotonic() < deadline, f"the worker of {slug} {revision} still runs"
            time.sleep(0.1)

    def get(self, slug: str, path: str = "/") -> str:
        return requests.get(f"http://127.0.0.1:{self.port(slug)}{path}", timeout=5).text


@pytest.fixture(scope="module")
def deployer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployer]:
    ensure_busybox_image()
    deployer = Deployer(tmp_path_factory.mktemp("deploys"))
    yield deployer
    for slug in deployer.slugs:
        deployer.backend.remove(slug)


def new_slug() -> str:
    return f"t-{secrets.token_hex(4)}"


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=False)


def test_start_serves_the_context_at_its_url(deployer: Deployer) -> None:
    slug = new_slug()
    deployer.start(slug, 1, site("<h1>hello from rev 1</h1>"))

    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o
    url = deployer.backend.url_of(slug)
    assert url == f"http://{slug}.localhost:{deployer.port(slug)}"
    direct = requests.get(f"http://127.0.0.1:{deployer.port(slug)}/index.html", timeout=5)
    assert direct.text == "<h1>hello from rev 1</h1>"
    by_host = requests.get(
        f"http://127.0.0.1:{deployer.port(slug)}/index.html",
        headers={"Host": url.removeprefix("http://")},
        timeout=5,
    )
    assert by_host.text == "<h1>hello from rev 1</h1>"


def test_start_passes_env_to_the_app_but_not_to_logs_or_ps(deployer: Deployer) -> None:
    slug, greeting = new_slug(), f"secret-{secrets.token_hex(8)}"
    multiline = f"line-one-{secrets.token_hex(4)}\nline-two"
    cmd = (
        'CMD ["sh", "-c", "echo \\"$GREETING\\" > /www/greeting.txt && '
        'echo \\"$MULTI\\" > /www/multi.txt && exec httpd -f -p 8080 -h /www"]'
    )
    seen: list[str] = []
    deployer.start(slug, 1, site("env", cmd), env={"GREETING": greeting, "MULTI": multiline})

    def sample_ps() -> None:
        seen.append(
            subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        )

    assert deployer.wait(slug, 1, during=sample_ps).status == DeployStatus.HEALTHY
    sample_ps()
    base = f"http://127.0.0.1:{deployer.port(slug)}"
    assert requests.get(f"{base}/greeting.txt", timeout=5).text == f"{greeting}\n"
    assert requests.get(f"{base}/multi.txt", timeout=5).text == f"{multiline}\n"
    secret_parts = (greeting, multiline.split("\n")[0])
    assert not [s for s in seen if any(part in s for part in secret_parts)]
    revision_dir = Path(deployer.settings.state_dir) / slug / "1"
    for path in revision_dir.rglob("*"):
        if path.is_file():
            assert not any(part in path.read_text(errors="replace") for part in secret_parts)
    assert not any(part in "\n".join(deployer.backend.logs(slug, 1)) for part in secret_parts)
    assert not (revision_dir / "env").exists()


def test_start_of_a_broken_dockerfile_fails_with_a_build_event(deployer: Deployer) -> None:
    slug = new_slug()
    deployer.start(slug, 1, context(f"FROM {BUSYBOX_IMAGE}\nRUNN x\n"))

    observed = deployer.wait(slug, 1)

    assert observed.status == DeployStatus.FAILED
    assert observed.error_message
    (event,) = observed.events
    assert event.exit_code not in (None, 0)
    assert any("RUNN" in line for line in event.last_lines)
    assert not any(line.startswith("[instanode]") for line in event.last_lines)
    assert podman("image", "exists", image_of(slug, 1)).returncode != 0


def test_a_base_image_neither_here_nor_pullable_fails_naming_the_ones_here(
    deployer: Deployer,
) -> None:
    """No registry answers here: FROM python:3.12-slim (which Debian does not ship, so no
    image of that name is made) fails at the pull, and the hint lists what this machine has."""
    slug = new_slug()
    deployer.start(slug, 1, context("FROM python:3.12-slim\nRUN echo hi\n"))

    observed = deployer.wait(slug, 1)

    assert observed.status == DeployStatus.FAILED
    (event,) = observed.events
    assert event.reason == "BaseImagePullFailed", event
    assert "python:3.11-slim" in event.hint and "localhost/instanode/busybox:latest" in event.hint
    assert "python:3.12" not in event.hint  # never recommends what just failed


def test_start_of_a_cmd_that_exits_fails_at_runtime(deployer: Deployer) -> None:
    slug = new_slug()
    deployer.start(slug, 1, site("x", 'CMD ["sh", "-c", "echo boom-at-start; exit 3"]'))

    observed = deployer.wait(slug, 1)

    assert observed.status == DeployStatus.FAILED
    (event,) = observed.events
    assert event.exit_code == 3
    assert "boom-at-start" in event.last_lines


def test_observe_fails_a_healthy_app_whose_container_exited(deployer: Deployer) -> None:
    slug = new_slug()
    deployer.start(slug, 1, site("short-lived"))
    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o

    podman("kill", container_of(slug))
    observed = deployer.backend.observe(slug, 1)

    assert observed.status == DeployStatus.FAILED
    assert observed.events[0].exit_code == 137


def test_start_twice_is_a_no_op(deployer: Deployer) -> None:
    slug = new_slug()
    deployer.start(slug, 1, site("once"))
    pid_file = Path(deployer.settings.state_dir) / slug / "1" / "worker.pid"
    first = pid_file.read_text()

    deployer.start(slug, 1, site("twice"))

    assert pid_file.read_text() == first
    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o
    assert requests.get(f"http://127.0.0.1:{deployer.port(slug)}/", timeout=5).text == "once"


def test_redeploy_keeps_the_url_and_serves_the_new_body(deployer: Deployer) -> None:
    slug = new_slug()
    deployer.start(slug, 1, site("version one"))
    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o
    url = deployer.backend.url_of(slug)

    deployer.start(slug, 2, site("version two"))

    assert (o := deployer.wait(slug, 2)).status == DeployStatus.HEALTHY, o
    assert deployer.backend.url_of(slug) == url
    assert requests.get(f"http://127.0.0.1:{deployer.port(slug)}/", timeout=5).text == "version two"
    assert deployer.backend.observe(slug, 1).status == DeployStatus.HEALTHY  # replaced, not failed
    deployer.settle(slug, 2)
    assert podman("image", "exists", image_of(slug, 1)).returncode != 0  # pruned


def test_an_older_revision_built_late_does_not_replace_a_newer_one(deployer: Deployer) -> None:
    slug = new_slug()
    slow = f"FROM {BUSYBOX_IMAGE}\nRUN sleep 3\nCOPY index.html /www/index.html\n{HTTPD}\n"
    deployer.start(slug, 1, context(slow, **{"index.html": "old"}))
    deployer.start(slug, 2, site("new"))

    assert (o := deployer.wait(slug, 2)).status == DeployStatus.HEALTHY, o
    older = deployer.wait(slug, 1)

    assert older.status == DeployStatus.FAILED
    assert older.events[0].reason == "Superseded"
    assert requests.get(f"http://127.0.0.1:{deployer.port(slug)}/", timeout=5).text == "new"


def test_an_app_reaches_another_of_its_group_at_its_internal_url(deployer: Deployer) -> None:
    group, api, web = new_slug(), new_slug(), new_slug()
    body = f"api-body-{secrets.token_hex(4)}"
    deployer.start(api, 1, site(body), group=group)
    assert (o := deployer.wait(api, 1)).status == DeployStatus.HEALTHY, o
    internal = deployer.backend.internal_url_of(api)

    deployer.start(web, 1, fetcher(), env={"API_URL": internal}, group=group)

    observed = deployer.wait(web, 1)
    assert observed.status == DeployStatus.HEALTHY, observed
    assert internal == f"http://host.containers.internal:{deployer.port(api)}"
    fetched = deployer.get(web, "/cgi-bin/api")
    assert "200 OK" in fetched and body in fetched, fetched


def test_an_app_cannot_reach_another_groups_app(deployer: Deployer) -> None:
    api, web, body = new_slug(), new_slug(), f"api-body-{secrets.token_hex(4)}"
    deployer.start(api, 1, site(body))
    assert (o := deployer.wait(api, 1)).status == DeployStatus.HEALTHY, o
    api_url = deployer.backend.internal_url_of(api)
    gateway = network_gateway(api)  # another network's gateway, where api is published

    deployer.start(web, 1, fetcher(), env={"API_URL": f"http://{gateway}:{deployer.port(api)}"})

    assert (o := deployer.wait(web, 1)).status == DeployStatus.HEALTHY, o
    assert body in deployer.get(api)  # api serves (from the host)
    fetched = deployer.get(web, "/cgi-bin/api")
    assert "200 OK" not in fetched and body not in fetched, fetched
    other = new_slug()  # nor at the internal URL, in its own network: no api there either
    deployer.start(other, 1, fetcher(), env={"API_URL": api_url})
    assert (o := deployer.wait(other, 1)).status == DeployStatus.HEALTHY, o
    fetched = deployer.get(other, "/cgi-bin/api")
    assert "200 OK" not in fetched and body not in fetched, fetched


def network_gateway(slug: str) -> str:
    network = inspect_network(network_of(slug))
    assert network is not None, f"{slug} has no network"
    return network.gateway


def test_a_private_app_answers_its_group_but_not_on_loopback(deployer: Deployer) -> None:
    group, api, web = new_slug(), new_slug(), new_slug()
    body = f"private-body-{secrets.token_hex(4)}"
    deployer.start(api, 1, site(body), public=False, group=group)
    assert deployer.wait(api, 1).status == DeployStatus.HEALTHY  # checked at the gateway
    internal = deployer.backend.internal_url_of(api)

    deployer.start(web, 1, fetcher(), env={"API_URL": internal}, group=group)

    assert (o := deployer.wait(web, 1)).status == DeployStatus.HEALTHY, o
    fetched = deployer.get(web, "/cgi-bin/api")
    assert "200 OK" in fetched and body in fetched, fetched
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{deployer.port(api)}/", timeout=5)


def test_a_redeploy_that_crashes_leaves_the_previous_revision_serving(deployer: Deployer) -> None:
    slug = new_slug()
    deployer.start(slug, 1, site("revision one"))
    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o

    deployer.start(slug, 2, site("x", 'CMD ["sh", "-c", "echo crash-on-start; exit 1"]'))
    observed = deployer.wait(slug, 2)

    assert observed.status == DeployStatus.FAILED
    (event,) = observed.events
    assert (event.reason, event.exit_code) == ("CrashLoop", 1)
    assert "crash-on-start" in event.last_lines
    assert deployer.get(slug) == "revision one"
    assert deployer.backend.observe(slug, 2).status == DeployStatus.FAILED
    assert deployer.backend.observe(slug, 1).status == DeployStatus.HEALTHY
    logs = deployer.backend.logs(slug, 2)
    assert "[instanode] revision 1 serves again" in logs and "crash-on-start" in logs
    assert containers_of(slug) == [container_of(slug)]  # the failed one is gone, none parked
    deployer.settle(slug, 2)
    assert podman("image", "exists", image_of(slug, 1)).returncode == 0  # it serves: kept
    assert podman("image", "exists", image_of(slug, 2)).returncode != 0

    deployer.start(slug, 3, site("revision three"))  # and the next good one replaces it

    assert (o := deployer.wait(slug, 3)).status == DeployStatus.HEALTHY, o
    assert deployer.get(slug) == "revision three"
    deployer.settle(slug, 3)
    assert containers_of(slug) == [container_of(slug)]  # the parked one removed
    assert podman("image", "exists", image_of(slug, 1)).returncode != 0


def test_a_redeploy_that_never_listens_leaves_the_previous_revision_serving(
    deployer: Deployer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deployer.backend, "health_timeout", 3.0)
    slug = new_slug()
    deployer.start(slug, 1, site("still revision one"))
    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o
    seen: set[DeployStatus] = set()

    deployer.start(slug, 2, site("x", 'CMD ["sleep", "600"]'))
    observed = deployer.wait(
        slug, 2, during=lambda: seen.add(deployer.backend.observe(slug, 1).status)
    )

    assert observed.status == DeployStatus.FAILED
    assert observed.events[0].reason == "PortNotListening"
    assert seen == {DeployStatus.HEALTHY}  # parked meanwhile, never reported gone
    assert deployer.get(slug) == "still revision one"
    assert deployer.backend.observe(slug, 1).status == DeployStatus.HEALTHY
    assert containers_of(slug) == [container_of(slug)]


def test_logs_are_the_build_log_then_the_app_log(deployer: Deployer) -> None:
    slug = new_slug()
    cmd = 'CMD ["sh", "-c", "echo app-says-hello; exec httpd -f -p 8080 -h /www"]'
    deployer.start(slug, 1, site("logs", cmd))
    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o

    lines = deployer.backend.logs(slug, 1)

    assert any(line.startswith("STEP 1/") for line in lines)
    assert lines[-1] == "app-says-hello"
    assert deployer.backend.logs(slug, 1, since_line=len(lines) - 1) == ["app-says-hello"]


def test_observe_reports_a_worker_that_died(deployer: Deployer) -> None:
    slug = new_slug()
    deployer.start(slug, 1, site("never"))
    pid_file = Path(deployer.settings.state_dir) / slug / "1" / "worker.pid"

    os.killpg(json.loads(pid_file.read_text())["pid"], signal.SIGKILL)
    observed = deployer.wait(slug, 1)

    assert observed.status == DeployStatus.FAILED
    assert observed.error_message == "worker died"


def test_remove_stops_the_app_and_deletes_images_and_state(deployer: Deployer) -> None:
    slug = new_slug()
    deployer.start(slug, 1, site("doomed"))
    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o
    port = deployer.port(slug)

    deployer.backend.remove(slug)

    assert podman("container", "exists", container_of(slug)).returncode != 0
    assert podman("image", "exists", image_of(slug, 1)).returncode != 0
    assert not (Path(deployer.settings.state_dir) / slug).exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert deployer.backend.observe(slug, 1).status == DeployStatus.DELETED


def test_remove_during_a_redeploy_removes_the_parked_container_too(deployer: Deployer) -> None:
    slug = new_slug()
    deployer.start(slug, 1, site("parked"))
    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o
    deployer.start(slug, 2, site("x", 'CMD ["sleep", "600"]'))  # waits for its health timeout
    deadline = time.monotonic() + 60
    while not (revision_of(container_of(slug)) == 2 and revision_of(spare_of(slug)) == 1):
        assert time.monotonic() < deadline, containers_of(slug)
        time.sleep(0.2)

    deployer.backend.remove(slug)

    assert containers_of(slug) == []
    assert not (Path(deployer.settings.state_dir) / slug).exists()


def test_remove_while_podman_starts_the_app_leaves_no_port_forwarding(deployer: Deployer) -> None:
    """podman cut short in ``run`` leaves its DNAT rule, and the next app on that host port would
    get another's traffic: remove lets the step finish, then removes the container."""
    slug = new_slug()
    deployer.start(slug, 1, site("starting"))
    port, name = deployer.port(slug), container_of(slug)
    deadline = time.monotonic() + 60
    while not (running("run", "--name", name) and forwarded(port)):  # podman is in mid-run
        assert time.monotonic() < deadline, "the worker never ran podman run"
        time.sleep(0.01)

    deployer.backend.remove(slug)

    assert not forwarded(port), firewall.iptables("-S", table="nat").stdout
    assert podman("ps", "-aq", "--filter", f"label=instanode.app={slug}").stdout == ""


def forwarded(port: int) -> bool:
    """A DNAT rule forwards the host port (to a container)."""
    return bool(re.search(rf"--dports? {port}\b", firewall.iptables("-S", table="nat").stdout))


def running(*words: str) -> bool:
    """Some process of this machine has each of ``words`` in its argv."""
    return any(all(word in argv for word in words) for _, argv in processes())


def test_remove_twice_is_fine(deployer: Deployer) -> None:
    slug = new_slug()
    deployer.start(slug, 1, site("gone"))
    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o

    deployer.backend.remove(slug)
    deployer.backend.remove(slug)

    assert not (Path(deployer.settings.state_dir) / slug).exists()


def test_remove_during_a_build_kills_the_worker(deployer: Deployer) -> None:
    slug = new_slug()
    slow = context(f"FROM {BUSYBOX_IMAGE}\nRUN sleep 30\n{HTTPD}\n")
    deployer.start(slug, 1, slow)
    pid = json.loads((Path(deployer.settings.state_dir) / slug / "1" / "worker.pid").read_text())

    deployer.backend.remove(slug)

    assert not Path(f"/proc/{pid['pid']}/cmdline").exists() or _zombie(pid["pid"])
    assert not (Path(deployer.settings.state_dir) / slug).exists()


def containers_of(slug: str) -> list[str]:
    listed = podman("ps", "-a", "--format", "{{.Names}}", "--filter", f"label=instanode.app={slug}")
    return sorted(listed.stdout.split())


def revision_of(name: str) -> int | None:
    done = podman("inspect", "--format", '{{index .Config.Labels "instanode.revision"}}', name)
    return int(done.stdout) if done.returncode == 0 else None


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
