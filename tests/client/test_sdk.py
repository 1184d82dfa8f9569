"""The Python SDK (client/instanode) against the live test stack over HTTP: every method, the
error envelope, retries with the same Idempotency-Key through a faulty proxy, claim and
sign-in by the stack's real SMTP, storage and webhooks used for real, and a deploy and a stack
built by the local podman backend."""

from __future__ import annotations

import io
import os
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pg8000.native
import pytest
import redis
from instanode import Client, InstanodeError
from instanode.archive import tar_directory
from instanode.client import MULTIPART_TARBALL_MAX_BYTES

from chalicelib.routes.requests import MULTIPART_MAX_BYTES
from devstack.stack import Stack
from tests.api_server import free_port
from tests.client.conftest import Proxy, follow_link, new_email, set_tier
from tests.conftest import connect

pytestmark = pytest.mark.integration

BASE = "localhost/instanode/busybox:latest"  # as tests/functional/test_deploys.py builds it
HTTPD = '["httpd", "-f", "-p", "8080", "-h", "/www"]'
BLOB_BYTES = MULTIPART_MAX_BYTES + 200_000  # over the API's multipart cap


# -- provisioning ---------------------------------------------------------------------------
def test_db_new_gives_a_database_that_answers(client: Client) -> None:
    made = client.db.new("sdk-db")
    assert (made.kind, made.name, made.tier) == ("postgres", "sdk-db", "anonymous")
    assert made.id.startswith("res_") and made.token and made.upgrade_jwt and made.expires_at
    assert made.env == {"DATABASE_URL": made.connection_url}
    assert made.internal_url and made.raw["ok"] is True
    conn = connect(made.env["DATABASE_URL"])
    assert conn.run("SELECT 1") == [[1]]
    conn.close()


def test_vector_new_has_the_vector_extension(client: Client) -> None:
    made = client.vector.new("sdk-vector")
    assert made.kind == "vector" and made.env["DATABASE_URL"] == made.connection_url
    conn = connect(made.env["DATABASE_URL"])
    assert conn.run("SELECT extname FROM pg_extension WHERE extname = 'vector'") == [["vector"]]
    conn.close()


def test_cache_new_gives_a_keyspace_under_its_prefix(client: Client) -> None:
    made = client.cache.new("sdk-cache")
    assert made.kind == "redis" and made.connection_url
    prefix = made.raw["key_prefix"]
    assert made.env == {"REDIS_URL": made.connection_url, "REDIS_KEY_PREFIX": prefix}
    r = redis.Redis.from_url(made.env["REDIS_URL"])
    key = made.env["REDIS_KEY_PREFIX"] + "k"
    assert r.set(key, "v") and r.get(key) == b"v"
    r.close()


def test_nosql_new_gives_a_mongodb_url(client: Client) -> None:
    made = client.nosql.new("sdk-nosql")
    assert made.kind == "mongodb"
    assert made.env == {"MONGODB_URL": made.connection_url}
    assert urlsplit(made.env["MONGODB_URL"]).scheme == "mongodb"


def test_queue_new_gives_nats_url_and_credentials(client: Client) -> None:
    made = client.queue.new("sdk-queue")
    creds = made.raw["credentials"]
    assert made.kind == "queue" and made.raw["auth_mode"] == "isolated"
    assert made.env == {
        "NATS_URL": made.connection_url,
        "NATS_SUBJECT_PREFIX": made.raw["subject_prefix"],
        "NATS_JWT": creds["nats_jwt"],
        "NATS_NKEY": creds["nats_nkey"],
    }
    assert urlsplit(made.env["NATS_URL"]).scheme == "nats"


def test_invalid_name_is_an_instanode_error_with_agent_action(client: Client) -> None:
    with pytest.raises(InstanodeError) as caught:
        client.db.new("-no good-")
    err = caught.value
    assert (err.status, err.error) == (400, "invalid_name")
    assert err.agent_action and err.message and err.retry_after is None
    assert err.body["ok"] is False and err.body["error"] == "invalid_name"


def test_no_answer_is_status_0_network_error() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", retries=1) as c,
        pytest.raises(InstanodeError) as caught,
    ):
        c.capabilities()
    assert (caught.value.status, caught.value.error) == (0, "network_error")
    assert caught.value.agent_action


