"""The detached worker of one local deploy revision:
``python -m chalicelib.deploy.local_worker <state_dir>/<slug>/<revision>``.

Its stdout and stderr are the revision's build.log. Steps: check the host firewall, extract the
context, build any local base image it names, build the image (buildah, oci isolation, on the
build network, within the build's limits), then, under the app's deploy lock, park the serving
container (renamed to its spare name and stopped, which frees the host port), run this revision's
on its network and wait until something answers HTTP on its host port. Healthy: the parked one
is removed. Not: this one is removed (its logs kept for classification) and the parked one
started again, so a bad revision never leaves the app down. status.json is rewritten at each step.
The app's environment goes to podman in a 0600 env file that is deleted once the container runs:
values never reach a log or a command line.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from chalicelib.deploy import firewall
from chalicelib.deploy.backend import DeployStatus
from chalicelib.deploy.baseimage import (
    BaseImageError,
    Prefixed,
    base_images_in,
    ensure_base_image,
)
from chalicelib.deploy.local import (
    WORKER_MARK,
    Job,
    Paths,
    Record,
    locked,
    read_job,
    read_record,
    write_record,
)
from chalicelib.deploy.podman import (
    PODMAN,
    ULIMITS,
    Network,
    app_lines,
    container_of,
    ensure_build_network,
    ensure_network,
    image_of,
    inspect,
    podman,
    publish_args,
    published_on,
    spare_of,
    userns,
)
from chalicelib.deploy.tarball import extract


def say(message: str) -> None:
    print(WORKER_MARK + message, flush=True)


def update(paths: Paths, **changes: Any) -> Record:
    record = read_record(paths) or Record(DeployStatus.BUILDING, at=int(time.time()))
    record = dataclasses.replace(record, at=int(time.time()), **changes)
    write_record(paths, record)
    return record


def fail(paths: Paths, phase: str, **changes: Any) -> None:
    record = update(paths, status=DeployStatus.FAILED, phase=phase, **changes)
    say(f"failed ({phase}): {record.error or f'exit code {record.exit_code}'}")


def build(job: Job, paths: Paths) -> bool:
    context = paths.root / "context"
    say("extracting the build context")
    shutil.rmtree(context, ignore_errors=True)
    try:
        extract(paths.context.read_bytes(), context)
    except Exception as exc:  # the tarball was validated on upload; this is belt and braces
        print(f"error: the build context cannot be extracted: {exc}", flush=True)
        fail(paths, "build", error=f"the build context cannot be extracted: {exc}")
        return False
    paths.context.unlink()
    dockerfile = context / "Dockerfile"
    text = dockerfile.read_text(errors="replace") if dockerfile.is_file() else ""
    for reference in base_images_in(text):  # built here from Debian packages: no registry
        say(f"base image {reference}: built on this machine when missing (about a minute)")
        try:
            ensure_base_image(reference, Prefixed(sys.stdout, WORKER_MARK))
        except BaseImageError as exc:
            fail(paths, "build", error=f"the base image {reference} could not be built: {exc}")
            return False
    command = build_command(job, context)
    say(" ".join(command))
    began = time.monotonic()
    exit_code = run_bounded(command, job.build_timeout)
    shutil.rmtree(context, ignore_errors=True)
    if exit_code != 0:
        timed_out = exit_code is None
        error = f"the build took longer than {job.build_timeout:.0f} s" if timed_out else None
        fail(paths, "build", exit_code=exit_code, error=error, timed_out=timed_out)
        return False
    say(f"built {image_of(job.slug, job.revision)} in {time.monotonic() - began:.1f} s")
    return True


def build_command(job: Job, context: Path) -> list[str]:
    """buildah in a runc container per ``RUN`` step (runc's default capabilities and seccomp
    profile): its own PID and network namespace on the build network (the internet, nothing on
    this machine: ``firewall``), and the build's memory and CPU limits (no user namespace: see
    ``podman.userns``)."""
    network = ensure_build_network(firewall.Layout.of(job.subnet)).name
    command = ["buildah", "bud", "--isolation", "oci", "--network", network, *ULIMITS]
    command += ["--memory", f"{job.build_memory_mb}m", "--memory-swap", f"{job.build_memory_mb}m"]
    command += ["--cpu-period", "100000", "--cpu-quota", str(job.build_cpu_millis * 100)]
    return [*command, "--layers=false", "-t", image_of(job.slug, job.revision), str(context)]


def run_bounded(command: list[str], timeout: float) -> int | None:
    """The command's exit code; None when it ran past ``timeout`` and was stopped (SIGTERM to
    its process group, which ends a ``RUN`` step's container too; SIGKILL if that is ignored)."""
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        return None


