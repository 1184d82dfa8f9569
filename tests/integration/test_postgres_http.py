"""An agent's view: provision over HTTP, then use the returned URL with real clients."""

from __future__ import annotations

import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import pg8000.native
import pytest
import requests
from localstack_client.session import Session

from devstack.services import Postgres
from devstack.stack import Stack
from tests.conftest import connect, fresh_ip
from tests.integration.conftest import provision

pytestmark = pytest.mark.integration


def sqlstate(exc: pg8000.native.DatabaseError) -> str:
    return str(exc.args[0]["C"])


def test_db_new_url_works_with_pg8000_and_psql(api: str) -> None:
    url = provision(api, "/db/new").json()["connection_url"]
    conn = connect(url)
    conn.run("CREATE TABLE notes (body text)")
    conn.run("INSERT INTO notes VALUES ('from pg8000')")
    conn.close()
    out = subprocess.run(
        [Postgres.bin("psql"), url, "-tAc", "SELECT body FROM notes"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "from pg8000"


def two_on_one_server(api: str) -> tuple[str, str]:
    """Connection URLs of two tenants placed on the same backend server."""
    seen: dict[str, str] = {}
    for _ in range(6):
        url = provision(api, "/db/new").json()["connection_url"]
        server = urlsplit(url).netloc.rsplit("@", 1)[1]
        if server in seen:
            return seen[server], url
        seen[server] = url
    raise AssertionError("placement never put two tenants on one server")


def test_tenant_cannot_open_another_tenants_database(api: str) -> None:
    a, b = two_on_one_server(api)
    b_db = urlsplit(b).path.lstrip("/")
    with pytest.raises(pg8000.native.DatabaseError) as exc:
        connect(a, database=b_db)  # A's role, B's database
    assert sqlstate(exc.value) == "42501"  # insufficient privilege: CONNECT revoked
    pa, pb = urlsplit(a), urlsplit(b)
    wrong = urlunsplit(pb._replace(netloc=f"{pb.username}:{pa.password}@{pb.hostname}:{pb.port}"))
    with pytest.raises(pg8000.native.DatabaseError) as exc:
        connect(wrong)  # B's user with A's password
    assert sqlstate(exc.value) == "28P01"


def test_tenant_cannot_read_other_tenants_sizes_or_create_roles(api: str) -> None:
    a_url, b_url = two_on_one_server(api)
    a, b_db = connect(a_url), urlsplit(b_url).path.lstrip("/")
    with pytest.raises(pg8000.native.DatabaseError) as exc:
        a.run("SELECT pg_database_size(:d)", d=b_db)
    assert sqlstate(exc.value) == "42501"
    with pytest.raises(pg8000.native.DatabaseError) as exc:
        a.run("CREATE ROLE intruder LOGIN")
    assert sqlstate(exc.value) == "42501"
    a.close()


def test_third_simultaneous_connection_is_refused(api: str) -> None:
    url = provision(api, "/db/new").json()["connection_url"]
    held = [connect(url), connect(url)]
    with pytest.raises(pg8000.native.DatabaseError) as exc:
        connect(url)
    assert sqlstate(exc.value) == "53300"  # too many connections for role
    for conn in held:
        conn.close()


def test_vector_hnsw_and_ivfflat_answer_similarity_queries(api: str) -> None:
    conn = connect(provision(api, "/vector/new").json()["connection_url"])
    conn.run("CREATE TABLE items (id bigserial PRIMARY KEY, embedding vector(3))")
    conn.run(
        "INSERT INTO items (embedding) SELECT ARRAY[i, i * 2, 100 - i]::vector "
        "FROM generate_series(1, 200) AS i"
    )
    conn.run("CREATE INDEX items_hnsw ON items USING hnsw (embedding vector_l2_ops)")
    conn.run(
        "CREATE INDEX items_ivf ON items USING ivfflat (embedding vector_cosine_ops) "
        "WITH (lists = 10)"
    )
    conn.run("SET enable_seqscan = off")
    nearest = conn.run("SELECT id FROM items ORDER BY embedding <-> '[50, 100, 50]' LIMIT 1")
    assert nearest == [[50]]
    plan_l2 = " ".join(
        r[0]
        for r in conn.run("EXPLAIN SELECT id FROM items ORDER BY embedding <-> '[1,2,3]' LIMIT 3")
    )
    plan_cos = " ".join(
        r[0]
        for r in conn.run("EXPLAIN SELECT id FROM items ORDER BY embedding <=> '[1,2,3]' LIMIT 3")
    )
    assert "items_hnsw" in plan_l2 and "items_ivf" in plan_cos
    conn.close()


def test_twenty_concurrent_same_key_requests_make_one_database(api: str, stack: Stack) -> None:
    ip, key = fresh_ip(), str(uuid.uuid4())
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(
            pool.map(
                lambda _: provision(api, "/db/new", "race", ip=ip, **{"Idempotency-Key": key}),
                range(20),
            )
        )
    created = [r for r in responses if r.status_code == 201]
    assert all(r.status_code in (201, 409) for r in responses), [r.text for r in responses]
    assert len({r.json()["id"] for r in created}) == 1
    assert sum(r.headers.get("X-Idempotent-Replay") != "true" for r in created) == 1
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"] == "idempotency_in_progress" and r.headers["Retry-After"]
    owner = f"fp:{ip.rsplit('.', 1)[0]}.0/24"
    table = (
        Session(localstack_host=f"127.0.0.1:{stack.profile.moto_port}")
        .resource("dynamodb")
        .Table("instanode-resources")
    )
    records = table.query(
        IndexName="by_owner",
        KeyConditionExpression="#o = :o",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":o": owner},
    )["Items"]
    assert len(records) == 1


def test_unknown_route_is_a_404_envelope(api: str) -> None:
    resp = requests.get(f"{api}/no/such/route", timeout=5)
    assert resp.status_code == 404
    assert resp.json()["ok"] is False and resp.json()["error"] == "not_found"


def test_readyz_over_http_lists_both_backends(api: str) -> None:
    body = requests.get(f"{api}/readyz", timeout=10).json()
    assert body["overall"] == "ok"
    assert {"postgres:pg1", "postgres:pg2"} <= body["checks"].keys()


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code"),
    [
        ("POST", "/db/new", {"Content-Type": "application/json"}, b"{}", 400, "name_required"),
        (
            "POST",
            "/db/new",
            {"Content-Type": "application/json"},
            b'{"name":"#"}',
            400,
            "invalid_name",
        ),
        (
            "POST",
            "/vector/new",
            {"Content-Type": "application/json"},
            b"{oops",
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/db/new",
            {"Content-Type": "text/plain"},
            b'{"name":"a"}',
            415,
            "unsupported_content_type",
        ),
        ("GET", "/db/new", {}, b"", 405, "method_not_allowed"),
        ("DELETE", "/nowhere", {}, b"", 404, "not_found"),
    ],
)
def test_bad_requests_over_http_get_the_envelope(
    api: str, method: str, path: str, headers: dict[str, str], body: bytes, status: int, code: str
) -> None:
    headers = {**headers, "X-Forwarded-For": fresh_ip(), "Connection": "close"}
    resp = requests.request(method, f"{api}{path}", headers=headers, data=body, timeout=10)
    assert resp.status_code == status
    assert resp.headers["Content-Type"].startswith("application/json")
    envelope = resp.json()
    assert envelope["ok"] is False and envelope["error"] == code and envelope["message"]
    assert envelope["request_id"]
