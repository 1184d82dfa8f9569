"""Attacks on the shared Postgres servers by tenants, with the clients an attacker would use
(psql, pg8000), against the test stack's real servers: each asserts the denial.

- reaching another database: another tenant's, the templates, ``postgres``, ``template1``, and
  holding a session there to make another tenant's provision fail;
- reaching the server: COPY ... PROGRAM, server files, untrusted extensions and languages;
- role escalation: ALTER ROLE self, CREATE ROLE, predefined roles, SET ROLE, the kind marker;
- growing a database over its quota: every write path, with everything a tenant can prepare
  while under it (grants to PUBLIC and to itself, SECURITY DEFINER code, triggers, rules, ON
  DELETE actions, an index expression, database settings, an accomplice tenant, open sessions);
- leaving orphans: grants from another tenant, half-made and restricted resources, provisions
  failing at the worst moment (the template busy, the connection killed, the server gone).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

import pg8000.native
import pytest
from pg8000.exceptions import DatabaseError, InterfaceError

from chalicelib.config import Settings
from chalicelib.models import Backend, BackendRef, Credentials, Kind
from chalicelib.providers.base import BackendDownError, BackendUnreachableError, Tenant
from chalicelib.providers.postgres import PostgresProvider, admin_connection
from chalicelib.tiers import KindLimits
from devstack.stack import Stack
from tests.conftest import connect

PSQL = "/usr/bin/psql"
UNDER = KindLimits(storage_mb=10, connections=5, max_resources=1)
OVER = replace(UNDER, storage_mb=0)  # anything the tenant made is over it
DENIED = "42501"  # insufficient_privilege
REFUSALS = ("permission denied", "must be", "not allowed")
TEMPLATES = ("instanode_template_postgres", "instanode_template_vector")


# -- fixtures: tenants on the stack's first Postgres server ----------------------------------
@pytest.fixture(scope="module")
def backend(stack: Stack) -> Backend:
    return Settings.from_env(stack.env()).backends_for(Kind.POSTGRES)[0]


@pytest.fixture(scope="module")
def provider() -> PostgresProvider:
    return PostgresProvider(Kind.POSTGRES)


@dataclass(frozen=True)
class Made:
    ref: BackendRef
    creds: Credentials
    kind: Kind = Kind.POSTGRES

    @property
    def url(self) -> str:
        return self.creds.connection_url

    def tenant(self, limits: KindLimits) -> Tenant:
        return Tenant(self.ref, limits, self.creds.stored)

    def session(self) -> pg8000.native.Connection:
        return connect(self.url)


MakeTenant = Callable[..., Made]


@contextmanager
def tenants(backend: Backend) -> Iterator[MakeTenant]:
    """Provision tenants (of either kind); each is deprovisioned afterwards."""
    made: list[Made] = []

    def _make(kind: Kind = Kind.POSTGRES, limits: KindLimits = UNDER) -> Made:
        provider = PostgresProvider(kind)
        ref = provider.new_ref(backend)
        made.append(Made(ref, provider.provision(backend, ref, limits), kind))
        return made[-1]

    yield _make
    for m in made:
        PostgresProvider(m.kind).deprovision(backend, m.ref)


@pytest.fixture
def make_tenant(backend: Backend) -> Iterator[MakeTenant]:
    with tenants(backend) as make:
        yield make


def sqlstate(conn: pg8000.native.Connection, sql: str) -> str:
    """The SQLSTATE with which the server refuses ``sql`` (fails the test if it runs)."""
    with pytest.raises(DatabaseError) as err:
        conn.run(sql)
    return str(err.value.args[0]["C"])


def psql(url: str, *commands: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    args = [PSQL, "-X", "-At", "-v", "ON_ERROR_STOP=1", url]
    for command in commands:
        args += ["-c", command]
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def owner_role(ref: BackendRef) -> str:
    return f"o_{ref.principal[2:]}"


def roles_of(backend: Backend, ref: BackendRef) -> list[str]:
    with admin_connection(backend) as admin:
        rows = admin.run(
            "SELECT rolname FROM pg_roles WHERE rolname IN (:u, :o) ORDER BY 1",
            u=ref.principal,
            o=owner_role(ref),
        )
    return [r[0] for r in rows]


def database_exists(backend: Backend, ref: BackendRef) -> bool:
    with admin_connection(backend) as admin:
        return bool(admin.run("SELECT 1 FROM pg_database WHERE datname = :d", d=ref.namespace))


def db_owner(backend: Backend, ref: BackendRef) -> str:
    with admin_connection(backend) as admin:
        rows = admin.run(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :d", d=ref.namespace
        )
    return str(rows[0][0])


def inside(backend: Backend, ref: BackendRef, sql: str) -> list[list[object]]:
    """Run ``sql`` as the admin inside the tenant's database."""
    with admin_connection(backend, ref.namespace, pooled=False) as admin:
        return list(admin.run(sql))