# -- idempotency and retries ----------------------------------------------------------------
def test_the_same_idempotency_key_twice_is_one_resource(client: Client, proxy: Proxy) -> None:
    key = str(uuid.uuid4())
    first = client.cache.new("sdk-once", idempotency_key=key)
    again = client.cache.new("sdk-once", idempotency_key=key)
    assert (again.id, again.token, again.connection_url) == (
        first.id,
        first.token,
        first.connection_url,
    )
    sent = [s.headers.get("idempotency-key") for s in proxy.seen]
    assert sent == [key, key]


def test_typed_creates_send_a_fresh_key_each(client: Client, proxy: Proxy) -> None:
    client.db.new("sdk-a")
    client.webhook.new("sdk-b")
    keys = [s.headers["idempotency-key"] for s in proxy.seen]
    assert len(keys) == 2 and len(set(keys)) == 2 and all(uuid.UUID(k) for k in keys)


def test_a_503_with_retry_after_is_retried_with_the_same_key(client: Client, proxy: Proxy) -> None:
    proxy.fail(1, status=503, retry_after="1")
    started = time.monotonic()
    made = client.db.new("sdk-retried")
    waited = time.monotonic() - started
    assert [s.answered_by_proxy for s in proxy.seen] == [True, False]
    first, second = (s.headers["idempotency-key"] for s in proxy.seen)
    assert first == second and waited >= 1.0  # the same key, after Retry-After
    conn = connect(made.env["DATABASE_URL"])  # and the retry made a real database
    conn.close()


def test_retries_stop_after_the_budget(proxy: Proxy) -> None:
    proxy.fail(5, status=502, retry_after="0")
    with Client(proxy.url, retries=2) as c, pytest.raises(InstanodeError) as caught:
        c.db.new("sdk-gives-up")
    assert (caught.value.status, caught.value.error) == (502, "http_502")
    assert len(proxy.seen) == 3 and len({s.headers["idempotency-key"] for s in proxy.seen}) == 1


def test_a_post_without_a_key_is_not_retried(client: Client, proxy: Proxy) -> None:
    proxy.fail(1, status=503)
    with pytest.raises(InstanodeError) as caught:
        client.request("POST", "/auth/cli")
    assert caught.value.status == 503 and caught.value.retry_after == 1.0
    assert len(proxy.seen) == 1 and "idempotency-key" not in proxy.seen[0].headers


# -- storage and webhooks -------------------------------------------------------------------
def test_storage_presign_put_then_get_the_object(client: Client) -> None:
    made = client.storage.new("sdk-files")
    assert made.kind == "storage" and made.agent_action == "use_presign_endpoint"
    assert made.env["STORAGE_PREFIX"] == made.raw["prefix"]
    assert made.env["STORAGE_PRESIGN_URL"].endswith(f"/storage/{made.token}/presign")
    data = os.urandom(2048)
    assert made.token
    put = client.storage.presign(made.token, "reports/a.bin", operation="PUT", content_length=2048)
    assert put.method == "PUT" and put.key == f"{made.raw['prefix']}/reports/a.bin"
    assert put.headers == {"Content-Length": "2048"} and put.expires_at
    assert httpx.put(put.url, content=data, headers=put.headers, timeout=10).status_code == 200
    get = client.storage.presign(made.token, put.key, expires_in=60)
    assert get.method == "GET" and get.key == put.key
    assert httpx.get(get.url, timeout=10).content == data


def test_presign_of_a_bad_key_is_refused(client: Client) -> None:
    made = client.storage.new("sdk-files")
    assert made.token
    with pytest.raises(InstanodeError) as caught:
        client.storage.presign(made.token, "../escape", operation="GET")
    assert caught.value.status == 400 and caught.value.agent_action


