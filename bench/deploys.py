"""Container deploys on the local backend, in this process (``chalice.test.Client`` against the
bench stack's moto and SMTP servers, real buildah/podman):

  python -m bench.deploys [--n 5]

For a small busybox site: the ``POST /deploy/new`` answer (checks, S3 put, record, worker
start), the same request sent again at once (answered from the idempotency record), the time
from the first answer until the app is ``healthy`` (polled every 0.1 s), a redeploy (revision
n+1 at the same URL) until it serves the new body, and the DynamoDB requests of the POST. Then
the canonical FastAPI app (``FROM python:3.11-slim``, ``RUN pip install fastapi uvicorn
pg8000``, on its /db/new database) until healthy, with the base image cached, split into the
worker's build and start phases. With ``--base-image`` also the python:3.11-slim base image's
first build (it is removed and built again). Apps are deleted (``X-Skip-Email-Confirmation``)
after each round.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.meters import DynamoMeter, main_on_stack, stats_of
from devstack.stack import ROOT, Stack

POLL_SECONDS = 0.1
DEADLINE_SECONDS = 120.0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    rebuild = "--base-image" in args
    return main_on_stack(
        "bench.deploys",
        __doc__,
        (5, "rounds (each: deploy + redeploy of the busybox site, a FastAPI deploy)"),
        lambda stack, n: run(stack, n, rebuild),
        [a for a in args if a != "--base-image"],
    )


def run(stack: Stack, n: int, rebuild_base: bool = False) -> int:
    from chalice.test import Client

    from app import app
    from chalicelib import deps
    from chalicelib.deploy.baseimage import ensure_base_image, ensure_busybox_image
    from tests.functional.accounts_fixtures import call, sign_in
    from tests.functional.test_deploys import deploy, site

    deps.reset()
    ensure_busybox_image()
    base_first_build = _base_image_build() if rebuild_base else None
    ensure_base_image("python:3.11-slim")
    client = Client(app, "local", str(ROOT))
    meter = DynamoMeter(deps.get_dynamo().client.meta.events)
    token = sign_in(client, stack)
    team = call(client, "GET", "/auth/me", bearer=token).body["team"]["id"]
    deps.get_teams().set_tier(team, "pro")

    samples: dict[str, list[float]] = {
        "POST /deploy/new": [],
        "identical retry": [],
        "to healthy": [],
        "redeploy": [],
        "FastAPI to healthy": [],
        "  of it: build": [],
        "  of it: start": [],
    }
    requests_per_post: list[int] = []
    for i in range(n):
        meter.reset()
        tarball = site(f"v1-{i}")
        t0 = time.perf_counter()
        app_body = deploy(client, token, tarball, name=f"bench-{i}").body
        samples["POST /deploy/new"].append((time.perf_counter() - t0) * 1000)
        requests_per_post.append(sum(meter.sent.values()))
        t0 = time.perf_counter()
        replay = deploy(client, token, tarball, name=f"bench-{i}")
        samples["identical retry"].append((time.perf_counter() - t0) * 1000)
        if replay.headers.get("x-idempotent-replay") != "true":
            raise RuntimeError(f"the retry was not a replay: {replay}")
        app_id, url, v2 = app_body["id"], app_body["url"], f"v2-{i}"
        t1 = time.perf_counter()
        _until(_healthy, client, token, app_id)
        samples["to healthy"].append((time.perf_counter() - t1) * 1000)
        t2 = time.perf_counter()
        deploy(client, token, site(v2), name=f"bench-{i}", redeploy="true")
        _until(_serves, url, v2)
        samples["redeploy"].append((time.perf_counter() - t2) * 1000)
        fastapi = _fastapi(client, token, i)
        samples["FastAPI to healthy"].append(fastapi[0])
        samples["  of it: build"].append(fastapi[1])
        samples["  of it: start"].append(fastapi[2])
        for gone in (app_body["id"], fastapi[3]):
            call(
                client,
                "DELETE",
                f"/api/v1/deployments/{gone}",
                bearer=token,
                X_Skip_Email_Confirmation="yes",
            )
    print(f"deploys, local backend (buildah + podman), busybox site and FastAPI, n={n} (ms)")
    stats = stats_of(samples)
    for name, st in stats.items():
        print(f"  {name:18s} p50 {st.p50:8.1f}  max {max(st.ms):8.1f}")
    ratio = stats["identical retry"].p50 / stats["POST /deploy/new"].p50
    print(f"  identical retry (an idempotent replay) / POST /deploy/new, p50: {ratio:.2f}")
    print(f"  DynamoDB requests per POST /deploy/new: {sum(requests_per_post) / n:.2f}")
    ratio = stats["FastAPI to healthy"].p50 / stats["to healthy"].p50
    print(f"  FastAPI / busybox site to healthy, p50: {ratio:.1f}x")
    if base_first_build is not None:
        print(f"  python:3.11-slim base image, first build: {base_first_build:.0f} ms")
    return 0


def _fastapi(client: Any, token: str, i: int) -> tuple[float, float, float, str]:
    """The canonical app on its database: ms until healthy, of which the worker's build and
    start phases (its status record), and the app's id."""
    from chalicelib.config import get_settings
    from tests.functional.accounts_fixtures import call
    from tests.functional.test_deploys import deploy
    from tests.integration.test_canonical_app import EXPENSES, FASTAPI_DOCKERFILE, tarball

    db = call(client, "POST", "/db/new", {"name": f"bench-db-{i}"}, bearer=token).body
    context = tarball(Dockerfile=FASTAPI_DOCKERFILE, **{"main.py": EXPENSES})
    env = json.dumps({"DATABASE_URL": db["internal_url"]})
    t0 = time.perf_counter()
    body = deploy(client, token, context, name=f"bench-api-{i}", port="8080", env_vars=env).body
    _until(_healthy, client, token, body["id"])
    total = (time.perf_counter() - t0) * 1000
    state = Path(get_settings().deploy.state_dir)
    record = json.loads((state / body["slug"] / "1" / "status.json").read_text())
    call(client, "DELETE", f"/api/v1/resources/{db['id']}", bearer=token)
    return total, record["build_s"] * 1000, record["deploy_s"] * 1000, body["id"]


def _base_image_build() -> float:
    """ms to build python:3.11-slim from nothing (its image removed first)."""
    from chalicelib.deploy.baseimage import ensure_base_image
    from chalicelib.deploy.podman import podman

    found = podman("image", "inspect", "--format", "{{.Id}}", "localhost/python:3.11-slim")
    if found.returncode == 0:
        podman("rmi", "-f", found.stdout.strip())  # every tag of it
    t0 = time.perf_counter()
    ensure_base_image("python:3.11-slim")
    return (time.perf_counter() - t0) * 1000


def _healthy(client: Any, token: str, app_id: str) -> bool:
    from tests.functional.accounts_fixtures import call

    body = call(client, "GET", f"/api/v1/deployments/{app_id}", bearer=token).body
    if body["status"] == "failed":
        raise RuntimeError(f"deploy failed: {body}")
    return bool(body["status"] == "healthy")


def _serves(url: str, body: str) -> bool:
    """The app at ``url`` answers ``body``. A short timeout: a request that lands while podman
    sets up the new container's port waits unanswered, and would hide when it serves."""
    import requests

    parts = urlsplit(url)
    try:
        got = requests.get(
            f"http://127.0.0.1:{parts.port}/index.html", headers={"Host": parts.netloc}, timeout=0.5
        )
    except OSError:
        return False
    return got.text == body


def _until(done: Callable[..., bool], *args: Any) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not done(*args):
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in time")
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    raise SystemExit(main())