# -- reaching another database -----------------------------------------------------------------
def test_psql_into_another_tenants_database_is_refused(make_tenant: MakeTenant) -> None:
    a, b = make_tenant(), make_tenant()
    out = psql(with_database(a.url, b.ref.namespace), "SELECT 1")
    assert out.returncode != 0 and "permission denied for database" in out.stderr


@pytest.mark.parametrize(
    ("database", "refusal"),
    [
        (TEMPLATES[0], "is not currently accepting connections"),
        (TEMPLATES[1], "is not currently accepting connections"),
        ("postgres", "permission denied for database"),
        ("template1", "permission denied for database"),
        ("template0", "is not currently accepting connections"),
    ],
)
def test_psql_into_a_template_or_system_database_is_refused(
    make_tenant: MakeTenant, database: str, refusal: str
) -> None:
    make_tenant(Kind.VECTOR)  # both templates exist and both kinds prepared the server
    out = psql(with_database(make_tenant().url, database), "SELECT 1")
    assert out.returncode != 0 and refusal in out.stderr, out.stderr


@contextmanager
def server_as_before(backend: Backend) -> Iterator[None]:
    """The server as a release before this one left it: templates and system databases open."""
    with admin_connection(backend) as admin:
        for template in TEMPLATES:
            admin.run(f"ALTER DATABASE {template} ALLOW_CONNECTIONS true")
        admin.run("GRANT CONNECT, TEMPORARY ON DATABASE postgres, template1 TO PUBLIC")
    try:
        yield
    finally:
        with admin_connection(backend) as admin:
            for template in TEMPLATES:
                admin.run(f"ALTER DATABASE {template} ALLOW_CONNECTIONS false")
            admin.run("REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 FROM PUBLIC")


@pytest.mark.parametrize("kind", [Kind.POSTGRES, Kind.VECTOR])
def test_held_template_session_is_ended_and_provisions_go_on(
    make_tenant: MakeTenant, backend: Backend, kind: Kind
) -> None:
    """Issue 12's attack on a server prepared by an earlier release: a tenant holds a session on
    the kind's template and on the system databases; the provider's first touch ends them,
    closes the databases, and the next tenant's provision succeeds, leaving no orphan role."""
    a = make_tenant(kind)
    template = f"instanode_template_{kind.value}"
    with server_as_before(backend):
        held = [connect(a.url, database=db) for db in (template, "postgres", "template1")]
        fresh = PostgresProvider(kind)  # a new process: this server is not prepared yet
        ref = fresh.new_ref(backend)
        fresh.provision(backend, ref, UNDER)
        fresh.deprovision(backend, ref)
    for session in held:
        with pytest.raises((DatabaseError, InterfaceError)):
            session.run("SELECT 1")
    assert roles_of(backend, ref) == [] and not database_exists(backend, ref)
    out = psql(with_database(a.url, template), "SELECT 1")
    assert "is not currently accepting connections" in out.stderr


