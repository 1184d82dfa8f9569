"""One provision, start to end: idempotency, tier and quota checks, backend, record, response.

DynamoDB round trips on the happy path: 1 transaction that claims the idempotency key, writes
the PROVISIONING record and charges the counters, and 1 transaction that activates the record
and stores the response for replays (plus a read of the backend loads every few seconds when a
kind has several servers).
If anything fails after the backend object exists, it is removed again and the reservation is
rolled back, so nothing half-made is left. A crash between the two leaves a PROVISIONING record
whose lease the reaper collects.

Time: a provision has a ``Deadline`` short of the API's timeout (Lambda kills the process at
it). Backend calls run in a thread of their own, waited for until the deadline; one still
running then answers 503 ``provision_timeout`` at once, and when it ends, what it made is
removed and the reservation rolled back. If the process dies anyway, or Lambda freezes it once
the answer is sent (the late thread then resumes only with the container's next request, if
ever), the key's lease (longer than any request) ends soon after: a retry with the key then
removes what the dead request made, as the reaper would, and provisions afresh; the reaper
collects it when nobody retries.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from chalicelib import errors
from chalicelib.config import Settings
from chalicelib.dynamo import Dynamo, TransactionCancelled
from chalicelib.idempotency import IdempotencyStore, Key, Outcome, Record
from chalicelib.jobs.reaper import Reaper
from chalicelib.models import Backend, Caller, Credentials, Kind, ProvisionRequest, Resource, Status
from chalicelib.providers.base import BackendDownError, BackendUnreachableError, Provider
from chalicelib.sealing import Sealer
from chalicelib.store import Charge, ResourceStore, resource_id_of
from chalicelib.tiers import ANONYMOUS, Tier
from chalicelib.tokens import Signer
from chalicelib.upgrades import MAX_ACTION, more_of, or_more

log = logging.getLogger(__name__)
T = TypeVar("T")

# Endpoints of this API that act on a resource by its token, returned with the resource.
TOKEN_URLS: dict[Kind, dict[str, str]] = {
    Kind.STORAGE: {"presign_url": "/storage/{token}/presign"},
    Kind.WEBHOOK: {"receive_url": "/webhook/receive/{token}"},
}
LOADS_REFRESH_SECONDS = 10.0
ROLL_BACK_ATTEMPTS = 3  # a backend that dropped the provision's connection may be back at once
ROLL_BACK_PAUSE_SECONDS = 1.0
DEADLINE_MARGIN_SECONDS = 5.0  # kept back from the API's timeout: to record, undo and answer
TIMEOUT_RETRY_SECONDS = 5  # after a provision_timeout: what it began is removed by then


class ProvisionTimeoutError(errors.ApiError):
    """A provision could not finish before its deadline; what it began is removed."""

    status = 503
    code = "provision_timeout"


class LambdaClock(Protocol):
    """The part of the Lambda context (chalice's ``lambda_context``) a deadline reads."""

    def get_remaining_time_in_millis(self) -> float: ...


@dataclass(frozen=True)
class Deadline:
    """When a request stops working, to answer before it is cut (``time.monotonic()``)."""

    at: float

    @classmethod
    def of(cls, settings: Settings, context: LambdaClock | None = None) -> Deadline:
        """The one place a request's deadline is set: ``DEADLINE_MARGIN_SECONDS`` before the
        API's timeout, or before the end of the Lambda's remaining time when that is sooner."""
        seconds = float(settings.api_timeout_seconds)
        if context is not None:
            seconds = min(seconds, context.get_remaining_time_in_millis() / 1000)
        return cls(time.monotonic() + seconds - DEADLINE_MARGIN_SECONDS)

    def left(self) -> float:
        return self.at - time.monotonic()


class DeadlineReachedError(Exception):
    """The call was still running at the deadline (it runs on in its thread)."""


def before(
    deadline: Deadline, call: Callable[[], T], late: Callable[[Future[T]], None] | None = None
) -> T:
    """``call()``, run in a thread of its own and waited for until ``deadline``; then
    ``DeadlineReachedError``, and ``late`` gets the call's future once it ends."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="backend-call", daemon=True).start()
    if not wait([future], timeout=max(deadline.left(), 0)).done:
        if late is not None:
            future.add_done_callback(late)
        raise DeadlineReachedError
    return future.result()


def iso(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_fields(base_url: str, kind: Kind, token: str) -> dict[str, str]:
    """``token`` and the URLs of this API that act on the resource by it (``TOKEN_URLS``)."""
    paths = TOKEN_URLS.get(kind, {})
    return {"token": token, **{name: base_url + p.format(token=token) for name, p in paths.items()}}


class ProvisionService:
    def __init__(
        self,
        settings: Settings,
        db: Dynamo,
        tiers: Mapping[str, Tier],
        providers: Callable[[Kind], Provider],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._db = db
        self._store = ResourceStore(db, settings)
        self._idem = IdempotencyStore(
            db, settings.idempotency_table, Sealer(settings.jwt_keys), clock
        )
        self._tiers = tiers
        self._providers = providers
        self._reaper = Reaper(settings, db, providers, clock)
        self._signer = Signer(settings.jwt_keys)
        self._clock = clock
        self._loads: dict[str, int] = {}
        self._loads_read_at = float("-inf")

    def provision(
        self, caller: Caller, req: ProvisionRequest, key: Key, deadline: Deadline | None = None
    ) -> Outcome:
        deadline = deadline or Deadline.of(self._settings)
        if deadline.left() <= 0:
            raise _timeout_error(req)  # nothing was begun
        now = int(self._clock())
        tier = self._tiers[caller.tier]
        limits = tier.limits(req.kind)
        backend = self._place(req.kind)
        provider = self._providers(req.kind)
        token = str(uuid.uuid4())
        resource = Resource(
            id=resource_id_of(token),
            token=token,
            kind=req.kind,
            name=req.name,
            owner=caller.owner,
            tier=tier.name,
            status=Status.PROVISIONING,
            ref=provider.new_ref(backend),
            created_at=now,
            expires_at=now + self._settings.provisioning_lease_seconds,
        )
        charge = self._store.charge(resource, limits.max_resources, tier.daily_provisions, now)
        # an anonymous network whose last resource expired unclaimed must claim first
        recycle = [self._store.recycle_check_item(caller.owner)] if caller.anonymous else []
        try:
            self._db.transact(
                [
                    self._idem.claim_item(
                        key, now, self._settings.provisioning_lease_seconds, resource.id
                    ),
                    self._store.put_provisioning_item(resource),
                    *charge.items(),
                    *recycle,
                ]
            )
        except TransactionCancelled as exc:
            claim = exc.reasons[0]
            if claim.failed and claim.item is not None:
                held = self._idem.record_of(claim.item)
                return self._key_taken(held, caller, req, key, deadline)
            return self._rejected(exc, key, charge, caller, req, tier)
        return self._create(resource, backend, provider, tier, req, key, deadline)

    def _key_taken(
        self, held: Record, caller: Caller, req: ProvisionRequest, key: Key, deadline: Deadline
    ) -> Outcome:
        """The answer of the request holding ``key``; when that request died (its lease is
        over), what it made is removed and this one provisions in its place."""
        if not held.abandoned(int(self._clock())):
            return self._idem.replay(key, held)
        dead = self._store.get(held.holder)
        if dead is not None and dead.status is Status.PROVISIONING:
            try:
                reaped = before(deadline, lambda: self._reaper.reap(dead, int(self._clock())))
            except DeadlineReachedError:
                raise _timeout_error(req) from None
            if reaped != "collected":  # another reaper is at it, or its backend is down
                raise errors.IdempotencyInProgressError(
                    "The first request with this idempotency key died; what it began is "
                    "still being removed.",
                    headers={"Retry-After": str(TIMEOUT_RETRY_SECONDS)},
                    retry_after_seconds=TIMEOUT_RETRY_SECONDS,
                )
        log.info("taking over the key of dead provision %s", held.holder)
        with suppress(TransactionCancelled):  # released or taken meanwhile: the claim tells
            self._db.transact([self._idem.release_item(key, held.holder)])
        return self.provision(caller, req, key, deadline)

    # -- the happy path ---------------------------------------------------------------------
    def _create(
        self,
        resource: Resource,
        backend: Backend,
        provider: Provider,
        tier: Tier,
        req: ProvisionRequest,
        key: Key,
        deadline: Deadline,
    ) -> Outcome:
        limits = tier.limits(req.kind)

        def undo_late(call: Future[Credentials]) -> None:
            self._undo_late(call, provider, backend, resource, key)

        try:
            creds = before(
                deadline, lambda: provider.provision(backend, resource.ref, limits), undo_late
            )
        except DeadlineReachedError:
            log.warning("provisioning %s on %s outlived its deadline", resource.id, backend.name)
            raise _timeout_error(req) from None
        except BackendDownError as exc:
            log.warning("backend %s down while provisioning %s: %s", backend.name, resource.id, exc)
            if isinstance(exc, BackendUnreachableError):
                self._abort(resource, key)  # nothing reached the server: nothing to undo
            else:
                self._roll_back(provider, backend, resource, key)
            raise errors.BackendUnavailableError(
                f"The {req.kind.value} backend is unavailable; nothing was kept. Retry shortly.",
                headers={"Retry-After": "5"},
                retry_after_seconds=5,
            ) from exc
        except Exception:
            log.exception("provisioning %s on %s failed", resource.id, backend.name)
            self._roll_back(provider, backend, resource, key)
            raise
        active = replace(
            resource,
            status=Status.ACTIVE,
            stored=creds.stored,
            expires_at=tier.expiry_of(resource.created_at),
        )
        body = self._body(active, creds, tier, req)
        try:
            self._db.transact(
                [
                    self._store.activate_item(active),
                    self._idem.complete_item(key, resource.created_at, 201, body),
                ]
            )
        except Exception:
            log.exception("recording %s failed; removing its backend object", resource.id)
            self._roll_back(provider, backend, resource, key)
            raise
        log.info("provisioned %s %s on %s", req.kind.value, resource.id, backend.name)
        return Outcome(201, body, {"X-Idempotency-Source": key.first_source.value})

    def _undo_late(
        self,
        call: Future[Credentials],
        provider: Provider,
        backend: Backend,
        resource: Resource,
        key: Key,
    ) -> None:
        """The backend call ended after its request answered: remove what it made."""
        try:
            if isinstance(call.exception(), BackendUnreachableError):
                self._abort(resource, key)  # nothing reached the server
            else:
                self._roll_back(provider, backend, resource, key)
        except Exception:
            log.exception("undoing %s after its deadline failed; its lease ends it", resource.id)
        else:
            log.info("undid %s, which outlived its deadline", resource.id)

    def _abort(self, resource: Resource, key: Key) -> None:
        """Roll back the reservation: record, idempotency claim and counters, in one go."""
        self._db.transact(
            [
                self._store.delete_item(resource),
                self._idem.release_item(key, resource.id),
                *self._store.refund_items(resource, resource.created_at, daily=True),
            ]
        )

    def _roll_back(
        self, provider: Provider, backend: Backend, resource: Resource, key: Key
    ) -> None:
        """Remove whatever part of the backend object was made (the provider's own clean-up
        may have died with its connection), then the reservation. When the backend cannot be
        cleaned now, the PROVISIONING record stays: the reaper removes both once its lease ends
        (and the reconciler removes any object whose record is gone)."""
        for attempt in range(ROLL_BACK_ATTEMPTS):
            try:
                provider.deprovision(backend, resource.ref)  # a fresh connection if need be
                break
            except Exception as exc:
                log.warning("removing the backend object of %s failed: %r", resource.id, exc)
                if attempt + 1 == ROLL_BACK_ATTEMPTS:
                    return  # the PROVISIONING record stays: the reaper's lease takes over
                time.sleep(ROLL_BACK_PAUSE_SECONDS)
        self._abort(resource, key)

    # -- rejections -------------------------------------------------------------------------
    def _rejected(
        self,
        exc: TransactionCancelled,
        key: Key,
        charge: Charge,
        caller: Caller,
        req: ProvisionRequest,
        tier: Tier,
    ) -> Outcome:
        # Reasons come in the order of the transaction: claim (taken: see provision), record,
        # the charge items, then the recycle check (anonymous callers only).
        charged = exc.reasons[2 : 2 + len(charge.items())]
        recycle = exc.reasons[2 + len(charge.items()) :]
        if recycle and recycle[0].failed:
            raise self._recycle_error(caller, recycle[0].item or {})
        if charged[Charge.CAP].failed:
            raise self._cap_error(caller, req, tier)
        if charge.daily is not None and charged[Charge.DAILY].failed:
            return self._daily_limit(caller, req, key, tier)
        raise exc

    def _daily_limit(self, caller: Caller, req: ProvisionRequest, key: Key, tier: Tier) -> Outcome:
        existing = self._store.active_of(caller.owner, req.kind)
        if existing is None:
            raise errors.DailyLimitReachedError(
                f"This network made its {tier.daily_provisions} anonymous provisions for today.",
                agent_action="Tell the user this network reached today's anonymous limit: "
                "claim an existing resource through its 'upgrade' link to lift it, or retry "
                "after midnight UTC.",
                headers={"Retry-After": str(_seconds_to_midnight(int(self._clock())))},
                retry_after_seconds=_seconds_to_midnight(int(self._clock())),
            )
        body = self._existing_body(existing, tier)
        return Outcome(200, body, {"X-Idempotency-Source": key.first_source.value})

    def _recycle_error(self, caller: Caller, marker: dict[str, Any]) -> errors.ApiError:
        expired_id = str(marker.get("expired_id", ""))
        jwt = self._signer.upgrade_token(expired_id, caller.owner, int(self._clock()))
        claim_url = f"{self._settings.public_base_url}/start?t={jwt}"
        return errors.RecycleRequiresClaimError(
            "This network's anonymous resource expired unclaimed; claim once (free, by email) "
            "before provisioning another.",
            agent_action="Tell the user to claim at this response's claim_url (30 seconds, no "
            "card), then retry the same request.",
            claim_url=claim_url,
            expired_resource_id=expired_id,
        )

    def _cap_error(self, caller: Caller, req: ProvisionRequest, tier: Tier) -> errors.ApiError:
        cap = tier.limits(req.kind).max_resources
        message = f"The {tier.name} tier holds {cap} active {req.kind.value} resource(s) at a time."
        existing = self._store.active_of(caller.owner, req.kind)
        if existing is None:  # released in the meantime
            return errors.ResourceLimitReachedError(message, headers={"Retry-After": "1"})
        if not caller.anonymous:
            return errors.ResourceLimitReachedError(
                message,
                agent_action=self._team_cap_action(caller, req, tier, existing.name),
                existing={"id": existing.id, "name": existing.name},
            )
        claim_url = self._upgrade(existing, int(self._clock()))["upgrade"]
        return errors.ResourceLimitReachedError(
            message,
            agent_action=f"Tell the user this network already has {req.kind.value} "
            f"'{existing.name}': reuse it, or claim it at this response's claim_url to hold more.",
            existing={"id": existing.id, "name": existing.name},
            claim_url=claim_url,
        )

    def _team_cap_action(self, caller: Caller, req: ProvisionRequest, tier: Tier, name: str) -> str:
        """Reuse or delete the one the team has, or move to a tier holding more (as this
        installation does it: its checkout, or the operator's command)."""
        kind, base = req.kind.value, self._settings.public_base_url
        bigger = more_of(self._tiers, tier, lambda t: t.limits(req.kind).max_resources)
        texts = [
            or_more(
                self._settings,
                f"Tell the user their team already has {what}: reuse it, or delete one "
                f"(DELETE {base}/api/v1/resources/<id>)",
                bigger,
                caller.owner,
            )
            for what in (f"{kind} '{name}'", f"its {kind} (see 'existing')")
        ]
        return next((t for t in texts if len(t) <= MAX_ACTION), texts[-1])

    # -- response bodies --------------------------------------------------------------------
    def _body(
        self, r: Resource, creds: Credentials, tier: Tier, req: ProvisionRequest
    ) -> dict[str, Any]:
        # what applies to this kind: no cap count, nothing unset, no zero connection budget
        limits = {
            k: v
            for k, v in asdict(tier.limits(r.kind)).items()
            if k != "max_resources" and v is not None and v != 0
        }
        urls = {"connection_url": creds.connection_url, "internal_url": creds.internal_url}
        body: dict[str, Any] = {
            "ok": True,
            "id": r.id,
            **token_fields(self._settings.public_base_url, r.kind, self._store.token_of(r)),
            "name": r.name,
            "kind": r.kind.value,
            **{name: url for name, url in urls.items() if url},  # a webhook has neither
            **creds.extra,
            "tier": tier.name,
            "limits": limits,
            "expires_at": iso(r.expires_at),
            "note": self._note(r, tier),
            **self._upgrade(r, r.created_at),
        }
        if req.ignored_fields:
            body["ignored_fields"] = list(req.ignored_fields)
        return body

    def _existing_body(self, r: Resource, tier: Tier) -> dict[str, Any]:
        """Spec convention 6: the 6th provision of the day returns the existing token (opened
        from the record's sealed copy) and the URLs that take it."""
        return {
            "ok": True,
            "deduplicated": True,
            "id": r.id,
            **token_fields(self._settings.public_base_url, r.kind, self._store.token_of(r)),
            "name": r.name,
            "kind": r.kind.value,
            "tier": tier.name,
            "expires_at": iso(r.expires_at),
            "note": f"Daily limit of {tier.daily_provisions} anonymous provisions reached: this "
            "is your existing resource. Its connection_url was in the response that created it.",
            **self._upgrade(r, int(self._clock())),
        }

    def _upgrade(self, r: Resource, now: int) -> dict[str, str]:
        """``upgrade_jwt`` naming the resource and ``upgrade``, the claim link carrying it."""
        jwt = self._signer.upgrade_token(r.id, r.owner, now)
        return {"upgrade_jwt": jwt, "upgrade": f"{self._settings.public_base_url}/start?t={jwt}"}

    @staticmethod
    def _note(r: Resource, tier: Tier) -> str:
        if r.expires_at is None:
            return "This resource does not expire."
        if tier.name != ANONYMOUS:
            return (
                f"{tier.name.capitalize()} tier: it expires at {iso(r.expires_at)} "
                f"({tier.ttl_hours}h) unless the team upgrades to a paid tier."
            )
        return (
            f"Anonymous resource: it expires at {iso(r.expires_at)} ({tier.ttl_hours}h) unless "
            "claimed. Open the 'upgrade' link to keep it."
        )

    # -- helpers ----------------------------------------------------------------------------
    def _place(self, kind: Kind) -> Backend:
        """The configured backend holding the fewest active resources of this kind."""
        backends = self._settings.backends_for(kind)
        if not backends:
            raise errors.BackendUnavailableError(f"No {kind.value} backend is configured here.")
        if len(backends) == 1:
            return backends[0]
        loads = self._backend_loads([b.name for b in backends])
        chosen = min(backends, key=lambda b: loads[b.name])
        loads[chosen.name] += 1  # until the next refresh, count our own placements
        return chosen

    def _backend_loads(self, names: list[str]) -> dict[str, int]:
        """Backend loads, re-read from DynamoDB at most every LOADS_REFRESH_SECONDS: placement
        needs a fair spread, not an exact count, and this saves a round trip per provision."""
        now = self._clock()
        if (
            now - self._loads_read_at > LOADS_REFRESH_SECONDS
            or not set(names) <= self._loads.keys()
        ):
            self._loads = self._store.backend_loads(names)
            self._loads_read_at = now
        return self._loads


def _timeout_error(req: ProvisionRequest) -> errors.ApiError:
    return ProvisionTimeoutError(
        f"The {req.kind.value} provision could not finish in time; what it began is being "
        "removed and nothing is charged.",
        agent_action="Retry the same request (same body and Idempotency-Key) after "
        "Retry-After seconds.",
        headers={"Retry-After": str(TIMEOUT_RETRY_SECONDS)},
        retry_after_seconds=TIMEOUT_RETRY_SECONDS,
    )


def _seconds_to_midnight(now: int) -> int:
    return 86400 - now % 86400