def test_webhook_requests_come_back_oldest_first(client: Client) -> None:
    made = client.webhook.new("sdk-hook")
    receive = made.raw["receive_url"]
    assert made.kind == "webhook" and made.connection_url is None
    assert made.env == {"WEBHOOK_URL": receive}
    assert made.token
    httpx.post(f"{receive}/github/push?x=1", content=b'{"a": 1}', timeout=10).raise_for_status()
    httpx.put(receive, content=b"\xff\x00", timeout=10).raise_for_status()
    got = client.webhook.requests(made.token)
    assert [(r.method, r.body) for r in got] == [("POST", b'{"a": 1}'), ("PUT", b"\xff\x00")]
    assert got[0].path.endswith("/github/push") and got[0].query == {"x": ["1"]}
    assert got[0].body_text == '{"a": 1}' and got[1].body_text is None
    assert got[0].seq < got[1].seq
    assert [r.method for r in client.webhook.requests(made.token, after=got[0].seq)] == ["PUT"]


# -- meta, claim, sign-in, the team's resources ---------------------------------------------
def test_capabilities_lists_the_tiers(client: Client) -> None:
    caps = client.capabilities()
    assert {"anonymous", "free", "hobby", "pro"} <= set(caps["tiers"])
    assert "deploy_base_images" in caps


def test_claim_by_email_then_list_get_rotate_delete(
    client: Client, network_api: str, stack: Stack
) -> None:
    db = client.db.new("sdk-claimed")
    cache = client.cache.new("sdk-claimed-cache")
    email = new_email()
    assert db.upgrade_jwt
    assert client.claim(db.upgrade_jwt, email)["ok"] is True
    with Client(network_api, token=follow_link(stack, email)) as team:
        assert team.me()["user"]["email"] == email
        listed = team.resources.list()
        assert {(r.id, r.kind) for r in listed} == {(db.id, "postgres"), (cache.id, "redis")}
        got = team.resources.get(db.id)
        assert (got.id, got.kind, got.name, got.tier) == (db.id, "postgres", "sdk-claimed", "free")
        assert got.token == db.token

        rotated = team.resources.rotate(db.id)
        assert rotated.kind == "postgres" and rotated.connection_url
        assert rotated.connection_url != db.connection_url
        assert rotated.env == {"DATABASE_URL": rotated.connection_url}
        connect(rotated.connection_url).close()
        assert db.connection_url
        with pytest.raises(pg8000.native.DatabaseError):
            connect(db.connection_url)

        assert team.resources.delete(cache.id) == {"ok": True, "id": cache.id, "status": "deleted"}
        assert team.resources.get(cache.id).raw["status"] == "deleted"
        with pytest.raises(InstanodeError) as caught:
            team.resources.get("res_nothing")
        assert caught.value.status == 404 and caught.value.agent_action


def test_claim_with_a_bad_email_is_refused(client: Client) -> None:
    made = client.webhook.new("sdk-hook")
    assert made.upgrade_jwt
    with pytest.raises(InstanodeError) as caught:
        client.claim(made.upgrade_jwt, "not-an-email")
    assert (caught.value.status, caught.value.error) == (400, "invalid_email_format")


def test_device_login_start_poll_approve(
    client: Client, network_api: str, sign_in: Callable[..., str]
) -> None:
    started = client.device_login_start()
    assert started.session_id and started.user_code and started.poll_interval > 0
    assert started.auth_url.endswith(started.session_id) and started.expires_at
    assert client.device_login_poll(started.session_id)["status"] == "pending"
    with Client(network_api, token=sign_in()) as browser:
        path = f"/auth/cli/{started.session_id}/approve"
        browser.request("POST", path, json={"user_code": started.user_code})
    approved = client.device_login_poll(started.session_id)
    assert approved["status"] == "approved" and approved["api_token"].startswith("ink_")
    with Client(network_api, token=approved["api_token"]) as cli:
        assert cli.me()["auth"]["via"] == "api_key"


def test_api_keys_create_and_list(network_api: str, sign_in: Callable[..., str]) -> None:
    with Client(network_api, token=sign_in()) as team:
        made = team.api_keys.create("sdk-ci", scope="write")
        assert made["api_token"].startswith("ink_") and made["scope"] == "write"
        assert [k["name"] for k in team.api_keys.list()] == ["sdk-ci"]
        with Client(network_api, token=made["api_token"]) as ci:
            assert ci.me()["auth"]["scope"] == "write"
            assert ci.db.new("sdk-team-db").tier == "free"


