"""podman as the local deploy backend drives it: the names of an app's images and containers,
what a container looks like from outside, and where its host port is published.

A port is published on 127.0.0.1 (the app's URL) and on the host's address on podman's default
bridge (normally 10.88.0.1), which containers reach as ``host.containers.internal`` (podman
writes it to their /etc/hosts): that is how a stack's ``service://`` URLs answer from inside
another container. podman creates the bridge before it binds the ports, so this works for the
first container too. A private app (a stack's ``expose: false``) is published on the bridge
only: containers reach it, the host's loopback does not (the host itself can, at the bridge
address). Rootless podman has no bridge on the host: loopback only there, private apps too.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass

PODMAN = ("podman", "--runtime", "runc")  # crun refuses cgroup v1 hybrid hosts
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")  # no CAP_SYS_RESOURCE
NETWORK = "podman"  # podman's default network


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


@functools.cache
def bridge_gateway() -> str | None:
    """The host's address on podman's default bridge; None when rootless (podman run by a user
    other than root; asking ``podman info`` would cost a quarter of a second) or unknown."""
    if os.geteuid() != 0:
        return None
    done = podman("network", "inspect", NETWORK)
    try:
        gateway = ipaddress.ip_address(json.loads(done.stdout)[0]["subnets"][0]["gateway"])
    except (ValueError, LookupError, TypeError):
        return None
    return f"[{gateway}]" if gateway.version == 6 else str(gateway)


def published_on(public: bool) -> list[str]:
    """The host addresses an app's port is published on (the worker checks its health at the
    first): loopback and the bridge gateway; a private app's only on the gateway (loopback when
    there is no bridge)."""
    gateway = bridge_gateway()
    if gateway is None:
        return ["127.0.0.1"]
    return ["127.0.0.1", gateway] if public else [gateway]


def publish_args(host_port: int, port: int, public: bool) -> list[str]:
    """``-p`` options: the app's port on each of ``published_on(public)``."""
    addresses = published_on(public)
    return [arg for address in addresses for arg in ("-p", f"{address}:{host_port}:{port}")]
