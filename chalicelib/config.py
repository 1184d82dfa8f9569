"""Every knob in one place: ``Settings.from_env()`` reads the environment once.

Secrets (the JWT signing key, backend admin URLs) come from the environment locally and from one
Secrets Manager JSON secret in production (``INSTANODE_SECRETS_ARN``); keys in that secret
override the environment. See README "Configuration" for the full list with defaults.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from chalicelib.errors import ConfigError
from chalicelib.models import Backend, Kind, Resource

if TYPE_CHECKING:
    from chalicelib.tiers import Tier

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Backend list per kind: env var name and the kind whose list it falls back to when unset.
_BACKEND_VARS: dict[Kind, tuple[str, Kind | None]] = {
    Kind.POSTGRES: ("INSTANODE_POSTGRES_BACKENDS", None),
    Kind.VECTOR: ("INSTANODE_VECTOR_BACKENDS", Kind.POSTGRES),
    Kind.REDIS: ("INSTANODE_REDIS_BACKENDS", None),
    Kind.QUEUE: ("INSTANODE_NATS_BACKENDS", None),
    Kind.MONGODB: ("INSTANODE_MONGODB_BACKENDS", None),
    Kind.STORAGE: ("INSTANODE_STORAGE_BACKENDS", None),
}


@dataclass(frozen=True)
class Promo:
    """A promotion code from INSTANODE_PROMO_CODES (valid_until: an ISO date, exclusive)."""

    code: str
    discount_percent: int
    discount_amount_inr: int
    valid_until: str | None


@dataclass(frozen=True)
class DeploySettings:
    """Where container deploys build and run (README "Deploys")."""

    backend: str  # "local" (podman on this machine) or "kubernetes"
    domain: str  # apps are served at <slug>.<domain>
    bucket: str  # build contexts (deploys/, stacks/) and agents' uploads (uploads/) go here
    # local backend
    state_dir: str  # per-app work dirs, logs and status files
    port_range: tuple[int, int]  # host ports apps are published on (127.0.0.1 only)
    # kubernetes backend
    kube_api_url: str
    kube_token: str = field(repr=False)
    kube_namespace: str
    kube_ca_file: str  # "" (and no kube_ca_data) skips TLS verification: test servers only
    registry: str  # where kaniko pushes images, e.g. registry.example.com/instanode
    kaniko_image: str
    ingress_class: str
    cluster_issuer: str  # cert-manager ClusterIssuer for the apps' TLS certificates
    # Secrets the operator creates once in kube_namespace; every kaniko Job uses both:
    kube_build_aws_secret: str = "instanode-build-aws"  # AWS_* env vars: reads the contexts
    kube_registry_auth_secret: str = "instanode-registry-auth"  # dockerconfigjson: pushes
    # the builds' service account: with one (EKS Pod Identity, IRSA) a build gets its AWS
    # credentials from it, and kube_build_aws_secret may be absent
    kube_build_service_account: str = ""
    # the cluster's CA certificate(s), base64 PEM as in a kubeconfig's certificate-authority-data:
    # in Lambda there is no file to point kube_ca_file at
    kube_ca_data: str = ""
    # the ingress controller's namespace: its pods alone reach a public app from outside its stack
    ingress_namespace: str = "ingress-nginx"
    # local backend: the address pool of builds, app networks and the edge (deploy/firewall.py),
    # and every build's memory, CPU and wall-clock limits
    # kubernetes backend: where a build pod may not connect (its NetworkPolicy's ipBlock except)
    kube_build_egress_except: tuple[str, ...] = (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
    )
    subnet: str = "10.90.0.0/16"
    build_memory_mb: int = 2048
    build_cpu_millis: int = 1000
    build_timeout_seconds: int = 600

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DeploySettings:
        low, _, high = env.get("INSTANODE_DEPLOY_PORTS", "31000-31999").partition("-")
        try:
            ports = (int(low), int(high))
        except ValueError as exc:
            raise ConfigError("INSTANODE_DEPLOY_PORTS must look like 31000-31999") from exc
        backend = env.get("INSTANODE_DEPLOY_BACKEND", "local")
        if backend not in ("local", "kubernetes"):
            raise ConfigError("INSTANODE_DEPLOY_BACKEND must be local or kubernetes")
        trusted = env.get("INSTANODE_KUBE_CA_FILE") or env.get("INSTANODE_KUBE_CA_DATA")
        if backend == "kubernetes" and env.get("INSTANODE_STAGE") == "prod" and not trusted:
            raise ConfigError(
                "prod verifies the cluster's TLS certificate: set INSTANODE_KUBE_CA_DATA "
                "(base64 PEM, a kubeconfig's certificate-authority-data) or INSTANODE_KUBE_CA_FILE"
            )
        return cls(
            backend=backend,
            domain=env.get("INSTANODE_DEPLOY_DOMAIN", "localhost"),
            bucket=env.get("INSTANODE_DEPLOY_BUCKET", env.get("INSTANODE_BUCKET", "")),
            state_dir=env.get("INSTANODE_DEPLOY_STATE_DIR", "/tmp/instanode-deploys"),
            port_range=ports,
            kube_build_egress_except=_cidrs(
                env, "INSTANODE_KUBE_BUILD_EGRESS_EXCEPT", cls.kube_build_egress_except
            ),
            subnet=env.get("INSTANODE_DEPLOY_SUBNET", cls.subnet),
            build_memory_mb=_positive(env, "INSTANODE_DEPLOY_BUILD_MEMORY_MB", cls.build_memory_mb),
            build_cpu_millis=_positive(
                env, "INSTANODE_DEPLOY_BUILD_CPU_MILLIS", cls.build_cpu_millis
            ),
            build_timeout_seconds=_positive(
                env, "INSTANODE_DEPLOY_BUILD_TIMEOUT", cls.build_timeout_seconds
            ),
            kube_api_url=env.get("INSTANODE_KUBE_API_URL", ""),
            kube_token=env.get("INSTANODE_KUBE_TOKEN", ""),
            kube_namespace=env.get("INSTANODE_KUBE_NAMESPACE", "instanode-apps"),
            kube_ca_file=env.get("INSTANODE_KUBE_CA_FILE", ""),
            registry=env.get("INSTANODE_DEPLOY_REGISTRY", ""),
            kaniko_image=env.get(
                "INSTANODE_KANIKO_IMAGE", "gcr.io/kaniko-project/executor:v1.23.2"
            ),
            ingress_class=env.get("INSTANODE_INGRESS_CLASS", "nginx"),
            cluster_issuer=env.get("INSTANODE_CLUSTER_ISSUER", "letsencrypt"),
            ingress_namespace=env.get("INSTANODE_INGRESS_NAMESPACE", "ingress-nginx"),
            kube_build_aws_secret=env.get(
                "INSTANODE_KUBE_BUILD_AWS_SECRET", cls.kube_build_aws_secret
            ),
            kube_registry_auth_secret=env.get(
                "INSTANODE_KUBE_REGISTRY_AUTH_SECRET", cls.kube_registry_auth_secret
            ),
            kube_ca_data=env.get("INSTANODE_KUBE_CA_DATA", ""),
            kube_build_service_account=env.get("INSTANODE_KUBE_BUILD_SERVICE_ACCOUNT", ""),
        )


PLANS_OVERRIDES_VAR = "INSTANODE_PLANS_OVERRIDES"
PREVIOUS_SECRETS_VAR = "INSTANODE_JWT_PREVIOUS_SECRETS"
MIN_SECRET_CHARS = 32

# Webhook inboxes live in the platform's own DynamoDB: one implicit backend.
WEBHOOK_BACKEND = "inbox"


@dataclass(frozen=True)
class Settings:
    stage: str
    version: str
    commit_id: str
    build_time: str
    public_base_url: str
    table_prefix: str
    jwt_secret: str = field(repr=False)  # signs every new token and seal
    trusted_proxies: tuple[IPNetwork, ...]
    backends: Mapping[Kind, tuple[Backend, ...]]
    expiry_shards: int
    # how long a provision (or once-only create) holds its idempotency key and record before
    # they count as abandoned: longer than any request can run (api_timeout_seconds), which
    # from_env checks
    provisioning_lease_seconds: int
    mail_url: str = field(repr=False)  # smtp://host:port, smtps://user:pass@host, or ses:
    mail_from: str
    razorpay_webhook_secret: str = field(repr=False)
    billing_plans: Mapping[str, str]  # billing provider plan id -> tier name
    promo_codes: Mapping[str, Promo]
    deploy: DeploySettings
    # {tier: {key: value}} merged over plans.yaml (INSTANODE_PLANS_OVERRIDES; checked at load)
    plans_overrides: Mapping[str, Any] = field(default_factory=dict)
    billing_url: str = ""  # where a team buys a paid tier (the operator's checkout page)
    # how long the reconciler waits before removing a backend object no record knows
    reconcile_grace_seconds: int = 3600
    # the API function's timeout: a provision stops short of it (service.Deadline); in Lambda
    # the context's remaining time counts when it is less
    api_timeout_seconds: int = 28
    # secrets rotated out (INSTANODE_JWT_PREVIOUS_SECRETS): they still verify and open what they
    # signed and sealed, and sign nothing new
    jwt_previous_secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def jwt_keys(self) -> tuple[str, ...]:
        """The current secret, then each previous one: Signer and Sealer try them in order."""
        return tuple(dict.fromkeys((self.jwt_secret, *self.jwt_previous_secrets)))

    @cached_property
    def tiers(self) -> Mapping[str, Tier]:
        """The effective tier table: plans.yaml with ``plans_overrides`` merged over it."""
        from chalicelib.tiers import build_tiers

        return build_tiers(self.plans_overrides, PLANS_OVERRIDES_VAR)

    @property
    def billing_configured(self) -> bool:
        """A payment provider moves teams between tiers here: its webhook can verify and map
        charges, and there is a page where a team pays."""
        return bool(self.razorpay_webhook_secret and self.billing_plans and self.billing_url)

    @property
    def resources_table(self) -> str:
        return f"{self.table_prefix}-resources"

    @property
    def idempotency_table(self) -> str:
        return f"{self.table_prefix}-idempotency"

    @property
    def counters_table(self) -> str:
        return f"{self.table_prefix}-counters"

    @property
    def webhook_requests_table(self) -> str:
        return f"{self.table_prefix}-webhook-requests"

    @property
    def deployments_table(self) -> str:
        return f"{self.table_prefix}-deployments"

    @property
    def stacks_table(self) -> str:
        return f"{self.table_prefix}-stacks"

    @property
    def accounts_table(self) -> str:
        return f"{self.table_prefix}-accounts"

    @property
    def secure_cookies(self) -> bool:
        return self.public_base_url.startswith("https://")

    def backends_for(self, kind: Kind) -> tuple[Backend, ...]:
        return self.backends.get(kind, ())

    def backend_of(self, resource: Resource) -> Backend | None:
        """The configured server a resource was placed on (None if no longer configured)."""
        named = (b for b in self.backends_for(resource.kind) if b.name == resource.ref.backend)
        return next(named, None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        env.update(_secret_overrides(env))
        jwt_secret = env.get("INSTANODE_JWT_SECRET", "")
        if len(jwt_secret) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"INSTANODE_JWT_SECRET must be set to at least {MIN_SECRET_CHARS} characters"
            )
        base_url = env.get("INSTANODE_PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
        inbox = Backend(WEBHOOK_BACKEND, admin_url="", public_host=base_url, internal_host=base_url)
        api_timeout = _positive(env, "INSTANODE_API_TIMEOUT_SECONDS", cls.api_timeout_seconds)
        lease = _positive(env, "INSTANODE_PROVISIONING_LEASE_SECONDS", 60)
        if lease <= api_timeout:
            raise ConfigError(
                "INSTANODE_PROVISIONING_LEASE_SECONDS must be longer than the API timeout "
                f"({api_timeout} s): a live request's resource would be collected under it"
            )
        return cls(
            stage=env.get("INSTANODE_STAGE", "local"),
            version=env.get("INSTANODE_VERSION", "0.1.0"),
            commit_id=env.get("INSTANODE_COMMIT_ID", "unknown"),
            build_time=env.get("INSTANODE_BUILD_TIME", "unknown"),
            public_base_url=base_url,
            table_prefix=env.get("INSTANODE_TABLE_PREFIX", "instanode"),
            jwt_secret=jwt_secret,
            trusted_proxies=_parse_networks(env.get("INSTANODE_TRUSTED_PROXIES", "")),
            backends={**_parse_backends(env), Kind.WEBHOOK: (inbox,)},
            expiry_shards=int(env.get("INSTANODE_EXPIRY_SHARDS", "8")),
            provisioning_lease_seconds=lease,
            api_timeout_seconds=api_timeout,
            reconcile_grace_seconds=int(env.get("INSTANODE_RECONCILE_GRACE_SECONDS", "3600")),
            mail_url=env.get("INSTANODE_MAIL_URL", "smtp://127.0.0.1:25"),
            mail_from=env.get("INSTANODE_MAIL_FROM", "instanode <noreply@instanode.localhost>"),
            razorpay_webhook_secret=env.get("INSTANODE_RAZORPAY_WEBHOOK_SECRET", ""),
            billing_plans=_parse_plans(env.get("INSTANODE_BILLING_PLANS", "{}")),
            promo_codes=_parse_promos(env.get("INSTANODE_PROMO_CODES", "{}")),
            deploy=DeploySettings.from_env(env),
            plans_overrides=_parse_plans_overrides(env.get(PLANS_OVERRIDES_VAR, "{}")),
            billing_url=env.get("INSTANODE_BILLING_URL", "").strip(),
            jwt_previous_secrets=_parse_previous_secrets(env.get(PREVIOUS_SECRETS_VAR) or "[]"),
        )


def _cidrs(env: Mapping[str, str], var: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(var)
    if raw is None:
        return default
    try:
        return tuple(str(ipaddress.ip_network(c.strip())) for c in raw.split(",") if c.strip())
    except ValueError as exc:
        raise ConfigError(f"{var} must be comma-separated CIDRs: {exc}") from exc


def _positive(env: Mapping[str, str], var: str, default: int) -> int:
    raw = env.get(var, str(default))
    if not raw.isdecimal() or int(raw) < 1:
        raise ConfigError(f"{var} must be a positive whole number, not {raw!r}")
    return int(raw)


def _json(var: str, raw: str, expected: type[T], what: str) -> T:
    """``raw`` parsed as JSON of the ``expected`` type, else a ConfigError naming ``var``."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{var} is not valid JSON: {exc.msg}") from exc
    if not isinstance(value, expected):
        raise ConfigError(f"{var} must be {what}")
    return value


