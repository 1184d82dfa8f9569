"""The local deploy backend: podman on this machine (``make run``, single-machine self-hosters).

Everything of an app lives under ``<state_dir>/<slug>/``: ``port`` (its host port, allocated once
and kept across redeploys so the URL stays) and one directory per revision holding ``job.json``,
the build context, ``build.log``, ``status.json`` (written atomically by the worker at each step)
and, briefly, the 0600 ``env`` file. ``start`` spawns ``chalicelib.deploy.local_worker``, which
builds with ``buildah bud --isolation oci`` on the build network and runs the image with
``podman --runtime runc`` on its stack's network, published on 127.0.0.1 and on that network's
gateway, a private app's on the gateway only (``chalicelib.deploy.podman``); the host firewall
(``chalicelib.deploy.firewall``) decides what either can reach. A revision that fails to start
leaves the previous one serving (the worker parks it, then restores it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chalicelib.config import DeploySettings
from chalicelib.deploy.backend import BuildSpec, DeployStatus, Event, Observed
from chalicelib.deploy.classify import classify_build, classify_runtime
from chalicelib.deploy.podman import (
    app_lines,
    container_of,
    image_of,
    inspect,
    podman,
    remove_network,
    spare_of,
)
from chalicelib.errors import BackendUnavailableError

WORKER_MARK = "[instanode] "  # the worker's own lines in build.log (left out of classification)
_SLUG = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
_ROOT = Path(__file__).resolve().parents[2]  # where `python -m chalicelib...` imports from
PODMAN_STEP_SECONDS = 150  # the longest a worker's podman step runs (``podman run``'s 120 s)
_WORKER_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR", "CONTAINERS_CONF")


@dataclass(frozen=True)
class Job:
    """What the worker needs besides the context and the env file (no secrets here)."""

    slug: str
    revision: int
    port: int  # inside the container
    host_port: int
    memory_mb: int
    cpu_millis: int
    group: str  # the network's: the stack's slug, or the app's own for a plain app
    subnet: str  # the firewall's address pool (``firewall.Layout``)
    build_memory_mb: int
    build_cpu_millis: int
    build_timeout: float
    public: bool = True  # False: published on its network's gateway only (``podman.published_on``)
    health_timeout: float = 60.0


@dataclass(frozen=True)
class Record:
    """status.json: where a revision is; phase says which log explains a failure."""

    status: DeployStatus
    at: int
    phase: str = "build"  # "build" | "run" | "worker"
    exit_code: int | None = None
    error: str | None = None
    oom: bool = False
    listening: bool | None = None
    timed_out: bool = False  # the build ran past its wall-clock limit and was stopped
    build_s: float | None = None  # seconds from the worker's start to a built image
    deploy_s: float | None = None  # seconds from `podman run` to the first HTTP answer


@dataclass(frozen=True)
class Paths:
    root: Path  # <state_dir>/<slug>/<revision>

    job = property(lambda self: self.root / "job.json")
    context = property(lambda self: self.root / "context.tar.gz")
    env = property(lambda self: self.root / "env")
    log = property(lambda self: self.root / "build.log")
    app_log = property(lambda self: self.root / "app.log")
    status = property(lambda self: self.root / "status.json")
    pid = property(lambda self: self.root / "worker.pid")


def write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def write_record(paths: Paths, record: Record) -> None:
    write_json(paths.status, dataclasses.asdict(record))


def read_record(paths: Paths) -> Record | None:
    try:
        raw = json.loads(paths.status.read_text())
    except FileNotFoundError:
        return None
    return Record(**{**raw, "status": DeployStatus(raw["status"])})


def read_job(paths: Paths) -> Job:
    return Job(**json.loads(paths.job.read_text()))


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the lock file ``path`` for the block; with ``wait=False`` only if nobody holds it
    (the block gets False, and holds nothing, when somebody does)."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


class LocalBackend:
    name = "local"

    def __init__(
        self,
        settings: DeploySettings,
        fetch_context: Callable[[str, str], bytes],
        health_timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.fetch_context = fetch_context
        self.health_timeout = health_timeout  # seconds a new revision has to answer HTTP
        self.state = Path(settings.state_dir)
        self._children: dict[Path, subprocess.Popen[bytes]] = {}

    def url_of(self, slug: str) -> str:
        return f"http://{slug}.{self.settings.domain}:{self.host_port(slug)}"

    def internal_url_of(self, slug: str) -> str:
        """Containers cannot resolve ``<slug>.localhost``: they reach the host by podman's name
        for it, the bridge gateway, where the worker publishes the host port too."""
        return f"http://host.containers.internal:{self.host_port(slug)}"

    def host_port(self, slug: str) -> int:
        """The slug's host port: allocated from the range once, kept until ``remove``."""
        stored = self._app_dir(slug) / "port"
        if stored.exists():
            return int(stored.read_text())
        self.state.mkdir(parents=True, exist_ok=True)
        with locked(self.state / ".ports.lock"):
            if stored.exists():
                return int(stored.read_text())
            taken = {int(p.read_text()) for p in self.state.glob("*/port")}
            low, high = self.settings.port_range
            for port in range(low, high + 1):
                if port not in taken and _bindable(port):
                    stored.parent.mkdir(parents=True, exist_ok=True)
                    stored.write_text(str(port))
                    return port
        raise BackendUnavailableError(f"no free host port left in {low}-{high} for local deploys")

    def start(self, spec: BuildSpec) -> None:
        paths = self._paths(spec.slug, spec.revision)
        host_port = self.host_port(spec.slug)
        with locked(self._app_dir(spec.slug) / "lock"):
            if paths.pid.exists():
                return  # this revision was started already
            paths.root.mkdir(parents=True, exist_ok=True)
            paths.context.write_bytes(self.fetch_context(spec.bucket, spec.context_key))
            _write_env(paths.env, spec.env)
            job = Job(
                slug=spec.slug,
                revision=spec.revision,
                port=spec.port,
                host_port=host_port,
                memory_mb=spec.limits.memory_mb,
                cpu_millis=spec.limits.cpu_millis,
                group=spec.group or spec.slug,
                subnet=self.settings.subnet,
                build_memory_mb=self.settings.build_memory_mb,
                build_cpu_millis=self.settings.build_cpu_millis,
                build_timeout=self.settings.build_timeout_seconds,
                public=spec.public,
                health_timeout=self.health_timeout,
            )
            write_json(paths.job, dataclasses.asdict(job))
            write_record(paths, Record(DeployStatus.BUILDING, at=int(time.time())))
            self._spawn(paths)

    def _spawn(self, paths: Paths) -> None:
        env = {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}
        env["PYTHONPATH"] = str(_ROOT)
        with paths.log.open("ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "chalicelib.deploy.local_worker", str(paths.root)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=_ROOT,
                env=env,
            )
        self._children[paths.root] = child
        write_json(paths.pid, {"pid": child.pid})

    def observe(self, slug: str, revision: int) -> Observed:
        paths = self._paths(slug, revision)
        record = read_record(paths)
        if record is None:
            return Observed(
                DeployStatus.DELETED if not paths.root.exists() else DeployStatus.BUILDING
            )
        if record.status in (DeployStatus.BUILDING, DeployStatus.DEPLOYING):
            if self._worker_pid(paths) is not None:
                return Observed(record.status)
            # start() writes the record before it spawns the worker and notes its pid, all under
            # the app's lock: look again under that lock, or a start in flight looks dead
            with locked(self._app_dir(slug) / "lock"):
                alive = self._worker_pid(paths) is not None
                record = read_record(paths) or record  # it may have finished just now
            if alive:
                return Observed(record.status)
            if not record.status.terminal and record.status != DeployStatus.HEALTHY:
                record = dataclasses.replace(
                    record, status=DeployStatus.FAILED, phase="worker", error="worker died"
                )
                write_record(paths, record)
                paths.env.unlink(missing_ok=True)
        if record.status == DeployStatus.HEALTHY:
            record = self._still_running(slug, revision, paths, record)
        if record.status != DeployStatus.FAILED:
            return Observed(record.status)
        event = self._event(paths, record)
        return Observed(DeployStatus.FAILED, record.error or event.message, (event,))

    def _still_running(self, slug: str, revision: int, paths: Paths, record: Record) -> Record:
        """A healthy revision whose container exited since becomes FAILED (runtime). Not judged
        while a worker holds the app's deploy lock: its containers are being swapped (renamed,
        stopped, started), and what two inspects see then is no state the app is in."""
        with locked(paths.root.parent / "deploy.lock", wait=False) as quiet:
            return self._judged(slug, revision, paths, record) if quiet else record

    def _judged(self, slug: str, revision: int, paths: Paths, record: Record) -> Record:
        container = inspect(container_of(slug))
        if container is None:
            parked = inspect(spare_of(slug))
            if parked is not None and parked.revision == revision:
                return record  # parked while a newer revision starts: back if that one fails
        current = container.revision if container is not None else None
        if current is not None and current > revision:
            return record  # replaced by a newer revision: it stays as it ended
        failed = dataclasses.replace(
            record, status=DeployStatus.FAILED, phase="run", at=int(time.time())
        )
        if container is None or current != revision:
            failed = dataclasses.replace(failed, error="the app's container is gone")
        elif container.running:
            return record
        else:
            paths.app_log.write_text("\n".join(app_lines(container_of(slug))) + "\n")
            failed = dataclasses.replace(failed, exit_code=container.exit_code, oom=container.oom)
        write_record(paths, failed)
        return failed

    def _event(self, paths: Paths, record: Record) -> Event:
        if record.phase == "superseded":
            hint = "Nothing to do: the newer revision is the one that runs."
            return Event("Superseded", record.error or "", None, (), hint, record.at)
        if record.phase == "run":
            return classify_runtime(
                read_lines(paths.app_log),
                record.exit_code,
                record.at,
                oom=record.oom,
                listening=record.listening,
                port=read_job(paths).port,
            )
        lines = [line for line in read_lines(paths.log) if not line.startswith(WORKER_MARK)]
        if record.timed_out:
            hint = (
                "The build was stopped at its time limit; make the slow RUN steps faster "
                "(fewer or prebuilt dependencies) or split the work."
            )
            return Event(
                "BuildTimeout", record.error or "", None, tuple(lines[-20:]), hint, record.at
            )
        from chalicelib.deploy.baseimage import offered_names  # no registry: only these

        return classify_build(lines, record.exit_code, record.at, base_images=offered_names)

    def logs(self, slug: str, revision: int, since_line: int = 0) -> list[str]:
        paths = self._paths(slug, revision)
        lines = read_lines(paths.log)
        for name in (container_of(slug), spare_of(slug)) if paths.root.exists() else ():
            container = inspect(name)
            if container is not None and container.revision == revision:
                return (lines + app_lines(name))[since_line:]
        return (lines + read_lines(paths.app_log))[since_line:]

    def remove(self, slug: str) -> None:
        app_dir = self._app_dir(slug)
        workers = [self._worker_pid(Paths(revision_dir)) for revision_dir in app_dir.glob("[0-9]*")]
        stop_workers([pid for pid in workers if pid is not None], slug)
        # every container of the app carries the label (a parked one too); ids only: podman 4.3
        # removes nothing at all when one of the names it is given does not exist
        listed = podman("ps", "-aq", "--filter", f"label=instanode.app={slug}").stdout.split()
        if listed:
            # stopped first: `rm -f` of a running container leaves its network teardown to a
            # cleanup process that can run after remove_network, leaving the port's DNAT rule
            podman("stop", "-t", "0", *listed)
            podman("rm", "-f", "-t", "0", *listed)
        images = podman("images", "-q", "--filter", f"reference=localhost/instanode-{slug}")
        if images.stdout.split():
            podman("rmi", "-f", *sorted(set(images.stdout.split())))
        for group in {read_job(Paths(job.parent)).group for job in app_dir.glob("[0-9]*/job.json")}:
            remove_network(group)  # a stack's stays while another of its services uses it
        shutil.rmtree(app_dir, ignore_errors=True)

    def apps(self) -> list[str]:
        """The slug of every app this backend holds anything of: each has its state folder
        from ``start`` until ``remove`` has removed its containers and images."""
        if not self.state.is_dir():
            return []
        return sorted(d.name for d in self.state.iterdir() if d.is_dir() and _SLUG.match(d.name))

    def _worker_pid(self, paths: Paths) -> int | None:
        """The pid of this revision's live worker; None once it exited (or never started). A
        worker this process started answers for itself; another's is looked up in /proc."""
        child = self._children.get(paths.root)
        if child is not None:
            if child.poll() is None:
                return child.pid
            del self._children[paths.root]  # reaped: no zombie left to look alive
            return None
        try:
            pid = int(json.loads(paths.pid.read_text())["pid"])
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, KeyError):
            return None
        alive = stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        return pid if alive and str(paths.root).encode() in cmdline else None

    def _app_dir(self, slug: str) -> Path:
        if not _SLUG.match(slug):
            raise ValueError(f"not a DNS label: {slug!r}")
        return self.state / slug

    def _paths(self, slug: str, revision: int) -> Paths:
        return Paths(self._app_dir(slug) / str(int(revision)))


