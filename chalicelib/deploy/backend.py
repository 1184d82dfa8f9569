"""The interface every deploy backend implements (Kubernetes in production, podman locally),
and the values passed to and from it.

A backend builds one *revision* of an app from a build context (a validated, gzipped tarball
stored in S3) and runs it; ``start`` returns at once and the build goes on elsewhere (a kaniko
Job, a local worker process). ``observe`` reports where a revision is, with classified failure
events; it is cheap enough to call on every read of a deployment and from the scheduled poller.
All methods are idempotent: starting a revision twice, or removing an app already gone, is fine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class DeployStatus(StrEnum):
    BUILDING = "building"  # the image is being built
    DEPLOYING = "deploying"  # built; the app is starting
    HEALTHY = "healthy"  # the app answers at its URL
    FAILED = "failed"  # the build or the app failed (see events)
    DELETED = "deleted"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in (DeployStatus.FAILED, DeployStatus.DELETED, DeployStatus.EXPIRED)


@dataclass(frozen=True)
class PodLimits:
    """Compute per app, from the team's tier."""

    cpu_millis: int
    memory_mb: int


@dataclass(frozen=True)
class BuildSpec:
    """One revision of one app, as the service hands it to a backend."""

    app_id: str  # "app_<hex>", stable across redeploys
    slug: str  # a DNS label, unique per app: the URL's host part and the backend's object names
    revision: int  # 1 for the first deploy, +1 per redeploy
    bucket: str  # where the build context lies
    context_key: str  # S3 key of the gzipped tarball (validated before it got there)
    port: int  # the port the app listens on inside its container
    limits: PodLimits
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # customer secrets
    # False: served only at ``internal_url_of``, to other apps (a stack's ``expose: false``)
    public: bool = True
    # the stack's slug for a stack's service (its services may reach each other's pods on
    # Kubernetes, other apps may not); None for a plain deploy
    group: str | None = None


@dataclass(frozen=True)
class Event:
    """A classified happening of a revision: what failed, the evidence, what to do."""

    reason: str  # e.g. "BuildFailed", "DockerfileNotFound", "CrashLoop", "PortNotListening"
    message: str
    exit_code: int | None
    last_lines: tuple[str, ...]  # the tail of the build or app log: the actual error output
    hint: str  # a plain-language remedy
    at: int  # unix time

    def as_json(self) -> dict[str, Any]:
        from chalicelib.service import iso

        return {
            "reason": self.reason,
            "message": self.message,
            "exit_code": self.exit_code,
            "last_lines": list(self.last_lines),
            "hint": self.hint,
            "at": iso(self.at),
        }


@dataclass(frozen=True)
class Observed:
    status: DeployStatus
    error_message: str | None = None
    events: tuple[Event, ...] = ()


class DeployBackend(Protocol):
    name: str

    def url_of(self, slug: str) -> str:
        """The public URL an app of this slug is served at (known before it is healthy; a
        private app's is not served)."""
        ...

    def internal_url_of(self, slug: str) -> str:
        """The URL other apps' containers reach this app at (a stack's ``service://<name>``)."""
        ...

    def start(self, spec: BuildSpec) -> None:
        """Begin building and then running ``spec.revision``; returns without waiting. A newer
        revision replaces the running one only once it is built (the URL stays)."""
        ...

    def observe(self, slug: str, revision: int) -> Observed:
        """Where ``revision`` of the app is now."""
        ...

    def logs(self, slug: str, revision: int, since_line: int = 0) -> list[str]:
        """Build log then app log lines of ``revision``, from ``since_line`` on (for SSE)."""
        ...

    def remove(self, slug: str) -> None:
        """Stop the app and delete everything the backend made for it; gone already is fine."""
        ...


@runtime_checkable
class AppInventoried(Protocol):
    """A deploy backend that can list its apps, so the reconciler removes those no record
    knows (the local backend; Kubernetes objects carry names cut to 63 characters, not slugs)."""

    def apps(self) -> list[str]:
        """The slug of every app the backend holds anything of (containers, images, state)."""
        ...

    def remove(self, slug: str) -> None: ...