# -- reaching the server -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1) TO PROGRAM 'id'",
        "CREATE TABLE out (line text); COPY out FROM PROGRAM 'cat /etc/passwd'",
        "CREATE TABLE out (line text); COPY out FROM '/etc/passwd'",
        "COPY (SELECT 1) TO '/tmp/instanode-attack'",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT pg_read_binary_file('/etc/passwd')",
        "SELECT pg_ls_dir('.')",
        "SELECT pg_stat_file('postgresql.conf')",
        "SELECT lo_import('/etc/passwd')",
        "SELECT lo_export(lo_from_bytea(0, 'x'), '/tmp/instanode-attack')",
        "CREATE EXTENSION vector",  # installed on the server, not trusted
        "CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'libc', 'getpid'",
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
        "LOAD 'auto_explain'",
        "SET session_replication_role = replica",
    ],
)
def test_server_access_is_refused(make_tenant: MakeTenant, sql: str) -> None:
    out = psql(make_tenant().url, sql)
    assert out.returncode != 0, out.stdout
    assert any(word in out.stderr for word in REFUSALS), out.stderr


def test_terminating_an_admin_session_is_refused(make_tenant: MakeTenant, backend: Backend) -> None:
    with admin_connection(backend, pooled=False) as admin:
        pid = admin.run("SELECT pg_backend_pid()")[0][0]
        out = psql(make_tenant().url, f"SELECT pg_terminate_backend({pid})")
        assert admin.run("SELECT 1") == [[1]]
    assert out.returncode != 0 and "permission denied to terminate" in out.stderr, out.stderr


@pytest.mark.parametrize("extension", ["plpython3u", "file_fdw", "dblink", "adminpack", "plperlu"])
@pytest.mark.parametrize("statement", ["CREATE EXTENSION", "CREATE LANGUAGE"])
def test_untrusted_extension_cannot_be_created(
    make_tenant: MakeTenant, statement: str, extension: str
) -> None:
    out = psql(make_tenant().url, f"{statement} {extension}")
    assert out.returncode != 0
    assert "permission denied" in out.stderr or "is not available" in out.stderr, out.stderr


# -- role escalation -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sql",
    [
        "ALTER ROLE {me} SUPERUSER",
        "ALTER ROLE {me} CREATEROLE",
        "ALTER ROLE {me} CREATEDB",
        "ALTER ROLE {me} BYPASSRLS",
        "ALTER ROLE {me} REPLICATION",
        "ALTER ROLE {me} CONNECTION LIMIT 100",
        "CREATE ROLE intruder LOGIN PASSWORD 'x'",
        "GRANT pg_read_server_files TO {me}",
        "GRANT pg_write_server_files TO {me}",
        "GRANT pg_execute_server_program TO {me}",
        "GRANT pg_read_all_data TO {me}",
        "GRANT postgres TO {me}",
        "GRANT {other} TO {me}",
        "SET ROLE postgres",
        "SET ROLE {other}",
        "SET SESSION AUTHORIZATION postgres",
        "COMMENT ON ROLE {me} IS 'instanode:vector'",
        "DROP ROLE {other}",
        "ALTER ROLE {other} PASSWORD 'mine'",
    ],
)
def test_role_escalation_is_refused(make_tenant: MakeTenant, sql: str) -> None:
    me, other = make_tenant(), make_tenant()
    statement = sql.format(me=me.ref.principal, other=other.ref.principal)
    assert sqlstate(me.session(), statement) == DENIED


