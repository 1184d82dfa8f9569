"""Multi-service stacks: ``POST /stacks/new`` takes an ``instant.yaml`` manifest and one build
context per service, and runs each service as a backend app of its own.

The manifest's format and checks are in manifest.py. Service ``<svc>`` of stack ``<slug>`` is
the backend app ``<slug>-<svc>``; ``stack_url`` is the first exposed service's URL. A
stack-level env (``PATCH /stacks/{slug}/env``) goes over each service's manifest env and
applies at the next ``POST /stacks/{slug}/redeploy``, which rebuilds every service as a new
revision.

Who owns a stack: a team (a session or API key, or an upgrade_jwt of a team's resource), or,
with no credential or an anonymous resource's upgrade_jwt, the caller's network. Anonymous
stacks expire after the anonymous tier's ``stack_ttl_hours`` (6h), can be read by anyone
holding the slug and cannot be changed afterwards (``403 stack_immutable``). A team stack on a
tier with deploy slots counts as one app against the cap and has no TTL; on a tier without
slots (free) it is not counted and expires like an anonymous one. Deleting a team stack is
two-step like deleting an app (deletion.py); an anonymous stack is deleted at once.
"""

from __future__ import annotations

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
from chalicelib.deploy.env import check_size, valid_env
from chalicelib.deploy.manifest import SERVICE_REF, Manifest
from chalicelib.deploy.records import changed_meanwhile
from chalicelib.deploy.service import app_cap_action
from chalicelib.deploy.stack_store import ServiceState, Stack, StackEnv, StackStore
from chalicelib.outbox import Outbox
from chalicelib.tiers import Tier, get_tier

log = logging.getLogger(__name__)


class StackImmutableError(errors.ApiError):
    status = 403
    code = "stack_immutable"


@dataclass(frozen=True)
class StackCaller:
    owner: str
    tier: Tier
    anonymous: bool


