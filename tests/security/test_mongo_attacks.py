"""A hostile MongoDB tenant against another, with pymongo and raw (mongosh-like) commands, on the
stack's real SecantusDB (run through devstack/mongo_guard.py): every attack is refused and the
victim's data, the admin database and the users stay as they were."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pymongo
import pytest
from pymongo.database import Database
from pymongo.errors import OperationFailure

from chalicelib.models import BackendRef
from chalicelib.providers.mongodb import MongoProvider
from chalicelib.tiers import KindLimits
from devstack.mongo_service import MongoServer
from devstack.stack import Stack
from tests.conftest import stack_profile

LIMITS = KindLimits(storage_mb=5, connections=2, max_resources=1)
UNAUTHORIZED, NO_SUCH_COMMAND = 13, 59
SYSTEM_DATABASES = ("admin", "config", "local")

Document = dict[str, Any]
Client = pymongo.MongoClient[Document]


@dataclass(frozen=True)
class Tenant:
    ref: BackendRef
    url: str
    client: Client  # one open connection pool, as an agent keeps it

    @property
    def db(self) -> Database[Document]:
        return self.client[self.ref.namespace]


class Tenants:
    """Tenants made by the real provider on the stack's server; all removed by ``close``."""

    def __init__(self, server: MongoServer) -> None:
        self.backend = server.backend()
        self.provider = MongoProvider()
        self.admin: Client = pymongo.MongoClient(server.admin_url(), serverSelectionTimeoutMS=3000)
        self._made: list[Tenant] = []

    def new(self, limits: KindLimits = LIMITS, **options: Any) -> Tenant:
        """A tenant and its pymongo client (``options``: more MongoClient options)."""
        ref = self.provider.new_ref(self.backend)
        creds = self.provider.provision(self.backend, ref, limits)
        client: Client = pymongo.MongoClient(
            creds.connection_url, serverSelectionTimeoutMS=3000, retryWrites=False, **options
        )
        self._made.append(Tenant(ref, creds.connection_url, client))
        return self._made[-1]

    def users(self) -> list[Document]:
        return sorted(self.admin.admin["system.users"].find({}, {"credentials": 0}), key=str)

    def close(self) -> None:
        for tenant in self._made:
            tenant.client.close()
            self.provider.deprovision(self.backend, tenant.ref)
        self.admin.close()


@contextmanager
def mongo_alone() -> Iterator[MongoServer]:
    """The test profile's MongoDB server, started alone when it is not running (these tests
    need no other part of the stack) and stopped again if this call started it."""
    server = Stack(stack_profile()).mongo
    started = server.up()
    try:
        yield server
    finally:
        if started:
            server.down()


@dataclass(frozen=True)
class Scene:
    """Attacker A and victim B, whose ``victim`` collection A tries to reach."""

    a: Tenant
    b: Tenant
    tenants: Tenants

    def state(self) -> Document:
        """What no attack may change: B's data, the system databases, every user."""
        admin = self.tenants.admin
        return {
            "victim": sorted(admin[self.b.ref.namespace].victim.find(), key=str),
            "collections": {
                name: sorted(admin[name].list_collection_names())
                for name in (self.b.ref.namespace, *SYSTEM_DATABASES)
            },
            "users": self.tenants.users(),
        }


@pytest.fixture
def scene(tenants: Tenants) -> Iterator[Scene]:
    a, b = tenants.new(), tenants.new()
    b.db.victim.insert_many([{"_id": i, "owner": "B"} for i in range(3)])
    a.db.decoy.insert_many([{"_id": i, "owner": "A"} for i in range(2)])
    scene = Scene(a, b, tenants)
    before = scene.state()
    yield scene
    assert scene.state() == before


def refused(action: Callable[[], object], code: int = UNAUTHORIZED) -> None:
    with pytest.raises(OperationFailure) as err:
        action()
    assert err.value.code == code, err.value.details


