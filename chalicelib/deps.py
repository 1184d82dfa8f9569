"""One cached accessor per dependency. Lambda keeps them warm across invocations; tests call
``reset()`` after changing the environment (or build the classes themselves)."""

from __future__ import annotations

from functools import cache, partial
from typing import TYPE_CHECKING

import boto3

from chalicelib.config import get_settings
from chalicelib.dynamo import Dynamo
from chalicelib.idempotency import IdempotencyStore
from chalicelib.models import Kind
from chalicelib.providers.base import Provider, build_provider
from chalicelib.sealing import Sealer
from chalicelib.service import ProvisionService
from chalicelib.tiers import all_tiers

if TYPE_CHECKING:
    from chalicelib.accounts import AccountStore
    from chalicelib.auth import Authenticator
    from chalicelib.billing import BillingService
    from chalicelib.claims import ClaimService
    from chalicelib.deploy.backend import DeployBackend
    from chalicelib.deploy.contexts import ContextStore
    from chalicelib.deploy.service import DeployService
    from chalicelib.deploy.stacks import StackService
    from chalicelib.devices import DeviceFlow
    from chalicelib.health import Readiness
    from chalicelib.outbox import Outbox
    from chalicelib.resources import ResourceService
    from chalicelib.teams import TeamService


@cache
def get_dynamo() -> Dynamo:
    return Dynamo(boto3.client("dynamodb"))


@cache
def get_provider(kind: Kind) -> Provider:
    return build_provider(kind)


@cache
def get_service() -> ProvisionService:
    return ProvisionService(get_settings(), get_dynamo(), all_tiers(), get_provider)


@cache
def get_idempotency() -> IdempotencyStore:
    s = get_settings()
    return IdempotencyStore(get_dynamo(), s.idempotency_table, Sealer(s.jwt_keys))


@cache
def get_readiness() -> Readiness:
    from chalicelib.health import Check, Readiness  # only /readyz needs it

    settings = get_settings()
    table = settings.resources_table
    checks = [Check("platform_db", True, partial(get_dynamo().get, table, {"id": "readyz"}))]
    for kind, backends in settings.backends.items():
        checks += [
            Check(f"{kind.value}:{b.name}", False, partial(get_provider(kind).check, b))
            for b in backends
        ]
    return Readiness(checks)


# -- accounts (each loads its modules on first use: provisioning cold starts never pay) --------
@cache
def get_accounts() -> AccountStore:
    from chalicelib.accounts import AccountStore

    return AccountStore(get_dynamo(), get_settings().accounts_table)


@cache
def get_authenticator() -> Authenticator:
    from chalicelib.auth import Authenticator
    from chalicelib.tokens import Signer

    return Authenticator(Signer(get_settings().jwt_keys), get_accounts())


@cache
def get_outbox() -> Outbox:
    from chalicelib.accounts import SEAL_LABEL
    from chalicelib.mail import build_sender
    from chalicelib.outbox import Outbox

    s = get_settings()
    sealer = Sealer(s.jwt_keys, SEAL_LABEL)
    return Outbox(get_dynamo(), s.accounts_table, sealer, build_sender(s.mail_url), s.mail_from)


@cache
def get_devices() -> DeviceFlow:
    from chalicelib.devices import DeviceFlow

    return DeviceFlow(get_settings(), get_accounts())


@cache
def get_teams() -> TeamService:
    from chalicelib.teams import TeamService

    return TeamService(
        get_settings(),
        get_dynamo(),
        get_accounts(),
        all_tiers(),
        get_provider,
        lambda: get_deploys().store,  # built only when an upgrade reaches the deploys
    )


@cache
def get_claims() -> ClaimService:
    from chalicelib.claims import ClaimService
    from chalicelib.store import ResourceStore

    settings = get_settings()
    store = ResourceStore(get_dynamo(), settings)
    return ClaimService(settings, get_accounts(), store, get_teams(), get_outbox)


@cache
def get_resources() -> ResourceService:
    from chalicelib.resources import ResourceService

    return ResourceService(get_settings(), get_dynamo(), all_tiers(), get_provider)


@cache
def get_billing() -> BillingService:
    from chalicelib.billing import BillingService

    return BillingService(get_settings(), get_teams())


@cache
def get_deploy_backend() -> DeployBackend:
    """The configured deploy backend: podman on this machine, or a Kubernetes cluster."""
    deploy = get_settings().deploy
    if deploy.backend == "kubernetes":
        from chalicelib.deploy.kube import KubeBackend

        return KubeBackend(deploy)
    from chalicelib.deploy.local import LocalBackend

    return LocalBackend(deploy, get_contexts().get)


@cache
def get_contexts() -> ContextStore:
    from chalicelib.deploy.contexts import ContextStore

    return ContextStore()


@cache
def get_deploys() -> DeployService:
    from chalicelib.deploy.service import DeployService
    from chalicelib.deploy.store import SEAL_LABEL, DeploymentStore

    s = get_settings()
    store = DeploymentStore(
        get_dynamo(),
        s.deployments_table,
        s.counters_table,
        Sealer(s.jwt_keys, SEAL_LABEL),
        s.expiry_shards,
    )
    return DeployService(s, store, get_deploy_backend, get_contexts(), get_outbox)


@cache
def get_stacks() -> StackService:
    from chalicelib.deploy.stack_store import SEAL_LABEL, StackStore
    from chalicelib.deploy.stacks import StackService

    s = get_settings()
    store = StackStore(
        get_dynamo(),
        s.stacks_table,
        s.counters_table,
        Sealer(s.jwt_keys, SEAL_LABEL),
        s.expiry_shards,
    )
    return StackService(s, store, get_deploy_backend, get_contexts(), get_outbox)


_ACCESSORS = (
    get_settings,
    get_dynamo,
    get_provider,
    get_service,
    get_idempotency,
    get_readiness,
    get_accounts,
    get_authenticator,
    get_outbox,
    get_devices,
    get_teams,
    get_claims,
    get_resources,
    get_billing,
    get_deploy_backend,
    get_contexts,
    get_deploys,
    get_stacks,
)


def reset() -> None:
    for accessor in _ACCESSORS:
        accessor.cache_clear()
