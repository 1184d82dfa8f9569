"""The whole local stack for one profile: its servers, its AWS resources and the app's environment.

Profiles: ``dev`` (``make run``: API on :8000, moto on :4566, one Postgres), ``test``
(``make test``: other ports, two Postgres backends) and ``bench`` (``make bench``), so all three
can run side by side without touching each other's data. Each has one Redis and one NATS server,
and an SMTP server that keeps every message as a file (``stack.smtp.wait_for(address)``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from dataclasses import dataclass, replace
from pathlib import Path

from chalicelib.config import DeploySettings
from chalicelib.deploy.firewall import Layout
from devstack.edge_service import Edge
from devstack.mongo_service import MongoServer
from devstack.nats_service import NatsServer
from devstack.redis_service import RedisServer
from devstack.services import Moto, Postgres, Service, stop_process
from devstack.smtp_service import SmtpServer

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
MAIL_FROM = "instanode <noreply@instanode.localhost>"
LAYOUT = Layout.of(DeploySettings.from_env(os.environ).subnet)  # the local deploy backend's


# Billing plans and promotion codes of the local stacks (production sets its own).
LOCAL_BILLING_PLANS = {"plan_local_hobby": "hobby", "plan_local_pro": "pro"}
LOCAL_PROMO_CODES = {
    "EARLYBIRD": {"discount_percent": 20},
    "LAUNCH500": {"discount_amount_inr": 500},
}

# `make run` is a self-hosted install: no checkout sells Hobby there, so a free team may run one
# app (INSTANODE_PLANS_OVERRIDES over plans.yaml). The test and bench profiles keep the default
# table, as every installation starts with; tests that need free deploys set the override.
DEV_PLANS_OVERRIDES = {"free": {"deploys": {"apps": 1}}}


@dataclass(frozen=True)
class Profile:
    name: str
    api_port: int
    moto_port: int
    postgres_ports: tuple[int, ...]
    redis_port: int
    nats_port: int
    mongo_port: int
    smtp_port: int
    plans_overrides: str = "{}"  # INSTANODE_PLANS_OVERRIDES of the profile (JSON)

    @property
    def s3_port(self) -> int:
        """The S3-only endpoint's (the storage kind's), next to moto's."""
        return self.moto_port + 1

    def shifted(self, offset: int) -> Profile:
        """The same profile on every port + ``offset``, with its own state (``<name>+<offset>``):
        a second test run beside the first, e.g. ``INSTANODE_TEST_PROFILE=test+100``."""
        return replace(
            self,
            name=f"{self.name}+{offset}",
            api_port=self.api_port + offset,
            moto_port=self.moto_port + offset,
            postgres_ports=tuple(p + offset for p in self.postgres_ports),
            redis_port=self.redis_port + offset,
            nats_port=self.nats_port + offset,
            mongo_port=self.mongo_port + offset,
            smtp_port=self.smtp_port + offset,
        )


PROFILES = {
    "dev": Profile(
        "dev",
        8000,
        4566,
        (5433,),
        redis_port=6380,
        nats_port=4223,
        mongo_port=27018,
        smtp_port=2525,
        plans_overrides=json.dumps(DEV_PLANS_OVERRIDES),
    ),
    "test": Profile(
        "test",
        18000,
        14566,
        (15433, 15434),
        redis_port=16379,
        nats_port=14222,
        mongo_port=17017,
        smtp_port=12525,
    ),
    "bench": Profile(
        "bench",
        28000,
        24566,
        (25433, 25434),
        redis_port=26379,
        nats_port=24222,
        mongo_port=27019,
        smtp_port=22525,
    ),
}


def get_profile(name: str) -> Profile:
    """A profile by name: ``dev``, ``test``, ``bench``, or one of them shifted (``test+100``)."""
    base, _, offset = name.partition("+")
    if base not in PROFILES or (offset and not offset.isdigit()):
        raise ValueError(f"unknown profile {name!r}: use dev, test or bench, optionally +<offset>")
    return PROFILES[base].shifted(int(offset)) if offset else PROFILES[base]


