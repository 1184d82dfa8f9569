"""A private SecantusDB (MongoDB wire protocol on WiredTiger) for the local stack, with auth on.

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

from devstack.services import Service, stop_process, wait_for_port

ROOT_USER = "root"
TENANT_DB_PREFIX = "m_"  # chalicelib.providers.mongodb: databases m_<hex>, users mu_<hex>
TENANT_USER_PREFIX = "mu_"


def secantusd() -> str:
    """The ``secantusd-py`` launcher of the running interpreter's venv."""
    return str(Path(sys.executable).parent / "secantusd-py")


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
            secantusd(),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--storage-path", str(self.data), "--standalone", "--log-level", "WARNING"),
            *(["--auth"] if auth else []),
        ]
        return self.spawn(cmd)

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

    def drop_tenants(self) -> None:
        """Remove every tenant user (``mu_*``) and database (``m_*``) from this server."""
        import pymongo

        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            self.admin_url(), serverSelectionTimeoutMS=10_000
        )
        try:
            # users live in admin.system.users: a tenant that never wrote has no listed database
            for user in list(client.admin["system.users"].find({}, {"user": 1, "db": 1})):
                if str(user.get("user", "")).startswith(TENANT_USER_PREFIX):
                    client[user["db"]].command("dropUser", user["user"])
            for name in client.list_database_names():
                if name.startswith(TENANT_DB_PREFIX):
                    client.drop_database(name)
        finally:
            client.close()