def newer_revision(paths: Paths, revision: int) -> int | None:
    started = [int(p.parent.name) for p in paths.root.parent.glob("[0-9]*/worker.pid")]
    newer = [r for r in started if r > revision]
    return max(newer) if newer else None


def env_arguments(paths: Paths) -> tuple[list[str], dict[str, str]]:
    """podman arguments (an env file; names only for multi-line values) and the values that
    must reach podman through its own environment instead."""
    env: dict[str, str] = json.loads(paths.env.read_text()) if paths.env.exists() else {}
    inline = {k: v for k, v in env.items() if "\n" not in v and "\r" not in v and "\0" not in v}
    by_name = {k: v.replace("\0", "") for k, v in env.items() if k not in inline}
    env_file = paths.root / "env.list"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{k}={v}\n" for k, v in inline.items())
    args = ["--env-file", str(env_file)]
    for key in by_name:
        args += ["-e", key]
    return args, by_name


def park(slug: str) -> int | None:
    """Stop the serving container under its spare name (freeing the host port); its revision,
    or None when nothing was serving. One that is not running is simply removed."""
    name, spare = container_of(slug), spare_of(slug)
    current = inspect(name)
    if current is not None:  # else a worker that died mid-swap may have left one parked
        podman("rm", "-f", "-t", "0", spare)
        renamed = current.running and podman("rename", name, spare).returncode == 0
        if not renamed:
            podman("rm", "-f", "-t", "3", name)
    parked = inspect(spare)
    if parked is None or parked.revision is None:
        return None
    podman("stop", "-t", "3", spare)
    say(f"parked revision {parked.revision} as {spare}")
    return parked.revision


def unpark(job: Job, network: Network, previous: int | None) -> None:
    """After a failed start: remove this revision's container and serve the parked one again
    (started before it gets its name back, so it never looks like an exited app)."""
    podman("rm", "-f", "-t", "0", container_of(job.slug))
    if previous is None:
        return
    started = podman("start", spare_of(job.slug))
    podman("rename", spare_of(job.slug), container_of(job.slug))
    if started.returncode != 0:
        say(f"revision {previous} did not start again: {started.stderr.strip()}")
        return
    deadline = time.monotonic() + job.health_timeout
    while not (back := answers(job, network)) and time.monotonic() < deadline:
        time.sleep(0.2)
    say(f"revision {previous} " + ("serves again" if back else "was started but does not answer"))


Failure = dict[str, Any]  # the FAILED record's fields, written once the previous one is back


def run(job: Job, paths: Paths, network: Network) -> Failure | None:
    """Start this revision's container on its network; what went wrong when podman cannot."""
    env_args, by_name = env_arguments(paths)
    command = [*PODMAN, "run", "-d", "--name", container_of(job.slug), *ULIMITS]
    command += ["--network", network.name, "--pull", "never", *userns(job.host_port)]
    # the gateway, where the stack's other services are published (podman would name another
    # host address for a container in a user namespace)
    command += ["--add-host", f"host.containers.internal:{network.gateway}"]
    command += publish_args(job.host_port, job.port, job.public, network.gateway)
    command += ["--memory", f"{job.memory_mb}m", "--cpus", f"{job.cpu_millis / 1000:g}"]
    command += ["--label", f"instanode.app={job.slug}"]
    command += ["--label", f"instanode.revision={job.revision}"]
    command += ["--log-driver", "k8s-file", "--log-opt", "max-size=10mb"]
    command += [*env_args, image_of(job.slug, job.revision)]
    say(" ".join(command))
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env={**os.environ, **by_name},
            timeout=120,
            check=False,
        )
    finally:
        paths.env.unlink(missing_ok=True)
        (paths.root / "env.list").unlink(missing_ok=True)
    if done.returncode != 0:
        print(done.stderr, end="", flush=True)
        paths.app_log.write_text(done.stderr)
        return {"exit_code": done.returncode, "error": "podman could not start the app"}
    return None


