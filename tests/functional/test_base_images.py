"""The local deploy backend's base images, built for real (mmdebstrap + podman import) and run
with podman: no mocks, no registry.

Slow the first time on a machine (about a minute per image); podman keeps them, so later runs
find them ready (the recipe digest in their labels changes, and they are rebuilt, when a recipe
or the host's CAs do). The build path itself runs every time in the lock test, with a throwaway
minbase recipe whose image is removed afterwards.
"""

from __future__ import annotations

import io
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from chalice.test import Client

from chalicelib.deploy.baseimage import (
    RECIPES,
    BaseImageError,
    Recipe,
    available,
    base_images_in,
    ensure_base_image,
    ensure_recipe,
    host_suite,
    names_of,
    offered_names,
)
from chalicelib.deploy.podman import PODMAN, ULIMITS

pytestmark = pytest.mark.slow
RUN = [*PODMAN, "run", "--rm", *ULIMITS]


def recipe(key: str) -> Recipe:
    return next(r for r in RECIPES if r.key == key)


@dataclass(frozen=True)
class Ensured:
    """Two ensure_base_image calls in a row: the first builds (unless podman had the image
    already), the second must find it."""

    name: str
    first_log: str
    first_s: float
    second_log: str
    second_s: float


def ensure_twice(name: str) -> Ensured:
    logs, took = [], []
    for _ in range(2):
        log, began = io.StringIO(), time.monotonic()
        assert ensure_base_image(name, log) == f"localhost/{name}"
        logs.append(log.getvalue())
        took.append(time.monotonic() - began)
    print(f"ensure_base_image({name}): {took[0]:.1f} s, then {took[1]:.2f} s")
    return Ensured(name, logs[0], took[0], logs[1], took[1])


@pytest.fixture(scope="session")
def python_slim() -> Ensured:
    names = names_of(recipe("python-slim"))
    if host_suite() == "bookworm":
        assert names == ("python:3.11-slim", "python:3-slim")
    return ensure_twice(names[0])


@pytest.fixture(scope="session")
def node_slim() -> Ensured:
    names = names_of(recipe("node-slim"))
    if host_suite() == "bookworm":
        assert names == ("node:18-slim",)
    return ensure_twice(names[0])


def run(image: str, *command: str, network: str = "none") -> str:
    done = subprocess.run(
        [*RUN, "--network", network, image, *command],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def labels(image: str) -> dict[str, str]:
    out = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .Labels}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, str] = json.loads(out)
    return found


@pytest.mark.parametrize("which", ["python_slim", "node_slim"])
def test_the_second_ensure_finds_the_built_image(
    which: str, request: pytest.FixtureRequest
) -> None:
    ensured: Ensured = request.getfixturevalue(which)
    if "building the" in ensured.first_log:  # this run built it
        assert f"built {ensured.name}" in ensured.first_log
    assert ensured.second_log == "" and ensured.second_s < 5


def test_python_image_runs_the_python_its_tag_names(python_slim: Ensured) -> None:
    image = f"localhost/{python_slim.name}"
    minor = python_slim.name.split(":")[1].removesuffix("-slim")
    assert run(image, "python3", "--version").startswith(f"Python {minor}.")
    assert run(image, "python", "--version").startswith(f"Python {minor}.")
    assert f"(python {minor})" in run(image, "pip", "--version")
    marker = "import pathlib, sysconfig; p = pathlib.Path(sysconfig.get_path('stdlib'))"
    marker += "; print(p.is_dir(), (p / 'EXTERNALLY-MANAGED').exists())"
    assert run(image, "python3", "-c", marker) == "True False"  # pip install works as root
    env = run(image, "env")
    assert "LANG=C.UTF-8" in env and "PATH=/usr/local/sbin:/usr/local/bin:" in env
    found = labels(image)
    assert found["instanode.base-image"] == python_slim.name
    assert "from Debian" in found["org.opencontainers.image.description"]


def test_node_image_runs_the_node_its_tag_names(node_slim: Ensured) -> None:
    image = f"localhost/{node_slim.name}"
    major = node_slim.name.split(":")[1].removesuffix("-slim")
    assert run(image, "node", "--version").startswith(f"v{major}.")
    assert run(image, "npm", "--version")
    assert "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt" in run(image, "env")
    assert labels(image)["instanode.base-image"] == node_slim.name


