"""The MCP server (``instanode mcp``, and ``python -m instanode.mcp_server --http``) through a real
MCP client session of the official SDK, over stdio and over streamable HTTP, against the live
test stack: every tool, an error result, the llms.txt resource, the claim and device-flow
sign-in, and a deploy followed to healthy (podman builds: marked slow)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextResourceContents

from devstack.stack import Stack
from tests.api_server import free_port
from tests.client.conftest import follow_link, new_email, set_tier
from tests.conftest import connect
from tests.functional import test_deploys

pytestmark = pytest.mark.integration

# stdio through the CLI's entry point (what an MCP host spawns: `instanode mcp`), HTTP through
# the module's own
STDIO_SERVER = [sys.executable, "-m", "instanode.cli", "mcp"]
HTTP_SERVER = [sys.executable, "-m", "instanode.mcp_server", "--http"]
TOOLS = {
    "create_postgres",
    "create_vector",
    "create_cache",
    "create_nosql",
    "create_queue",
    "create_storage",
    "create_webhook",
    "claim_resource",
    "claim_token",
    "list_resources",
    "delete_resource",
    "get_api_token",
    "create_deploy",
    "create_stack",
    "get_stack",
    "list_deployments",
    "get_deployment",
    "redeploy",
    "delete_deployment",
    "get_capabilities",
    "get_deployment_events",
    "presign_storage",
    "rotate_credentials",
    "update_deploy_env",
    "update_stack_env",
}
Session = Callable[[Callable[[Client], Awaitable[None]]], None]


# -- the two transports ----------------------------------------------------------------------
def server_env(api: str, home: Path, token: str | None) -> dict[str, str]:
    """What the server process gets: the API, a HOME of its own (no saved login but the test's),
    and the token when one is given."""
    env = {"INSTANODE_API": api, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    return {**env, "INSTANODE_TOKEN": token} if token else env


@asynccontextmanager
async def over_stdio(env: dict[str, str], cwd: Path) -> AsyncIterator[Client]:
    command, *args = STDIO_SERVER
    params = StdioServerParameters(command=command, args=args, env=env, cwd=cwd)
    async with Client(params) as mcp:
        yield mcp


@asynccontextmanager
async def over_http(env: dict[str, str], cwd: Path) -> AsyncIterator[Client]:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INSTANODE_")}
    server = subprocess.Popen([*HTTP_SERVER, f"127.0.0.1:{port}"], env={**clean, **env}, cwd=cwd)
    try:
        wait_listening(port, server)
        async with Client(f"http://127.0.0.1:{port}/mcp") as mcp:
            yield mcp
    finally:
        server.terminate()
        server.wait(timeout=10)


def wait_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, "the MCP server exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("the MCP server did not listen")


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home" / ".config").mkdir(parents=True)
    return tmp_path / "home"


def session_of(kind: str, api: str, home: Path, token: str | None = None) -> Session:
    """``session(scenario)``: run ``scenario(mcp)`` in a session with a fresh server."""
    opener = over_stdio if kind == "stdio" else over_http

    def run(scenario: Callable[[Client], Awaitable[None]]) -> None:
        async def main() -> None:
            async with opener(server_env(api, home, token), home) as mcp:
                await scenario(mcp)

        anyio.run(main)

    return run


# -- reading results ------------------------------------------------------------------------
async def ok(mcp: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await mcp.call_tool(tool, args)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    assert json.loads(result.content[-1].text) == result.structured_content  # type: ignore[union-attr]
    return result.structured_content


async def refused(mcp: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await mcp.call_tool(tool, args)
    assert result.is_error, text_of(result)
    body = result.structured_content
    assert body is not None and body["ok"] is False and body["error"] and body["agent_action"]
    assert text_of(result).startswith(f"agent_action: {body['agent_action']}")  # surfaced first
    return body


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


# -- tests ----------------------------------------------------------------------------------
def test_every_tool_is_listed_with_a_description_and_llms_txt_is_a_resource(
    transport: str, network_api: str, api: str, home: Path
) -> None:
    async def scenario(mcp: Client) -> None:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.description and len(tool.description) > 80, tool.name
        assert "24 hours" in (tools["create_postgres"].description or "")
        assert tools["create_deploy"].input_schema["required"] == ["path", "name"]
        listed = (await mcp.list_resources()).resources
        assert [str(r.uri) for r in listed] == ["instanode://llms.txt"]
        read = await mcp.read_resource("instanode://llms.txt")
        content = read.contents[0]
        assert isinstance(content, TextResourceContents)
        assert content.text == httpx.get(f"{api}/llms.txt", timeout=10).text
        assert f"POST {api}/db/new" in content.text

    session_of(transport, network_api, home)(scenario)


def test_an_invalid_name_is_an_error_result_with_agent_action(
    transport: str, network_api: str, home: Path
) -> None:
    async def scenario(mcp: Client) -> None:
        body = await refused(mcp, "create_postgres", name="-not a name!")
        assert body["error"] == "invalid_name" and body["http_status"] == 400
        missing = await refused(mcp, "create_deploy", path=str(home / "nowhere"), name="x")
        assert missing["error"] == "path_not_found"
        unreadable = await refused(mcp, "create_deploy", path="/proc/self/mem", name="x")
        assert unreadable["error"] == "local_file_error"  # an OSError, not a crash
        bad = await refused(mcp, "claim_resource", upgrade_jwt="not-a-jwt")
        assert bad["error"] == "invalid_token"
        capabilities = await ok(mcp, "get_capabilities")  # still serving after the errors
        assert capabilities["ok"] is True

    session_of(transport, network_api, home)(scenario)


def test_an_agent_claims_signs_in_and_provisions_every_kind(
    network_api: str, api: str, stack: Stack, home: Path
) -> None:
    email = new_email()

    async def scenario(mcp: Client) -> None:
        db = await ok(mcp, "create_postgres", name="mcp db")
        assert db["tier"] == "anonymous" and db["upgrade_jwt"] and db["note"]
        conn = connect(db["connection_url"])
        assert conn.run("SELECT 1") == [[1]]
        conn.close()

        preview = await ok(mcp, "claim_resource", upgrade_jwt=db["upgrade_jwt"])
        assert [i["id"] for i in preview["items"]] == [db["id"]]
        assert preview["claim_url"] == f"{network_api}/start?t={db['upgrade_jwt']}"
        assert preview["claim_url"] in preview["agent_action"]
        sent = await ok(mcp, "claim_token", upgrade_jwt=db["upgrade_jwt"], email=email)
        assert sent["email"] == email and email in sent["agent_action"]
        session = follow_link(stack, email)  # the user opens the mailed link

        started = await ok(mcp, "get_api_token")
        assert started["user_code"] in started["agent_action"]
        pending = await ok(mcp, "get_api_token", session_id=started["session_id"], wait_seconds=0)
        assert pending["status"] == "pending" and "api_token" not in pending
        approve = f"{api}/auth/cli/{started['session_id']}/approve"
        approved = httpx.post(
            approve,
            json={"user_code": started["user_code"]},
            headers={"Authorization": f"Bearer {session}"},
            timeout=10,
        )
        assert approved.status_code == 200, approved.text
        signed = await ok(mcp, "get_api_token", session_id=started["session_id"])
        assert signed["status"] == "approved" and signed["api_token"].startswith("ink_")
        set_tier(stack, email, "pro")

        mine = await ok(mcp, "list_resources")  # the server now sends the new API key
        assert [(r["id"], r["tier"]) for r in mine["items"]] == [(db["id"], "pro")]
        made = {}
        for kind in ("vector", "cache", "nosql", "queue", "storage", "webhook"):
            made[kind] = await ok(mcp, f"create_{kind}", name=f"mcp {kind}")
            assert made[kind]["tier"] == "pro" and made[kind]["expires_at"] is None
        assert made["webhook"]["receive_url"] and made["queue"]["credentials"]["creds_file"]
        assert made["vector"]["connection_url"].startswith("postgres")

        await store_and_read_an_object(mcp, made["storage"]["token"])
        rotated = await ok(mcp, "rotate_credentials", resource_id=db["id"])
        assert rotated["connection_url"] != db["connection_url"]
        conn = connect(rotated["connection_url"])
        assert conn.run("SELECT 1") == [[1]]
        conn.close()
        gone = await ok(mcp, "delete_resource", resource_id=made["webhook"]["id"])
        assert gone["status"] == "deleted"
        status = {r["id"]: r["status"] for r in (await ok(mcp, "list_resources"))["items"]}
        assert status.pop(made["webhook"]["id"]) == "deleted"
        assert len(status) == 6 and set(status.values()) == {"active"}

    session_of("stdio", network_api, home)(scenario)


async def store_and_read_an_object(mcp: Client, token: str) -> None:
    data = b"written through a presigned URL"
    put = await ok(
        mcp,
        "presign_storage",
        token=token,
        key="notes/a.txt",
        operation="PUT",
        content_length=len(data),
    )
    assert httpx.put(put["url"], content=data, timeout=10).status_code == 200
    get = await ok(mcp, "presign_storage", token=token, key="notes/a.txt", expires_in=60)
    assert httpx.get(get["url"], timeout=10).content == data


def test_the_http_server_uses_the_token_instanode_login_saved(
    network_api: str, stack: Stack, home: Path, monkeypatch: pytest.MonkeyPatch, sign_in: Any
) -> None:
    from instanode import credentials

    email = new_email()
    token = sign_in(email)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    credentials.save(network_api, credentials.Saved(token=token))

    async def scenario(mcp: Client) -> None:
        cache = await ok(mcp, "create_cache", name="saved login")
        assert cache["tier"] == "free"
        listed = await ok(mcp, "list_resources")
        assert [r["id"] for r in listed["items"]] == [cache["id"]]

    session_of("http", network_api, home)(scenario)


# -- deploys (podman builds on this machine) -------------------------------------------------
BASE, HTTPD = test_deploys.BASE, test_deploys.HTTPD  # the busybox site that builds here
base_image = test_deploys.base_image  # the fixture, shared (not copied)
get_app = test_deploys.get_app  # GET an app's *.localhost URL


def write_site(root: Path, body: str, dockerfile: str | None = None) -> Path:
    root.mkdir(parents=True)
    run = f"FROM {BASE}\nCOPY index.html /www/index.html\nCMD {HTTPD}\n"
    (root / "Dockerfile").write_text(dockerfile or run)
    (root / "index.html").write_text(body)
    return root


@pytest.fixture
def pro_token(stack: Stack, sign_in: Any, base_image: None) -> str:
    """A session of a new team on Pro (10 apps), for the server's INSTANODE_TOKEN."""
    email = new_email()
    token = str(sign_in(email))
    set_tier(stack, email, "pro")
    return token


@pytest.mark.slow
def test_a_deploy_is_followed_to_healthy_and_operated(
    transport: str, network_api: str, home: Path, pro_token: str
) -> None:
    site = write_site(home / "site", "<h1>hello from mcp</h1>")

    async def scenario(mcp: Client) -> None:
        app = await ok(
            mcp, "create_deploy", path=str(site), name="mcp site", wait=True, timeout_seconds=300
        )
        assert app["status"] == "healthy", app
        assert get_app(app["url"]) == "<h1>hello from mcp</h1>"
        listed = await ok(mcp, "list_deployments")
        assert [d["id"] for d in listed["items"]] == [app["id"]]
        assert (await ok(mcp, "get_deployment", deployment_id=app["id"]))["status"] == "healthy"
        events = await ok(mcp, "get_deployment_events", deployment_id=app["id"])
        assert isinstance(events["events"], list)
        env = {"GREETING": "hi"}
        changed = await ok(mcp, "update_deploy_env", deployment_id=app["id"], env=env, wait=True)
        assert changed["status"] == "healthy" and changed["revision"] == app["revision"] + 1
        again = await ok(mcp, "redeploy", deployment_id=app["id"], wait=True)
        assert again["status"] == "healthy" and again["url"] == app["url"]
        assert again["revision"] == app["revision"] + 2
        deleted = await ok(
            mcp, "delete_deployment", deployment_id=app["id"], skip_email_confirmation=True
        )
        assert deleted["ok"] is True

    session_of(transport, network_api, home, pro_token)(scenario)


@pytest.mark.slow
def test_a_failed_build_comes_back_classified(network_api: str, home: Path, pro_token: str) -> None:
    broken = write_site(home / "broken", "x", dockerfile=f"FROM {BASE}\nRUNN echo hi\n")

    async def scenario(mcp: Client) -> None:
        body = await refused(mcp, "create_deploy", path=str(broken), name="broken", wait=True)
        assert body["error"] == "deploy_failed" and body["deployment"]["status"] == "failed"
        failure = body["failure"]
        assert failure["reason"] != "Unknown" and failure["last_lines"] and failure["hint"]
        assert failure["hint"] in body["agent_action"]

    session_of("stdio", network_api, home, pro_token)(scenario)


@pytest.mark.slow
def test_a_stack_is_made_read_and_given_env(network_api: str, home: Path, pro_token: str) -> None:
    root = home / "stack"
    write_site(root / "web", "<h1>stack</h1>")
    (root / "instant.yaml").write_text("services:\n  web:\n    port: 8080\n")

    async def scenario(mcp: Client) -> None:
        made = await ok(mcp, "create_stack", manifest=str(root / "instant.yaml"), name="mcp stack")
        assert made["slug"] and [s["name"] for s in made["services"]] == ["web"]
        read = await ok(mcp, "get_stack", slug=made["slug"])
        assert read["slug"] == made["slug"]
        env = await ok(mcp, "update_stack_env", slug=made["slug"], env={"GREETING": "hi"})
        assert env["env_vars"] == ["GREETING"]

    session_of("http", network_api, home, pro_token)(scenario)