def wait_healthy(job: Job, paths: Paths, network: Network) -> Failure | None:
    """HEALTHY once the app answers HTTP; what went wrong (its logs kept in app.log) when it
    exits first or does not answer within the health timeout."""
    name, began = container_of(job.slug), time.monotonic()
    while True:
        container = inspect(name)
        if container is None or not container.running:
            paths.app_log.write_text("\n".join(app_lines(name)) + "\n")
            exit_code = container.exit_code if container else None
            return {"exit_code": exit_code, "oom": bool(container and container.oom)}
        if answers(job, network):
            update(paths, status=DeployStatus.HEALTHY, deploy_s=round(time.monotonic() - began, 2))
            return None
        if time.monotonic() - began > job.health_timeout:
            podman("stop", "-t", "3", name)
            paths.app_log.write_text("\n".join(app_lines(name)) + "\n")
            return {"listening": False}
        time.sleep(0.2)


def answers(job: Job, network: Network) -> bool:
    """Something answers HTTP at the app's host port (where it is published: a private app's
    is not on loopback)."""
    address = published_on(job.public, network.gateway)[0]
    connection = http.client.HTTPConnection(address, job.host_port, timeout=2)
    try:
        connection.request("GET", "/", headers={"Host": f"{job.slug}.localhost"})
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True


def prune(job: Job, serving: int | None) -> None:
    """Delete the app's images up to this revision but the serving one's (newer ones may be
    building right now)."""
    listed = podman(
        "images", "--format", "{{.Tag}}", "--filter", f"reference={image_of(job.slug, '*')}"
    )
    revisions = {int(t) for t in listed.stdout.split() if t.isdigit()}
    doomed = sorted(r for r in revisions if r <= job.revision and r != serving)
    if doomed:
        podman("rmi", "-f", *(image_of(job.slug, r) for r in doomed))


def deploy(job: Job, paths: Paths) -> None:
    began = time.monotonic()
    firewall.ensure_base(firewall.Layout.of(job.subnet))  # or nothing is built or run
    if not build(job, paths):
        return
    update(paths, status=DeployStatus.DEPLOYING, build_s=round(time.monotonic() - began, 2))
    with locked(paths.root.parent / "deploy.lock"):
        newer = newer_revision(paths, job.revision)
        if newer is not None:
            fail(paths, "superseded", error=f"revision {newer} was started before this one ran")
            podman("rmi", "-f", image_of(job.slug, job.revision))
            return
        network = ensure_network(firewall.Layout.of(job.subnet), job.group)
        previous = park(job.slug)
        try:
            failure = run(job, paths, network) or wait_healthy(job, paths, network)
        except BaseException:
            unpark(job, network, previous)
            raise
        if failure is None:
            podman("rm", "-f", "-t", "0", spare_of(job.slug))
        else:
            unpark(job, network, previous)
            fail(paths, "run", **failure)
    prune(job, previous if failure else job.revision)


def main(argv: list[str]) -> int:
    paths = Paths(Path(argv[1]))
    try:
        deploy(read_job(paths), paths)
    except Exception as exc:
        traceback.print_exc()
        fail(paths, "worker", error=f"the deploy worker failed: {exc}")
        return 1
    finally:
        paths.env.unlink(missing_ok=True)
        (paths.root / "env.list").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