# -- growing a database over its quota ---------------------------------------------------------
# What a tenant prepares while under its limit, to keep growing once over it.
PREPARED = (
    "CREATE TABLE big (body text)",
    "INSERT INTO big SELECT repeat('x', 1000) FROM generate_series(1, 100)",
    "CREATE TABLE notes (id serial PRIMARY KEY, body text)",
    "INSERT INTO notes (body) VALUES ('kept')",
    "CREATE SCHEMA mine",
    "CREATE TABLE mine.more (body text)",
    "GRANT ALL ON big, mine.more TO PUBLIC",
    "GRANT INSERT (body), UPDATE (body) ON notes TO PUBLIC",
    "GRANT ALL ON SCHEMA public, mine TO PUBLIC",
    "GRANT ALL ON DATABASE {db} TO PUBLIC",
    "GRANT ALL ON SEQUENCE notes_id_seq TO PUBLIC",
    "ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC",
    # code that runs as whoever owns it, or as the owner of the table it fires on
    "CREATE FUNCTION run(q text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER "
    "AS $$ BEGIN EXECUTE q; END $$",
    "CREATE FUNCTION grow() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
    "AS $$ BEGIN INSERT INTO big SELECT repeat('d', 1000) FROM generate_series(1, 100); "
    "RETURN NULL; END $$",
    "CREATE FUNCTION grow_as_caller() RETURNS trigger LANGUAGE plpgsql "
    "AS $$ BEGIN INSERT INTO big SELECT repeat('c', 1000) FROM generate_series(1, 100); "
    "RETURN NULL; END $$",
    "CREATE FUNCTION stamp(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE "
    "AS $$ BEGIN PERFORM run('INSERT INTO big VALUES (''analyzed'')'); RETURN t; END $$",
    "CREATE INDEX notes_stamp ON notes (stamp(body))",
    "CREATE TABLE audited (id int)",
    "INSERT INTO audited VALUES (1)",
    "CREATE TRIGGER grows AFTER DELETE ON audited FOR EACH STATEMENT EXECUTE FUNCTION grow()",
    "CREATE TRIGGER grows_too AFTER TRUNCATE ON audited EXECUTE FUNCTION grow()",
    "CREATE TABLE ruled (id int)",
    "INSERT INTO ruled VALUES (1)",
    "CREATE RULE grows AS ON DELETE TO ruled DO ALSO INSERT INTO big VALUES (repeat('r', 1000))",
    "CREATE TABLE parent (id int PRIMARY KEY)",
    "INSERT INTO parent VALUES (1)",
    "CREATE TABLE child (id int REFERENCES parent ON DELETE CASCADE)",
    "INSERT INTO child VALUES (1)",
    "CREATE TRIGGER grows AFTER DELETE ON child EXECUTE FUNCTION grow_as_caller()",
    "CREATE TABLE kin (id int)",
    "CREATE TABLE kid () INHERITS (kin)",
    "CREATE TRIGGER grows AFTER DELETE ON kid EXECUTE FUNCTION grow_as_caller()",
    "CREATE VIEW big_view AS SELECT * FROM big",
    "CREATE RULE grows AS ON DELETE TO big_view DO INSTEAD INSERT INTO big VALUES ('v')",
    "SELECT lo_from_bytea(0, 'held')",
    "DO $$ BEGIN EXECUTE format('GRANT ALL ON LARGE OBJECT %s TO PUBLIC', "
    "(SELECT oid FROM pg_largeobject_metadata)); END $$",
)


def grow(made: Made) -> None:
    """Make the tenant's database bigger than an empty one."""
    session = made.session()
    session.run("CREATE TABLE big (body text)")
    session.run("INSERT INTO big SELECT repeat('x', 1000) FROM generate_series(1, 100)")
    session.close()


def prepare(made: Made) -> None:
    session = made.session()
    for sql in PREPARED:
        session.run(sql.format(db=made.ref.namespace))
    session.close()


def big_rows(backend: Backend, ref: BackendRef) -> int:
    return int(inside(backend, ref, "SELECT count(*) FROM public.big")[0][0])  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def restricted(backend: Backend, provider: PostgresProvider) -> Iterator[Made]:
    """A tenant that prepared every trick above, then went over its quota."""
    with tenants(backend) as make:
        made = make()
        prepare(made)
        [usage] = provider.enforce(backend, [made.tenant(OVER)])
        assert usage.over_quota
        yield made


