"""A failure after the backend object exists leaves no orphan: no role, database or record."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.dynamo import Dynamo
from chalicelib.models import Kind
from tests.functional.conftest import (
    RecordingProvider,
    caller,
    exists,
    key_for,
    make_service,
    request,
    scan,
    settings,
)

pytestmark = pytest.mark.usefixtures("app_env")


class InjectedFailure(Exception):
    pass


def activates(items: Any) -> bool:
    """Whether a transaction is the one activating a record (the backend object exists)."""
    return any(":active" in i.get("Update", {}).get("ExpressionAttributeValues", {}) for i in items)


class FailingActivation(Dynamo):
    """DynamoDB that fails the transaction activating a record (after the backend create)."""

    def transact(self, items: Any) -> None:
        if activates(items):
            raise InjectedFailure("activation failed")
        super().transact(items)


@pytest.mark.parametrize("kind", [Kind.POSTGRES, Kind.VECTOR])
def test_failure_after_backend_create_leaves_no_orphan(dynamo: Dynamo, kind: Kind) -> None:
    provider = RecordingProvider(kind)
    svc = make_service(db=FailingActivation(dynamo.client), providers=lambda _: provider)
    who, req = caller(), request(kind)
    with pytest.raises(InjectedFailure):
        svc.provision(who, req, key_for(who, req))
    [ref] = provider.refs
    assert exists(ref) == {"database": False, "role": False}
    assert scan(dynamo, settings().resources_table) == []
    assert scan(dynamo, settings().idempotency_table) == []
    assert all(item["n"] == 0 for item in scan(dynamo, settings().counters_table))


def test_retry_after_a_failed_provision_succeeds(dynamo: Dynamo) -> None:
    who, req = caller(), request()
    with pytest.raises(InjectedFailure):
        make_service(db=FailingActivation(dynamo.client)).provision(
            who, req, key_for(who, req, "k1")
        )
    outcome = make_service().provision(who, req, key_for(who, req, "k1"))
    assert outcome.status_code == 201 and outcome.headers["X-Idempotency-Source"] == "explicit"