def _json_object(var: str, raw: str) -> dict[str, Any]:
    return _json(var, raw, dict, "a JSON object")


def _parse_plans_overrides(raw: str) -> dict[str, Any]:
    """``{"free": {"deploys": {"apps": 1}}}``: every tier, key and type checked now, so a bad
    override stops the process at load instead of failing a request."""
    overrides = _json_object(PLANS_OVERRIDES_VAR, raw or "{}")
    if overrides:
        from chalicelib.tiers import build_tiers

        build_tiers(overrides, PLANS_OVERRIDES_VAR)
    return overrides


def _parse_previous_secrets(raw: str) -> tuple[str, ...]:
    """``["<old secret>", ...]``: a JSON list, as any character may be in a secret (a comma
    would split one silently), and the Secrets Manager JSON secret holds it as a list."""
    secrets = _json(PREVIOUS_SECRETS_VAR, raw, list, "a JSON list of strings")
    if not all(isinstance(s, str) and len(s) >= MIN_SECRET_CHARS for s in secrets):
        raise ConfigError(
            f"{PREVIOUS_SECRETS_VAR}: each previous secret is a string of at least "
            f"{MIN_SECRET_CHARS} characters"
        )
    return tuple(secrets)


def _parse_plans(raw: str) -> dict[str, str]:
    plans = _json_object("INSTANODE_BILLING_PLANS", raw)
    if not all(isinstance(v, str) for v in plans.values()):
        raise ConfigError("INSTANODE_BILLING_PLANS maps plan ids to tier names (strings)")
    return plans