WRITES = (
    "INSERT INTO big VALUES ('more')",
    "INSERT INTO notes (body) VALUES ('more')",  # the column grant to PUBLIC
    "UPDATE notes SET body = 'changed'",
    "INSERT INTO mine.more VALUES ('more')",
    "CREATE TABLE fresh (x int)",
    "CREATE TABLE mine.fresh (x int)",
    "CREATE TABLE copied AS SELECT * FROM big",
    "SELECT * INTO copied FROM big",
    "CREATE MATERIALIZED VIEW mv AS SELECT * FROM big",
    "CREATE SCHEMA fresh",
    "CREATE TEMP TABLE scratch (x int)",
    "CREATE UNLOGGED TABLE scratch (x int)",
    "ALTER TABLE big ADD COLUMN extra text DEFAULT repeat('x', 1000)",
    "ALTER TABLE big OWNER TO {me}",
    "CREATE INDEX ON big (body)",
    "CREATE TRIGGER t AFTER DELETE ON notes EXECUTE FUNCTION grow()",
    "CREATE RULE r AS ON DELETE TO notes DO ALSO INSERT INTO big VALUES ('r')",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE STATISTICS s ON id, body FROM notes",
    "COMMENT ON TABLE big IS 'a long comment'",
    "SELECT run('INSERT INTO big VALUES (1)')",
    "SELECT run('GRANT INSERT ON big TO {me}')",
    "SELECT stamp('x')",
    "DELETE FROM audited",
    "TRUNCATE audited",
    "DELETE FROM ruled",
    "DELETE FROM parent",
    "DELETE FROM kin",
    "DELETE FROM big_view",
    "SELECT lo_creat(-1)",
    "SELECT lo_create(0)",
    "SELECT lo_from_bytea(0, 'more')",
    "SELECT lo_put(oid, 100000, 'more') FROM pg_largeobject_metadata",
    "SELECT lo_open(oid, 131072) FROM pg_largeobject_metadata",  # INV_WRITE
    "SELECT lo_unlink(oid) FROM pg_largeobject_metadata",
    "SELECT setval('notes_id_seq', 1000)",
    "SET ROLE {owner}",
    "SET ROLE pg_database_owner",
    "ALTER DATABASE {db} SET work_mem = '64MB'",
    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT ALL ON TABLES TO {me}",
    "CLUSTER notes USING notes_pkey",
    "REINDEX TABLE big",
)


@pytest.mark.parametrize("sql", WRITES)
def test_over_quota_write_is_refused(restricted: Made, sql: str) -> None:
    statement = sql.format(
        me=restricted.ref.principal, owner=owner_role(restricted.ref), db=restricted.ref.namespace
    )
    session = restricted.session()
    assert sqlstate(session, statement) == DENIED, statement
    session.close()


def test_over_quota_regrant_to_self_grants_nothing(restricted: Made) -> None:
    session = restricted.session()
    session.run(f"GRANT ALL ON big TO {restricted.ref.principal}")  # only a warning
    assert sqlstate(session, "INSERT INTO big VALUES ('after regrant')") == DENIED


def test_over_quota_copy_from_stdin_is_refused(restricted: Made) -> None:
    out = psql(restricted.url, "COPY big FROM STDIN", stdin="row one\nrow two\n\\.\n")
    assert out.returncode != 0 and "permission denied for table big" in out.stderr


def test_over_quota_psql_lo_import_is_refused(restricted: Made) -> None:
    out = psql(restricted.url, "\\lo_import /etc/hostname")
    assert out.returncode != 0 and "permission denied for function lo_creat" in out.stderr


def test_over_quota_autoanalyze_runs_no_tenant_code(backend: Backend, restricted: Made) -> None:
    """ANALYZE (as autovacuum runs it: as the table's owner) would evaluate the tenant's index
    expression, whose function writes; EXECUTE is gone, the owner's too, so nothing runs."""
    before = big_rows(backend, restricted.ref)
    with pytest.raises(DatabaseError) as err:
        inside(backend, restricted.ref, "ANALYZE public.notes")
    assert "permission denied for function stamp" in str(err.value)
    assert big_rows(backend, restricted.ref) == before


def test_over_quota_tenant_reads_and_frees_space(
    make_tenant: MakeTenant, backend: Backend, provider: PostgresProvider
) -> None:
    made = make_tenant()
    prepare(made)
    provider.enforce(backend, [made.tenant(OVER)])
    session = made.session()
    assert session.run("SELECT body FROM notes") == [["kept"]]
    [[rows]] = session.run("SELECT count(*) FROM big_view")
    assert session.run("SELECT count(*) FROM big") == [[rows]]
    assert session.run("SELECT lo_get(oid) FROM pg_largeobject_metadata") == [[b"held"]]
    session.run("SELECT nextval('notes_id_seq')")
    session.run("DELETE FROM notes")
    session.run("DELETE FROM big WHERE body LIKE 'x%'")
    session.run("TRUNCATE mine.more")
    session.run("TRUNCATE parent CASCADE")  # a table with ON DELETE actions: truncate it
    assert session.run("SELECT count(*) FROM big") == [[rows - 100]]  # nothing grew it


