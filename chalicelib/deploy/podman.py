"""podman as the local deploy backend drives it: the names of an app's images, containers and
networks, what a container looks like from outside, and where its host port is published.

Each stack (and each plain app) has a podman network of its own, with a subnet from the
firewall's pool (``chalicelib.deploy.firewall``): its containers reach each other and nothing of
another network's. A port is published on 127.0.0.1 (the app's URL) and on its network's
gateway, which its containers reach as ``host.containers.internal`` (podman writes it to their
/etc/hosts): that is how a stack's ``service://`` URLs answer from inside another of its
containers, and only from there. A private app (a stack's ``expose: false``) is published on the
gateway only. Builds run on one network of their own, which reaches nothing on this machine.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from chalicelib.deploy import firewall
from chalicelib.errors import BackendUnavailableError

PODMAN = ("podman", "--runtime", "runc")  # crun refuses cgroup v1 hybrid hosts
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")  # no CAP_SYS_RESOURCE


def userns(host_port: int) -> list[str]:
    """A user namespace of the app's own: uid 0 in its container is ``host_port * 65536`` on
    this host, a range no user and no other app has (host ports are unique per app and at
    least 1024, so every range fits below 2^32). Builds run without one: buildah 1.28 commits
    the layers a RUN step writes in a user namespace with the host's uids, which leaves
    images whose own files their root cannot touch."""
    if not 1024 <= host_port < 65535:
        raise ValueError(f"host port {host_port} is outside 1024-65534")
    mapping = f"0:{host_port * 65536}:65536"
    return ["--uidmap", mapping, "--gidmap", mapping]


def image_of(slug: str, revision: int | str) -> str:
    return f"localhost/instanode-{slug}:{revision}"


def container_of(slug: str) -> str:
    return f"instanode-{slug}"


def spare_of(slug: str) -> str:
    """The name the serving container is parked under while a new revision starts ('_' is in
    no slug, so this is never another app's container)."""
    return f"{container_of(slug)}_previous"


def podman(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass(frozen=True)
class Container:
    revision: int | None
    running: bool
    exit_code: int | None
    oom: bool


def inspect(name: str) -> Container | None:
    """The container as podman sees it, or None when there is none."""
    done = podman("container", "inspect", name)
    if done.returncode != 0:
        return None
    info = json.loads(done.stdout)[0]
    state, labels = info["State"], info["Config"].get("Labels") or {}
    revision = labels.get("instanode.revision")
    return Container(
        revision=int(revision) if revision else None,
        running=state.get("Status") == "running",
        exit_code=state.get("ExitCode"),
        oom=bool(state.get("OOMKilled")),
    )


def app_lines(name: str) -> list[str]:
    done = podman("logs", name)
    return (done.stdout + done.stderr).splitlines() if done.returncode == 0 else []


@dataclass(frozen=True)
class Network:
    """A podman network of the backend's: a stack's or a plain app's, or the builds'."""

    name: str
    subnet: str
    gateway: str
    interface: str  # its bridge on this host (cni-podman<N>)


BUILD_NETWORK = "instanode-build"


def network_of(group: str) -> str:
    """The network of a stack (its slug) or of a plain app (the app's slug)."""
    return f"instanode-{group}"


def inspect_network(name: str) -> Network | None:
    done = podman("network", "inspect", name)
    if done.returncode != 0:
        return None
    info = json.loads(done.stdout)[0]
    subnet = info["subnets"][0]
    return Network(name, subnet["subnet"], subnet["gateway"], info["network_interface"])


def _create_network(name: str, subnet: str, group: str) -> Network:
    made = podman(
        "network", "create", "--subnet", subnet, "--label", f"instanode.group={group}", name
    )
    network = inspect_network(name)
    if network is None:
        raise BackendUnavailableError(f"podman could not create network {name}: {made.stderr}")
    return network


def ensure_build_network(layout: firewall.Layout) -> Network:
    """The network every build runs on: the internet, and nothing here (``firewall``)."""
    network = inspect_network(BUILD_NETWORK)
    if network is None:
        with firewall.held():
            network = inspect_network(BUILD_NETWORK) or _create_network(
                BUILD_NETWORK, str(layout.build), "build"
            )
    return network


def ensure_network(layout: firewall.Layout, group: str) -> Network:
    """The group's network (made with the next free subnet of the pool when it is new); its
    containers may reach each other, nothing else of the pool's."""
    name = network_of(group)
    network = inspect_network(name)
    if network is None:
        with firewall.held():
            network = inspect_network(name) or _create_network(name, _free_subnet(layout), group)
    firewall.allow_network(name, network.subnet)
    _bridge_up(network)
    return network


def _bridge_up(network: Network) -> None:
    """The network's bridge with its gateway address, before its first container: podman binds
    the ports an app publishes on the gateway before it joins a container in a user namespace
    to the network (the bridge plugin then finds the bridge as it would have made it)."""
    if Path(f"/sys/class/net/{network.interface}").exists():
        return
    prefix = network.subnet.split("/")[1]
    for command in (
        ["ip", "link", "add", network.interface, "type", "bridge"],
        ["ip", "addr", "add", f"{network.gateway}/{prefix}", "dev", network.interface],
        ["ip", "link", "set", network.interface, "up"],
    ):
        subprocess.run(command, capture_output=True, timeout=30, check=False)
    if not Path(f"/sys/class/net/{network.interface}").exists():
        raise BackendUnavailableError(f"the bridge of network {network.name} cannot be made")


def _free_subnet(layout: firewall.Layout) -> str:
    listed = podman("network", "ls", "--format", "{{range .Subnets}}{{.Subnet}} {{end}}")
    used = [ipaddress.ip_network(s) for s in listed.stdout.split()]
    for subnet in layout.app_subnets():
        if not any(subnet.overlaps(u) for u in used):
            return str(subnet)
    raise BackendUnavailableError(f"no free app network left in {layout.pool}")


def remove_network(group: str) -> None:
    """Remove the group's network once no container uses it (a stack's last service)."""
    name = network_of(group)
    if podman("network", "rm", name).returncode == 0:
        firewall.forget_network(name)


def published_on(public: bool, gateway: str) -> list[str]:
    """The host addresses an app's port is published on (the worker checks its health at the
    first): loopback (its URL) and its network's gateway (``host.containers.internal``, where
    its stack's other services reach it); a private app's only on the gateway."""
    return ["127.0.0.1", gateway] if public else [gateway]


def publish_args(host_port: int, port: int, public: bool, gateway: str) -> list[str]:
    """``-p`` options: the app's port on each of ``published_on(public, gateway)``."""
    addresses = published_on(public, gateway)
    return [arg for address in addresses for arg in ("-p", f"{address}:{host_port}:{port}")]