def stop_workers(pids: list[int], slug: str) -> None:
    """Stop an app's workers without cutting a podman step of theirs short: podman killed in the
    middle of ``run`` or ``start`` leaves the container's port forwarding in the nat table (a
    DNAT rule to a gone address, so the next app given that host port answers nothing, or with
    another app's page). The workers go at once, their builds (buildah, each leading a session
    of its own) too; a podman step naming the app takes seconds and is waited for."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + PODMAN_STEP_SECONDS
    while steps := [(pid, argv[0]) for pid, argv in processes() if _acts_on(argv, slug)]:
        for pid, program in steps:
            with contextlib.suppress(ProcessLookupError):
                if program.endswith("buildah"):
                    os.killpg(pid, signal.SIGKILL)  # a build leads its session
                elif time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)  # a podman step past its own timeout
        time.sleep(0.1)


def processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every process of this machine that is not gone."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if argv[0]:
                    yield int(entry.name), [a.decode(errors="replace") for a in argv]


def _acts_on(argv: list[str], slug: str) -> bool:
    """A podman or buildah command of a worker of ``slug`` (by its container or image name)."""
    if Path(argv[0]).name not in ("podman", "buildah"):
        return False
    names = (container_of(slug), spare_of(slug))
    return any(a in names or a.startswith(image_of(slug, "")) for a in argv[1:])


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _write_env(path: Path, env: Mapping[str, str]) -> None:
    """The app's environment for ``podman run --env-file`` (0600; the worker deletes it).
    Values with a line break cannot go in an env file: the worker passes those by name."""
    for key in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"not an environment variable name: {key!r}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(dict(env), handle)