class Stack:
    def __init__(self, profile: Profile, state_root: Path | None = None) -> None:
        self.profile = profile
        self.state = (state_root or ROOT / ".state") / profile.name
        self.state.mkdir(parents=True, exist_ok=True)
        self._secrets = self._load_secrets()
        self.moto = Moto(self.state, profile.moto_port)
        self.s3 = Moto(self.state, profile.s3_port, only="s3")
        self.postgres = [
            Postgres(self.state, f"pg{i}", port, self._secrets["postgres_password"])
            for i, port in enumerate(profile.postgres_ports, start=1)
        ]
        self.redis = RedisServer(self.state, profile.redis_port, self._secrets["redis_password"])
        self.nats = NatsServer(self.state, profile.nats_port)
        self.mongo = MongoServer(self.state, profile.mongo_port, self._secrets["mongo_password"])
        self.smtp = SmtpServer(self.state, profile.smtp_port)
        edge_ports = [*(s.port for s in self.tenant_servers), self.s3.port]
        self.edge = Edge(self.state, LAYOUT, edge_ports, profile.name) if Edge.possible() else None

    @property
    def services(self) -> list[Service]:
        servers = [self.moto, self.s3, *self.postgres, self.redis, self.nats, self.mongo, self.smtp]
        return servers + ([self.edge] if self.edge else [])

    def internal_host(self, port: int) -> str:
        """``host:port`` of a data server as deployed apps reach it: at the edge (127.0.0.1
        when this stack has none, as when it is not run as root)."""
        return f"{self.edge.host if self.edge else '127.0.0.1'}:{port}"

    @property
    def tenant_servers(self) -> list[Postgres | RedisServer | NatsServer | MongoServer]:
        return [*self.postgres, self.redis, self.nats, self.mongo]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.profile.api_port}"

    def up(self) -> list[Service]:
        """Start what is not running; create tables and bucket. Returns what this call started."""
        started = [s for s in self.services if s.up()]
        from devstack.aws import ensure_aws_resources

        ensure_aws_resources(self.env())
        if self.moto in started:
            # moto keeps its records in memory: tenants left on the servers are now orphans.
            for server in self.tenant_servers:
                server.drop_tenants()
        return started

    @property
    def api_pidfile(self) -> Path:
        """Written by ``devstack run`` while it serves, so ``devstack down`` can stop it."""
        return self.state / "pids" / "api.pid"

    def stop_api(self) -> None:
        try:
            pid = int(self.api_pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return
        stop_process(pid, signal.SIGTERM)
        self.api_pidfile.unlink(missing_ok=True)

    def reset(self) -> None:
        """Start from empty: wipe moto's state, every tenant on the servers and every received mail;
        re-create tables."""
        import urllib.request

        url = f"http://127.0.0.1:{self.profile.moto_port}/moto-api/reset"
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10).close()
        for server in self.tenant_servers:
            server.drop_tenants()
        self.smtp.clear()
        from devstack.aws import empty_storage, ensure_aws_resources

        ensure_aws_resources(self.env())
        empty_storage(self.env())

    def remove_apps(self) -> int:
        """Remove every app the local deploy backend runs for this profile: their records live
        in the moto server, which does not outlive the stack, so they would be orphans."""
        state = self.state / "deploys"
        if not state.is_dir():
            return 0
        from chalicelib.config import DeploySettings
        from chalicelib.deploy.local import LocalBackend

        backend = LocalBackend(DeploySettings.from_env(self.env()), lambda bucket, key: b"")
        slugs = [d.name for d in state.iterdir() if d.is_dir()]
        for slug in slugs:
            backend.remove(slug)
        return len(slugs)

    def down(self, services: list[Service] | None = None) -> None:
        for service in reversed(services if services is not None else self.services):
            service.down()

    def env(self) -> dict[str, str]:
        """The environment the app runs with against this stack (merged over os.environ)."""
        apps = self.profile.api_port + 13000  # host ports of deployed apps
        backends = [
            {
                "name": pg.name,
                "admin_url": pg.admin_url(),
                "public_host": f"127.0.0.1:{pg.port}",
                "internal_host": self.internal_host(pg.port),
            }
            for pg in self.postgres
        ]
        return {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.profile.moto_port}",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "INSTANODE_STAGE": "local",
            "INSTANODE_PUBLIC_BASE_URL": os.environ.get("INSTANODE_PUBLIC_BASE_URL", self.base_url),
            "INSTANODE_TABLE_PREFIX": "instanode",
            "INSTANODE_BUCKET": "instanode-storage",
            "INSTANODE_JWT_SECRET": self._secrets["jwt_secret"],
            "INSTANODE_POSTGRES_BACKENDS": json.dumps(backends),
            "INSTANODE_REDIS_BACKENDS": json.dumps([self._redis_backend()]),
            "INSTANODE_NATS_BACKENDS": json.dumps(
                [self.nats.backend_entry(internal_host=self.internal_host(self.nats.port))]
            ),
            "INSTANODE_MONGODB_BACKENDS": json.dumps([self._mongo_backend()]),
            "INSTANODE_STORAGE_BACKENDS": json.dumps([self._storage_backend()]),
            # chalice local reports every caller as 127.0.0.1: trust it to forward the real one.
            "INSTANODE_TRUSTED_PROXIES": "127.0.0.1/32",
            "INSTANODE_MAIL_URL": self.smtp.url,
            "INSTANODE_MAIL_FROM": MAIL_FROM,
            # billing: the local stack signs its own test webhooks with this secret
            "INSTANODE_RAZORPAY_WEBHOOK_SECRET": self._secrets["razorpay_webhook_secret"],
            "INSTANODE_BILLING_PLANS": json.dumps(LOCAL_BILLING_PLANS),
            "INSTANODE_PROMO_CODES": json.dumps(LOCAL_PROMO_CODES),
            # what each tier may do, over plans.yaml (the shell's value wins, as for the URL)
            "INSTANODE_PLANS_OVERRIDES": os.environ.get(
                "INSTANODE_PLANS_OVERRIDES", self.profile.plans_overrides
            ),
            # container deploys: podman on this machine, apps on ports next to the API's
            "INSTANODE_DEPLOY_BACKEND": "local",
            "INSTANODE_DEPLOY_STATE_DIR": str(self.state / "deploys"),
            "INSTANODE_DEPLOY_PORTS": f"{apps}-{apps + 499}",
        }

    def _storage_backend(self) -> dict[str, str]:
        """The S3-only server: tenants' presigned URLs name it at the edge, which the host and
        deployed apps both reach (the platform's tables are in the other moto)."""
        return {
            "name": "s3",
            "admin_url": f"http://127.0.0.1:{self.s3.port}",
            "public_host": f"http://{self.internal_host(self.s3.port)}",
            "bucket": "instanode-storage",
            "region": REGION,
        }

    def _mongo_backend(self) -> dict[str, str]:
        return {
            "name": "mongo1",
            "admin_url": self.mongo.admin_url(),
            "public_host": f"127.0.0.1:{self.mongo.port}",
            "internal_host": self.internal_host(self.mongo.port),
        }

    def _redis_backend(self) -> dict[str, str]:
        return {
            "name": "redis1",
            "admin_url": self.redis.admin_url(),
            "public_host": f"127.0.0.1:{self.redis.port}",
            "internal_host": self.internal_host(self.redis.port),
        }

    def _load_secrets(self) -> dict[str, str]:
        """Generated once per state dir (a key added later is generated then), kept 0600."""
        path = self.state / "secrets.json"
        values: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        missing = {
            "jwt_secret": 32,
            "postgres_password": 16,
            "redis_password": 16,
            "mongo_password": 16,
            "razorpay_webhook_secret": 16,
        }.items()
        values.update({k: secrets.token_hex(n) for k, n in missing if k not in values})
        path.touch(mode=0o600)
        path.write_text(json.dumps(values))
        return values
