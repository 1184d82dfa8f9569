"""What a hostile tenant's build step and running app can reach on the local deploy backend
(real buildah, podman and iptables; the test stack's servers and edge). Each probe is busybox
``nc`` from inside the container, with a positive control beside it, so a probe that could not
have connected anyway proves nothing. A canary listens on every host address and a canary
process holds a secret in its environment: neither may be reached."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from chalicelib.deploy import firewall
from chalicelib.deploy.backend import DeployStatus
from chalicelib.deploy.baseimage import BUSYBOX_IMAGE, ensure_busybox_image
from chalicelib.deploy.firewall import Layout
from chalicelib.deploy.podman import container_of, inspect_network, network_of, podman
from devstack.stack import Stack
from tests.functional.test_local_backend import Deployer, context, new_slug, site

REGISTRY = "pypi.org:443"  # builds and apps may reach the package registries

PROBE = """#!/bin/sh
echo "Content-Type: text/plain"
echo ""
for t in $(echo "$QUERY_STRING" | tr ',' ' '); do
  if echo | nc -w 3 "${t%:*}" "${t##*:}" >/dev/null 2>&1
  then echo "open $t"; else echo "closed $t"; fi
done
echo "procs $(ls /proc | grep -c '^[0-9]')"
for f in /proc/[0-9]*/environ; do
  grep -q "INSTANODE_CANARY=$SECRET" "$f" 2>/dev/null && echo "leak $f"