def test_token_comes_from_the_environment(
    network_api: str, sign_in: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INSTANODE_API", network_api + "/")
    monkeypatch.setenv("INSTANODE_TOKEN", sign_in())
    with Client() as c:
        assert c.api == network_api and c.token
        assert c.me()["auth"]["via"] == "session"


# -- build contexts -------------------------------------------------------------------------
def names_in(tarball: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        return sorted(m.name for m in tar.getmembers())


def test_tar_directory_honours_dockerignore_like_docker(tmp_path: Path) -> None:
    files = {
        "Dockerfile": "FROM x\n",
        ".dockerignore": "# comment\n*.log\n**/secret*\nbuild\n!build/keep.txt\nDockerfile\n",
        "a.log": "",
        "sub/a.log": "",  # '*.log' is the root only, as in Docker (not .gitignore)
        "sub/secret.txt": "",
        "secret.env": "",
        "build/out.o": "",
        "build/keep.txt": "",
        "src/main.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "link").symlink_to("src/main.py")
    assert names_in(tar_directory(tmp_path)) == [
        ".dockerignore",
        "Dockerfile",  # always sent, as Docker does
        "build/keep.txt",
        "link",
        "src",
        "src/main.py",
        "sub",
        "sub/a.log",
    ]
    assert tar_directory(tmp_path) == tar_directory(tmp_path)  # the same tree, the same bytes


def test_the_sdk_sends_by_upload_url_before_the_api_would_refuse_multipart() -> None:
    assert MULTIPART_TARBALL_MAX_BYTES < MULTIPART_MAX_BYTES - 64 * 1024  # room for the form


def test_a_link_out_of_the_directory_is_refused_before_sending(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(InstanodeError) as caught:
        tar_directory(tmp_path)
    assert caught.value.error == "invalid_tarball" and "passwd" in caught.value.message


def test_a_stack_service_without_a_context_is_refused_before_sending(
    client: Client, tmp_path: Path
) -> None:
    manifest = tmp_path / "instant.yaml"
    manifest.write_text("services:\n  web: {}\n  api: {}\n")
    (tmp_path / "web").mkdir()
    with pytest.raises(InstanodeError) as caught:
        client.stacks.new(manifest)
    assert caught.value.error == "service_context_not_found" and "'api'" in caught.value.message


def test_stack_contexts_from_dirs_go_as_their_services_parts(
    client: Client, tmp_path: Path
) -> None:
    manifest = tmp_path / "instant.yaml"
    manifest.write_text("services:\n  web: {}\n")
    with pytest.raises(InstanodeError) as caught:
        client.stacks.new(manifest, name="sdk-stack", dirs={"web": b"not a tarball"})
    assert (caught.value.status, caught.value.error) == (400, "invalid_tarball")


# -- deploys and stacks (real podman builds) -------------------------------------------------
@pytest.fixture(scope="module")
def base_image() -> None:
    from chalicelib.deploy.baseimage import ensure_busybox_image

    assert ensure_busybox_image() == BASE


@pytest.fixture
def hobby(network_api: str, stack: Stack, base_image: None) -> Iterator[Client]:
    """A session of a team on Hobby (1 app)."""
    email = new_email()
    with Client(network_api) as anonymous:
        anonymous.request("POST", "/auth/email/start", json={"email": email})
    token = follow_link(stack, email)
    set_tier(stack, email, "hobby")
    with Client(network_api, token=token) as team:
        yield team


def get_app(url: str, path: str) -> httpx.Response:
    """*.localhost is loopback: connect to 127.0.0.1 with the URL's host."""
    parts = urlsplit(url)
    return httpx.get(f"http://127.0.0.1:{parts.port}{path}", headers={"Host": parts.netloc})


def write_site(root: Path, body: str, blob_bytes: int = 0) -> None:
    root.mkdir(exist_ok=True)
    (root / "Dockerfile").write_text(f"FROM {BASE}\nCOPY . /www/\nCMD {HTTPD}\n")
    (root / "index.html").write_text(body)
    (root / ".dockerignore").write_text("secret.txt\n*.tmp\n")
    (root / "secret.txt").write_text("not for the image")
    if blob_bytes:
        (root / "blob.bin").write_bytes(os.urandom(blob_bytes))  # incompressible


@pytest.mark.slow
def test_deploy_over_the_cap_by_upload_url_then_redeploy_env_and_delete(
    hobby: Client, proxy: Proxy, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    write_site(site, "v1", blob_bytes=BLOB_BYTES)
    made = hobby.deploy(site, name="sdk-web", env={"GREETING": "hi"})
    assert made.status == "building" and made.revision == 1 and made.url
    paths = [(s.method, s.path.split("?")[0]) for s in proxy.seen if s.path.startswith("/deploy")]
    assert paths == [("POST", "/deploy/upload-url"), ("POST", "/deploy/new")]
    assert proxy.seen[-1].headers["content-type"] == "application/json"

    with pytest.raises(InstanodeError) as caught:
        hobby.deployments.wait(made.id, until=("deleted",), timeout=0)
    assert caught.value.error == "wait_timeout" and caught.value.body["id"] == made.id
    lines = list(hobby.deployments.logs(made.id, follow=True))
    assert lines and any("STEP" in line or "COPY" in line for line in lines), lines
    app = hobby.deployments.wait(made.id, timeout=120)
    assert app.status == "healthy", hobby.deployments.events(made.id)
    assert get_app(app.url or "", "/index.html").text == "v1"
    assert get_app(app.url or "", "/secret.txt").status_code == 404  # .dockerignore'd
    assert len(get_app(app.url or "", "/blob.bin").content) == BLOB_BYTES
    assert [d.id for d in hobby.deployments.list()] == [made.id]
    assert hobby.deployments.get(made.id).raw["env_vars"] == ["GREETING"]
    assert isinstance(hobby.deployments.events(made.id), list)

    write_site(site, "v2")
    (site / "blob.bin").unlink()
    again = hobby.deploy(site, name="sdk-web", redeploy=True)  # small: multipart
    assert (again.id, again.url, again.revision) == (made.id, made.url, 2)
    assert proxy.seen[-1].headers["content-type"].startswith("multipart/form-data")
    assert hobby.deployments.wait(made.id, timeout=120).status == "healthy"
    assert get_app(app.url or "", "/index.html").text == "v2"

    changed = hobby.deployments.set_env(made.id, {"GREETING": "", "MODE": "prod"})
    assert changed["env_vars"] == ["MODE"] and changed["revision"] == 3
    assert hobby.deployments.wait(made.id, timeout=120).status == "healthy"
    rebuilt = hobby.deployments.redeploy(made.id)
    assert rebuilt.revision == 4 and rebuilt.status == "building"
    assert hobby.deployments.wait(made.id, timeout=120).status == "healthy"

    gone = hobby.deployments.delete(made.id, skip_email_confirmation=True)
    assert gone["ok"] is True
    with pytest.raises(InstanodeError) as caught:
        hobby.deployments.get(made.id)
    assert caught.value.status == 404


@pytest.mark.slow
def test_stack_new_from_instant_yaml_then_get_logs_and_delete(
    client: Client, tmp_path: Path, base_image: None
) -> None:
    write_site(tmp_path / "web", "stacked")
    manifest = tmp_path / "instant.yaml"
    manifest.write_text("services:\n  web:\n    port: 8080\n    env: {MODE: demo}\n")
    made = client.stacks.new(manifest, name="sdk-stack")
    assert made.slug.startswith("sdk-stack-") and made.status == "building"
    assert [s["name"] for s in made.services] == ["web"] and made.stack_url
    lines = list(client.stacks.logs(made.slug, "web", follow=True))
    assert lines
    got = client.stacks.get(made.slug)
    assert got.status == "healthy" and got.raw["manifest"]["services"]["web"]["env"] == ["MODE"]
    assert get_app(got.stack_url or "", "/index.html").text == "stacked"
    with pytest.raises(InstanodeError) as caught:
        client.stacks.set_env(made.slug, {"MODE": "x"})
    assert (caught.value.status, caught.value.error) == (403, "stack_immutable")
    with pytest.raises(InstanodeError) as caught:
        client.stacks.redeploy(made.slug)
    assert caught.value.error == "stack_immutable"
    assert client.stacks.delete(made.slug)["ok"] is True