# -- moving data across databases ----------------------------------------------------------
@pytest.mark.parametrize("drop_target", [True, False], ids=["dropTarget", "no-dropTarget"])
@pytest.mark.parametrize("target", ["victim", "fresh"])
def test_rename_into_another_tenants_database_is_refused(
    scene: Scene, drop_target: bool, target: str
) -> None:
    b = scene.b.ref.namespace
    refused(
        lambda: scene.a.client.admin.command(
            "renameCollection",
            f"{scene.a.ref.namespace}.decoy",
            to=f"{b}.{target}",
            dropTarget=drop_target,
        )
    )
    assert scene.a.db.decoy.count_documents({}) == 2


@pytest.mark.parametrize("database", SYSTEM_DATABASES)
def test_rename_into_a_system_database_is_refused(scene: Scene, database: str) -> None:
    source = f"{scene.a.ref.namespace}.decoy"
    refused(lambda: scene.a.client.admin.command("renameCollection", source, to=f"{database}.x"))


def test_rename_out_of_another_tenants_database_is_refused(scene: Scene) -> None:
    source, target = f"{scene.b.ref.namespace}.victim", f"{scene.a.ref.namespace}.stolen"
    refused(lambda: scene.a.client.admin.command("renameCollection", source, to=target))


def test_rename_within_own_database_still_works(scene: Scene) -> None:
    a = scene.a.ref.namespace
    scene.a.client.admin.command("renameCollection", f"{a}.decoy", to=f"{a}.renamed")
    assert scene.a.db.renamed.count_documents({}) == 2


@pytest.mark.parametrize("stage", ["$out", "$merge"])
def test_pipeline_writing_into_another_tenant_is_refused(scene: Scene, stage: str) -> None:
    into = {"db": scene.b.ref.namespace, "coll": "victim"}
    spec = {"$out": into} if stage == "$out" else {"$merge": {"into": into}}
    refused(lambda: list(scene.a.db.decoy.aggregate([spec])))


@pytest.mark.parametrize("stage", ["$out", "$merge"])
@pytest.mark.parametrize("where", ["victim", "own"])
def test_view_that_writes_is_refused(scene: Scene, stage: str, where: str) -> None:
    """A view's pipeline runs on every read with no check: a writing view could reach any
    database, or write past a quota."""
    db = scene.b.ref.namespace if where == "victim" else scene.a.ref.namespace
    into = {"db": db, "coll": "victim"}
    spec = {"$out": into} if stage == "$out" else {"$merge": {"into": into}}
    nested = [{"$facet": {"x": [spec]}}]
    for pipeline in ([spec], nested):
        refused(lambda p=pipeline: scene.a.db.command("create", "v", viewOn="decoy", pipeline=p))
    scene.a.db.command("create", "fine", viewOn="decoy", pipeline=[{"$match": {}}])
    refused(lambda: scene.a.db.command("collMod", "fine", viewOn="decoy", pipeline=[spec]))


@pytest.mark.parametrize("op", ["insert", "update", "delete"])
def test_bulk_write_into_another_tenant_is_refused(scene: Scene, op: str) -> None:
    ops = {
        "insert": {"insert": 0, "document": {"_id": 99, "owner": "A"}},
        "update": {
            "update": 0,
            "filter": {},
            "updateMods": {"$set": {"owner": "A"}},
            "multi": True,
        },
        "delete": {"delete": 0, "filter": {}, "multi": True},
    }
    theirs, own = f"{scene.b.ref.namespace}.victim", f"{scene.a.ref.namespace}.decoy"
    for listed in ([theirs], [theirs, own]):  # ops[0] writes into nsInfo[0]: theirs
        command = {"bulkWrite": 1, "ops": [ops[op]], "nsInfo": [{"ns": ns} for ns in listed]}
        refused(lambda c=command: scene.a.client.admin.command(c))


