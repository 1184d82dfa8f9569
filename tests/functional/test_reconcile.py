"""Zero orphans after faults: a backend that dies at any point of a provision, then one
reconciler pass, leaves exactly the objects the records know; the reaper then collects the
half-made records with whatever they still hold.

These tests run against a stack of their own (the test profile shifted by +50): the reconciler
removes whatever no record knows, and the shared test stack's servers hold other tests' tenants,
whose records live in other tables.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from chalicelib import deps, service
from chalicelib.config import DeploySettings, Settings
from chalicelib.deploy.baseimage import ensure_busybox_image
from chalicelib.deploy.local import LocalBackend
from chalicelib.deploy.podman import podman
from chalicelib.dynamo import Dynamo
from chalicelib.errors import ApiError
from chalicelib.jobs.reaper import Reaper
from chalicelib.jobs.reconcile import AppSweep, Reconciler
from chalicelib.models import Backend, Kind, Status
from chalicelib.providers import nats
from chalicelib.providers.base import Inventoried
from chalicelib.store import ResourceStore
from chalicelib.tiers import all_tiers
from devstack.stack import Stack
from tests.conftest import stack_profile
from tests.faults import FaultProxy
from tests.functional.conftest import caller, key_for, make_service, platform_on, request

KINDS = [Kind.POSTGRES, Kind.REDIS, Kind.MONGODB, Kind.QUEUE]
MAX_POINTS = 40  # more client messages than any provision sends


@pytest.fixture(scope="module")
def faults_stack() -> Iterator[Stack]:
    stack = Stack(stack_profile().shifted(50))
    started = stack.up()
    stack.reset()
    yield stack
    stack.down(started)


@pytest.fixture
def env(faults_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("INSTANODE_RECONCILE_GRACE_SECONDS", "0")
    monkeypatch.setattr(service, "ROLL_BACK_PAUSE_SECONDS", 0.05)
    monkeypatch.setattr(nats, "REQUEST_TIMEOUT_SECONDS", 1)  # answers the fault swallowed
    monkeypatch.setattr(nats, "CONNECT_TIMEOUT_SECONDS", 1)
    with platform_on(faults_stack, monkeypatch):
        yield deps.get_settings()


def proxied(backend: Backend, proxy: FaultProxy) -> Backend:
    """``backend`` reached through ``proxy`` (under a name of its own: pools are per name)."""
    parts = urlsplit(backend.admin_url)
    netloc = parts.netloc.replace(f":{parts.port}", f":{proxy.port}")
    url = urlunsplit(parts._replace(netloc=netloc))
    return replace(backend, name=f"{backend.name}-faults", admin_url=url)


def objects(settings: Settings, kind: Kind) -> set[str]:
    provider = deps.get_provider(kind)
    assert isinstance(provider, Inventoried)
    return {ref.namespace for b in settings.backends_for(kind) for ref in provider.inventory(b)}


def records(settings: Settings, db: Dynamo, kind: Kind, status: Status | None = None) -> set[str]:
    store = ResourceStore(db, settings)
    return {
        r.ref.namespace
        for b in settings.backends_for(kind)
        for r in store.held_on(kind, b.name)
        if status is None or r.status is status
    }


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
def test_orphans_go_records_stay(env: Settings, kind: Kind) -> None:
    db, provider = deps.get_dynamo(), deps.get_provider(kind)
    backend = env.backends_for(kind)[0]
    limits = all_tiers()["anonymous"].limits(kind)
    orphan = provider.new_ref(backend)
    provider.provision(backend, orphan, limits)  # no record: what a lost clean-up leaves
    who, req = caller(), request(kind)
    make_service().provision(who, req, key_for(who, req))  # an active record and its object
    assert orphan.namespace in objects(env, kind)

    config = replace(env, backends={kind: env.backends_for(kind)})  # this kind's servers only
    waiting = Reconciler(replace(config, reconcile_grace_seconds=3600), db, deps.get_provider).run()
    assert waiting.suspects == 1 and waiting.removed == 0
    assert orphan.namespace in objects(env, kind)  # within the grace period: kept

    report = Reconciler(config, db, deps.get_provider).run()
    assert report.removed == 1 and report.failed == 0
    assert objects(env, kind) == records(env, db, kind, Status.ACTIVE)


@pytest.mark.parametrize("heal_after", [None, 0.5], ids=["stays-down", "comes-back"])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
def test_a_backend_dying_at_any_point_leaves_no_orphan(
    env: Settings, kind: Kind, heal_after: float | None
) -> None:
    real = env.backends_for(kind)[0]
    with FaultProxy(int(urlsplit(real.admin_url).port or 0)) as proxy:
        config = replace(env, backends={**env.backends, kind: (proxied(real, proxy),)})
        db = deps.get_dynamo()
        svc = make_service(config=config)
        hits = failed = 0
        # each point costs a failed provision and its clean-up: Postgres's, about forty
        # messages long, is cut at every other one
        for point in range(1, MAX_POINTS, 2 if kind is Kind.POSTGRES else 1):
            proxy.arm(point, heal_after)
            who, req = caller(), request(kind)
            try:
                svc.provision(who, req, key_for(who, req))
            except ApiError as exc:
                assert exc.status == 503, exc
                failed += 1
            except Exception:  # a provider error other than the backend's (e.g. NATS refusal)
                failed += 1
            done, hits = not proxy.hit, hits + proxy.hit
            proxy.restore()
            Reconciler(config, db, deps.get_provider).run()
            assert objects(config, kind) <= records(config, db, kind)
            assert records(config, db, kind, Status.ACTIVE) <= objects(config, kind)
            if done:
                break
        # on a pooled connection a MongoDB provision is one message; a client that retries on
        # a fresh connection (redis-py, pymongo) may succeed once the server is back
        assert hits >= 1 and (failed >= 1 or heal_after is not None), (hits, failed)
        later = time.time() + config.provisioning_lease_seconds + 3 * 86400
        Reaper(config, db, deps.get_provider, lambda: later).run()
        assert records(config, db, kind) == set()
        assert objects(config, kind) == set()


def test_apps_no_record_knows_go(env: Settings, tmp_path: Path) -> None:
    """A container (and the state) of an app whose record is gone is removed; a live one's
    stays. The container is a real podman container, labelled as the local backend labels."""
    settings = DeploySettings.from_env(
        {"INSTANODE_DEPLOY_STATE_DIR": str(tmp_path), "INSTANODE_DEPLOY_BUCKET": "deploys"}
    )
    backend = LocalBackend(settings, lambda bucket, key: b"")
    orphan, live = f"gone-{secrets.token_hex(3)}", f"kept-{secrets.token_hex(3)}"
    image = ensure_busybox_image()
    for slug in (orphan, live):
        (tmp_path / slug).mkdir()
        podman("create", "--label", f"instanode.app={slug}", image, "true")
    sweep = AppSweep(backend, lambda: {live})
    try:
        only_apps = replace(env, backends={})
        report = Reconciler(only_apps, deps.get_dynamo(), deps.get_provider, sweep).run()
        assert report.removed == 1 and report.failed == 0
        assert backend.apps() == [live]
        assert labelled(orphan) == [] and len(labelled(live)) == 1
    finally:
        backend.remove(live)


def labelled(slug: str) -> list[str]:
    listed = podman("ps", "-aq", "--filter", f"label=instanode.app={slug}")
    return listed.stdout.split()
