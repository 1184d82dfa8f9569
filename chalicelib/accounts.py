"""DynamoDB persistence of accounts (no HTTP): users, teams, API keys, sign-in links, CLI
device-flow sessions and revoked session ids, all in the ``accounts`` table keyed by ``pk``:

  user#<email>        a user (one per mailbox) and the team it belongs to
  team#<id>           a team: name, tier, deployment TTL policy
  apikey#<sha256>     an API key, found by the hash of its secret (the secret is never stored)
  link#<sha256>       a single-use sign-in link (TTL): one follow at a time holds it (a lease),
                      and the follow that finishes deletes it
  cli#<sha256>        a CLI device-flow session (TTL), by the hash of its id: whoever holds the
                      id takes the API key at the next poll, so the id is never stored;
                      clitoken#<sha256> holds the sealed API key between approval and that
                      poll, which takes it (once)
  revoked#<jti>       a logged-out session (TTL: until the session would have expired)
  outbox#<id>         a mail to send (outbox.py): its body, which may carry a sign-in link,
                      sealed, and dropped once the mail server took it

No bearer secret is stored in clear: sessions are signed JWTs kept nowhere (a logout stores
only the ``jti``), and every secret is found by its SHA-256 (high-entropy random secrets need
no slow hash) or kept sealed (``SEAL_LABEL``) while it waits to be handed over.

GSI ``by_team`` (team_id, created_at) lists a team's users and API keys.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chalicelib import dynamo
from chalicelib.dynamo import Dynamo, Item, TransactionCancelled

FREE_TIER = "free"
SEAL_LABEL = b"instanode/accounts/v1"  # sealing key of secrets parked in this table
TEAM_TTL_POLICIES = ("auto_24h", "permanent")  # a team's default_deployment_ttl_policy


class Scope(StrEnum):
    """What an API key may do; each scope includes the ones before it."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    def covers(self, needed: Scope) -> bool:
        order = list(Scope)
        return order.index(self) >= order.index(needed)


class LinkPurpose(StrEnum):
    LOGIN = "login"
    CLAIM = "claim"


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    tier: str
    default_deployment_ttl_policy: str
    created_at: int

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "tier": self.tier,
            "default_deployment_ttl_policy": self.default_deployment_ttl_policy,
        }


@dataclass(frozen=True)
class User:
    id: str
    email: str
    team_id: str
    created_at: int


@dataclass(frozen=True)
class ApiKey:
    id: str
    team_id: str
    user_id: str
    name: str
    scope: Scope
    created_at: int
    email: str = ""  # the user who minted it (deploy deletions are confirmed by mail)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "scope": self.scope.value}


@dataclass(frozen=True)
class Link:
    """What a sign-in link does when followed (a claim also moves a fingerprint's resources)."""

    email: str
    purpose: LinkPurpose
    expires_at: int
    next_path: str = "/dashboard"
    claim_owner: str = ""
    team_name: str = ""
    leased_until: int = 0  # a follow holds the link until then (``lease_link``); 0: none