@pytest.mark.parametrize("database", SYSTEM_DATABASES)
def test_bulk_write_into_a_system_database_is_refused(scene: Scene, database: str) -> None:
    command = {
        "bulkWrite": 1,
        "ops": [{"insert": 0, "document": {}}],
        "nsInfo": [{"ns": f"{database}.x"}],
    }
    refused(lambda: scene.a.client.admin.command(command))


# -- reading and writing another database directly ------------------------------------------
OTHER_DB_ATTEMPTS: dict[str, Callable[[Database[Document]], object]] = {
    "find": lambda db: db.victim.find_one(),
    "count": lambda db: db.victim.count_documents({}),
    "distinct": lambda db: db.victim.distinct("owner"),
    "aggregate": lambda db: list(db.victim.aggregate([])),
    "insert": lambda db: db.victim.insert_one({"owner": "A"}),
    "update": lambda db: db.victim.update_many({}, {"$set": {"owner": "A"}}),
    "replace": lambda db: db.victim.find_one_and_replace({}, {"owner": "A"}),
    "delete": lambda db: db.victim.delete_many({}),
    "drop": lambda db: db.command("drop", "victim"),
    "dropDatabase": lambda db: db.command("dropDatabase"),
    "createIndex": lambda db: db.victim.create_index("owner"),
    "listCollections": lambda db: db.list_collection_names(),
    "dbStats": lambda db: db.command("dbStats"),
    "collStats": lambda db: db.command("collStats", "victim"),
    "validate": lambda db: db.command("validate", "victim"),
    "createView": lambda db: db.command("create", "v", viewOn="victim", pipeline=[]),
}


@pytest.mark.parametrize("attempt", sorted(OTHER_DB_ATTEMPTS))
def test_touch_another_tenants_database_is_refused(scene: Scene, attempt: str) -> None:
    refused(lambda: OTHER_DB_ATTEMPTS[attempt](scene.a.client[scene.b.ref.namespace]))


@pytest.mark.parametrize("database", SYSTEM_DATABASES)
@pytest.mark.parametrize("attempt", ["find", "insert", "delete", "drop", "createView"])
def test_touch_a_system_database_is_refused(scene: Scene, database: str, attempt: str) -> None:
    refused(lambda: OTHER_DB_ATTEMPTS[attempt](scene.a.client[database]))


def test_read_admin_users_is_refused(scene: Scene) -> None:
    refused(lambda: scene.a.client.admin["system.users"].find_one())
    refused(lambda: scene.a.client.admin["system.users"].insert_one({"_id": "x.y", "user": "y"}))


def test_login_to_another_tenants_database_is_refused(scene: Scene) -> None:
    stolen = scene.a.url.replace(
        f"authSource={scene.a.ref.namespace}", f"authSource={scene.b.ref.namespace}"
    )
    client: Client = pymongo.MongoClient(stolen, serverSelectionTimeoutMS=3000)
    try:
        refused(lambda: client[scene.b.ref.namespace].victim.find_one(), code=18)
    finally:
        client.close()


# -- users and roles ----------------------------------------------------------------------
def escalations(a: BackendRef, b: BackendRef) -> dict[str, Document]:
    root = [{"role": "root", "db": "admin"}]
    anything = [{"resource": {"anyResource": True}, "actions": ["find", "insert"]}]
    return {
        "createUser": {"createUser": "evil", "pwd": "p", "roles": ["readWrite"]},
        "createUser-root": {"createUser": "evil", "pwd": "p", "roles": root},
        "grantRolesToUser": {"grantRolesToUser": a.principal, "roles": root},
        "grant-other-db": {
            "grantRolesToUser": a.principal,
            "roles": [{"role": "readWrite", "db": b.namespace}],
        },
        "updateUser": {
            "updateUser": a.principal,
            "roles": [{"role": "dbOwner", "db": a.namespace}],
        },
        "changeOwnPassword": {"updateUser": a.principal, "pwd": "chosen"},
        "createRole": {"createRole": "god", "privileges": anything, "roles": []},
        "createRole-inherit": {"createRole": "god", "privileges": [], "roles": root},
        "dropUser-self": {"dropUser": a.principal},
        "dropAllUsersFromDatabase": {"dropAllUsersFromDatabase": 1},
        "usersInfo": {"usersInfo": 1},
        "usersInfo-other": {"usersInfo": {"user": b.principal, "db": b.namespace}},
        "usersInfo-credentials": {"usersInfo": a.principal, "showCredentials": True},
        "rolesInfo-other": {"rolesInfo": {"role": b.namespace, "db": "admin"}},
    }