def _parse_promos(raw: str) -> dict[str, Promo]:
    """``{"EARLYBIRD": {"discount_percent": 20, "valid_until": "2027-01-01"}, ...}``"""
    promos: dict[str, Promo] = {}
    for code, spec in _json_object("INSTANODE_PROMO_CODES", raw).items():
        if not isinstance(spec, dict):
            raise ConfigError(f"INSTANODE_PROMO_CODES: {code} must map to an object")
        try:
            promo = Promo(
                code=code.upper(),
                discount_percent=int(spec.get("discount_percent", 0)),
                discount_amount_inr=int(spec.get("discount_amount_inr", 0)),
                valid_until=str(spec["valid_until"]) if spec.get("valid_until") else None,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"INSTANODE_PROMO_CODES: {code}: {exc}") from exc
        if not 0 <= promo.discount_percent <= 100 or promo.discount_amount_inr < 0:
            raise ConfigError(f"INSTANODE_PROMO_CODES: {code}: discount out of range")
        promos[promo.code] = promo
    return promos


def _secret_overrides(env: Mapping[str, str]) -> dict[str, str]:
    """Keys of the Secrets Manager JSON secret named by INSTANODE_SECRETS_ARN, if any."""
    arn = env.get("INSTANODE_SECRETS_ARN")
    if not arn:
        return {}
    import boto3

    raw = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    values = json.loads(raw)
    if not isinstance(values, dict):
        raise ConfigError("the secret named by INSTANODE_SECRETS_ARN must be a JSON object")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def _parse_networks(raw: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(p.strip()) for p in raw.split(",") if p.strip())
    except ValueError as exc:
        raise ConfigError(f"INSTANODE_TRUSTED_PROXIES: {exc}") from exc


def _parse_backends(env: Mapping[str, str]) -> dict[Kind, tuple[Backend, ...]]:
    parsed: dict[Kind, tuple[Backend, ...]] = {}
    for kind, (var, fallback) in _BACKEND_VARS.items():
        raw = env.get(var)
        if raw:
            parsed[kind] = tuple(_backend(var, item) for item in _json_list(var, raw))
        elif fallback is not None:
            parsed[kind] = parsed.get(fallback, ())
    return parsed


def _json_list(var: str, raw: str) -> list[Any]:
    return _json(var, raw, list, "a JSON list of backends")


def _backend(var: str, item: Any) -> Backend:
    if not isinstance(item, dict) or not {"name", "admin_url", "public_host"} <= item.keys():
        raise ConfigError(f"{var}: each backend needs name, admin_url and public_host")
    known = {"name", "admin_url", "public_host", "internal_host"}
    return Backend(
        name=str(item["name"]),
        admin_url=str(item["admin_url"]),
        public_host=str(item["public_host"]),
        internal_host=str(item.get("internal_host") or item["public_host"]),
        secrets={str(k): str(v) for k, v in item.items() if k not in known},
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own with ``Settings.from_env(env)``)."""
    return Settings.from_env()