def test_back_under_quota_tenant_writes_again_with_its_code(
    make_tenant: MakeTenant, backend: Backend, provider: PostgresProvider
) -> None:
    made = make_tenant()
    prepare(made)
    provider.enforce(backend, [made.tenant(OVER)])
    [usage] = provider.enforce(backend, [made.tenant(UNDER)])
    assert not usage.over_quota
    assert db_owner(backend, made.ref) == made.ref.principal
    session = made.session()
    session.run("INSERT INTO notes (body) VALUES ('back')")  # runs the stamp() index again
    session.run("CREATE TABLE fresh (x int)")
    session.run("CREATE TEMP TABLE scratch (x int)")
    session.run("SELECT lo_creat(-1)")
    session.run("SELECT run('INSERT INTO big VALUES (1)')")
    session.run("DELETE FROM audited")  # its trigger works again
    assert session.run("SELECT count(*) FROM big WHERE body LIKE 'd%'") == [[100]]


def test_over_quota_switch_ends_open_sessions_and_transactions(
    make_tenant: MakeTenant, backend: Backend, provider: PostgresProvider
) -> None:
    """A transaction in flight (even one holding every lock the switch needs) is ended: what it
    wrote is rolled back and nothing it does later lands."""
    made = make_tenant()
    session = made.session()
    session.run("CREATE TABLE big (body text)")
    session.run("BEGIN")
    session.run("INSERT INTO big SELECT repeat('x', 1000) FROM generate_series(1, 100)")
    session.run("LOCK TABLE big IN ACCESS EXCLUSIVE MODE")
    [usage] = provider.enforce(backend, [made.tenant(OVER)])
    assert usage.over_quota and db_owner(backend, made.ref) == owner_role(made.ref)
    with pytest.raises((DatabaseError, InterfaceError)):
        session.run("INSERT INTO big VALUES ('late')")
        session.run("COMMIT")
    assert big_rows(backend, made.ref) == 0


def test_over_quota_switch_ignores_the_tenants_database_settings(
    make_tenant: MakeTenant, backend: Backend, provider: PostgresProvider
) -> None:
    """Settings a tenant attaches to its database apply to admin sessions too, unless the admin
    overrides them at login: a tiny timeout, a read-only default, a search_path that puts its
    own functions before pg_catalog's, a library that fails to load."""
    made = make_tenant()
    grow(made)
    session = made.session()
    session.run(  # found before pg_catalog's by an admin session that took the search_path
        "CREATE FUNCTION public.current_setting(text) RETURNS text "
        "LANGUAGE sql AS $$ SELECT 'hijacked'::text $$"
    )
    for setting in (
        "statement_timeout = 1",
        "lock_timeout = 1",
        "idle_in_transaction_session_timeout = 1",
        "default_transaction_read_only = on",
        "search_path = public, pg_catalog",
        "local_preload_libraries = 'missing'",
    ):
        session.run(f"ALTER DATABASE {made.ref.namespace} SET {setting}")
    [usage] = provider.enforce(backend, [made.tenant(OVER)])
    assert usage.over_quota and db_owner(backend, made.ref) == owner_role(made.ref)
    with admin_connection(backend) as admin:
        admin.run(f"ALTER DATABASE {made.ref.namespace} RESET ALL")


def test_over_quota_accomplice_tenant_cannot_write_for_it(
    make_tenant: MakeTenant, backend: Backend, provider: PostgresProvider
) -> None:
    """A lets B in (CONNECT, every privilege, grant options passed on to PUBLIC by B): once A
    is over quota B is shut out, and what B passed on is gone too."""
    a, b = make_tenant(), make_tenant()
    grow(a)
    a_session = a.session()
    a_session.run(f"GRANT CONNECT ON DATABASE {a.ref.namespace} TO {b.ref.principal}")
    a_session.run(f"GRANT USAGE ON SCHEMA public TO {b.ref.principal}")
    a_session.run(f"GRANT ALL ON big TO {b.ref.principal} WITH GRANT OPTION")
    b_session = connect(b.url, database=a.ref.namespace)
    b_session.run("GRANT ALL ON big TO PUBLIC")
    provider.enforce(backend, [a.tenant(OVER), b.tenant(UNDER)])
    with pytest.raises((DatabaseError, InterfaceError)):
        b_session.run("INSERT INTO big VALUES ('via b')")
    with pytest.raises(DatabaseError) as err:
        connect(b.url, database=a.ref.namespace)
    assert err.value.args[0]["C"] == DENIED
    assert sqlstate(a.session(), "INSERT INTO big VALUES ('via public')") == DENIED