@dataclass(frozen=True)
class CliSession:
    id: str
    status: str  # pending | approved (expiry is judged from expires_at)
    expires_at: int


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AccountStore:
    def __init__(self, db: Dynamo, table: str) -> None:
        self._db = db
        self._table = table

    # -- users and teams --------------------------------------------------------------------
    def user_by_email(self, email: str) -> User | None:
        item = self._db.get(self._table, {"pk": f"user#{email}"}, consistent=True)
        return _user(item) if item else None

    def team(self, team_id: str) -> Team | None:
        item = self._db.get(self._table, {"pk": f"team#{team_id}"}, consistent=True)
        return _team(item) if item else None

    def sign_up(self, email: str, team_name: str, now: int) -> tuple[User, Team]:
        """The user of ``email`` and its team, both made now unless the user exists already."""
        user = User("usr_" + secrets.token_hex(10), email, "team_" + secrets.token_hex(10), now)
        team = Team(user.team_id, team_name, FREE_TIER, "auto_24h", now)
        user_item = {"pk": f"user#{email}", "kind": "user", "id": user.id, "email": email}
        team_item = {"pk": f"team#{team.id}", "kind": "team", "id": team.id, "name": team_name}
        try:
            self._db.transact(
                [
                    dynamo.put(
                        self._table,
                        {**user_item, "team_id": team.id, "created_at": now},
                        "attribute_not_exists(pk)",
                    ),
                    dynamo.put(
                        self._table,
                        {**team_item, "tier": team.tier, "ttl_policy": "auto_24h", "ts": now},
                        "attribute_not_exists(pk)",
                    ),
                ]
            )
        except TransactionCancelled as exc:
            existing = exc.reasons[0].item
            if existing is None:
                raise
            found = _user(existing)
            return found, self.team(found.team_id) or team
        return user, team

    def set_tier(self, team_id: str, tier: str, ttl_policy: str | None) -> Team | None:
        """Record the team's tier (and its deployment TTL policy, when given)."""
        expression, values = "SET tier = :t", {":t": tier}
        if ttl_policy is not None:
            expression += ", ttl_policy = :p"
            values[":p"] = ttl_policy
        if not self._db.update_if(
            self._table, {"pk": f"team#{team_id}"}, expression, "attribute_exists(pk)", values
        ):
            return None
        return self.team(team_id)

    def set_ttl_policy(self, team_id: str, policy: str) -> Team | None:
        if not self._db.update_if(
            self._table,
            {"pk": f"team#{team_id}"},
            "SET ttl_policy = :p",
            "attribute_exists(pk)",
            {":p": policy},
        ):
            return None
        return self.team(team_id)

    # -- sign-in links ----------------------------------------------------------------------
    def put_link(self, secret: str, link: Link) -> None:
        self._db.put_item(
            self._table,
            {
                **_link_key(secret),
                "email": link.email,
                "purpose": link.purpose.value,
                "expires_at": link.expires_at,
                "next_path": link.next_path,
                "claim_owner": link.claim_owner,
                "team_name": link.team_name,
                "ttl": link.expires_at,
            },
        )

    def link(self, secret: str) -> Link | None:
        item = self._db.get(self._table, _link_key(secret), consistent=True)
        if item is None:
            return None
        return Link(
            email=item["email"],
            purpose=LinkPurpose(item["purpose"]),
            expires_at=item["expires_at"],
            next_path=item.get("next_path", "/dashboard"),
            claim_owner=item.get("claim_owner", ""),
            team_name=item.get("team_name", ""),
            leased_until=item.get("leased_until", 0),
        )

    def lease_link(self, secret: str, now: int, until: int) -> bool:
        """Hold an unexpired link until ``until``, unless a follow holds it already (a
        conditional update): of two follows at once, only one gets it. False otherwise."""
        return self._db.update_if(
            self._table,
            _link_key(secret),
            "SET leased_until = :until",
            "expires_at > :now AND (attribute_not_exists(leased_until) OR leased_until <= :now)",
            {":now": now, ":until": until},
        )

    def release_link(self, secret: str, until: int) -> None:
        """Drop the hold that ends at ``until`` (that follow's own), so the link can be
        followed again at once; a later follow's hold is left alone."""
        self._db.update_if(
            self._table,
            _link_key(secret),
            "REMOVE leased_until",
            "leased_until = :until",
            {":until": until},
        )

    def delete_link(self, secret: str) -> None:
        self._db.delete_item(self._table, _link_key(secret))

    # -- sessions ---------------------------------------------------------------------------
    def revoke(self, jti: str, until: int) -> None:
        self._db.put_item(self._table, {"pk": f"revoked#{jti}", "ttl": until})

    def is_revoked(self, jti: str) -> bool:
        return self._db.get(self._table, {"pk": f"revoked#{jti}"}, consistent=True) is not None

    # -- API keys ---------------------------------------------------------------------------
    def put_api_key(self, secret: str, key: ApiKey) -> None:
        self._db.transact([self.api_key_item(secret, key)])

    def api_key_item(self, secret: str, key: ApiKey) -> dict[str, Any]:
        return dynamo.put(
            self._table,
            {
                "pk": f"apikey#{secret_hash(secret)}",
                "kind": "api_key",
                "id": key.id,
                "team_id": key.team_id,
                "user_id": key.user_id,
                "name": key.name,
                "scope": key.scope.value,
                "created_at": key.created_at,
                "email": key.email,
            },
            "attribute_not_exists(pk)",
        )

    def api_key(self, secret: str) -> ApiKey | None:
        item = self._db.get(self._table, {"pk": f"apikey#{secret_hash(secret)}"})
        return _api_key(item) if item else None

    def api_keys_of(self, team_id: str) -> list[ApiKey]:
        items = self._db.query(
            self._table,
            "by_team",
            "team_id = :t",
            {":t": team_id, ":k": "api_key"},
            names={"#k": "kind"},
            filter_expression="#k = :k",
        )
        return [_api_key(i) for i in items]

    def delete_api_key(self, team_id: str, key_id: str) -> bool:
        items = self._db.query(
            self._table,
            "by_team",
            "team_id = :t",
            {":t": team_id, ":id": key_id, ":k": "api_key"},
            names={"#k": "kind"},
            filter_expression="#k = :k AND id = :id",
        )
        found = next(items, None)
        if found is None:
            return False
        self._db.delete_item(self._table, {"pk": found["pk"]})
        return True

    # -- CLI device flow --------------------------------------------------------------------
    def put_cli_session(self, session: CliSession) -> None:
        self._db.put_item(
            self._table,
            {
                **_cli_key(session.id),
                "status": session.status,
                "expires_at": session.expires_at,
                "ttl": session.expires_at + 3600,
            },
        )

    def cli_session(self, session_id: str) -> CliSession | None:
        item = self._db.get(self._table, _cli_key(session_id), consistent=True)
        if item is None:
            return None
        return CliSession(session_id, item["status"], item["expires_at"])

    def approve_cli_session(
        self, session_id: str, sealed_token: bytes, key_item: dict[str, Any], now: int
    ) -> bool:
        """Mark a pending, unexpired session approved, create its API key (``key_item``) and
        park the key's secret, sealed, for the CLI's next poll: all or nothing."""
        try:
            self._db.transact(
                [
                    dynamo.update(
                        self._table,
                        _cli_key(session_id),
                        "SET #s = :approved",
                        {":approved": "approved", ":pending": "pending", ":now": now},
                        condition="#s = :pending AND expires_at > :now",
                        names={"#s": "status"},
                    ),
                    dynamo.put(
                        self._table,
                        {
                            **_cli_key(session_id, "clitoken"),
                            "sealed": sealed_token,
                            "ttl": now + 900,
                        },
                    ),
                    key_item,
                ]
            )
        except TransactionCancelled:
            return False
        return True

    def count_cli_attempt(self, session_id: str, now: int, max_attempts: int) -> int | None:
        """Count one approval attempt on a pending, unexpired session with attempts left: the
        attempts so far, or None when there is nothing left to approve."""
        attempts = self._db.update_returning(
            dynamo.update(
                self._table,
                _cli_key(session_id),
                "ADD attempts :one",
                {":one": 1, ":max": max_attempts, ":pending": "pending", ":now": now},
                condition="#s = :pending AND expires_at > :now "
                "AND (attribute_not_exists(attempts) OR attempts < :max)",
                names={"#s": "status"},
            )
        )
        return None if attempts is None else int(attempts["attempts"])

    def end_cli_session(self, session_id: str) -> None:
        """Close a still-pending session for good (polls see ``expired``)."""
        self._db.update_if(
            self._table,
            _cli_key(session_id),
            "SET #s = :expired",
            "#s = :pending",
            {":expired": "expired", ":pending": "pending"},
            names={"#s": "status"},
        )

    def take_cli_token(self, session_id: str) -> bytes | None:
        item = self._db.take(self._table, _cli_key(session_id, "clitoken"), "attribute_exists(pk)")
        return bytes(item["sealed"]) if item else None


def _link_key(secret: str) -> dict[str, str]:
    return {"pk": f"link#{secret_hash(secret)}"}


def _cli_key(session_id: str, prefix: str = "cli") -> dict[str, str]:
    return {"pk": f"{prefix}#{secret_hash(session_id)}"}


def _user(item: Item) -> User:
    return User(item["id"], item["email"], item["team_id"], item["created_at"])


def _team(item: Item) -> Team:
    return Team(
        id=item["id"],
        name=item["name"],
        tier=item.get("tier", FREE_TIER),
        default_deployment_ttl_policy=item.get("ttl_policy", "auto_24h"),
        created_at=item.get("ts", 0),
    )


def _api_key(item: Item) -> ApiKey:
    return ApiKey(
        id=item["id"],
        team_id=item["team_id"],
        user_id=item["user_id"],
        name=item["name"],
        scope=Scope(item["scope"]),
        created_at=item["created_at"],
        email=item.get("email", ""),
    )
