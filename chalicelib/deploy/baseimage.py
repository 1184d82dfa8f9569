"""Base images made on this machine, for the local deploy backend, which reaches no registry.

Agents write ``FROM python:3.11-slim``, ``FROM node:18`` or ``FROM debian:bookworm-slim``; each
recipe below makes such an image from Debian packages with ``mmdebstrap`` (the host's suite and
mirrors, read from ``/etc/os-release`` and its apt sources) and ``podman import``. Tags come from
what the built image runs (its recipe's probe, e.g. ``python3 --version``), never from this file:
on bookworm that is python 3.11 and nodejs 18, on another suite whatever it ships. Each name is
tagged ``localhost/<name>`` and ``docker.io/library/<name>`` so every spelling of FROM
(``python:3.11-slim``, ``library/…``, ``docker.io/library/…``) finds it without a pull.

The images trust what the host trusts (its ``/usr/local/share/ca-certificates/*.crt`` are copied
in), drop docs, man pages and locales (dpkg path-exclude, kept for later apt installs too), and
the python ones lose Debian's EXTERNALLY-MANAGED marker so ``pip install`` works as in the
official images. ``localhost/instanode/busybox:latest`` (FROM scratch with Debian's static
busybox) is made beside them.

``ensure_base_image`` builds an image that podman does not have yet (or that an older recipe
made), under a per-recipe flock in the state dir: concurrent workers wait for one build.
``python -m chalicelib.deploy.baseimage [--all | NAME...]`` builds ahead of time (``make run``
starts it in the background).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

BUSYBOX_IMAGE = "localhost/instanode/busybox:latest"
STATE_DIR = Path("/var/tmp/instanode-base-images")  # locks and build dirs (disk, not tmpfs)
RECIPE_LABEL = "instanode.base-image.recipe"  # the digest of what made the image
NAME_LABEL = "instanode.base-image"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
_BUILD_FORMAT = "4"  # bump when the build steps below change: every image is rebuilt once
_PODMAN = ("podman", "--runtime", "runc")  # as chalicelib.deploy.podman.PODMAN
_DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
_MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/maybe-merged-usr")
_VERSION = re.compile(r"^(?:\d+:)?(\d+)(?:\.(\d+))?")  # a Debian or upstream version's x.y


@dataclass(frozen=True)
class Recipe:
    """One image: Debian packages on a minbase system, its config, and how its tags are read.

    ``tags`` are templates over the version ``probe`` prints inside the image: ``{major}`` (3,
    18), ``{minor}`` (3.11, 18.20), ``{version}`` (all of it) and ``{suite}`` (bookworm).
    ``version_package`` is the Debian package that version comes from: its version in the host's
    apt lists names the image before it is built (the probe has the last word)."""

    key: str
    packages: tuple[str, ...]
    tags: tuple[str, ...]
    probe: str
    version_package: str
    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    pip: bool = False  # remove EXTERNALLY-MANAGED, like the official python images

    def names(self, version: str, suite: str) -> tuple[str, ...]:
        match = _VERSION.match(version)
        if match is None:
            raise BaseImageError(f"{self.key}: cannot read a version from {version!r}")
        major, minor = match.group(1), f"{match.group(1)}.{match.group(2) or 0}"
        fields = {"major": major, "minor": minor, "version": version, "suite": suite}
        return tuple(tag.format(**fields) for tag in self.tags)


_PYTHON_PROBE = "python3 -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])'"
_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_NODE_ENV = (("NODE_EXTRA_CA_CERTS", _CA_BUNDLE),)
_PYTHON_SLIM = ("python3", "python3-pip", "python3-venv", "python-is-python3", "ca-certificates")
_NODE_SLIM = ("nodejs", "npm", "ca-certificates")
_BUILD_TOOLS = ("build-essential", "git", "curl", "libssl-dev")

RECIPES: tuple[Recipe, ...] = (
    Recipe(
        key="python-slim",
        packages=_PYTHON_SLIM,
        tags=("python:{minor}-slim", "python:{major}-slim"),
        probe=_PYTHON_PROBE,
        version_package="python3",
        cmd=("python3",),
        pip=True,
    ),
    Recipe(  # what the official non-slim image has for building wheels
        key="python",
        packages=(*_PYTHON_SLIM, *_BUILD_TOOLS, "python3-dev", "libpq-dev", "libffi-dev"),
        tags=("python:{minor}", "python:{major}"),
        probe=_PYTHON_PROBE,
        version_package="python3",
        cmd=("python3",),
        pip=True,
    ),
    Recipe(
        key="node-slim",
        packages=_NODE_SLIM,
        tags=("node:{major}-slim",),
        probe="node -p process.versions.node",
        version_package="nodejs",
        cmd=("node",),
        env=_NODE_ENV,
    ),
    Recipe(  # with a compiler and python3 for node-gyp
        key="node",
        packages=(*_NODE_SLIM, *_BUILD_TOOLS, "python3"),
        tags=("node:{major}",),
        probe="node -p process.versions.node",
        version_package="nodejs",
        cmd=("node",),
        env=_NODE_ENV,
    ),
    Recipe(
        key="debian-slim",
        packages=(),  # minbase: Essential, Priority required and apt
        tags=("debian:{suite}-slim", "debian:{major}-slim"),
        probe="cat /etc/debian_version",
        version_package="base-files",
        cmd=("bash",),
    ),
)


class BaseImageError(RuntimeError):
    pass


class Log(Protocol):
    """Where progress goes: a text stream (sys.stdout, a deploy's build.log, a StringIO)."""

    def write(self, text: str, /) -> object: ...
    def flush(self) -> None: ...


class Prefixed:
    """``log`` with ``prefix`` at the start of each line, e.g. the deploy worker's own mark, so
    a base image's build output is shown to the agent but not read as the app's build."""

    def __init__(self, log: Log, prefix: str) -> None:
        self.log, self.prefix, self._line_start = log, prefix, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            self.log.write(self.prefix + piece if self._line_start else piece)
            self._line_start = piece.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.log.flush()


@dataclass(frozen=True)
class BaseImage:
    """An image this installation offers, as GET /api/v1/capabilities shows it."""

    names: tuple[str, ...]  # what FROM may say; empty while a recipe's version is unknown
    recipe: str
    status: str  # "ready", "building" or "not built yet" (built at the first deploy using it)
    size_mb: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "recipe": self.recipe,
            "status": self.status,
            "size_mb": self.size_mb,
        }


