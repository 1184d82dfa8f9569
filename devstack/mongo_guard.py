"""SecantusDB with the authorization checks mongod makes and SecantusDB 0.7.0b3 skips.

The local stack runs ``python -m devstack.mongo_guard <secantusd-py flags>``: it wraps the
server's command dispatcher, then starts the daemon exactly as ``secantusd-py`` does. Under
``--auth``, every command of an authenticated connection passes these checks before the
server's own privilege check (which still runs):

* **Roles are read per command.** SecantusDB keeps the roles a connection had at login, where
  mongod applies a user's changed roles to sessions already open. Re-reading the user record
  per command makes ``updateUser`` / ``revokeRolesFromUser`` / ``dropUser`` reach open
  connections: a tenant the quota pass narrows to ``read`` cannot write on any connection.
* **Every database a command touches needs its privileges.** ``renameCollection`` across
  databases needs find and dropCollection on the source, insert and createIndex (and
  dropCollection with ``dropTarget``) on the target: SecantusDB checked the source alone, so a
  tenant could replace another tenant's collection. ``bulkWrite`` needs insert, update and
  remove on every namespace it lists (SecantusDB checked nothing). ``usersInfo`` and
  ``rolesInfo`` need their view action on every database they name.
* **Views cannot write.** SecantusDB runs a view's pipeline on every read without checking it,
  so a ``$out`` or ``$merge`` in a view wrote into any database, or past a quota; ``create`` and
  ``collMod`` refuse them in a view definition, as mongod does.
* **A granter reaches only as far as its own grants.** Granting a role (``createUser``,
  ``updateUser``, ``grantRolesToUser``, ``createRole``, ``updateRole``, ``grantRolesToRole``)
  needs grantRole on the role's database, and a custom role's privileges need grantRole on each
  database they cover (``admin`` for the cluster or every database), as in mongod: on SecantusDB a
  ``userAdmin`` of one database could grant itself ``root``.
* **Fail closed.** A command the server serves but leaves out of its privilege table
  (``killAllSessions``, ``killAllSessionsByPattern``, ``replSetStepDown``, ...) needs a
  cluster-administration grant; SecantusDB let anyone run them (``killAllSessions`` aborted every
  tenant's transactions). ``killSessions`` stays open: it names sessions by their random ids.

Written against SecantusDB's ``secantus.commands`` of the version in ``REVIEWED_VERSION``; any other
version refuses to start until it is reviewed again.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from importlib.metadata import version
from typing import Any

import secantus.cli as cli  # type: ignore[import-untyped]
import secantus.commands as commands  # type: ignore[import-untyped]
import secantus.server as server  # type: ignore[import-untyped]
from secantus import rbac

REVIEWED_VERSION = "0.7.0b3"

Doc = dict[str, Any]
Need = tuple[str, str | None]  # (action, database); None: the cluster
Dispatch = Callable[[Doc, Any], Doc]

CLUSTER_ADMIN_ACTION = rbac.A_KILLOP  # held by clusterAdmin and root
OWN_SESSIONS = frozenset({"killSessions"})
WRITING_STAGES = frozenset({"$out", "$merge"})


# -- what a command needs beyond the server's own check -----------------------------------
def _rename_needs(doc: Doc, _db: str) -> list[Need]:
    source, target = doc.get("renameCollection"), doc.get("to")
    if not isinstance(source, str) or not isinstance(target, str):
        return []  # the server refuses the command
    source_db, target_db = source.partition(".")[0], target.partition(".")[0]
    if source_db == target_db:
        return []  # the server checks renameCollectionSameDB on it
    needs: list[Need] = [
        (rbac.A_FIND, source_db),
        (rbac.A_DROP_COLLECTION, source_db),
        (rbac.A_INSERT, target_db),
        (rbac.A_CREATE_INDEX, target_db),
    ]
    if doc.get("dropTarget"):
        needs.append((rbac.A_DROP_COLLECTION, target_db))
    return needs


def _bulk_write_needs(doc: Doc, _db: str) -> list[Need]:
    namespaces = doc.get("nsInfo")
    entries = namespaces if isinstance(namespaces, list) else []
    dbs = {str(e["ns"]).partition(".")[0] for e in entries if isinstance(e, dict) and "ns" in e}
    return [(a, db) for db in sorted(dbs) for a in (rbac.A_INSERT, rbac.A_UPDATE, rbac.A_REMOVE)]


def _named_databases(arg: Any, db: str) -> set[str]:
    """Databases of ``{user|role, db}`` entries (one, or a list), the command's when omitted."""
    entries = arg if isinstance(arg, list) else [arg]
    return {str(e.get("db", db)) for e in entries if isinstance(e, dict)}


