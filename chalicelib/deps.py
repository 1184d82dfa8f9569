"""One cached accessor per dependency. Lambda keeps them warm across invocations; tests call
``reset()`` after changing the environment (or build the classes themselves)."""

from __future__ import annotations

from functools import cache, partial
from typing import TYPE_CHECKING

import boto3

from chalicelib.config import get_settings
from chalicelib.dynamo import Dynamo
from chalicelib.models import Kind
from chalicelib.providers.base import Provider, build_provider
from chalicelib.service import ProvisionService
from chalicelib.tiers import all_tiers

if TYPE_CHECKING:
    from chalicelib.health import Readiness


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


def reset() -> None:
    for accessor in (get_settings, get_dynamo, get_provider, get_service, get_readiness):
        accessor.cache_clear()
