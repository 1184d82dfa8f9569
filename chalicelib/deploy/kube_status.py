"""What the Job, Deployment and Pod objects the API returns (JSON, as dicts) say about a
revision (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable

from chalicelib.deploy import manifests as m
from chalicelib.deploy.backend import DeployStatus, Event, Observed
from chalicelib.deploy.kube_client import Obj, field

MAX_RESTARTS = 3
# waiting states that do not clear up by themselves (the image is missing, the env is unusable)
STUCK = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "CreateContainerConfigError"})


def revision_of(dep: Obj | None) -> int | None:
    """The revision a Deployment runs (None for no Deployment)."""
    rev = (field(dep, "spec", "template", "metadata", "labels") or {}).get(m.REVISION, "")
    return int(rev) if rev.isdigit() else None


def job_state(job: Obj) -> str:
    """The Job's state: "running", "succeeded" or "failed"."""
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Failed", "Complete"):
            return "failed" if cond["type"] == "Failed" else "succeeded"
    if status.get("succeeded"):
        return "succeeded"
    if status.get("failed"):
        return "failed"
    return "running"


def failed_condition_lines(job: Obj) -> list[str]:
    """Why the Job failed as its conditions say (when its pod left no log)."""
    conditions = field(job, "status", "conditions") or []
    return [
        f"{c['reason']}: {c.get('message')}"
        for c in conditions
        if c.get("type") == "Failed" and c.get("reason")
    ]


def rolled_out(dep: Obj) -> bool:
    """The rollout of the Deployment's current template is over (as ``kubectl rollout status``
    decides it): every replica updated, the old ones gone, at least one available."""
    status = dep.get("status")
    if status is None:
        return False
    generation = field(dep, "metadata", "generation")
    if generation is not None and (status.get("observedGeneration") or 0) < generation:
        return False
    replicas = field(dep, "spec", "replicas")
    want = replicas if replicas is not None else 1
    updated = status.get("updatedReplicas") or 0
    available = status.get("availableReplicas") or 0
    total = status.get("replicas") or 0
    return updated >= want and total <= updated and available >= max(updated, 1)


def container_port(dep: Obj) -> int | None:
    for container in field(dep, "spec", "template", "spec", "containers") or []:
        for port in container.get("ports") or []:
            return int(port["containerPort"])
    return None


def newest(pods: Iterable[Obj]) -> Obj | None:
    """The pod created last (None for no pods). ``creationTimestamp`` is RFC 3339 in UTC to the
    second, so its text sorts as its time does."""
    ordered = sorted(pods, key=lambda p: field(p, "metadata", "creationTimestamp") or "")
    return ordered[-1] if ordered else None


def container_statuses(pod: Obj) -> list[Obj]:
    statuses: list[Obj] = field(pod, "status", "containerStatuses") or []
    return statuses


# --- a container's status ------------------------------------------------------------------


def restarts(status: Obj) -> int:
    return int(status.get("restartCount") or 0)


def crashing(status: Obj) -> bool:
    """The container will not come up by itself."""
    return (
        field(status, "state", "waiting", "reason") in STUCK
        or oom_killed(status)
        or restarts(status) > MAX_RESTARTS
    )


def waiting_lines(status: Obj) -> list[str]:
    """Why the container waits (for an app that left no log)."""
    waiting = field(status, "state", "waiting") or {}
    reason, message = waiting.get("reason"), waiting.get("message")
    if not reason:
        return []
    return [f"{reason}: {message}" if message else str(reason)]


def oom_killed(status: Obj) -> bool:
    return any(t.get("reason") == "OOMKilled" for t in _terminations(status))


def terminated_exit_code(status: Obj) -> int | None:
    for terminated in _terminations(status):
        return int(terminated["exitCode"])
    return None


def exit_code(pod: Obj, container: str) -> int | None:
    """The exit code of the pod's ``container`` (None while it has not exited)."""
    for status in container_statuses(pod):
        if status.get("name") == container:
            return terminated_exit_code(status)
    return None


def _terminations(status: Obj) -> list[Obj]:
    found = (field(status, state, "terminated") for state in ("state", "lastState"))
    return [terminated for terminated in found if terminated is not None]


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
