"""What the Job, Deployment and Pod objects the API returns say about a revision (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chalicelib.deploy import manifests as m
from chalicelib.deploy.backend import DeployStatus, Event, Observed

MAX_RESTARTS = 3
# waiting states that do not clear up by themselves (the image is missing, the env is unusable)
STUCK = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "CreateContainerConfigError"})


def revision_of(dep: Any) -> int | None:
    """The revision a Deployment runs (None for no Deployment)."""
    if dep is None or dep.spec is None or dep.spec.template.metadata is None:
        return None
    rev = (dep.spec.template.metadata.labels or {}).get(m.REVISION, "")
    return int(rev) if rev.isdigit() else None


def job_state(job: Any) -> str:
    """The Job's state: "running", "succeeded" or "failed"."""
    status = job.status
    if status is None:
        return "running"
    for cond in status.conditions or []:
        if cond.status == "True" and cond.type in ("Failed", "Complete"):
            return "failed" if cond.type == "Failed" else "succeeded"
    if status.succeeded:
        return "succeeded"
    if status.failed:
        return "failed"
    return "running"


def failed_condition_lines(job: Any) -> list[str]:
    """Why the Job failed as its conditions say (when its pod left no log)."""
    conditions = (job.status.conditions if job.status else None) or []
    return [f"{c.reason}: {c.message}" for c in conditions if c.type == "Failed" and c.reason]


def rolled_out(dep: Any) -> bool:
    """The rollout of the Deployment's current template is over (as ``kubectl rollout status``
    decides it): every replica updated, the old ones gone, at least one available."""
    status, spec = dep.status, dep.spec
    if status is None:
        return False
    generation = dep.metadata.generation
    if generation is not None and (status.observed_generation or 0) < generation:
        return False
    want = spec.replicas if spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    available = status.available_replicas or 0
    total = status.replicas or 0
    return updated >= want and total <= updated and available >= max(updated, 1)


def container_port(dep: Any) -> int | None:
    for container in dep.spec.template.spec.containers or []:
        for port in container.ports or []:
            return int(port.container_port)
    return None


def newest(pods: Iterable[Any]) -> Any:
    """The pod created last (None for no pods)."""
    ordered = sorted(
        pods,
        key=lambda p: (
            p.metadata.creation_timestamp is not None,
            p.metadata.creation_timestamp or 0,
        ),
    )
    return ordered[-1] if ordered else None


# --- a container's status ------------------------------------------------------------------


def crashing(status: Any) -> bool:
    """The container will not come up by itself."""
    waiting = status.state.waiting if status.state else None
    return (
        (waiting is not None and waiting.reason in STUCK)
        or oom_killed(status)
        or (status.restart_count or 0) > MAX_RESTARTS
    )


def waiting_lines(status: Any) -> list[str]:
    """Why the container waits (for an app that left no log)."""
    waiting = status.state.waiting if status.state else None
    if waiting is None or not waiting.reason:
        return []
    return [f"{waiting.reason}: {waiting.message}" if waiting.message else str(waiting.reason)]


def oom_killed(status: Any) -> bool:
    return any(t.reason == "OOMKilled" for t in _terminations(status))


def terminated_exit_code(status: Any) -> int | None:
    for terminated in _terminations(status):
        return int(terminated.exit_code)
    return None


def exit_code(pod: Any, container: str) -> int | None:
    """The exit code of the pod's ``container`` (None while it has not exited)."""
    for status in (pod.status.container_statuses if pod.status else None) or []:
        if status.name == container:
            return terminated_exit_code(status)
    return None


def _terminations(status: Any) -> list[Any]:
    found = []
    for state in (status.state, status.last_state):
        if state is not None and state.terminated is not None:
            found.append(state.terminated)
    return found


# --- failures that are no build's or app's -------------------------------------------------


def superseded(revision: int, running: int, at: int) -> Observed:
    message = f"Revision {revision} was replaced by revision {running}."
    hint = "Look at the newest revision of this deployment instead."
    return _failed("Superseded", message, hint, at)


def no_build(revision: int, at: int) -> Observed:
    message = f"No build of revision {revision} is on the cluster (it expired or was removed)."
    return _failed("BuildNotFound", message, "Redeploy the app to build it again.", at)


def _failed(reason: str, message: str, hint: str, at: int) -> Observed:
    """A failure without a log to classify: the event says what happened and what to do."""
    event = Event(reason, message, exit_code=None, last_lines=(), hint=hint, at=at)
    return Observed(DeployStatus.FAILED, message, (event,))
