"""The ``instanode`` CLI as a person or an agent runs it: every command as a subprocess against
the live test stack (tests/client/conftest.py ``run_cli``), its exit codes, ``--json``, the
env-file, the saved credentials, the device flow, webhook tail, presign and deploys."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from instanode import Client
from instanode.cli_envfile import quoted, update_env_file

from devstack.stack import Stack
from tests.client.conftest import new_email, set_tier
from tests.conftest import magic_link
from tests.functional.test_deploys import BASE, HTTPD, base_image, get_app

pytestmark = pytest.mark.integration
__all__ = ["base_image"]  # the fixture, used by the deploy tests

Run = Callable[..., subprocess.CompletedProcess[str]]
COMMANDS = (
    "db",
    "vector",
    "cache",
    "nosql",
    "queue",
    "storage",
    "webhook",
    "resources",
    "claim",
    "presign",
    "login",
    "whoami",
    "logout",
    "deploy",
    "stacks",
    "mcp",
)
URL_SCHEMES = {
    "db": "postgres",
    "vector": "postgres",
    "cache": "redis",
    "nosql": "mongodb",
    "queue": "nats",
    "storage": "http",
    "webhook": "http",
}


@pytest.fixture
def team(sign_in: Callable[..., str], stack: Stack, api: str) -> str:
    """An API key (scope write) of a new team on Pro: room for every kind and for apps."""
    email = new_email()
    session = sign_in(email)
    set_tier(stack, email, "pro")
    with Client(api, token=session) as c:
        return str(c.api_keys.create("cli-tests", scope="write")["api_token"])


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """Where ``run_cli``'s CLI keeps its credentials (XDG_CONFIG_HOME/instanode)."""
    return tmp_path / "home" / ".config" / "instanode"