class StackService:
    def __init__(
        self,
        settings: Settings,
        store: StackStore,
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
        self._deletion = deletion.TwoStepDeletion[Stack](
            settings.public_base_url,
            outbox,
            clock,
            lambda stack, pending: store.save(replace(stack, deletion=pending), stack) is not None,
            lambda stack, now: self._remove(stack, DeployStatus.DELETED, now),
        )

    @property
    def store(self) -> StackStore:
        return self._store

    # -- create -----------------------------------------------------------------------------
    def create(
        self,
        caller: StackCaller,
        name: str,
        manifest: Manifest,
        tarballs: Mapping[str, bytes],
        charge: Callable[[], None] = lambda: None,
    ) -> dict[str, Any]:
        """The stack, building; ``charge`` (a daily slot, say) runs once the parts are known
        good, so a rejected attempt costs nothing."""
        from chalicelib.deploy.tarball import inspect

        missing = [n for n in manifest.names if n not in tarballs]
        if missing:
            raise errors.BadRequestError(
                f"No tarball for service(s) {', '.join(missing)}.",
                agent_action="Send one part per service named after it: -F web=@web.tar.gz.",
            )
        extra = [n for n in tarballs if n not in manifest.names]
        if extra:
            raise errors.BadRequestError(
                f"Form part(s) {', '.join(extra)} match no service in instant.yaml.",
                agent_action="Name each tarball part after a service of the manifest.",
            )
        for service in manifest.names:
            inspect(tarballs[service], caller.tier.deploys.tarball_bytes)
        charge()
        now = int(self._clock())
        slug = _slug(name)
        counted = not caller.anonymous and caller.tier.deploys.apps > 0
        ttl_hours = caller.tier.deploys.stack_ttl_hours if not counted else None
        states = tuple(
            ServiceState(
                name=s.name,
                slug=f"{slug}-{s.name}",
                port=s.port,
                expose=s.expose,
                revision=1,
                context_key=_context_key(slug, s.name),
                status=DeployStatus.BUILDING,
                env_names=tuple(sorted(s.env)),
            )
            for s in manifest.services
        )
        stack = Stack(
            slug=slug,
            owner=caller.owner,
            name=name,
            anonymous=caller.anonymous,
            counted=counted,
            tier=caller.tier.name,
            services=states,
            status=DeployStatus.BUILDING,
            created_at=now,
            updated_at=now,
            expires_at=now + ttl_hours * 3600 if ttl_hours else None,
            env=StackEnv({s.name: dict(s.env) for s in manifest.services}, {}),
        )
        for state in states:
            self._contexts.put(self._bucket(), state.context_key, tarballs[state.name])
        if not self._store.create(stack, caller.tier.deploys.apps):
            self._contexts.delete_under(self._bucket(), _contexts_of(slug))
            raise errors.ResourceLimitReachedError(
                f"The {caller.tier.name} tier runs {caller.tier.deploys.apps} app(s) at a time "
                "(a stack counts as one).",
                agent_action=app_cap_action(self._settings, caller.tier, "", caller.owner),
            )
        try:
            self._start_all(stack)
        except Exception:
            # nothing half-made: the record goes (its slot with it), with every service and
            # context already made
            log.exception("starting stack %s failed; removing it", slug)
            self._remove(stack, DeployStatus.DELETED, now)
            raise
        return {"ok": True, **stack.as_json(self._backend(), full=False)}

    # -- reads ------------------------------------------------------------------------------
    def get(self, owner: str | None, slug: str) -> dict[str, Any]:
        return {"ok": True, **self._refreshed(self._readable(owner, slug)).as_json(self._backend())}

    def logs(self, owner: str | None, slug: str, svc: str, since: int) -> tuple[str, list[str]]:
        stack = self._refreshed(self._readable(owner, slug))
        state = stack.service(svc)
        if state is None:
            raise errors.NotFoundError(
                f"Stack {slug} has no service '{svc}'.",
                agent_action=f"Pick one of: {', '.join(s.name for s in stack.services)}.",
            )
        return state.status.value, self._backend().logs(state.slug, state.revision, since)

    # -- changes (team stacks only) ---------------------------------------------------------
    def set_env(self, owner: str | None, slug: str, changes: Any) -> dict[str, Any]:
        stack = self._mutable(owner, slug)
        if not isinstance(changes, dict):
            raise errors.BadRequestError("'env_vars' must be an object of strings.")
        changes = valid_env(changes, allow_empty=True)
        names = {s.name for s in stack.services}
        for key, value in changes.items():
            for ref in SERVICE_REF.findall(value):
                if ref not in names:
                    raise errors.BadRequestError(f"{key} names service://{ref}, not in the stack.")
        merged = {k: v for k, v in {**stack.env.stack, **changes}.items() if v}
        check_size(merged, *stack.env.services.values())  # the 64 KiB cap after the merge
        updated = replace(
            stack, env=replace(stack.env, stack=merged), updated_at=int(self._clock())
        )
        if self._store.save(updated, stack) is None:
            raise changed_meanwhile("stack")
        return {
            "ok": True,
            "slug": slug,
            "env_vars": sorted(merged),
            "note": f"Applied by the next POST /stacks/{slug}/redeploy.",
        }

    def redeploy(self, owner: str | None, slug: str) -> dict[str, Any]:
        stack = self._mutable(owner, slug)
        services = tuple(
            replace(s, revision=s.revision + 1, status=DeployStatus.BUILDING, error_message=None)
            for s in stack.services
        )
        updated = replace(
            stack, services=services, status=DeployStatus.BUILDING, updated_at=int(self._clock())
        )
        stored = self._store.save(updated, stack)
        if stored is None:
            raise changed_meanwhile("stack")
        self._start_all(stored)
        return {"ok": True, **stored.as_json(self._backend(), full=False), "redeployed": True}

    # -- deletion and expiry ----------------------------------------------------------------
    def delete(
        self, owner: str, email: str, slug: str, skip_confirmation: bool
    ) -> tuple[int, dict[str, Any]]:
        """Delete a stack: its team (two-step when the team has an email on file, unless
        skipped), or for an anonymous stack the network that made it (at once)."""
        stack = self._deletable(owner, slug)
        at_once = skip_confirmation or stack.anonymous
        return self._deletion.ask(stack, _subject(stack), email, at_once)

    def confirm_deletion(self, owner: str, slug: str, token: str) -> dict[str, Any]:
        stack = self._deletable(owner, slug)
        return self._deletion.confirm(stack, _subject(stack), token)

    def cancel_deletion(self, owner: str, slug: str) -> dict[str, Any]:
        stack = self._deletable(owner, slug)
        return self._deletion.cancel(stack, _subject(stack))

    def _deletable(self, owner: str, slug: str) -> Stack:
        stack = self._store.get(slug) if _SLUG.fullmatch(slug) else None
        retired = stack is not None and stack.status in (DeployStatus.DELETED, DeployStatus.EXPIRED)
        if stack is None or stack.owner != owner or retired:
            raise errors.NotFoundError(
                f"No stack {slug} of yours here.",
                agent_action="Delete with the credential (or from the network) that made it.",
            )
        return stack

    def expire(self, stack: Stack, now: int) -> bool:
        """The reaper's removal of a stack whose TTL ran out: every service leaves the backend."""
        return self._remove(stack, DeployStatus.EXPIRED, now)

    def _remove(self, stack: Stack, status: DeployStatus, now: int) -> bool:
        """Retire the record (as it was read), then remove every service from the backend;
        False, with the stack untouched, when the record changed meanwhile."""
        if not self._store.retire(stack, status, now):
            return False
        for state in stack.services:
            self._backend().remove(state.slug)
        self._contexts.delete_under(self._bucket(), _contexts_of(stack.slug))
        log.info("%s stack %s (%d services)", status.value, stack.slug, len(stack.services))
        return True

    # -- helpers ----------------------------------------------------------------------------
    def _start_all(self, stack: Stack) -> None:
        backend = self._backend()
        limits = get_tier(stack.tier).deploys
        internal = {s.name: backend.internal_url_of(s.slug) for s in stack.services}
        for state in stack.services:
            env = {**stack.env.services.get(state.name, {}), **stack.env.stack}
            env = {k: SERVICE_REF.sub(lambda m: internal[m.group(1)], v) for k, v in env.items()}
            backend.start(
                BuildSpec(
                    app_id=f"stack_{stack.slug}_{state.name}",
                    slug=state.slug,
                    revision=state.revision,
                    bucket=self._bucket(),
                    context_key=state.context_key,
                    port=state.port,
                    limits=PodLimits(limits.cpu_millis, limits.memory_mb),
                    env=env,
                    public=state.expose,
                    group=stack.slug,
                )
            )

    def _refreshed(self, stack: Stack) -> Stack:
        if stack.status.terminal and stack.status is not DeployStatus.FAILED:
            return stack
        backend = self._backend()
        services = []
        for state in stack.services:
            if state.status.terminal:
                services.append(state)
                continue
            observed = backend.observe(state.slug, state.revision)
            error = observed.error_message or (
                observed.events[-1].message if observed.events else None
            )
            failed = observed.status is DeployStatus.FAILED
            services.append(
                replace(state, status=observed.status, error_message=error if failed else None)
            )
        fresh = replace(stack, services=tuple(services), status=_overall(services))
        if fresh.services == stack.services:
            return stack
        return self._store.save(replace(fresh, updated_at=int(self._clock())), stack) or stack

    def _readable(self, owner: str | None, slug: str) -> Stack:
        stack = self._store.get(slug) if _SLUG.fullmatch(slug) else None
        visible = stack is not None and (stack.anonymous or stack.owner == owner)
        if stack is None or not visible or stack.status in (DeployStatus.EXPIRED,):
            raise errors.NotFoundError(
                f"No stack {slug} here.",
                agent_action="Check the slug; a team's stack needs that team's credential.",
            )
        return stack

    def _mutable(self, owner: str | None, slug: str) -> Stack:
        stack = self._readable(owner, slug)
        if stack.anonymous:
            raise StackImmutableError(
                "Anonymous stacks cannot be changed after they are created.",
                agent_action="Claim the resources (or sign in) and create the stack again as "
                "a team, then change its env and redeploy.",
            )
        return stack

    def _bucket(self) -> str:
        return self._settings.deploy.bucket


def _subject(stack: Stack) -> deletion.Subject:
    path = f"/api/v1/stacks/{stack.slug}/confirm-deletion"
    return deletion.Subject("stack", "slug", stack.slug, stack.name, None, path)


def _overall(services: list[ServiceState]) -> DeployStatus:
    statuses = {s.status for s in services}
    for status in (DeployStatus.FAILED, DeployStatus.BUILDING, DeployStatus.DEPLOYING):
        if status in statuses:
            return status
    return DeployStatus.HEALTHY if statuses == {DeployStatus.HEALTHY} else next(iter(statuses))


_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")


def _slug(name: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:20].strip("-") or "stack"
    return f"{base}-{secrets.token_hex(3)}"


def _contexts_of(slug: str) -> str:
    return f"stacks/{slug}/"


def _context_key(slug: str, service: str) -> str:
    """A key no other create can write (slugs are only checked free when the record is)."""
    return f"{_contexts_of(slug)}{service}-{secrets.token_hex(8)}.tar.gz"
