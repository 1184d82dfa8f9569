"""How a caller reaches a better tier on this installation, for ``agent_action`` texts.

Only controls that exist here are named: the payment provider's checkout when one is configured
(``Settings.billing_configured``: the Razorpay webhook secret, plans mapped to tiers, and
``INSTANODE_BILLING_URL``, the page where a team pays), else the operator's admin command
(``python -m chalicelib.admin set-tier``), the one way a self-hosted install without billing
changes a tier. The dashboard has no upgrade control, so nothing points there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from chalicelib.accounts import FREE_TIER
from chalicelib.config import Settings
from chalicelib.tiers import ANONYMOUS, Tier, lowest_deploying_tier

MAX_ACTION = 279  # DESIGN.md §4: an agent_action stays under 280 characters
SET_TIER = "python -m chalicelib.admin set-tier {who} --tier {tier}"


def upgrade_step(settings: Settings, tier: str, who: str = "--email <their email>") -> str:
    """The clause saying how a team gets onto ``tier`` here; ``who`` names the team in the
    operator's command (``--email a@b`` or ``--team team_…``)."""
    if settings.billing_configured:
        return f"upgrade the team to {tier} at {settings.billing_url}"
    return f"ask the operator of this installation to run {SET_TIER.format(who=who, tier=tier)}"


def reach(settings: Settings, target: Tier, owner: str, email: str = "") -> list[str]:
    """Ways to say how ``owner`` (a team, or an anonymous network, which must claim first) gets
    onto ``target``, most readable first (``fitting`` picks one that fits)."""
    if not owner.startswith("team:"):
        claim = "claim via the resource's 'upgrade' link"
        if target.name == FREE_TIER:  # what a claim gives
            return [f"{claim} (a {FREE_TIER} team has it here)"]
        how = (
            f"upgrade the team at {settings.billing_url}"
            if settings.billing_configured
            else f"ask the operator of this installation for the {target.name} tier"
        )
        return [f"{claim}, then {how}"]
    team = owner.removeprefix("team:")
    whos = ([f"--email {email}"] if email else []) + [f"--team {team}", "--email <email>"]
    return [upgrade_step(settings, target.name, who) for who in whos]


def fitting(compose: Callable[[str], str], clauses: list[str]) -> str:
    """The first ``compose(clause)`` under the agent_action cap (the last one regardless)."""
    texts = [compose(clause) for clause in clauses]
    return next((t for t in texts if len(t) <= MAX_ACTION), texts[-1])


def more_of(
    tiers: Mapping[str, Tier], current: Tier, holds: Callable[[Tier], int | None]
) -> Tier | None:
    """The cheapest tier holding more than ``current`` by ``holds`` (None there: no limit)."""

    def more(t: Tier) -> bool:
        mine, theirs = holds(current), holds(t)
        return mine is not None and (theirs is None or theirs > mine)

    better = [t for t in tiers.values() if t.name != ANONYMOUS and more(t)]
    return min(better, key=lambda t: t.price_usd_month, default=None)


def or_more(
    settings: Settings, start: str, target: Tier | None, owner: str, email: str = ""
) -> str:
    """``start``, then (when a tier holds more) how to reach it: one agent_action."""
    if target is None:
        return f"{start}."
    return fitting(lambda clause: f"{start}, or {clause}.", reach(settings, target, owner, email))


def deploy_refusal(settings: Settings, tier: Tier, email: str, owner: str) -> str:
    """The 402 ``deploy_requires_paid_tier`` agent_action: what deploys here without a tier
    with app slots (an anonymous stack), and how to reach the cheapest tier that has some."""
    tiers = settings.tiers
    ttl = tiers[ANONYMOUS].deploys.stack_ttl_hours
    kept = f"expires after {ttl}h" if ttl else "kept until deleted"
    start = (
        f"Tell the user the {tier.name} tier runs no deploys here: POST "
        f"{settings.public_base_url}/stacks/new with no credential deploys anonymously ({kept})"
    )
    target = lowest_deploying_tier(tiers)
    if target is None:
        return f"{start}; no tier of this installation runs /deploy/new."
    return or_more(settings, start, target, owner, email)
