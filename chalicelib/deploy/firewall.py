"""The host firewall that contains the local deploy backend's builds and apps (iptables, as root).

Every container the backend makes lives in one address pool (``INSTANODE_DEPLOY_SUBNET``,
10.90.0.0/16 by default), laid out by ``Layout``:

- the first /24 is the build network: a ``RUN`` step reaches the internet (the package
  registries) and nothing on this machine, nor any other build or app;
- the last /24 holds the edge address (x.y.255.1, on ``lo``): the only host address apps reach,
  and there only the ports the edge forwards to the data servers' tenant-facing ports
  (``allow_edge_ports``), never the platform's AWS endpoint, SMTP or the API;
- the /26s between are app networks, one per stack or plain app (``allow_network``): an app
  reaches its own network's containers (``service://``) and nothing of another network's.

Chains (filter table), each jumped to from INPUT or FORWARD for the pool:
``INSTANODE-INPUT`` (to this host: replies, then nothing from builds, then ``INSTANODE-EDGE``),
``INSTANODE-FORWARD`` (through this host: replies, then ``INSTANODE-NETS``' same-network
rules, then nothing into the pool, to link-local addresses or to other podman networks),
``INSTANODE-DENY`` (a TCP reset or an ICMP unreachable, so a denied connection is refused rather
than left to time out; the kernel sends at most about one ICMP error a second to a container).
A raw-table rule drops packets from podman bridges whose source address does not route back
through the bridge they came in on, so no container can pose as another network.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shlex
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from chalicelib.errors import BackendUnavailableError

APP_PREFIX = 26  # an app network: 62 addresses, for a stack of at most 5 services
PODMAN_BRIDGES = "cni-podman+"
CNI_FORWARD, CNI_COMMENT = "CNI-FORWARD", "CNI firewall plugin rules"
_LOCK = Path("/run/lock/instanode-firewall.lock")

INPUT, FORWARD, EDGE, NETS, DENY = (
    "INSTANODE-INPUT",
    "INSTANODE-FORWARD",
    "INSTANODE-EDGE",
    "INSTANODE-NETS",
    "INSTANODE-DENY",
)


@dataclass(frozen=True)
class Layout:
    """Where builds, apps and the edge live in the pool."""

    pool: ipaddress.IPv4Network

    @classmethod
    def of(cls, cidr: str) -> Layout:
        pool = ipaddress.ip_network(cidr, strict=True)
        if not isinstance(pool, ipaddress.IPv4Network) or pool.prefixlen > 22:
            raise ValueError(f"INSTANODE_DEPLOY_SUBNET must be an IPv4 /22 or larger: {cidr}")
        return cls(pool)

    @property
    def build(self) -> ipaddress.IPv4Network:
        return next(self.pool.subnets(new_prefix=24))

    @property
    def edge_address(self) -> str:
        last = list(self.pool.subnets(new_prefix=24))[-1]
        return str(last.network_address + 1)

    def app_subnets(self) -> Iterator[ipaddress.IPv4Network]:
        """The app networks' subnets, in order (neither the build /24 nor the edge's)."""
        for block in list(self.pool.subnets(new_prefix=24))[1:-1]:
            yield from block.subnets(new_prefix=APP_PREFIX)


def iptables(*args: str, table: str = "filter") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", "5", "-t", table, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _must(*args: str, table: str = "filter") -> None:
    done = iptables(*args, table=table)
    if done.returncode != 0:
        raise BackendUnavailableError(
            f"the deploy firewall could not be set up (iptables {' '.join(args)}): "
            f"{done.stderr.strip()}"
        )


@contextlib.contextmanager
def held() -> Iterator[None]:
    """One process at a time changes the rules (a check then an add is not atomic)."""
    _LOCK.parent.mkdir(parents=True, exist_ok=True)
    with _LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _ensure(chain: str, rule: Iterable[str]) -> None:
    spec = list(rule)
    if iptables("-C", chain, *spec).returncode != 0:
        _must("-A", chain, *spec)


def _on_top(chain: str, rules: list[tuple[str, ...]], table: str = "filter") -> None:
    """Make ``rules`` the chain's first rules (any order), never leaving a moment without them:
    a rule another program inserted at the top since (a network plugin's ``ACCEPT``) would
    otherwise decide before them. Each is written as ``iptables -S`` prints it."""

    def listed() -> list[tuple[str, ...]]:
        lines = iptables("-S", chain, table=table).stdout.splitlines()
        return [tuple(shlex.split(line)[2:]) for line in lines if line.startswith("-A ")]

    if set(listed()[: len(rules)]) == set(rules):
        return
    for rule in reversed(rules):
        _must("-I", chain, "1", *rule, table=table)
    # the copies further down go, the lowest first, so the numbers above them hold
    for number, rule in reversed(list(enumerate(listed(), start=1))[len(rules) :]):
        if rule in rules:
            _must("-D", chain, str(number), table=table)


def _chain(name: str) -> None:
    if iptables("-S", name).returncode != 0:
        _must("-N", name)


def ensure_base(layout: Layout) -> None:
    """Create the chains and their fixed rules unless they are there (idempotent, fast when
    they are: a few ``iptables -C``). Raises BackendUnavailableError when it cannot: the
    backend then builds and runs nothing."""
    if os.geteuid() != 0:
        raise BackendUnavailableError("the local deploy backend contains apps only as root")
    pool, build = str(layout.pool), str(layout.build)
    replies = ("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
    with held():
        for chain in (DENY, EDGE, NETS, INPUT, FORWARD):
            _chain(chain)
        # a reset for TCP; an ICMP error for the rest and for connections to a published port
        # (a reset after DNAT is not translated back, the ICMP error is: both fail at once)
        undnatted = ("-p", "tcp", "-m", "conntrack", "!", "--ctstate", "DNAT")
        _ensure(DENY, (*undnatted, "-j", "REJECT", "--reject-with", "tcp-reset"))
        _ensure(DENY, ("-j", "REJECT", "--reject-with", "icmp-port-unreachable"))
        _ensure(INPUT, replies)
        _ensure(INPUT, ("-s", build, "-j", DENY))
        _ensure(INPUT, ("-j", EDGE))
        _ensure(INPUT, ("-j", DENY))
        _ensure(FORWARD, replies)
        _ensure(FORWARD, ("-j", NETS))
        _ensure(FORWARD, ("-d", pool, "-j", DENY))
        _ensure(FORWARD, ("-s", pool, "-d", "169.254.0.0/16", "-j", DENY))
        _ensure(FORWARD, ("-s", pool, "-o", PODMAN_BRIDGES, "-j", DENY))
        # podman's CNI firewall plugin accepts everything from and to each container it
        # starts, by a jump it inserts at the top of FORWARD when that jump is missing
        # (containernetworking/plugins, meta/firewall/iptables.go): made here below ours, it
        # is found and never inserted above them
        _chain(CNI_FORWARD)
        _ensure("FORWARD", ("-m", "comment", "--comment", CNI_COMMENT, "-j", CNI_FORWARD))
        _on_top("INPUT", [("-s", pool, "-j", INPUT)])
        _on_top("FORWARD", [("-s", pool, "-j", FORWARD), ("-d", pool, "-j", FORWARD)])
        spoofed = ("-i", PODMAN_BRIDGES, "-m", "rpfilter", "--invert", "-j", "DROP")
        _on_top("PREROUTING", [spoofed], table="raw")


def _tagged(tag: str) -> tuple[str, str, str, str]:
    return ("-m", "comment", "--comment", tag)


def _drop_tagged(chain: str, tag: str) -> None:
    """Delete every rule of ``chain`` that carries ``tag``."""
    for line in iptables("-S", chain).stdout.splitlines():
        words = shlex.split(line)  # iptables quotes a comment with a colon in it
        if words[:2] == ["-A", chain] and tag in words:
            iptables("-D", chain, *words[2:])


def allow_network(name: str, subnet: str) -> None:
    """Containers of one app network may reach each other (the stack's ``service://`` URLs)."""
    with held():
        _ensure(
            NETS, ("-s", subnet, "-d", subnet, *_tagged(f"instanode-net:{name}"), "-j", "ACCEPT")
        )


def forget_network(name: str) -> None:
    with held():
        _drop_tagged(NETS, f"instanode-net:{name}")


def allow_edge_ports(layout: Layout, ports: Iterable[int], tag: str) -> None:
    """Apps (not builds) may open these TCP ports at the edge address; the ones ``tag`` had
    before are replaced."""
    with held():
        _drop_tagged(EDGE, f"instanode-edge:{tag}")
        for port in ports:
            rule = ("-d", layout.edge_address, "-p", "tcp", "--dport", str(port))
            _ensure(EDGE, (*rule, *_tagged(f"instanode-edge:{tag}"), "-j", "ACCEPT"))


def revoke_edge_ports(tag: str) -> None:
    with held():
        _drop_tagged(EDGE, f"instanode-edge:{tag}")


def ensure_edge_address(layout: Layout) -> None:
    """The edge address on ``lo`` (this kernel has no dummy links): local to the host, reached
    by containers through their bridge."""
    address = layout.edge_address
    shown = subprocess.run(
        ["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True
    )
    if f"inet {address}/32" in shown.stdout:
        return
    added = subprocess.run(
        ["ip", "addr", "add", f"{address}/32", "dev", "lo"], capture_output=True, text=True
    )
    if added.returncode != 0 and "File exists" not in added.stderr:
        raise BackendUnavailableError(f"cannot add the edge address {address}: {added.stderr}")
