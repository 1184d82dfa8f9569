"""A private ``nats-server`` (Debian's 2.9) in operator mode, with JetStream.

Accounts live in a ``full`` resolver directory (``allow_delete`` on), so the app adds and removes
them at run time with ``$SYS.REQ.CLAIMS.UPDATE`` / ``.DELETE``. The operator, the system account,
its user and the platform's account signing key are made on first start and kept, with mode
0600, in ``keys.json`` in the state dir; ``backend_entry()`` hands them to the app. nats-server
2.9 keeps a deleted account's JWT as ``jwt/<account>.jwt.deleted`` (about 1 KB each).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from chalicelib import natsjwt
from chalicelib.models import Backend
from chalicelib.natsjwt import KeyPair
from devstack.services import Service

NATS_SERVER = "/usr/sbin/nats-server"
# In single-server mode JetStream reserves every account's full disk_storage limit up front and
# refuses accounts beyond max_file_store: keep it well above (tenants x tier limit).
MAX_FILE_STORE = "1TB"
MAX_MEMORY_STORE = "256MB"


class NatsServer(Service):
    name = "nats"

    def __init__(self, state: Path, port: int) -> None:
        super().__init__(state)
        self.port = port
        self.keys_file = self.dir / "keys.json"
        self.config = self.dir / "nats.conf"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def keys(self) -> dict[str, str]:
        """The seeds and JWTs made on first use (then read back from ``keys.json``)."""
        if self.keys_file.exists():
            loaded: dict[str, str] = json.loads(self.keys_file.read_text())
            return loaded
        operator, system, sys_user, signing = (
            KeyPair.new(role) for role in ("operator", "account", "user", "account")
        )
        keys = {
            "operator_seed": operator.seed,
            "system_account_seed": system.seed,
            "system_account": system.public_key,
            "system_account_jwt": natsjwt.account_jwt(operator, system.public_key, "SYS", {}),
            "system_user_seed": sys_user.seed,
            "system_user_jwt": natsjwt.user_jwt(system, sys_user.public_key, "sys"),
            "signing_seed": signing.seed,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keys_file.touch(mode=0o600)
        self.keys_file.write_text(json.dumps(keys, indent=1))
        return keys

    def prepare(self) -> None:
        _binary()
        keys = self.keys()
        operator = KeyPair.from_seed(keys["operator_seed"])
        operator_file = self.dir / "operator.jwt"
        operator_file.write_text(natsjwt.operator_jwt(operator, keys["system_account"]))
        (self.dir / "jwt").mkdir(exist_ok=True)
        self.config.write_text(
            f"""# written by devstack/nats_service.py
listen: 127.0.0.1:{self.port}
server_name: instanode_{self.port}
operator: "{operator_file}"
system_account: {keys["system_account"]}
jetstream {{
  store_dir: "{self.dir / "js"}"
  max_file_store: {MAX_FILE_STORE}
  max_memory_store: {MAX_MEMORY_STORE}
}}
resolver {{
  type: full
  dir: "{self.dir / "jwt"}"
  allow_delete: true
  interval: "2m"
  timeout: "1.9s"
}}
resolver_preload {{
  {keys["system_account"]}: "{keys["system_account_jwt"]}"
}}
"""
        )
        self.config.chmod(0o600)

    def launch(self) -> int:
        return self.spawn([_binary(), "-c", str(self.config)]).pid

    def backend(self) -> Backend:
        entry = self.backend_entry()
        known = ("name", "admin_url", "public_host", "internal_host")
        return Backend(
            name=entry["name"],
            admin_url=entry["admin_url"],
            public_host=entry["public_host"],
            internal_host=entry["internal_host"],
            secrets={k: v for k, v in entry.items() if k not in known},
        )

    def drop_tenants(self) -> None:
        """Remove every tenant account (and its JetStream data) from this server, and the
        ``*.jwt.deleted`` files nats-server 2.9 keeps for deleted accounts."""
        from chalicelib.providers.nats import remove_all_accounts

        remove_all_accounts(self.backend())
        for leftover in (self.dir / "jwt").glob("*.jwt.deleted"):
            leftover.unlink(missing_ok=True)

    def backend_entry(self, name: str = "nats1", internal_host: str = "") -> dict[str, str]:
        """One item of the app's ``INSTANODE_NATS_BACKENDS`` JSON list (``internal_host``: where
        deployed apps reach the server, when not at ``url``)."""
        keys = self.keys()
        return {
            "name": name,
            "admin_url": self.url,
            "public_host": self.url,
            "internal_host": internal_host or self.url,
            "operator_seed": keys["operator_seed"],
            "system_account": keys["system_account"],
            "system_user_jwt": keys["system_user_jwt"],
            "system_user_seed": keys["system_user_seed"],
            "signing_seed": keys["signing_seed"],
        }


def _binary() -> str:
    found = NATS_SERVER if Path(NATS_SERVER).exists() else shutil.which("nats-server")
    if not found:
        raise SystemExit("nats: nats-server is not installed (apt-get install nats-server)")
    return found
