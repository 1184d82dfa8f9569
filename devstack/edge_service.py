"""The edge (``devstack/edge.py``) as a service of the local stack, with the firewall rules
that let deployed apps, and only them, reach its ports."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from chalicelib.deploy import firewall
from devstack.services import Service


class Edge(Service):
    name = "edge"

    def __init__(self, state: Path, layout: firewall.Layout, ports: list[int], tag: str) -> None:
        super().__init__(state)
        self.layout, self.ports, self.tag = layout, ports, tag
        self.host = layout.edge_address
        self.port = ports[0]

    @staticmethod
    def possible() -> bool:
        """Only root sets up the address and the firewall (the local deploy backend too)."""
        return os.geteuid() == 0 and shutil.which("iptables") is not None

    def up(self) -> bool:
        # The address first: until it is on lo, a connection to it leaves the machine, and the
        # network beyond may well answer on the port (seen: a sandbox gateway answering any
        # 10.x address), which ``up`` would take for another process holding it.
        self.prepare()
        return super().up()

    def prepare(self) -> None:
        firewall.ensure_base(self.layout)
        firewall.ensure_edge_address(self.layout)
        firewall.allow_edge_ports(self.layout, self.ports, self.tag)

    def launch(self) -> int:
        cmd = [sys.executable, "-m", "devstack.edge", self.host, *map(str, self.ports)]
        return self.spawn(cmd, cwd=Path(__file__).resolve().parent.parent).pid

    def down(self) -> None:
        super().down()
        firewall.revoke_edge_ports(self.tag)
