"""A private Redis 7 (Debian ``redis-server``) for the local stack: no persistence, ACLs on, and
the settings every shared server needs (``chalicelib.providers.redis_settings``): a 256 MB memory
cap that never evicts a key, at most 1 MiB per string or argument, bounded client buffers.

The only login is the ACL user ``admin`` (all commands, all keys and channels); the ``default``
user is switched off, so nothing works without the admin password. The password reaches the
server as a SHA-256 digest in a 0600 config file, never on the command line. Tenant ACL users
live in memory only: a restarted server has lost them until the quota job re-applies them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from chalicelib.providers.redis_settings import launch_args
from devstack.services import Service

REDIS_SERVER = "/usr/bin/redis-server"
ADMIN_USER = "admin"
MAXMEMORY = "256mb"  # room for 50 anonymous tenants at their 5 MB limit


class RedisServer(Service):
    name = "redis"

    def __init__(self, state: Path, port: int, admin_password: str) -> None:
        super().__init__(state)
        self.port = port
        self._password = admin_password
        self.config = self.dir / "users.conf"

    def admin_url(self) -> str:
        return f"redis://{ADMIN_USER}:{self._password}@127.0.0.1:{self.port}/0"

    def prepare(self) -> None:
        digest = hashlib.sha256(self._password.encode()).hexdigest()
        self.config.touch(mode=0o600)
        self.config.chmod(0o600)
        self.config.write_text(
            "user default off resetpass nocommands resetkeys resetchannels\n"
            f"user {ADMIN_USER} on #{digest} ~* &* +@all\n"
        )

    def launch(self) -> int:
        cmd = [
            REDIS_SERVER,
            str(self.config),
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            *("--dir", str(self.dir)),
            *launch_args(MAXMEMORY),
        ]
        return self.spawn(cmd).pid

    def drop_tenants(self) -> None:
        """Remove every tenant ACL user (``u_*``) and tenant key (``t_*``) from this server."""
        import redis

        client = redis.Redis.from_url(self.admin_url(), socket_timeout=10)
        try:
            names = [u.decode() if isinstance(u, bytes) else u for u in client.acl_users()]
            users = [u for u in names if u.startswith("u_")]
            if users:
                client.acl_deluser(*users)
            batch: list[bytes] = []
            for key in client.scan_iter(match="t_*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)
        finally:
            client.close()
