"""Fixtures of the MongoDB attack and quota tests: a MongoDB server of their own, and tenants
made on it (tests/security/test_mongo_attacks.py has the helpers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.mongo_service import MongoServer
from tests.security.test_mongo_attacks import Tenants, mongo_alone


@pytest.fixture(scope="module")
def mongo_server() -> Iterator[MongoServer]:
    with mongo_alone() as server:
        yield server


@pytest.fixture
def tenants(mongo_server: MongoServer) -> Iterator[Tenants]:
    made = Tenants(mongo_server)
    yield made
    made.close()
