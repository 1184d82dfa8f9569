"""Container deploys, start to end: check the build context, store it, record the app (counted
against the tier's cap), hand the revision to the backend, and answer 202 ``building``.

Reads refresh a live app's status from its backend (``observe``), so a poll is all it takes to
see ``healthy`` or ``failed``; the scheduled poller does the same for apps nobody polls.
Deletion is two-step for teams with an email on file (deletion.py).
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from chalicelib import errors
from chalicelib.config import Settings
from chalicelib.deploy import deletion
from chalicelib.deploy.backend import BuildSpec, DeployBackend, DeployStatus, PodLimits
from chalicelib.deploy.contexts import ContextStore
from chalicelib.deploy.env import valid_env
from chalicelib.deploy.records import changed_meanwhile
from chalicelib.deploy.store import Deployment, DeploymentStore
from chalicelib.deploy.uploads import Uploads
from chalicelib.outbox import Outbox
from chalicelib.tiers import Tier, lowest_deploying_tier
from chalicelib.upgrades import deploy_refusal, more_of, or_more

log = logging.getLogger(__name__)

AUTO_TTL_SECONDS = 24 * 3600
TTL_POLICIES = ("auto_24h", "permanent", "custom")
MAX_CUSTOM_TTL_HOURS = 24 * 90
_NOT_STARTED = "The deploy backend could not start this revision; redeploy to retry."


@dataclass(frozen=True)
class DeployRequest:
    name: str
    tarball: bytes = b""
    port: int = 8080
    env: Mapping[str, str] | None = None
    redeploy: bool = False
    ttl_policy: str | None = None  # None: the team's default
    ttl_hours: int | None = None  # with ttl_policy "custom"


@dataclass(frozen=True)
class Caller:
    owner: str
    tier: Tier
    email: str  # where deletion confirmations go ("" for none: deletes at once)
    default_ttl_policy: str = "auto_24h"


class DeployService:
    def __init__(
        self,
        settings: Settings,
        store: DeploymentStore,
        backend: Callable[[], DeployBackend],
        contexts: ContextStore,
        outbox: Callable[[], Outbox],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._backend = backend
        self._contexts = contexts
        self._clock = clock
        self.uploads = Uploads(contexts, settings.deploy.bucket, clock)
        self._deletion = deletion.TwoStepDeletion[Deployment](
            settings.public_base_url,
            outbox,
            clock,
            lambda app, pending: store.save(replace(app, deletion=pending), app) is not None,
            lambda app, now: self._remove(app, DeployStatus.DELETED, now),
        )

    @property
    def store(self) -> DeploymentStore:
        return self._store

    # -- create and redeploy ----------------------------------------------------------------
    def deploy(self, caller: Caller, req: DeployRequest) -> dict[str, Any]:
        from chalicelib.deploy.tarball import inspect

        inspect(req.tarball, caller.tier.deploys.tarball_bytes)
        env = valid_env(req.env or {})
        if req.redeploy:
            existing = self._store.by_name(caller.owner, req.name)
            if existing is None:
                raise errors.NoExistingDeploymentError(
                    f"No deployment named '{req.name}' to redeploy.",
                    agent_action="Drop redeploy=true to create a new app with this name.",
                )
            merged = {**existing.env, **env}
            return self._new_revision(caller.tier, existing, req.tarball, merged, req.port)
        self._require_slots(caller)
        now = int(self._clock())
        app_id = "app_" + secrets.token_hex(8)
        slug = _slug(req.name, app_id)
        policy = req.ttl_policy or caller.default_ttl_policy
        expires_at = _expiry(policy, req.ttl_hours, now)
        app = Deployment(
            id=app_id,
            owner=caller.owner,
            name=req.name,
            slug=slug,
            url=self._backend().url_of(slug),
            port=req.port,
            revision=1,
            context_key=_context_key(app_id, 1),
            status=DeployStatus.BUILDING,
            ttl_policy=policy,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
            env=env,
        )
        self._contexts.put(self._bucket(), app.context_key, req.tarball)
        if not self._store.create(app, caller.tier.deploys.apps):
            self._contexts.delete(self._bucket(), app.context_key)
            raise self._cap_error(caller)
        try:
            self._start(app, caller.tier)
        except Exception:
            # nothing half-made: the record goes (its slot with it) and so does the context
            log.exception("starting %s failed; removing its record", app.id)
            self._store.retire(app, DeployStatus.DELETED, now)
            self._contexts.delete(self._bucket(), app.context_key)
            with contextlib.suppress(Exception):  # whatever the backend made before failing
                self._backend().remove(app.slug)
            raise
        return {"ok": True, **app.as_json(now), "redeployed": False}

    def redeploy(self, caller: Caller, app_id: str) -> dict[str, Any]:
        """Rebuild the app's last context as a new revision (applies env changes)."""
        app = self._owned(caller.owner, app_id)
        from chalicelib.deploy.tarball import inspect

        tarball = self._contexts.get(self._bucket(), app.context_key)
        inspect(tarball, caller.tier.deploys.tarball_bytes)
        return self._new_revision(caller.tier, app, tarball, dict(app.env), app.port)

    def set_env(self, caller: Caller, app_id: str, changes: Any) -> dict[str, Any]:
        """Merge env vars (an empty string deletes a key) and roll out a new revision."""
        app = self._owned(caller.owner, app_id)
        if not isinstance(changes, dict):
            raise errors.BadRequestError("'env_vars' must be an object of strings.")
        merged = {k: v for k, v in {**app.env, **valid_env(changes, allow_empty=True)}.items() if v}
        tarball = self._contexts.get(self._bucket(), app.context_key)
        return self._new_revision(caller.tier, app, tarball, valid_env(merged), app.port)

    def _new_revision(
        self, tier: Tier, app: Deployment, tarball: bytes, env: dict[str, str], port: int
    ) -> dict[str, Any]:
        now = int(self._clock())
        revision = app.revision + 1
        key = _context_key(app.id, revision)
        self._contexts.put(self._bucket(), key, tarball)
        updated = replace(
            app,
            revision=revision,
            context_key=key,
            status=DeployStatus.BUILDING,
            error_message=None,
            env=env,
            port=port,
            updated_at=now,
        )
        stored = self._store.save(updated, app)
        if stored is None:
            self._contexts.delete(self._bucket(), key)
            raise changed_meanwhile("app")
        try:
            self._start(stored, tier)
        except Exception:
            # the earlier revision keeps running; the record says this one never started
            log.exception("starting revision %d of %s failed", revision, app.id)
            failed = replace(stored, status=DeployStatus.FAILED, error_message=_NOT_STARTED)
            self._store.save(failed, stored)
            raise
        self._contexts.delete(self._bucket(), app.context_key)  # the new revision has its own
        return {"ok": True, **stored.as_json(now), "redeployed": True}

    def _start(self, app: Deployment, tier: Tier) -> None:
        limits = tier.deploys
        self._backend().start(
            BuildSpec(
                app_id=app.id,
                slug=app.slug,
                revision=app.revision,
                bucket=self._bucket(),
                context_key=app.context_key,
                port=app.port,
                limits=PodLimits(limits.cpu_millis, limits.memory_mb),
                env=dict(app.env),
            )
        )

    # -- reads ------------------------------------------------------------------------------
    def get(self, owner: str, app_id: str) -> dict[str, Any]:
        app = self._refreshed(self._owned(owner, app_id))
        return {"ok": True, **app.as_json(int(self._clock()))}

    def listing(self, owner: str) -> dict[str, Any]:
        apps = [self._refreshed(a) for a in self._store.owned(owner)]
        now = int(self._clock())
        return {"ok": True, "items": [a.as_json(now) for a in apps]}

    def events(self, owner: str, app_id: str) -> dict[str, Any]:
        app = self._owned(owner, app_id)
        observed = self._backend().observe(app.slug, app.revision)
        return {
            "ok": True,
            "id": app.id,
            "status": observed.status.value,
            "events": [e.as_json() for e in observed.events],
        }

    def logs(self, owner: str, app_id: str, since_line: int) -> tuple[Deployment, list[str]]:
        """The app as its backend reports it now (a log stream's ``status`` event ends the
        stream once final) and its log lines from ``since_line``."""
        app = self._refreshed(self._owned(owner, app_id))
        return app, self._backend().logs(app.slug, app.revision, since_line)

    def refresh(self, app: Deployment) -> Deployment:
        """The app with the status its backend reports now (recorded when it changed)."""
        return self._refreshed(app)

    def _refreshed(self, app: Deployment) -> Deployment:
        if app.status.terminal:
            return app
        observed = self._backend().observe(app.slug, app.revision)
        if observed.status is app.status:
            return app
        error = observed.events[-1].message if observed.events else observed.error_message
        fresh = replace(
            app,
            status=observed.status,
            error_message=error if observed.status is DeployStatus.FAILED else None,
            updated_at=int(self._clock()),
        )
        return self._store.save(fresh, app) or app

    # -- deletion ---------------------------------------------------------------------------
    def delete(
        self, caller: Caller, app_id: str, skip_confirmation: bool
    ) -> tuple[int, dict[str, Any]]:
        app = self._owned(caller.owner, app_id)
        return self._deletion.ask(app, _subject(app), caller.email, skip_confirmation)

    def confirm_deletion(self, owner: str, app_id: str, token: str) -> dict[str, Any]:
        app = self._owned(owner, app_id)
        return self._deletion.confirm(app, _subject(app), token)

    def cancel_deletion(self, owner: str, app_id: str) -> dict[str, Any]:
        app = self._owned(owner, app_id)
        return self._deletion.cancel(app, _subject(app))

    def expire(self, app: Deployment, now: int) -> bool:
        """The reaper's removal of an app whose TTL ran out."""
        return self._remove(app, DeployStatus.EXPIRED, now)

    def _remove(self, app: Deployment, status: DeployStatus, now: int) -> bool:
        """Retire the record (as it was read), then remove the app from its backend; False,
        with the app untouched, when the record changed meanwhile."""
        if not self._store.retire(app, status, now):
            return False
        self._backend().remove(app.slug)
        self._contexts.delete_under(self._bucket(), _contexts_of(app.id))
        log.info("%s %s (%s)", status.value, app.id, app.slug)
        return True

    # -- helpers ----------------------------------------------------------------------------
    def _owned(self, owner: str, app_id: str) -> Deployment:
        app = self._store.get(app_id) if app_id.startswith("app_") else None
        if (
            app is None
            or app.owner != owner
            or app.status
            in (
                DeployStatus.DELETED,
                DeployStatus.EXPIRED,
            )
        ):
            raise errors.NotFoundError(
                f"No deployment {app_id} in this team.",
                agent_action="List the team's deployments with GET /api/v1/deployments.",
            )
        return app

    def _require_slots(self, caller: Caller) -> None:
        if caller.tier.deploys.apps > 0:
            return
        target = lowest_deploying_tier(self._settings.tiers)
        needed = f"{target.name} or above" if target else "a tier no plan of this installation has"
        raise errors.DeployRequiresPaidTierError(
            f"Deploys need {needed}; this caller is on {caller.tier.name}.",
            agent_action=deploy_refusal(self._settings, caller.tier, caller.email, caller.owner),
        )

    def _cap_error(self, caller: Caller) -> errors.ApiError:
        cap = caller.tier.deploys.apps
        return errors.ResourceLimitReachedError(
            f"The {caller.tier.name} tier runs {cap} app(s) at a time.",
            agent_action=app_cap_action(self._settings, caller.tier, caller.email, caller.owner),
        )

    def _bucket(self) -> str:
        return self._settings.deploy.bucket