def test_over_quota_vector_tenant_keeps_similarity_search(
    make_tenant: MakeTenant, backend: Backend
) -> None:
    made = make_tenant(Kind.VECTOR)
    session = made.session()
    session.run("CREATE TABLE items (embedding vector(3))")
    session.run("INSERT INTO items VALUES ('[1,2,3]'), ('[3,2,1]')")
    PostgresProvider(Kind.VECTOR).enforce(backend, [made.tenant(OVER)])
    session = made.session()
    nearest = session.run(
        "SELECT embedding::text FROM items ORDER BY embedding <-> '[1,2,2]' LIMIT 1"
    )
    assert nearest == [["[1,2,3]"]]
    assert sqlstate(session, "INSERT INTO items VALUES ('[0,0,0]')") == DENIED


def test_enforce_twice_changes_nothing_and_heals_an_interrupted_switch(
    make_tenant: MakeTenant, backend: Backend, provider: PostgresProvider
) -> None:
    made = make_tenant()
    grow(made)
    provider.enforce(backend, [made.tenant(OVER)])
    with admin_connection(backend) as admin:  # as if the pass died mid-switch
        admin.run(f"ALTER DATABASE {made.ref.namespace} ALLOW_CONNECTIONS false")
        admin.run(f"ALTER ROLE {made.ref.principal} CONNECTION LIMIT 0")
    [usage] = provider.enforce(backend, [made.tenant(OVER)])
    assert usage.over_quota and db_owner(backend, made.ref) == owner_role(made.ref)
    session = made.session()
    assert session.run("SELECT count(*) FROM big") == [[100]]
    assert sqlstate(session, "INSERT INTO big VALUES ('x')") == DENIED


def test_enforce_skips_a_tenant_whose_role_is_gone(
    make_tenant: MakeTenant, backend: Backend, provider: PostgresProvider
) -> None:
    gone, kept = make_tenant(), make_tenant()
    provider.deprovision(backend, gone.ref)
    usages = provider.enforce(backend, [gone.tenant(OVER), kept.tenant(UNDER)])
    assert [u.ref for u in usages] == [kept.ref]


# -- orphans -------------------------------------------------------------------------------------
def test_grants_from_another_tenant_do_not_block_removal(
    make_tenant: MakeTenant, backend: Backend, provider: PostgresProvider
) -> None:
    victim, other = make_tenant(), make_tenant()
    grow(victim)
    provider.enforce(backend, [victim.tenant(OVER)])  # its o_ role exists now
    session = other.session()
    session.run("CREATE TABLE shared (x int)")
    session.run(f"GRANT SELECT ON shared TO {victim.ref.principal}, {owner_role(victim.ref)}")
    session.run(f"ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO {victim.ref.principal}")
    provider.deprovision(backend, victim.ref)
    assert roles_of(backend, victim.ref) == []


def test_deprovision_removes_a_restricted_tenant_and_both_roles(
    make_tenant: MakeTenant, backend: Backend, provider: PostgresProvider
) -> None:
    made = make_tenant()
    prepare(made)
    provider.enforce(backend, [made.tenant(OVER)])
    assert roles_of(backend, made.ref) == sorted([made.ref.principal, owner_role(made.ref)])
    assert made.ref in provider.inventory(backend)
    provider.deprovision(backend, made.ref)
    assert roles_of(backend, made.ref) == [] and not database_exists(backend, made.ref)
    assert made.ref not in provider.inventory(backend)


def test_inventory_tells_kinds_apart_and_lists_half_made_roles(
    make_tenant: MakeTenant, backend: Backend, provider: PostgresProvider
) -> None:
    plain, vector = make_tenant(), make_tenant(Kind.VECTOR)
    half = provider.new_ref(backend)
    with admin_connection(backend) as admin:  # a role left by an earlier release's failure
        admin.run(f"CREATE ROLE {half.principal} LOGIN")
    try:
        listed = set(provider.inventory(backend))
        vectors = set(PostgresProvider(Kind.VECTOR).inventory(backend))
        assert {plain.ref, half} <= listed and vector.ref not in listed
        assert vector.ref in vectors and not {plain.ref, half} & vectors
    finally:
        provider.deprovision(backend, half)
    assert roles_of(backend, half) == []


