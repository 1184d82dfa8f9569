"""A private SecantusDB (MongoDB wire protocol on WiredTiger) for the local stack, with auth on.

The server runs through ``devstack.mongo_guard``, which adds the authorization checks mongod
makes and SecantusDB lacks (cross-database commands, roles re-read on open connections).
SecantusDB has no localhost exception: the first start runs without ``--auth`` just long enough
to create ``root`` (role root@admin, SCRAM-SHA-256), then the server runs with ``--auth`` for
good. A marker file in the state dir records that the bootstrap is done. The root password is
sent over the loopback wire protocol only, never put on a command line.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from chalicelib.models import Backend
from devstack.services import Service, stop_process, wait_for_port

ROOT_USER = "root"
PROJECT = Path(__file__).resolve().parent.parent  # where ``-m devstack.mongo_guard`` imports


class MongoServer(Service):
    name = "mongo"

    def __init__(self, state: Path, port: int, admin_password: str) -> None:
        super().__init__(state)
        self.port = port
        self._password = admin_password
        self.data = self.dir / "data"
        self.marker = self.dir / "bootstrapped"

    def admin_url(self) -> str:
        return f"mongodb://{ROOT_USER}:{self._password}@127.0.0.1:{self.port}/admin"

    def prepare(self) -> None:
        """Create ``root`` once: a short start without auth, then a clean stop."""
        if self.marker.exists():
            return
        proc = self._spawn(auth=False)
        try:
            wait_for_port(self.port, f"{self.name} (bootstrap)")
            self._create_root()
        finally:
            stop_process(proc.pid, signal.SIGINT)
            proc.wait(timeout=5)
        self.marker.write_text("root created\n")

    def launch(self) -> int:
        return self._spawn(auth=True).pid

    def _spawn(self, auth: bool) -> subprocess.Popen[bytes]:
        cmd = [
            *(sys.executable, "-m", "devstack.mongo_guard"),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--storage-path", str(self.data), "--standalone", "--log-level", "WARNING"),
            *(["--auth"] if auth else []),
        ]
        return self.spawn(cmd, cwd=PROJECT)

    def _create_root(self) -> None:
        import pymongo
        from pymongo.errors import OperationFailure

        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            f"mongodb://127.0.0.1:{self.port}/", serverSelectionTimeoutMS=10_000
        )
        try:
            admin = client.admin
            spec: dict[str, Any] = {
                "roles": [{"role": "root", "db": "admin"}],
                "mechanisms": ["SCRAM-SHA-256"],
            }
            try:
                admin.command("createUser", ROOT_USER, pwd=self._password, **spec)
            except OperationFailure:  # made by a bootstrap that stopped before its marker
                admin.command("updateUser", ROOT_USER, pwd=self._password, **spec)
        finally:
            client.close()

    def backend(self) -> Backend:
        host = f"127.0.0.1:{self.port}"
        return Backend("mongo-local", self.admin_url(), public_host=host, internal_host=host)

    def drop_tenants(self) -> None:
        """Remove every tenant database and user (the provider's inventory) from this server."""
        from chalicelib.providers.mongodb import MongoProvider

        provider, backend = MongoProvider(), self.backend()
        for ref in provider.inventory(backend):
            provider.deprovision(backend, ref)
