"""The MongoDB server behind ``/nosql/new``, over an admin pymongo client."""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import pymongo

from bench.backends import RAW_PREFIX, ms_since
from chalicelib.providers.mongodb import MECHANISM, tenant_roles

TENANT_PREFIX = "mu_"  # the provider's users (chalicelib.providers.mongodb.MongoProvider.new_ref)


class MongoBench:
    def __init__(self, admin_url: str) -> None:
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(admin_url)
        self.client.admin.command("ping")  # the connection is open before the first timed command

    def raw(self) -> float:
        """One ``createUser`` with ``readWrite`` on a fresh database, as the provider sends it,
        for a user and database of the bench's own (``RAW_PREFIX``)."""
        suffix = secrets.token_hex(10)
        db = f"{RAW_PREFIX}m_{suffix}"
        start = time.perf_counter()
        self.client[db].command(
            "createUser",
            f"{RAW_PREFIX}mu_{suffix}",
            pwd=secrets.token_urlsafe(24),
            roles=tenant_roles(db),
            mechanisms=[MECHANISM],
        )
        return ms_since(start)

    def drop_raw(self) -> None:
        """Every raw-op user and database, also those an interrupted run left."""
        for user in self._users():
            if user["user"].startswith(RAW_PREFIX):
                self.client[user["db"]].command("dropUser", user["user"])
        for name in self.client.list_database_names():
            if name.startswith(RAW_PREFIX):
                self.client.drop_database(name)

    def made_by(self, answer: Mapping[str, Any]) -> str:
        return unquote(urlsplit(str(answer["connection_url"])).username or "")

    def _users(self) -> list[dict[str, str]]:
        """Every user (``admin.system.users``, as the provider reads it: SecantusDB answers
        ``usersInfo`` with ``forAllDBs`` with an empty list)."""
        found = self.client.admin["system.users"].find({}, {"user": 1, "db": 1})
        return [{"user": str(u["user"]), "db": str(u["db"])} for u in found]

    def tenants(self) -> int:
        return sum(u["user"].startswith(TENANT_PREFIX) for u in self._users())

    def left(self, made: Collection[str]) -> int:
        """Users (and the databases of users, ``mu_x`` -> ``m_x``) still there."""
        wanted = set(made)
        dbs = {"m_" + u.removeprefix(TENANT_PREFIX) for u in wanted}
        users = sum(u["user"] in wanted or u["user"].startswith(RAW_PREFIX) for u in self._users())
        names = self.client.list_database_names()
        return users + sum(n in dbs or n.startswith(RAW_PREFIX) for n in names)

    def close(self) -> None:
        self.client.close()