ESCALATIONS = sorted(escalations(BackendRef("", "a", "a"), BackendRef("", "b", "b")))


@pytest.mark.parametrize("name", ESCALATIONS)
def test_user_and_role_management_in_own_database_is_refused(scene: Scene, name: str) -> None:
    command = escalations(scene.a.ref, scene.b.ref)[name]
    refused(lambda: scene.a.db.command(command))


@pytest.mark.parametrize("name", ["dropUser", "updateUser", "grantRolesToUser"])
def test_user_management_in_another_database_is_refused(scene: Scene, name: str) -> None:
    spec = {} if name == "dropUser" else {"roles": [{"role": "read", "db": scene.a.ref.namespace}]}
    command = {name: scene.b.ref.principal, **spec}
    refused(lambda: scene.a.client[scene.b.ref.namespace].command(command))


def test_user_admin_of_one_database_cannot_grant_itself_root(tenants: Tenants) -> None:
    """SecantusDB let a userAdmin grant any role and define roles over any resource; the guard
    holds a granter to the databases it administers, as mongod does."""
    a = tenants.new()
    tenants.admin[a.ref.namespace].command(
        "updateUser", a.ref.principal, roles=[{"role": "userAdmin", "db": a.ref.namespace}]
    )
    wide = [{"resource": {"db": "", "collection": ""}, "actions": ["find"]}]
    for command in (
        {"grantRolesToUser": a.ref.principal, "roles": [{"role": "root", "db": "admin"}]},
        {"createRole": "wide", "privileges": wide, "roles": []},
        {"createRole": "heir", "privileges": [], "roles": [{"role": "root", "db": "admin"}]},
        {"createUser": "helper", "pwd": "p", "roles": [{"role": "root", "db": "admin"}]},
    ):
        refused(lambda c=command: a.db.command(c))
    a.db.command(
        "createRole", "own", privileges=[], roles=[{"role": "read", "db": a.ref.namespace}]
    )
    a.db.command("dropRole", "own")  # granting within its own database still works
    refused(lambda: a.client.admin.command("listDatabases"))