@contextmanager
def busy_template(backend: Backend, provider: PostgresProvider) -> Iterator[None]:
    """An admin session held on the template, so CREATE DATABASE waits 5 s and fails."""
    provider.enforce(backend, [])  # prepared: the template refuses connections from now on
    template = f"instanode_template_{provider.kind.value}"
    with admin_connection(backend) as admin:
        admin.run(f"ALTER DATABASE {template} ALLOW_CONNECTIONS true")
    try:
        with admin_connection(backend, template, pooled=False):
            yield
    finally:
        with admin_connection(backend) as admin:
            admin.run(f"ALTER DATABASE {template} ALLOW_CONNECTIONS false")


def test_failed_create_database_is_reported_and_leaves_nothing(
    backend: Backend, provider: PostgresProvider
) -> None:
    """Postgres gives up after 5 s; the client now waits longer, so it sees that error (not a
    timeout of its own on a connection it then cleans up on)."""
    ref = provider.new_ref(backend)
    started = time.monotonic()
    with busy_template(backend, provider), pytest.raises(DatabaseError) as err:
        provider.provision(backend, ref, UNDER)
    assert "is being accessed by other users" in str(err.value)
    assert time.monotonic() - started < 15
    assert roles_of(backend, ref) == [] and not database_exists(backend, ref)


def kill_when_creating(backend: Backend, ref: BackendRef, then: Callable[[], None]) -> None:
    """In the background: once an admin session runs CREATE DATABASE for ``ref``, call ``then``
    and end that session."""

    def watch() -> None:
        deadline = time.monotonic() + 10
        with admin_connection(backend, pooled=False) as admin:
            while time.monotonic() < deadline:
                found = admin.run(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE query LIKE 'CREATE DATABASE%' AND strpos(query, :db) > 0",
                    db=ref.namespace,
                )
                if found:
                    then()
                    admin.run("SELECT pg_terminate_backend(:pid)", pid=found[0][0])
                    return
                time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


def test_killed_provision_connection_is_cleaned_up_on_a_fresh_one(
    backend: Backend, provider: PostgresProvider
) -> None:
    ref = provider.new_ref(backend)
    with busy_template(backend, provider), pytest.raises(BackendDownError) as err:
        kill_when_creating(backend, ref, lambda: None)
        provider.provision(backend, ref, UNDER)
    assert not isinstance(err.value, BackendUnreachableError)
    assert roles_of(backend, ref) == [] and not database_exists(backend, ref)


class CuttableProxy:
    """A TCP relay in front of a real server that can be cut (as a network partition would)."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self._target))
                self._sockets += [client, server]
                for a, b in ((client, server), (server, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)

    def cut(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() and stops listening
        self._listener.close()
        for sock in self._sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_provision_that_cannot_clean_up_raises_backend_down(
    backend: Backend, provider: PostgresProvider
) -> None:
    """The server gone mid-provision: the clean-up cannot connect either, so the provider says
    the backend is down (not unreachable): the service keeps the record for the reaper."""
    proxy = CuttableProxy(urlsplit(backend.admin_url).port or 5432)
    admin = urlsplit(backend.admin_url)
    via = replace(
        backend,
        name=f"{backend.name}-via-proxy",
        admin_url=urlunsplit(
            admin._replace(netloc=f"{admin.netloc.rsplit(':', 1)[0]}:{proxy.port}")
        ),
    )
    ref = provider.new_ref(via)
    try:
        with busy_template(backend, provider), pytest.raises(BackendDownError) as err:
            kill_when_creating(backend, ref, proxy.cut)
            provider.provision(via, ref, UNDER)
        assert not isinstance(err.value, BackendUnreachableError)
        assert "could not remove" in str(err.value)
    finally:
        provider.deprovision(backend, replace(ref, backend=backend.name))
    assert roles_of(backend, ref) == []