def test_a_build_finds_every_spelling_without_a_pull_and_installs_packages(
    python_slim: Ensured, node_slim: Ensured, tmp_path: Path
) -> None:
    """What an agent's Dockerfile does: npm and pip install from the registries (through this
    machine's egress proxy and its CA), FROM Docker Hub spellings, with pulls forbidden."""
    dockerfile = (
        f"FROM docker.io/library/{node_slim.name} AS assets\n"
        "WORKDIR /app\n"
        "RUN npm install --no-audit --no-fund express\n"
        f"FROM library/{python_slim.name}\n"
        "RUN pip install --no-cache-dir six\n"
        "COPY --from=assets /app/node_modules/express/package.json /express.json\n"
    )
    assert base_images_in(dockerfile) == [
        f"docker.io/library/{node_slim.name}",
        f"library/{python_slim.name}",
    ]
    (tmp_path / "Dockerfile").write_text(dockerfile)
    tag = f"localhost/instanode-test-base-images:{uuid.uuid4().hex[:8]}"
    built = subprocess.run(
        ["buildah", "bud", "--isolation", "chroot", "--layers=false", "--pull=never"]
        + ["-t", tag, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        check = "import json, six; print(json.load(open('/express.json'))['name'])"
        assert run(tag, "python", "-c", check) == "express"
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, check=False)


@pytest.fixture
def throwaway_recipe() -> Iterator[Recipe]:
    """A minbase recipe (about 30 s) of its own name: always built, removed afterwards."""
    token = uuid.uuid4().hex[:8]
    made = Recipe(
        key=f"test-{token}",
        packages=(),
        tags=(f"instanode-test/base-{token}:{{major}}",),
        probe="cat /etc/debian_version",
        version_package="base-files",
        cmd=("bash",),
    )
    yield made
    listed = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    mine = [name for name in listed if f"instanode-test/base-{token}:" in name]
    if mine:
        subprocess.run(["podman", "rmi", "-f", *mine], capture_output=True, check=False)


def test_concurrent_ensures_build_once(throwaway_recipe: Recipe, tmp_path: Path) -> None:
    logs = [io.StringIO(), io.StringIO()]
    results: list[tuple[str, ...]] = []
    errors: list[BaseException] = []

    def ensure(log: io.StringIO) -> None:
        try:
            results.append(ensure_recipe(throwaway_recipe, log, tmp_path))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=ensure, args=(log,)) for log in logs]
    for thread in threads:
        thread.start()
        time.sleep(0.5)  # the first takes the lock
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    texts = [log.getvalue() for log in logs]
    assert sum("building the" in text for text in texts) == 1, texts
    assert "waiting for another build" in texts[1], texts[1][-2000:]
    assert results[0] == results[1] and len(results[0]) == 1
    name = results[0][0]
    assert run(f"localhost/{name}", "cat", "/etc/debian_version").startswith(name.split(":")[1])
    again = io.StringIO()
    began = time.monotonic()
    assert ensure_recipe(throwaway_recipe, again, tmp_path) == results[0]
    assert again.getvalue() == "" and time.monotonic() - began < 5
    assert not list(tmp_path.glob(f"{throwaway_recipe.key}-*")), "the build dir was left behind"


def test_a_tag_debian_does_not_ship_is_refused(python_slim: Ensured) -> None:
    with pytest.raises(BaseImageError, match="offered: python:"):
        ensure_base_image("python:2.7-slim", io.StringIO())
    assert "python:2.7-slim" not in offered_names()


def test_available_lists_every_recipe_and_the_built_ones_as_ready(
    python_slim: Ensured, node_slim: Ensured
) -> None:
    offered = {image.recipe: image for image in available()}
    assert set(offered) == {*(r.key for r in RECIPES), "busybox"}
    for built in (python_slim, node_slim):
        image = next(i for i in offered.values() if built.name in i.names)
        assert image.status == "ready" and image.size_mb and image.size_mb > 10
    assert all(i.status in ("ready", "building", "not built yet") for i in offered.values())


@pytest.mark.usefixtures("app_env")
def test_capabilities_list_the_local_base_images(client: Client, python_slim: Ensured) -> None:
    body = client.http.get("/api/v1/capabilities").json_body["deploy_base_images"]
    assert body["backend"] == "local" and "No image registry" in body["note"]
    ready = [i for i in body["images"] if python_slim.name in i["names"]]
    assert ready and ready[0]["status"] == "ready"
