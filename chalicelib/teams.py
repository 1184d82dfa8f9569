"""Teams and tiers: a claim moves a network's resources into a team, and a tier change (the admin
command or a billing webhook) re-tiers every live resource of the team at once: its record (tier
and expiry: paid tiers clear the TTL) and, where the backend enforces limits itself (Postgres
connection limits, NATS JetStream limits), the limits on the live server. A paid tier also rolls
the team's ``auto_24h`` container deploys forward to ``permanent`` (spec: "Upgrading
auto-promotes in-flight deployment TTLs")."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from chalicelib import errors
from chalicelib.accounts import AccountStore, Team
from chalicelib.config import Settings
from chalicelib.dynamo import Dynamo, TransactionCancelled
from chalicelib.models import Kind, Resource, team_owner
from chalicelib.providers.base import Provider, Resizer, Tenant
from chalicelib.store import ResourceStore
from chalicelib.tiers import Tier

if TYPE_CHECKING:  # the deploy modules load when a tier change reaches the deploys
    from chalicelib.deploy.store import DeploymentStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TierChange:
    team: Team
    resources: int  # live resources moved to the new tier
    resized: int  # of those, whose backend limits were raised (or lowered) on the server
    failed: int  # resources whose record or backend could not be changed (logged)
    deploys_made_permanent: int = 0  # auto_24h apps a paid upgrade rolled forward

    def as_json(self) -> dict[str, object]:
        return {
            "team": self.team.as_json(),
            "resources": self.resources,
            "resized": self.resized,
            "failed": self.failed,
            "deploys_made_permanent": self.deploys_made_permanent,
        }


class TeamService:
    def __init__(
        self,
        settings: Settings,
        db: Dynamo,
        accounts: AccountStore,
        tiers: Mapping[str, Tier],
        providers: Callable[[Kind], Provider],
        deployments: Callable[[], DeploymentStore] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._deployments = deployments
        self._db = db
        self._store = ResourceStore(db, settings)
        self._accounts = accounts
        self._tiers = tiers
        self._providers = providers
        self._clock = clock

    def adopt(self, owner: str, team: Team) -> list[Resource]:
        """Move every live resource of ``owner`` (an anonymous network) into ``team``, on the
        team's tier. A claimed resource keeps its expiry unless the team's tier has none.

        Idempotent and resumable: each resource moves in a transaction conditioned on its
        owner, and its backend limits follow at once (``_resize`` never raises), so after a
        failure midway a second call moves exactly what the first left, and never twice."""
        tier = self._tiers[team.tier]
        moved = []
        for r in self._store.active_owned(owner):
            expires = tier.expiry_of(r.created_at)
            try:
                self._db.transact(
                    self._store.move_items(r, team_owner(team.id), tier.name, expires)
                )
            except TransactionCancelled:
                continue  # expired or moved meanwhile
            adopted = replace(r, owner=team_owner(team.id), tier=tier.name, expires_at=expires)
            self._resize(adopted, tier)
            moved.append(adopted)
        log.info("team %s adopted %d resource(s)", team.id, len(moved))
        return moved

    def set_tier(self, team_id: str, tier_name: str) -> TierChange:
        tier = self._tiers.get(tier_name)
        if tier is None:
            raise errors.BadRequestError(
                f"Unknown tier '{tier_name}'; known: {', '.join(self._tiers)}."
            )
        current = self._accounts.team(team_id)
        if current is None:
            raise errors.NotFoundError(f"No team {team_id}.")
        # Paid tiers roll the auto_24h deployment default forward (spec: "Upgrading auto-
        # promotes in-flight deployment TTLs"); a PATCH of team settings can restore it.
        policy = "permanent" if tier.price_usd_month > 0 else None
        if current.default_deployment_ttl_policy != "auto_24h":
            policy = None
        team = self._accounts.set_tier(team_id, tier.name, policy) or current
        now = int(self._clock())
        resources = resized = failed = 0
        for r in self._store.active_owned(team_owner(team_id)):
            expires = None if tier.ttl_hours is None else (r.expires_at or tier.expiry_of(now))
            try:
                self._db.transact([self._store.retier_item(r, tier.name, expires)])
            except TransactionCancelled:
                failed += 1
                continue
            resources += 1
            outcome = self._resize(replace(r, tier=tier.name, expires_at=expires), tier)
            resized += outcome is True
            failed += outcome is False
        promoted = 0
        if tier.price_usd_month > 0 and self._deployments is not None:
            promoted = self._deployments().make_permanent(team_owner(team_id))
        change = TierChange(team, resources, resized, failed, promoted)
        log.info("team %s is now on %s: %s", team_id, tier.name, change)
        return change

    def _resize(self, r: Resource, tier: Tier) -> bool | None:
        """Apply the tier's limits on the backend; None where the backend needs nothing (the
        quota job reads limits from the record), False when it failed (logged)."""
        try:
            provider = self._providers(r.kind)
            backend = self._settings.backend_of(r)
            if not isinstance(provider, Resizer) or backend is None:
                return None
            provider.resize(backend, Tenant(r.ref, tier.limits(r.kind), r.stored))
        except Exception:
            log.exception("could not apply %s limits to %s", tier.name, r.id)
            return False
        return True