def app_cap_action(settings: Settings, tier: Tier, email: str, owner: str) -> str:
    """What a team at its app cap can do: free a slot, or move to a tier with more."""
    start = (
        f"Tell the user the {tier.name} tier's app slots are all taken (a stack takes one): "
        f"DELETE {settings.public_base_url}/api/v1/deployments/<id> frees one"
    )
    bigger = more_of(settings.tiers, tier, lambda t: t.deploys.apps)
    return or_more(settings, start, bigger, owner, email)


def _subject(app: Deployment) -> deletion.Subject:
    path = f"/api/v1/deployments/{app.id}/confirm-deletion"
    return deletion.Subject("app", "id", app.id, app.name, app.url, path)


def _slug(name: str, app_id: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "app"
    return f"{base}-{app_id[4:10]}"


def _expiry(policy: str, ttl_hours: int | None, now: int) -> int | None:
    """When an app of this TTL policy expires (None: never)."""
    if policy not in TTL_POLICIES:
        raise errors.BadRequestError(f"'ttl_policy' must be one of {', '.join(TTL_POLICIES)}.")
    if policy == "custom":
        if ttl_hours is None or not 1 <= ttl_hours <= MAX_CUSTOM_TTL_HOURS:
            raise errors.BadRequestError(
                f"ttl_policy 'custom' needs 'ttl_hours' from 1 to {MAX_CUSTOM_TTL_HOURS}.",
                agent_action="Send ttl_hours with ttl_policy=custom, or use auto_24h/permanent.",
            )
        return now + ttl_hours * 3600
    return now + AUTO_TTL_SECONDS if policy == "auto_24h" else None


def _contexts_of(app_id: str) -> str:
    return f"deploys/{app_id}/"


def _context_key(app_id: str, revision: int) -> str:
    """A key of this attempt only: a concurrent redeploy that loses may delete its own."""
    return f"{_contexts_of(app_id)}{revision}-{secrets.token_hex(6)}.tar.gz"