# -- the server as a whole ----------------------------------------------------------------
SERVER_COMMANDS: dict[str, tuple[Document, int]] = {
    "listDatabases": ({"listDatabases": 1, "nameOnly": True}, UNAUTHORIZED),
    "listDatabases-authorized": ({"listDatabases": 1, "authorizedDatabases": True}, UNAUTHORIZED),
    "currentOp": ({"currentOp": 1, "$all": True}, UNAUTHORIZED),
    "killOp": ({"killOp": 1, "op": 1}, UNAUTHORIZED),
    "killAllSessions": ({"killAllSessions": []}, UNAUTHORIZED),
    "killAllSessionsByPattern": ({"killAllSessionsByPattern": []}, UNAUTHORIZED),
    "serverStatus": ({"serverStatus": 1}, UNAUTHORIZED),
    "hostInfo": ({"hostInfo": 1}, UNAUTHORIZED),
    "getCmdLineOpts": ({"getCmdLineOpts": 1}, UNAUTHORIZED),
    "getParameter": ({"getParameter": "*"}, UNAUTHORIZED),
    "setParameter": ({"setParameter": 1, "logLevel": 5}, UNAUTHORIZED),
    "getLog": ({"getLog": "global"}, UNAUTHORIZED),
    "top": ({"top": 1}, UNAUTHORIZED),
    "fsync": ({"fsync": 1, "lock": True}, UNAUTHORIZED),
    "replSetStepDown": ({"replSetStepDown": 60, "force": True}, UNAUTHORIZED),
    "replSetGetStatus": ({"replSetGetStatus": 1}, UNAUTHORIZED),
    "backupArchive": ({"secantusAdmin.backupArchive": 1}, UNAUTHORIZED),
    "restoreToTimestamp": ({"secantusAdmin.restoreToTimestamp": 1}, UNAUTHORIZED),
    "configureFailPoint": (
        {"configureFailPoint": "failCommand", "mode": "alwaysOn"},
        NO_SUCH_COMMAND,
    ),
    "shutdown": ({"shutdown": 1, "force": True}, NO_SUCH_COMMAND),
    "applyOps": ({"applyOps": []}, NO_SUCH_COMMAND),
    "copydb": ({"copydb": 1, "fromdb": "x", "todb": "y"}, NO_SUCH_COMMAND),
    "clone": ({"clone": "127.0.0.1"}, NO_SUCH_COMMAND),
    "eval": ({"eval": "db.dropDatabase()"}, NO_SUCH_COMMAND),
}


@pytest.mark.parametrize("name", sorted(SERVER_COMMANDS))
def test_server_wide_command_is_refused(scene: Scene, name: str) -> None:
    command, code = SERVER_COMMANDS[name]
    refused(lambda: scene.a.client.admin.command(command), code)


@pytest.mark.parametrize(
    "command",
    [
        {"profile": 2},
        {"cloneCollectionAsCapped": "decoy", "toCollection": "c", "size": 4096},
        {"convertToCapped": "decoy", "size": 4096},
    ],
    ids=lambda c: next(iter(c)),
)
def test_database_admin_command_on_own_database_is_refused(scene: Scene, command: Document) -> None:
    with pytest.raises(OperationFailure) as err:
        scene.a.db.command(command)
    assert err.value.code in (UNAUTHORIZED, NO_SUCH_COMMAND)


@pytest.mark.parametrize(
    "run",
    [
        lambda db: db.decoy.find_one({"$where": "sleep(10000) || true"}),
        lambda db: list(
            db.decoy.aggregate(
                [
                    {
                        "$addFields": {
                            "x": {"$function": {"body": "function() {}", "args": [], "lang": "js"}}
                        }
                    }
                ]
            )
        ),
        lambda db: list(
            db.decoy.aggregate(
                [
                    {
                        "$group": {
                            "_id": 1,
                            "x": {
                                "$accumulator": {
                                    "init": "function() {}",
                                    "accumulate": "function() {}",
                                    "accumulateArgs": [],
                                    "merge": "function() {}",
                                    "lang": "js",
                                }
                            },
                        }
                    }
                ]
            )
        ),
        lambda db: db.command(
            "mapReduce", "decoy", map="function(){}", reduce="function(){}", out="x"
        ),
    ],
    ids=["$where", "$function", "$accumulator", "mapReduce-out"],
)
def test_server_side_javascript_is_refused(
    scene: Scene, run: Callable[[Database[Document]], object]
) -> None:
    with pytest.raises(OperationFailure):
        run(scene.a.db)


def test_deprovision_cuts_open_connections(tenants: Tenants) -> None:
    """Roles are re-read per command: a removed tenant's open connection can do nothing more."""
    a = tenants.new()
    a.db.decoy.insert_one({"early": True})
    tenants.provider.deprovision(tenants.backend, a.ref)
    refused(lambda: a.db.decoy.insert_one({"late": True}))
    refused(lambda: a.db.decoy.find_one())
