"""The CLI's cost to a person or an agent: ``instanode webhook new`` from process start to the URL
printed, against ``curl`` making the same request, and the CLI's start-up (``instanode --help``)
against a bare interpreter, in fresh processes interleaved round by round.

    python -m bench.cli [--n 20] [--profile bench]

Both provisions go to the bench stack's API (``python -m devstack serve`` on a free port) with
the API key of a signed-in Pro team, so no anonymous daily limit answers instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import requests

from bench.meters import Op, interleaved, main_on_stack, stats_of
from bench.ops import api_server
from devstack.stack import Stack

CLI = str(Path(sys.executable).with_name("instanode"))
WARMUP_ROUNDS = 2


def main(argv: Sequence[str] | None = None) -> int:
    return main_on_stack("bench.cli", __doc__, (20, "measured rounds"), run, argv)


def _api_key(stack: Stack, api: str) -> str:
    """An API key of a new team on Pro, signed in through the stack's SMTP server."""
    from chalicelib import deps

    email = f"bench{uuid.uuid4().hex[:10]}@example.com"
    requests.post(f"{api}/auth/email/start", json={"email": email}, timeout=10).raise_for_status()
    part = stack.smtp.wait_for(email).get_body(("plain",))
    link = re.search(r"https?://\S+", part.get_content() if part else "")
    assert link, "no sign-in link"
    path = link.group(0).split("/", 3)[3]
    session = requests.get(f"{api}/{path}", allow_redirects=False, timeout=10)
    bearer = {"Authorization": f"Bearer {session.cookies['instanode_session']}"}
    me = requests.get(f"{api}/auth/me", headers=bearer, timeout=10).json()
    deps.reset()
    deps.get_teams().set_tier(me["team"]["id"], "pro")
    scope = {"name": "bench", "scope": "write"}
    made = requests.post(f"{api}/api/v1/api-keys", json=scope, headers=bearer, timeout=10)
    made.raise_for_status()
    return str(made.json()["api_token"])


def _timed(command: list[str], env: dict[str, str], expect: str) -> Op:
    def op() -> float:
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        elapsed = (time.perf_counter() - started) * 1000
        if done.returncode != 0 or expect not in done.stdout:
            raise RuntimeError(f"{command[0]}: {done.returncode} {done.stdout!r} {done.stderr!r}")
        return elapsed

    return op


def run(stack: Stack, n: int) -> int:
    curl = shutil.which("curl")
    if curl is None or not Path(CLI).exists():
        print("bench.cli: needs curl and the instanode console script (pip install -e ./client)")
        return 2
    with api_server(stack) as api:
        key = _api_key(stack, api)
        env = {**os.environ, "INSTANODE_API": api, "INSTANODE_TOKEN": key}
        env["XDG_CONFIG_HOME"] = str(stack.state / "bench-cli-config")  # no saved token read
        body = json.dumps({"name": "bench-curl"})
        ops = {
            "curl POST /webhook/new": _timed(
                [curl, "-sf", "-X", "POST", f"{api}/webhook/new"]
                + ["-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {key}"]
                + ["-d", body],
                env,
                "receive_url",
            ),
            "instanode webhook new": _timed(
                [CLI, "webhook", "new", "--name", "bench-cli"], env, "/webhook/receive/"
            ),
            "python -c pass": _timed([sys.executable, "-c", "pass"], env, ""),
            "instanode --help": _timed([CLI, "--help"], env, "Usage"),
        }
        interleaved(ops, WARMUP_ROUNDS)
        results = stats_of(interleaved(ops, n))
    print(f"CLI against curl, fresh processes, interleaved, n={n} (ms)")
    for name, st in results.items():
        print(f"  {name:26s} p50 {st.p50:7.1f}  p99 {st.p99:7.1f}")
    made = results["instanode webhook new"].p50 / results["curl POST /webhook/new"].p50
    startup = results["instanode --help"].p50 - results["python -c pass"].p50
    print(f"  instanode webhook new / curl: {made:.2f}x")
    print(f"  instanode --help beyond a bare interpreter: {startup:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
