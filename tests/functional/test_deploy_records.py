"""The deployments table's versioned writes (records.py), against moto's DynamoDB: a write made
from a stale read is refused instead of overwriting a change made meanwhile, and a paid upgrade
that races a status change still makes the app permanent without undoing that change."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace

import pytest

from chalicelib import deps, errors
from chalicelib.deploy.backend import DeployStatus
from chalicelib.deploy.deletion import DELETION_TOKEN_SECONDS, Subject, TwoStepDeletion
from chalicelib.deploy.records import PendingDeletion
from chalicelib.deploy.store import Deployment, DeploymentStore
from devstack.stack import Stack
from tests.functional.test_deploys import magic_link_token


@pytest.fixture
def store(app_env: dict[str, str]) -> DeploymentStore:
    return deps.get_deploys().store


def new_app(store: DeploymentStore, owner: str, ttl_policy: str = "auto_24h") -> Deployment:
    now = int(time.time())
    app_id = "app_" + secrets.token_hex(8)
    app = Deployment(
        id=app_id,
        owner=owner,
        name="web",
        slug=f"web-{app_id[4:10]}",
        url="http://example.localhost",
        port=8080,
        revision=1,
        context_key=f"deploys/{app_id}/1.tar.gz",
        status=DeployStatus.BUILDING,
        ttl_policy=ttl_policy,
        created_at=now,
        updated_at=now,
        expires_at=now + 24 * 3600,
        env={"SECRET": "s3cret"},
    )
    assert store.create(app, max_apps=5)
    return app


def test_a_write_from_a_stale_read_is_refused(store: DeploymentStore) -> None:
    app = new_app(store, f"team:{secrets.token_hex(4)}")
    healthy = store.save(replace(app, status=DeployStatus.HEALTHY), app)
    assert healthy is not None and healthy.version == 2
    # a deletion request prepared from the first read must not undo the status change
    pending = PendingDeletion("hash", int(time.time()) + 900)
    assert store.save(replace(app, deletion=pending), app) is None
    stored = store.get(app.id)
    assert stored is not None
    assert (stored.status, stored.deletion, stored.version) == (DeployStatus.HEALTHY, None, 2)
    assert stored.env == {"SECRET": "s3cret"}


def test_retiring_from_a_stale_read_is_refused_and_keeps_the_slot(
    store: DeploymentStore,
) -> None:
    app = new_app(store, f"team:{secrets.token_hex(4)}")
    redeployed = store.save(replace(app, revision=2), app)
    assert redeployed is not None
    assert not store.retire(app, DeployStatus.DELETED, int(time.time()))
    assert store.retire(redeployed, DeployStatus.DELETED, int(time.time()))
    gone = store.get(app.id)
    assert gone is not None and gone.status is DeployStatus.DELETED


def test_upgrade_racing_a_status_change_keeps_both(store: DeploymentStore) -> None:
    owner = f"team:{secrets.token_hex(4)}"
    app = new_app(store, owner)

    class PollFirst(DeploymentStore):
        """The poller's write lands between the upgrade's read and its write."""

        polled = False

        def save(self, d: Deployment, seen: Deployment) -> Deployment | None:
            if not self.polled:
                self.polled = True
                assert super().save(replace(seen, status=DeployStatus.HEALTHY), seen)
            return super().save(d, seen)

    settings = deps.get_settings()
    racing = PollFirst(
        store._db,
        settings.deployments_table,
        settings.counters_table,
        store._sealer,
        settings.expiry_shards,
    )
    assert racing.make_permanent(owner) == 1
    stored = store.get(app.id)
    assert stored is not None
    assert (stored.ttl_policy, stored.expires_at) == ("permanent", None)
    assert stored.status is DeployStatus.HEALTHY


def test_a_deletion_token_past_its_15_minutes_is_refused_and_reads_expired(
    store: DeploymentStore, stack: Stack
) -> None:
    app = new_app(store, f"team:{secrets.token_hex(4)}")
    now = [time.time()]
    removed: list[str] = []

    def mark(d: Deployment, pending: PendingDeletion | None) -> bool:
        return store.save(replace(d, deletion=pending), d) is not None

    def remove(d: Deployment, at: int) -> bool:
        removed.append(d.id)
        return store.retire(d, DeployStatus.DELETED, at)

    flow = TwoStepDeletion[Deployment](
        "http://api.test", deps.get_outbox, lambda: now[0], mark, remove
    )
    subject = Subject("app", "id", app.id, app.name, app.url, "/confirm")
    email = f"owner-{secrets.token_hex(4)}@example.com"
    status, answer = flow.ask(app, subject, email, at_once=False)
    assert (status, answer["deletion_status"]) == (202, "pending_confirmation")
    pending = store.get(app.id)
    assert pending is not None and pending.deletion is not None
    token = magic_link_token(stack, email)
    now[0] += DELETION_TOKEN_SECONDS
    with pytest.raises(errors.InvalidConfirmationTokenError):
        flow.confirm(pending, subject, token)  # the right token, too late
    assert pending.as_json(int(now[0]))["deletion_status"] == "expired"
    assert removed == []
    assert flow.cancel(pending, subject)["deletion_status"] == "cancelled"
    cleared = store.get(app.id)
    assert cleared is not None and cleared.deletion is None