@pytest.fixture
def spawn(network_api: str, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """A long-running CLI (login, webhook tail) as ``run_cli`` runs it, pipes open."""
    started: list[subprocess.Popen[str]] = []

    def run(
        *args: str, env: dict[str, str] | None = None, stderr: Any = subprocess.PIPE
    ) -> subprocess.Popen[str]:
        home = tmp_path / "home"
        base = {k: v for k, v in os.environ.items() if not k.startswith("INSTANODE_")}
        full = {
            **base,
            "INSTANODE_API": network_api,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            **(env or {}),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "instanode.cli", *args],
            cwd=tmp_path,
            env=full,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def as_team(token: str) -> dict[str, str]:
    return {"INSTANODE_TOKEN": token}


def made(run_cli: Run, kind: str, token: str, name: str = "cli") -> dict[str, Any]:
    out = run_cli("--json", kind, "new", "--name", name, env=as_team(token))
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def line_with(stream: Any, pattern: str, seconds: float = 30) -> re.Match[str]:
    """The first line of ``stream`` matching ``pattern`` (a test fails on EOF)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = stream.readline()
        assert line, f"the stream ended before a line matching {pattern!r}"
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"no line matching {pattern!r} in {seconds}s")


# -- help and usage -------------------------------------------------------------------------
def test_help_lists_every_command_and_the_exit_codes(run_cli: Run) -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    listed = re.findall(r"^  (\w+) ", out.stdout.split("Commands:")[1], flags=re.M)
    assert set(COMMANDS) <= set(listed)
    assert "Exit codes:" in out.stdout and "3  a deploy" in out.stdout


def test_help_imports_neither_httpx_nor_mcp() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "instanode.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    modules = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()}
    assert "click" in modules
    assert not {m for m in modules if m.split(".")[0] in ("httpx", "httpx_sse", "mcp", "anyio")}


@pytest.mark.parametrize(
    "args",
    [
        ("db", "new"),
        ("deploy", "--name", "x", "--env", "NO_EQUALS_SIGN"),
        ("resources", "get"),
        ("nosuchcommand",),
    ],
)
def test_bad_usage_exits_2(run_cli: Run, args: tuple[str, ...]) -> None:
    out = run_cli(*args)
    assert out.returncode == 2, out
    assert out.stdout == "" and "Usage:" in out.stderr


# -- resources ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(URL_SCHEMES))
def test_new_prints_the_url_alone(run_cli: Run, team: str, kind: str) -> None:
    out = run_cli(kind, "new", "--name", f"cli-{kind}", env=as_team(team))
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip()
    assert out.stdout == url + "\n" and url.startswith(URL_SCHEMES[kind]), out.stdout
    if kind == "webhook":
        assert "/webhook/receive/" in url


def test_new_with_json_prints_the_api_answer(run_cli: Run, team: str) -> None:
    body = made(run_cli, "cache", team)
    assert body["ok"] is True and body["connection_url"].startswith("redis")
    assert body["token"] and body["tier"] == "pro"


def test_new_with_an_invalid_name_exits_1_with_the_error_and_hint(run_cli: Run) -> None:
    out = run_cli("db", "new", "--name", "no/slashes allowed")
    assert out.returncode == 1 and out.stdout == ""
    assert re.search(r"^error: .+ \(invalid_name\)$", out.stderr, flags=re.M), out.stderr
    assert re.search(r"^hint: ", out.stderr, flags=re.M), out.stderr


def test_new_with_an_invalid_name_and_json_prints_the_envelope(run_cli: Run) -> None:
    out = run_cli("--json", "db", "new", "--name", "no/slashes allowed")
    envelope = json.loads(out.stdout)
    assert out.returncode == 1
    assert envelope["ok"] is False and envelope["error"] == "invalid_name"
    assert envelope["agent_action"]


def test_unreachable_api_exits_1_with_network_error(run_cli: Run) -> None:
    out = run_cli("--api", "http://127.0.0.1:9", "--json", "db", "new", "--name", "x")
    assert out.returncode == 1 and json.loads(out.stdout)["error"] == "network_error"


def test_env_file_is_made_0600_then_appended(run_cli: Run, team: str, tmp_path: Path) -> None:
    db = run_cli("db", "new", "--name", "envdb", "--env-file", ".env", env=as_team(team))
    assert db.returncode == 0, db.stderr
    env_file = tmp_path / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_file.read_text() == f"DATABASE_URL={db.stdout.strip()}\n"
    assert "added DATABASE_URL" in db.stderr
    cache = run_cli("cache", "new", "--name", "envcache", "--env-file", ".env", env=as_team(team))
    assert cache.returncode == 0, cache.stderr
    lines = env_file.read_text().splitlines()
    assert lines[0] == f"DATABASE_URL={db.stdout.strip()}"
    assert lines[1] == f"REDIS_URL={cache.stdout.strip()}"
    assert lines[2].startswith("REDIS_KEY_PREFIX=") and len(lines) == 3


def test_env_file_replaces_a_name_it_sets_already(run_cli: Run, team: str, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# mine\nexport DATABASE_URL=postgres://old\nDEBUG=1\nDATABASE_URL=x\n")
    env_file.chmod(0o640)
    out = run_cli("db", "new", "--name", "again", "--env-file", ".env", env=as_team(team))
    assert out.returncode == 0, out.stderr
    assert env_file.read_text() == f"# mine\nDATABASE_URL={out.stdout.strip()}\nDEBUG=1\n"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640  # an existing file keeps its mode
    assert "replaced DATABASE_URL" in out.stderr


def test_env_file_line_already_there_is_left_alone(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("A=1\n")
    change = update_env_file(env_file, {"A": "1", "B": "two words"})
    assert env_file.read_text() == 'A=1\nB="two words"\n'
    assert (change.added, change.replaced, change.unchanged) == (("B",), (), ("A",))


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("postgres://u:p@h:5432/d?sslmode=disable", "postgres://u:p@h:5432/d?sslmode=disable"),
        ('a "b" $c', '"a \\"b\\" $c"'),
        ("", ""),
    ],
)
def test_env_values_are_quoted_only_when_needed(value: str, written: str) -> None:
    assert quoted(value) == written


def test_resources_list_get_rotate_delete(run_cli: Run, team: str) -> None:
    db = made(run_cli, "db", team, "listed")
    listing = run_cli("resources", env=as_team(team))
    assert listing.returncode == 0 and db["id"] in listing.stdout
    got = run_cli("--json", "resources", "get", db["id"], env=as_team(team))
    assert json.loads(got.stdout)["id"] == db["id"]
    rotated = run_cli("resources", "rotate", db["id"], env=as_team(team))
    assert rotated.returncode == 0, rotated.stderr
    new_url = rotated.stdout.strip()
    assert new_url.startswith("postgres") and new_url != db["connection_url"]
    deleted = run_cli("resources", "delete", db["id"], env=as_team(team))
    assert deleted.returncode == 0 and deleted.stdout == f"deleted {db['id']}\n"
    gone = run_cli("--json", "resources", "get", db["id"], env=as_team(team))
    assert json.loads(gone.stdout)["status"] == "deleted"


def test_claim_mails_a_link_for_the_last_anonymous_resource(run_cli: Run, stack: Stack) -> None:
    made_anonymously = run_cli("webhook", "new", "--name", "to-claim")
    assert made_anonymously.returncode == 0, made_anonymously.stderr
    email = new_email()
    out = run_cli("claim", "--email", email)
    assert out.returncode == 0, out.stderr
    assert magic_link(stack, email).startswith("http")


def test_claim_without_an_upgrade_jwt_is_a_usage_error(run_cli: Run) -> None:
    out = run_cli("claim", "--email", new_email())
    assert out.returncode == 2 and "upgrade_jwt" in out.stderr


def test_progress_spins_on_stderr_only_when_it_is_a_terminal(
    team: str, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    terminal, child_side = pty.openpty()
    process = spawn("cache", "new", "--name", "tty", env=as_team(team), stderr=child_side)
    os.close(child_side)
    stdout, _ = process.communicate(timeout=60)
    seen = b""
    with contextlib.suppress(OSError):  # EIO once the child side is closed and drained
        while chunk := os.read(terminal, 4096):
            seen += chunk
    os.close(terminal)
    assert process.returncode == 0 and stdout.startswith("redis")
    assert "creating a Redis keyspace" in seen.decode()  # a spinner frame, on the terminal only


# -- login, whoami, logout ------------------------------------------------------------------
def test_login_by_device_flow_saves_the_token_0600_then_whoami_and_logout(
    run_cli: Run,
    spawn: Callable[..., subprocess.Popen[str]],
    sign_in: Callable[..., str],
    api: str,
    config_dir: Path,
) -> None:
    login = spawn("login")
    session_id = line_with(login.stderr, r"[?&]session=([0-9a-f-]+)").group(1)
    code = line_with(login.stderr, r"enter the code (\S+)").group(1)
    email = new_email()
    approve = requests.post(
        f"{api}/auth/cli/{session_id}/approve",
        json={"user_code": code},
        headers={"Authorization": f"Bearer {sign_in(email)}"},
        timeout=10,
    )
    assert approve.json()["status"] == "approved", approve.text
    assert login.wait(timeout=60) == 0, login.stderr.read()
    saved = config_dir / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    tokens = [e["token"] for e in json.loads(saved.read_text())["apis"].values()]
    assert len(tokens) == 1 and tokens[0].startswith("ink_")

    who = run_cli("whoami")
    assert who.returncode == 0 and email.split("@")[0] in who.stdout, who  # the team's name
    assert "via api_key" in who.stdout
    me = json.loads(run_cli("--json", "whoami").stdout)
    assert me["auth"]["via"] == "api_key" and me["auth"]["scope"] == "write"

    out = run_cli("logout")
    assert out.returncode == 0 and out.stdout.startswith("logged out")
    assert json.loads(saved.read_text())["apis"] == {}
    anonymous = run_cli("--json", "whoami")
    assert anonymous.returncode == 1 and json.loads(anonymous.stdout)["error"] == "unauthorized"


def test_logout_without_a_saved_token_says_so(run_cli: Run) -> None:
    out = run_cli("--json", "logout")
    assert out.returncode == 0 and json.loads(out.stdout)["removed"] is False


# -- webhook tail, presign ------------------------------------------------------------------
def test_webhook_tail_prints_each_new_request_and_exits_0_on_ctrl_c(
    run_cli: Run, team: str, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    hook = made(run_cli, "webhook", team)
    assert requests.post(hook["receive_url"], data=b"before", timeout=10).ok
    tail = spawn("--json", "webhook", "tail", hook["token"], "--interval", "0.2")
    line_with(tail.stderr, r"^tailing ")
    assert requests.post(f"{hook['receive_url']}/gh", json={"n": 1}, timeout=10).ok
    first = json.loads(tail.stdout.readline())
    assert first["method"] == "POST" and first["path"].endswith("/gh")
    assert json.loads(first["body_text"]) == {"n": 1}  # the request before tail is not printed
    tail.send_signal(signal.SIGINT)
    assert tail.wait(timeout=10) == 0


def test_presign_put_uploads_the_file_and_prints_a_url_that_reads_it(
    run_cli: Run, team: str, tmp_path: Path
) -> None:
    storage = made(run_cli, "storage", team)
    upload = tmp_path / "report.txt"
    upload.write_bytes(b"quarterly numbers\n" * 100)
    put = run_cli("presign", storage["token"], "docs/report.txt", "--put", str(upload))
    assert put.returncode == 0, put.stderr
    assert requests.get(put.stdout.strip(), timeout=10).content == upload.read_bytes()
    got = run_cli("--json", "presign", storage["token"], "docs/report.txt")
    assert requests.get(json.loads(got.stdout)["url"], timeout=10).content == upload.read_bytes()


# -- deploys (real builds on the stack's podman) ----------------------------------------------
def app_dir(root: Path, body: str, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(
        f"FROM {BASE}\nCOPY index.html /www/index.html\n{extra}CMD {HTTPD}\n"
    )
    (root / "index.html").write_text(body)
    return root


@pytest.mark.slow
@pytest.mark.usefixtures("base_image")
def test_deploy_follows_the_build_and_prints_the_url(
    run_cli: Run, team: str, tmp_path: Path
) -> None:
    source = app_dir(tmp_path / "site", "hello from the cli")
    out = run_cli("deploy", str(source), "--name", "cli-site", env=as_team(team))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1 and get_app(out.stdout.strip()) == "hello from the cli"
    assert "building app_" in out.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("base_image")
def test_deploy_that_fails_to_build_exits_3_with_the_reason_lines_and_hint(
    run_cli: Run, team: str, tmp_path: Path
) -> None:
    source = app_dir(tmp_path / "broken", "x", extra="RUN echo cli-breaks-here && false\n")
    out = run_cli("deploy", str(source), "--name", "cli-broken", env=as_team(team))
    assert out.returncode == 3, out
    assert out.stdout == ""
    assert re.search(r"^deploy failed: \w+: ", out.stderr, flags=re.M), out.stderr
    assert re.search(r"^  \| .*cli-breaks-here", out.stderr, flags=re.M), out.stderr
    assert re.search(r"^hint: \S", out.stderr, flags=re.M), out.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("base_image")
def test_deploy_that_fails_with_json_prints_the_deployment_and_its_events(
    run_cli: Run, team: str, tmp_path: Path
) -> None:
    source = app_dir(tmp_path / "broken", "x", extra="RUN false\n")
    out = run_cli("--json", "deploy", str(source), "--name", "cli-broken", env=as_team(team))
    body = json.loads(out.stdout)
    assert out.returncode == 3 and body["status"] == "failed"
    assert body["events"][-1]["reason"] and body["events"][-1]["hint"]


@pytest.mark.slow
@pytest.mark.usefixtures("base_image")
def test_stacks_up_prints_export_lines_then_reconciles_by_slug(
    run_cli: Run, team: str, tmp_path: Path
) -> None:
    root = tmp_path / "shop"
    app_dir(root / "web", "the shop")
    (root / "instant.yaml").write_text("services:\n  web:\n    port: 8080\n")
    manifest = str(root / "instant.yaml")
    up = run_cli("stacks", "up", manifest, env=as_team(team))
    assert up.returncode == 0, up.stderr
    exports = dict(re.findall(r"^export (\w+)=(\S+)$", up.stdout, flags=re.M))
    assert set(exports) == {"STACK_SLUG", "STACK_URL", "WEB_URL"}, up.stdout
    assert exports["STACK_SLUG"].startswith("shop-") and get_app(exports["WEB_URL"]) == "the shop"
    again = run_cli(
        "--json",
        "stacks",
        "up",
        manifest,
        "--slug",
        exports["STACK_SLUG"],
        "--env",
        "A=1",
        env=as_team(team),
    )
    assert again.returncode == 0, again.stderr
    body = json.loads(again.stdout)
    assert body["slug"] == exports["STACK_SLUG"] and body["status"] == "healthy"