def _viewing(action: str) -> Callable[[Doc, str], list[Need]]:
    def needs(doc: Doc, db: str) -> list[Need]:
        argument = next(iter(doc.values()))  # the command's own field: usersInfo, rolesInfo
        return [(action, named) for named in sorted(_named_databases(argument, db))]

    return needs


def _role_databases(doc: Doc, db: str) -> Iterator[str]:
    """Databases of the roles a command grants (a bare role name is the command's database)."""
    roles = doc.get("roles")
    for role in roles if isinstance(roles, list) else []:
        yield str(role.get("db", db)) if isinstance(role, dict) else db


def _privilege_databases(doc: Doc) -> Iterator[str]:
    """Databases a role's privileges cover: ``admin`` for the cluster and for every database."""
    privileges = doc.get("privileges")
    for privilege in privileges if isinstance(privileges, list) else []:
        resource = privilege.get("resource") if isinstance(privilege, dict) else None
        named = resource.get("db") if isinstance(resource, dict) else None
        yield named if isinstance(named, str) and named else "admin"


def _grant_needs(doc: Doc, db: str) -> list[Need]:
    granted = {*_role_databases(doc, db), *_privilege_databases(doc)}
    return [(rbac.A_GRANT_ROLE, named) for named in sorted(granted)]


_RULES: dict[str, Callable[[Doc, str], list[Need]]] = {
    "renameCollection": _rename_needs,
    "bulkWrite": _bulk_write_needs,
    "usersInfo": _viewing(rbac.A_VIEW_USER),
    "rolesInfo": _viewing(rbac.A_VIEW_ROLE),
    **dict.fromkeys(
        (
            "createUser",
            "updateUser",
            "grantRolesToUser",
            "createRole",
            "updateRole",
            "grantRolesToRole",
            "grantPrivilegesToRole",
        ),
        _grant_needs,
    ),
}


def unlisted_commands() -> frozenset[str]:
    """Commands the server serves that neither its privilege table nor its exemptions name."""
    named = {
        *commands._COMMAND_ACTIONS,
        *commands._NO_PRIVILEGE_COMMANDS,
        *commands._PRE_AUTH_COMMANDS,
        *_RULES,
        *OWN_SESSIONS,
    }
    return frozenset(set(commands._HANDLERS) - named)


_UNLISTED = unlisted_commands()


def needs_of(name: str, doc: Doc, db: str) -> list[Need]:
    if name in _UNLISTED:
        return [(CLUSTER_ADMIN_ACTION, None)]
    rule = _RULES.get(name)
    return rule(doc, db) if rule else []


def _writes(pipeline: Any) -> bool:
    """Whether ``$out`` or ``$merge`` appears anywhere in ``pipeline`` (sub-pipelines too)."""
    if isinstance(pipeline, list):
        return any(_writes(item) for item in pipeline)
    if isinstance(pipeline, dict):
        return any(k in WRITING_STAGES or _writes(v) for k, v in pipeline.items())
    return False


# -- the check -----------------------------------------------------------------------------
def _unauthorized(message: str) -> Doc:
    return {"ok": 0.0, "errmsg": message, "code": 13, "codeName": "Unauthorized"}


def _granted(ctx: Any, need: Need) -> bool:
    action, db = need
    return bool(
        rbac.check_privilege(
            ctx.connection_auth.effective_roles,
            action,
            target_db=db,
            cluster=db is None,
            role_resolver=ctx.storage.get_role,
        )
    )


def refusal(doc: Doc, ctx: Any) -> Doc | None:
    """The reply refusing ``doc`` on this connection, or None when the server may run it."""
    name = commands.command_name(doc)
    if name in ("create", "collMod") and _writes(doc.get("pipeline")):
        return _unauthorized(f"{name}: $out and $merge are not allowed in a view definition")
    for need in needs_of(name, doc, ctx.db_name or "admin"):
        if not _granted(ctx, need):
            action, db = need
            return _unauthorized(
                f"not authorized on {db or 'cluster'} to execute command {name} (action: {action})"
            )
    return None


def guard(dispatch: Dispatch) -> Dispatch:
    """``dispatch`` with roles re-read and the checks above, for authenticated connections."""

    def guarded(doc: Doc, ctx: Any) -> Doc:
        auth = ctx.connection_auth
        if ctx.require_auth and auth is not None and auth.is_authenticated:
            commands._refresh_effective_roles(ctx)
            refused = refusal(doc, ctx)
            if refused is not None:
                return refused
        return dispatch(doc, ctx)

    return guarded


def install() -> None:
    installed = version("secantusdb")
    if installed != REVIEWED_VERSION:
        raise SystemExit(
            f"mongo_guard was reviewed against secantusdb {REVIEWED_VERSION}, not {installed}: "
            "review its authorization again before running it"
        )
    server.dispatch = guard(server.dispatch)


def main(argv: list[str] | None = None) -> int:
    install()
    return int(cli.main(argv))


if __name__ == "__main__":
    sys.exit(main())
