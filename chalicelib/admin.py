"""Operator commands for self-hosters (reads the same INSTANODE_* environment as the API).

  python -m chalicelib.admin set-tier --email you@example.com --tier hobby
  python -m chalicelib.admin set-tier --team team_0123... --tier pro
  python -m chalicelib.admin show-team --email you@example.com
  python -m chalicelib.admin seal-tokens
  python -m chalicelib.admin reseal

``set-tier`` does what a paid billing webhook does: the team's tier, every live resource's tier
and expiry (paid tiers clear the TTL) and the limits on the backend servers. Locally:
``make tier EMAIL=you@example.com TIER=hobby`` runs it against the dev stack.

``seal-tokens`` finishes the move of bearer tokens off the tables, once, after an upgrade from a
version that stored them in clear: every resource record keeps only the token's hash and its
sealed copy, and stored webhook requests lose the token from their path (the API rewrites a
record when it reads it anyway; this reaches the ones nobody reads). Safe to run again.

``reseal`` is step 2 of a JWT-secret rotation (infra/terraform/README.md): every value sealed
for as long as its record lives (resource tokens, deploys' and stacks' env) and not yet under
the current INSTANODE_JWT_SECRET is sealed again under it, so the previous secrets can go. It
prints, per table, how many were resealed, already current, opened by no key (failed: their
ids are logged, and the exit status is 1) and changed meanwhile by the API (sealed anew by it).
Safe beside the API and to run again: a second run reseals 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from chalicelib.config import get_settings
from chalicelib.deps import get_accounts, get_deploys, get_dynamo, get_stacks, get_teams
from chalicelib.providers.webhook import open_inbox
from chalicelib.store import ResourceStore


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("seal-tokens", help="hash and seal tokens stored in clear")
    commands.add_parser("reseal", help="seal stored secrets again under the current key")
    for name in ("set-tier", "show-team"):
        command = commands.add_parser(name)
        who = command.add_mutually_exclusive_group(required=True)
        who.add_argument("--email", help="a member of the team")
        who.add_argument("--team", help="the team id")
        if name == "set-tier":
            command.add_argument("--tier", required=True, help="anonymous, free, hobby or pro")
    args = parser.parse_args(argv)
    if args.command == "seal-tokens":
        sealed = ResourceStore(get_dynamo(), get_settings()).seal_plain_tokens()
        redacted = open_inbox().redact_token_paths()
        print(json.dumps({"records_sealed": sealed, "request_paths_redacted": redacted}))
        return 0
    if args.command == "reseal":
        return reseal()
    team_id = args.team
    if args.email:
        user = get_accounts().user_by_email(args.email.strip().lower())
        if user is None:
            print(f"no user with email {args.email}", file=sys.stderr)
            return 1
        team_id = user.team_id
    if args.command == "show-team":
        team = get_accounts().team(team_id)
        if team is None:
            print(f"no team {team_id}", file=sys.stderr)
            return 1
        print(json.dumps(team.as_json(), indent=2))
        return 0
    from chalicelib.errors import ApiError

    try:
        change = get_teams().set_tier(team_id, args.tier)
    except ApiError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(json.dumps(change.as_json(), indent=2))
    return 1 if change.failed else 0


def reseal() -> int:
    reports = {
        "resources": ResourceStore(get_dynamo(), get_settings()).reseal_tokens(),
        "deployments": get_deploys().store.reseal_env(),
        "stacks": get_stacks().store.reseal_env(),
    }
    print(json.dumps({table: asdict(report) for table, report in reports.items()}))
    return 1 if any(r.failed for r in reports.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