# -- the host: suite, mirrors, CA certificates ------------------------------------------------


@functools.lru_cache(maxsize=1)
def host_suite() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"'):
            return value.strip('"')
    raise BaseImageError("/etc/os-release names no VERSION_CODENAME: not a Debian host?")


@functools.lru_cache(maxsize=1)
def host_sources() -> tuple[str, ...]:
    """The host's Debian apt sources as one-line ``deb URI SUITE COMPONENTS`` entries (only the
    host's suite and its -updates/-security), for mmdebstrap; deb.debian.org if none."""
    suite = host_suite()
    lines = [
        line
        for line in (*_deb822_sources(), *_one_line_sources())
        if line.split()[2] == suite or line.split()[2].startswith(suite + "-")
    ]
    return tuple(dict.fromkeys(lines)) or (f"deb http://deb.debian.org/debian {suite} main",)


def _deb822_sources(folder: Path = Path("/etc/apt/sources.list.d")) -> Iterator[str]:
    for path in sorted(folder.glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = {
                key.strip().lower(): value.strip()
                for key, _, value in (line.partition(":") for line in stanza.splitlines())
                if value and not key.startswith("#")
            }
            if "deb" in fields.get("types", "").split():
                for uri in fields.get("uris", "").split():
                    for suite in fields.get("suites", "").split():
                        yield f"deb {uri} {suite} {fields.get('components', 'main')}"


def _one_line_sources(folder: Path = Path("/etc/apt")) -> Iterator[str]:
    for path in [folder / "sources.list", *sorted((folder / "sources.list.d").glob("*.list"))]:
        for line in path.read_text().splitlines() if path.is_file() else ():
            words = line.split("#")[0].split()
            if len(words) >= 4 and words[0] == "deb" and not words[1].startswith("["):
                yield " ".join(words)


def host_certificates() -> tuple[Path, ...]:
    return tuple(sorted(HOST_CA_DIR.glob("*.crt"))) if HOST_CA_DIR.is_dir() else ()


def recipe_digest(recipe: Recipe) -> str:
    """What the image is made from: the recipe, the suite, the mirrors and the host's CAs. An
    image with another digest (an older recipe, a new CA) is rebuilt."""
    hashed = hashlib.sha256(f"{_BUILD_FORMAT}\n{recipe!r}\n{host_sources()!r}\n".encode())
    for cert in host_certificates():
        hashed.update(cert.name.encode() + b"\0" + cert.read_bytes())
    return hashed.hexdigest()[:16]


def debian_version(package: str) -> str | None:
    """The newest version of ``package`` the host's apt lists have from the mirrors images are
    built from (not from other repositories the host may use), or None."""
    return _debian_versions().get(package)


@functools.lru_cache(maxsize=1)
def _debian_versions() -> dict[str, str]:
    """Every recipe's ``version_package`` in the host's apt lists (one apt-cache call, which
    takes a second or so: once per process)."""
    mirrors = {line.split()[1].rstrip("/") for line in host_sources()}
    packages = sorted({recipe.version_package for recipe in RECIPES})
    try:
        listed = subprocess.run(
            ["apt-cache", "madison", *packages], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    versions: dict[str, str] = {}
    for line in listed.splitlines():  # "pkg | version | uri suite/component arch Packages"
        parts = [part.strip() for part in line.split("|")]
        if len(parts) == 3 and parts[2].split()[0].rstrip("/") in mirrors:
            versions.setdefault(parts[0], parts[1])  # the newest comes first
    return versions


# -- names -------------------------------------------------------------------------------------


# what FROM may put before an offered name (Docker Hub's official-image spellings, podman's own)
_SPELLING_PREFIXES = (
    "docker.io/library/",
    "index.docker.io/library/",
    "library/",
    "docker.io/",
    "localhost/",
)


def canonical(reference: str) -> str:
    """``python:3.11-slim`` for ``docker.io/library/python:3.11-slim``, ``library/…`` and
    ``localhost/…`` (a reference with no tag means ``:latest``); other references unchanged."""
    name = reference.strip()
    for prefix in _SPELLING_PREFIXES:
        if name.startswith(prefix) and "/" not in name[len(prefix) :]:
            name = name[len(prefix) :]
            break
    if "@" not in name and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return BUSYBOX_IMAGE if name == "instanode/busybox:latest" else name


def spellings(name: str) -> tuple[str, ...]:
    """The full references an image of ``name`` is tagged with in podman's store."""
    return (f"localhost/{name}", f"docker.io/library/{name}")


def _images() -> list[dict[str, Any]]:
    """podman's images that a recipe here made ({"Names", "Labels", "Size", ...})."""
    command = [*_PODMAN, "images", "--format", "json", "--filter", f"label={RECIPE_LABEL}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    listed: list[dict[str, Any]] = json.loads(done.stdout or "[]")
    return listed


def _built(recipe: Recipe, images: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The recipe's image as it makes it now, tagged in every spelling, among ``images`` (not
    an image built FROM it, which inherits its labels but not its names)."""
    digest = recipe_digest(recipe)
    for image in images:
        labels, names = image.get("Labels") or {}, set(image.get("Names") or ())
        if labels.get(RECIPE_LABEL) != digest or f"localhost/{labels.get(NAME_LABEL)}" not in names:
            continue
        wanted = {r for n in _local_names(image) for r in spellings(n)}
        if wanted and wanted <= names:
            return image
    return None


def _local_names(image: dict[str, Any]) -> tuple[str, ...]:
    prefix = "localhost/"
    names = [n[len(prefix) :] for n in image.get("Names") or () if n.startswith(prefix)]
    return tuple(sorted(names, key=lambda n: (-len(n), n)))


def names_of(recipe: Recipe, images: list[dict[str, Any]] | None = None) -> tuple[str, ...]:
    """The names the recipe's image has (once built) or will have (from the host's apt lists;
    empty when they do not know ``version_package``)."""
    image = _built(recipe, _images() if images is None else images)
    if image is not None:
        return _local_names(image)
    version = debian_version(recipe.version_package)
    return recipe.names(version, host_suite()) if version else ()


def recipe_for(reference: str, images: list[dict[str, Any]] | None = None) -> Recipe | None:
    """The recipe that makes ``reference`` (any spelling), or None."""
    name = canonical(reference)
    listed = _images() if images is None else images
    return next((r for r in RECIPES if name in names_of(r, listed)), None)


def is_busybox(reference: str) -> bool:
    return canonical(reference) == BUSYBOX_IMAGE


_FROM = re.compile(r"(?i)^\s*FROM\s+(.*)$")
_COPY_FROM = re.compile(r"(?i)^\s*COPY\s.*--from=(\S+)")


def from_references(dockerfile: str) -> list[str]:
    """The images a Dockerfile builds on, in order: each FROM (without ``--platform=…`` and
    ``AS name``) and ``COPY --from=<image>``, except earlier stages (by name or number) and
    references built from ARGs."""
    joined = re.sub(r"\\[ \t]*\r?\n", " ", dockerfile)
    stages: list[str] = []
    found: list[str] = []
    for line in joined.splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _FROM.match(line) or _COPY_FROM.match(line)
        if match is None:
            continue
        words = [w for w in match.group(1).split() if not w.startswith("--")]
        reference = words[0] if words else ""
        if match.re is _FROM:
            if len(words) >= 3 and words[1].lower() == "as":
                stages.append(words[2].lower())
            else:
                stages.append(str(len(stages)))
        if not reference or "$" in reference or reference.lower() in stages[:-1]:
            continue
        if reference.isdigit() or reference.lower() == "scratch":
            continue
        if reference not in found:
            found.append(reference)
    return found


def base_images_in(dockerfile: str, offered: Collection[str] | None = None) -> list[str]:
    """The references in a Dockerfile (``from_references``) that name an image offered here
    (``offered``: names as ``offered_names`` gives them, which it defaults to): what
    ``ensure_base_image`` must be called with before buildah runs."""
    references = from_references(dockerfile)
    if references and offered is None:
        offered = offered_names()
    wanted = {canonical(name) for name in offered or ()}
    return [r for r in references if canonical(r) in wanted]


# -- building ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path, log: Log, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(log, f"waiting for another build of {what}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _building(path: Path) -> bool:
    """Someone holds the build lock of ``path``."""
    if not path.exists():
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _say(log: Log, message: str) -> None:
    log.write(f"[base image] {message}\n")
    log.flush()


def ensure_base_image(reference: str, log: Log | None = None, state_dir: Path = STATE_DIR) -> str:
    """Make sure podman has the image FROM ``reference`` means (building it if not: about a
    minute); returns its ``localhost/`` name. BaseImageError when no recipe here makes it or
    its build fails."""
    log = log or sys.stdout
    if is_busybox(reference):
        if not _exists(BUSYBOX_IMAGE):
            with _locked(state_dir / "busybox.lock", log, BUSYBOX_IMAGE):
                _say(log, f"building {BUSYBOX_IMAGE} from /bin/busybox")
                ensure_busybox_image()
        return BUSYBOX_IMAGE
    name = canonical(reference)
    recipe = recipe_for(name)
    if recipe is None:
        offered = ", ".join(offered_names(state_dir))
        raise BaseImageError(f"no base image recipe here makes {reference} (offered: {offered})")
    names = ensure_recipe(recipe, log, state_dir)
    if name not in names:
        raise BaseImageError(
            f"the {recipe.key} image built from Debian {host_suite()} packages is "
            f"{', '.join(names)}, not {name}"
        )
    return f"localhost/{name}"


def ensure_recipe(
    recipe: Recipe, log: Log | None = None, state_dir: Path = STATE_DIR
) -> tuple[str, ...]:
    """The recipe's image names, building it first unless podman has it as the recipe makes it
    now (another worker building it: this one waits for that build)."""
    log = log or sys.stdout
    image = _built(recipe, _images())
    if image is not None:
        return _local_names(image)
    with _locked(state_dir / f"{recipe.key}.lock", log, recipe.key):
        image = _built(recipe, _images())  # it may have been built while this one waited
        return _local_names(image) if image is not None else build(recipe, log, state_dir)


def _exists(image: str) -> bool:
    try:
        exists = subprocess.run([*_PODMAN, "image", "exists", image], check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return exists.returncode == 0


def _run_logged(
    command: Sequence[str], log: Log, what: str, env: dict[str, str] | None = None
) -> None:
    """Run ``command``, its output going to ``log`` line by line; BaseImageError on failure."""
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
    ) as process:
        assert process.stdout is not None
        tail: list[str] = []
        for line in process.stdout:
            log.write(line)
            log.flush()
            tail = [*tail[-19:], line.rstrip()]
    if process.returncode != 0:
        raise BaseImageError(f"{what} failed (exit {process.returncode}): " + " | ".join(tail))


def _hooks(recipe: Recipe, version_file: Path) -> list[str]:
    """mmdebstrap customize hooks (shell, run on the host with the new root in "$1")."""
    hooks = []
    certificates = host_certificates()
    if certificates:
        quoted = " ".join(shlex.quote(str(c)) for c in certificates)
        hooks.append(
            'mkdir -p "$1/usr/local/share/ca-certificates" && '
            f'cp {quoted} "$1/usr/local/share/ca-certificates/"'
        )
        hooks.append(
            'if [ -x "$1/usr/sbin/update-ca-certificates" ]; then '
            'chroot "$1" update-ca-certificates; fi'
        )
    if recipe.pip:
        hooks.append('rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED')
    probe, into = shlex.quote(recipe.probe), shlex.quote(str(version_file))
    hooks.append(f'chroot "$1" sh -c {probe} > {into}')
    return hooks


def build(recipe: Recipe, log: Log | None = None, state_dir: Path = STATE_DIR) -> tuple[str, ...]:
    """Build the recipe's image and tag it with every name its probe gives (in every
    spelling); returns those names. The caller holds the recipe's lock."""
    log, began = log or sys.stdout, time.monotonic()
    state_dir.mkdir(parents=True, exist_ok=True)
    suite = host_suite()
    workdir = Path(tempfile.mkdtemp(prefix=f"{recipe.key}-", dir=state_dir))
    workdir.chmod(0o755)  # apt downloads as _apt into mmdebstrap's tempdir in here
    try:
        tarball, version_file = workdir / "rootfs.tar", workdir / "version"
        command = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar"]
        if _MERGED_USR_HOOK.is_dir():  # else usrmerge comes, and perl with it (47 MB)
            command.append(f"--hook-dir={_MERGED_USR_HOOK}")
        command += [f"--dpkgopt={option}" for option in _DPKG_EXCLUDES]
        if recipe.packages:
            command.append("--include=" + ",".join(recipe.packages))
        command += [f"--customize-hook={hook}" for hook in _hooks(recipe, version_file)]
        command += [suite, str(tarball), *host_sources()]
        _say(log, f"building the {recipe.key} image from Debian {suite} packages (mmdebstrap)")
        _run_logged(command, log, "mmdebstrap", {**os.environ, "TMPDIR": str(workdir)})
        version = version_file.read_text().strip()
        names = recipe.names(version, suite)
        _say(log, f"{recipe.key}: the image runs version {version}: {', '.join(names)}")
        references = [r for n in names for r in spellings(n)]
        replaced = {_image_id(r) for r in references}
        command = [*_PODMAN, "import", "-q", *(f"--change={c}" for c in _config(recipe, version))]
        _run_logged([*command, str(tarball), references[0]], log, "podman import")
        _run_logged([*_PODMAN, "tag", references[0], *references[1:]], log, "podman tag")
        _drop_replaced(replaced - {_image_id(references[0])})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _say(log, f"built {', '.join(names)} in {time.monotonic() - began:.0f} s")
    return names


def _config(recipe: Recipe, version: str) -> list[str]:
    """The image's config as ``podman import --change`` instructions."""
    suite = host_suite()
    env = [("PATH", PATH), ("LANG", "C.UTF-8"), *recipe.env]
    if host_certificates() and "ca-certificates" in recipe.packages:
        # libraries with a CA bundle of their own (requests, certifi) trust the host's CAs too
        env += [("SSL_CERT_FILE", _CA_BUNDLE), ("REQUESTS_CA_BUNDLE", _CA_BUNDLE)]
    packages = " ".join(("minbase", *recipe.packages))
    labels = {
        "org.opencontainers.image.description": f"Built on this machine from Debian {suite} "
        f"packages ({packages}) by instanode; not the official Docker Hub image",
        "org.opencontainers.image.version": version,
        NAME_LABEL: recipe.names(version, suite)[0],
        RECIPE_LABEL: recipe_digest(recipe),
    }
    changes = [f"ENV {key}={value}" for key, value in env]
    changes.append("CMD " + json.dumps(list(recipe.cmd)))
    changes += [f"LABEL {key}={json.dumps(value)}" for key, value in labels.items()]
    return changes


def _image_id(reference: str) -> str | None:
    done = subprocess.run(
        [*_PODMAN, "image", "inspect", "--format", "{{.Id}}", reference],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None if done.returncode == 0 else None


def _drop_replaced(image_ids: set[str | None]) -> None:
    """Remove images an older recipe made that have no name left (podman refuses one that a
    container uses: it stays). Images not made here are left alone."""
    for image_id in sorted(i for i in image_ids if i):
        done = subprocess.run(
            [*_PODMAN, "image", "inspect", "--format", "{{json .}}", image_id],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            continue
        image = json.loads(done.stdout)
        image = image[0] if isinstance(image, list) else image
        if RECIPE_LABEL in (image.get("Labels") or {}) and not image.get("RepoTags"):
            subprocess.run([*_PODMAN, "rmi", image_id], capture_output=True, check=False)


# -- what is offered ----------------------------------------------------------------------------

_BUSYBOX_DOCKERFILE = 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD ["sh"]\n'
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def available(state_dir: Path = STATE_DIR) -> list[BaseImage]:
    """Every image this installation offers to FROM, with its status (only the busybox one on
    a host that is not Debian, whose suite the recipes cannot read)."""
    images, offered = _images(), []
    try:
        recipes = RECIPES if host_suite() else ()
    except (BaseImageError, OSError):
        recipes = ()
    for recipe in recipes:
        image = _built(recipe, images)
        if image is not None:
            status, size = "ready", int(image.get("Size") or 0) // 1_000_000
        else:
            building = _building(state_dir / f"{recipe.key}.lock")
            status, size = ("building" if building else "not built yet"), None
        offered.append(BaseImage(names_of(recipe, images), recipe.key, status, size))
    busybox = _exists(BUSYBOX_IMAGE)
    offered.append(BaseImage((BUSYBOX_IMAGE,), "busybox", "ready" if busybox else "not built yet"))
    return offered


def offered_names(state_dir: Path = STATE_DIR) -> list[str]:
    """What FROM may name here, e.g. for a hint after a failed pull."""
    return [name for image in available(state_dir) for name in image.names]


def ensure_busybox_image(busybox: Path = Path("/bin/busybox")) -> str:
    """Build ``localhost/instanode/busybox:latest`` (FROM scratch, Debian's static busybox with
    a link per applet in /bin) unless podman has it already; returns its name."""
    if _exists(BUSYBOX_IMAGE):
        return BUSYBOX_IMAGE
    with tempfile.TemporaryDirectory(prefix="instanode-busybox-") as tmp:
        context = Path(tmp)
        rootfs = context / "rootfs"
        for folder in ("bin", "etc", "tmp", "www", "root"):
            (rootfs / folder).mkdir(parents=True)
        (rootfs / "tmp").chmod(0o1777)
        (rootfs / "bin" / "busybox").write_bytes(busybox.read_bytes())
        (rootfs / "bin" / "busybox").chmod(0o755)
        applets = subprocess.run(
            [str(busybox), "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        for applet in applets:
            link = rootfs / "bin" / applet
            if applet != "busybox" and not link.exists():
                link.symlink_to("busybox")
        (rootfs / "etc" / "passwd").write_text(_PASSWD)
        (rootfs / "etc" / "group").write_text(_GROUP)
        (context / "Dockerfile").write_text(_BUSYBOX_DOCKERFILE)
        built = subprocess.run(
            ["buildah", "bud", "--isolation", "chroot", "--layers=false", "-q"]
            + ["-t", BUSYBOX_IMAGE, str(context)],
            capture_output=True,
            text=True,
            check=False,
        )
    if built.returncode != 0:
        raise BaseImageError(f"building {BUSYBOX_IMAGE} failed: {built.stderr.strip()}")
    return BUSYBOX_IMAGE


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chalicelib.deploy.baseimage",
        description="List or build the base images the local deploy backend offers.",
    )
    parser.add_argument("names", nargs="*", help="images to build, e.g. python:3.11-slim node:18")
    parser.add_argument("--all", action="store_true", help="build every offered image")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR, help="locks, build dirs")
    args = parser.parse_args(argv)
    if not args.all and not args.names:
        for image in available(args.state_dir):
            print(f"{image.status:14} {', '.join(image.names) or image.recipe}")
        return 0
    began, failed = time.monotonic(), 0
    wanted: list[str | Recipe] = [*RECIPES, BUSYBOX_IMAGE] if args.all else list(args.names)
    for each in wanted:
        started, what = time.monotonic(), each if isinstance(each, str) else each.key
        try:
            if isinstance(each, Recipe):
                what = ", ".join(ensure_recipe(each, sys.stdout, args.state_dir))
            else:
                ensure_base_image(each, sys.stdout, args.state_dir)
        except (BaseImageError, OSError) as exc:
            failed += 1
            print(f"[base image] {what}: FAILED: {exc}", flush=True)
            continue
        print(f"[base image] {what}: ready ({time.monotonic() - started:.0f} s)", flush=True)
    print(f"[base image] done in {time.monotonic() - began:.0f} s, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