done
echo "uid_map $(cat /proc/self/uid_map)"
"""


class Canary:
    """A TCP server on 0.0.0.0 (every host address) counting who got in, and a process with a
    secret in its environment."""

    def __init__(self) -> None:
        self.server = socket.create_server(("0.0.0.0", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = 0
        self.secret = secrets.token_hex(8)
        self.process = subprocess.Popen(
            ["sleep", "600"], env={"INSTANODE_CANARY": self.secret, "PATH": os.environ["PATH"]}
        )
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self.server.close()
        self.process.kill()
        self.process.wait()


def host_address() -> str:
    """This machine's own address on its uplink (not one of the pool's)."""
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True
    ).stdout
    found = [
        a for a in re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", shown) if not a.startswith("10.90.")
    ]
    assert found, shown
    return found[0]


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    canary = Canary()
    yield canary
    canary.close()


@pytest.fixture(scope="module")
def deployer(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[Deployer]:
    assert stack.edge is not None, "the test stack runs as root, with its edge"
    ensure_busybox_image()
    deployer = Deployer(tmp_path_factory.mktemp("security-deploys"))
    yield deployer
    for slug in deployer.slugs:
        deployer.backend.remove(slug)


@pytest.fixture(scope="module")
def victim(deployer: Deployer) -> tuple[str, str]:
    """Another team's app: its container's address and its gateway-published port."""
    slug = new_slug()
    deployer.start(slug, 1, site("victim's page"))
    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o
    assert "victim's page" in deployer.get(slug)  # it serves: a refusal below is the firewall
    network = inspect_network(network_of(slug))
    assert network is not None
    address = podman(
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        container_of(slug),
    ).stdout.strip()
    return f"{address}:8080", f"{network.gateway}:{deployer.port(slug)}"


def data_ports(stack: Stack) -> list[int]:
    return [*(s.port for s in stack.tenant_servers), stack.s3.port]


def forbidden(stack: Stack, canary: Canary, gateway: str, victim: tuple[str, str]) -> list[str]:
    """Host ports a container must not reach: the canary at every host address it could try,
    the platform's moto, SMTP and API ports at the edge and the gateway, another team's app."""
    edge = Layout.of(stack.env().get("INSTANODE_DEPLOY_SUBNET", "10.90.0.0/16")).edge_address
    platform = [stack.profile.moto_port, stack.profile.smtp_port, stack.profile.api_port]
    targets = [f"{h}:{canary.port}" for h in (edge, gateway, host_address())]
    targets += [f"{h}:{p}" for h in (edge, gateway) for p in platform]
    return [*targets, *victim]


def results(text: str) -> dict[str, str]:
    return {m[1]: m[0] for m in re.findall(r"^(open|closed) (\S+)$", text, re.M)}


def test_a_build_step_reaches_the_registries_and_nothing_here(
    deployer: Deployer, stack: Stack, canary: Canary, victim: tuple[str, str]
) -> None:
    layout = Layout.of(deployer.settings.subnet)
    edge_data = [f"{layout.edge_address}:{p}" for p in data_ports(stack)]
    denied = forbidden(stack, canary, str(layout.build.network_address + 1), victim) + edge_data
    script = PROBE.split('echo ""\n', 1)[1]  # the CGI's body, as a RUN step
    dockerfile = (
        f"FROM {BUSYBOX_IMAGE}\nCOPY probe.sh /probe.sh\n"
        f"RUN QUERY_STRING={','.join([REGISTRY, *denied])} SECRET={canary.secret} sh /probe.sh\n"
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/"]\n'
    )
    slug = new_slug()
    before = canary.accepted

    deployer.start(slug, 1, context(dockerfile, **{"probe.sh": script}))

    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o
    log = "\n".join(deployer.backend.logs(slug, 1))
    seen = results(log)
    assert seen.get(REGISTRY) == "open", log  # the control: the probe works, pip could too
    assert {t: seen.get(t) for t in denied} == dict.fromkeys(denied, "closed"), log
    assert canary.accepted == before
    assert "leak" not in log and int(re.search(r"procs (\d+)", log)[1]) < 10, log  # type: ignore[index]


def test_an_app_reaches_the_data_servers_at_the_edge_and_nothing_else_here(
    deployer: Deployer, stack: Stack, canary: Canary, victim: tuple[str, str]
) -> None:
    layout = Layout.of(deployer.settings.subnet)
    slug = new_slug()
    dockerfile = (
        f"FROM {BUSYBOX_IMAGE}\nCOPY probe.cgi /www/cgi-bin/probe\n"
        'RUN chmod 755 /www/cgi-bin/probe\nCMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'
    )
    deployer.start(
        slug, 1, context(dockerfile, **{"probe.cgi": PROBE}), env={"SECRET": canary.secret}
    )
    assert (o := deployer.wait(slug, 1)).status == DeployStatus.HEALTHY, o
    network = inspect_network(network_of(slug))
    assert network is not None
    allowed = [f"{layout.edge_address}:{p}" for p in data_ports(stack)]
    denied = forbidden(stack, canary, network.gateway, victim)
    before = canary.accepted

    answer = deployer.get(slug, "/cgi-bin/probe?" + ",".join([*allowed, *denied]))

    seen = results(answer)
    assert {t: seen.get(t) for t in allowed} == dict.fromkeys(allowed, "open"), answer
    assert {t: seen.get(t) for t in denied} == dict.fromkeys(denied, "closed"), answer
    assert canary.accepted == before
    assert "leak" not in answer and int(re.search(r"procs (\d+)", answer)[1]) < 10, answer  # type: ignore[index]
    uid = deployer.port(slug) * 65536
    assert re.search(rf"uid_map\s+0\s+{uid}\s+65536", answer), answer  # its own user namespace


def test_the_storage_endpoint_serves_s3_alone(stack: Stack) -> None:
    """What presigned URLs name (and apps reach at the edge) holds no platform table or secret,
    and refuses every other service, moto's reset included."""
    import boto3
    import requests

    env = stack.env()
    endpoint = "http://" + stack.internal_host(stack.s3.port)
    keys = {k.lower(): env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)
    assert "instanode-storage" in {b["Name"] for b in s3.list_buckets()["Buckets"]}  # control
    for service, call in (("dynamodb", "list_tables"), ("secretsmanager", "list_secrets")):
        client = boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", **keys)
        # S3 refuses a credential scoped to another service (real S3 answers the same 400)
        with pytest.raises(Exception, match="AuthorizationHeaderMalformed|AccessDenied"):
            getattr(client, call)()
    assert requests.post(f"{endpoint}/moto-api/reset", timeout=10).status_code == 403


def test_a_network_plugin_accept_above_the_firewall_is_put_below_it(deployer: Deployer) -> None:
    """podman's CNI firewall plugin accepts all of a container's traffic from the top of
    FORWARD; ``ensure_base`` (before every build and start) puts the pool's jumps back above
    any such rule, and the plugin's own jump is already there below them."""
    layout = Layout.of(deployer.settings.subnet)
    accept = ("-s", str(layout.pool), "-m", "comment", "--comment", "plugin-accept", "-j", "ACCEPT")
    assert firewall.iptables("-I", "FORWARD", "1", *accept).returncode == 0
    try:
        firewall.ensure_base(layout)
        rules = [r for r in firewall.iptables("-S", "FORWARD").stdout.splitlines() if "-A" in r]
    finally:
        firewall.iptables("-D", "FORWARD", *accept)
    ours = [i for i, rule in enumerate(rules) if rule.endswith(f"-j {firewall.FORWARD}")]
    others = [i for i, rule in enumerate(rules) if "plugin-accept" in rule or "CNI-FORWARD" in rule]
    assert ours == [0, 1] and len(others) == 2 and min(others) > 1, rules
