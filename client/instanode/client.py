"""``Client``: typed methods for the routes of an instanode API, in namespaces by what they act
on (``c.db.new``, ``c.resources.list``, ``c.deployments.logs``, ``c.stacks.new`` ...)."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from instanode._http import Transport
from instanode.archive import source_bytes
from instanode.errors import InstanodeError
from instanode.models import (
    Deployment,
    DeviceLogin,
    Presigned,
    Resource,
    Stack,
    WebhookRequest,
)

DEFAULT_API = "http://127.0.0.1:8000"
# The API caps a multipart body at 4.4 MB (chalicelib/routes/requests.py MULTIPART_MAX_BYTES);
# a tarball above this (leaving room for the form around it) goes through /deploy/upload-url.
MULTIPART_TARBALL_MAX_BYTES = 4_000_000
FINAL_STATUSES = frozenset({"healthy", "failed", "deleted", "expired"})
_NAME_CHARS = re.compile(r"[^A-Za-z0-9 _-]+")

Source = str | os.PathLike[str] | bytes
Records = list[dict[str, Any]]  # (``list`` is a method name in the namespaces below)


def new_key() -> str:
    return str(uuid.uuid4())


def _seg(value: str) -> str:
    """``value`` as one path segment."""
    return quote(value, safe="")


class Client:
    """A client of one instanode API. ``api``: None means ``$INSTANODE_API``, else
    http://127.0.0.1:8000; ``token`` (an API key or session): None means ``$INSTANODE_TOKEN``,
    else anonymous. ``headers`` go with every request."""

    def __init__(
        self,
        api: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        base = (api or os.environ.get("INSTANODE_API") or DEFAULT_API).rstrip("/")
        chosen = token if token is not None else os.environ.get("INSTANODE_TOKEN")
        self._transport = Transport(
            base, chosen or None, timeout=timeout, retries=retries, headers=headers
        )
        self.db = ResourceKind(self, "/db/new")
        self.vector = ResourceKind(self, "/vector/new")
        self.cache = ResourceKind(self, "/cache/new")
        self.nosql = ResourceKind(self, "/nosql/new")
        self.queue = ResourceKind(self, "/queue/new")
        self.storage = Storage(self, "/storage/new")
        self.webhook = Webhook(self, "/webhook/new")
        self.resources = Resources(self)
        self.deployments = Deployments(self)
        self.stacks = Stacks(self)
        self.api_keys = ApiKeys(self)

    @property
    def api(self) -> str:
        return self._transport.api

    @property
    def token(self) -> str | None:
        return self._transport.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._transport.token = value or None

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        files: Any = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retry: bool = True,
    ) -> Any:
        """One call of the API: the parsed JSON of a 2xx answer, else InstanodeError. With an
        ``idempotency_key`` (and for GETs) transient failures are retried with that same key."""
        return self._transport.request(
            method,
            path,
            json=json,
            params=params,
            content=content,
            files=files,
            data=data,
            headers=headers,
            idempotency_key=idempotency_key,
            retry=retry,
        )

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = self.request(method, path, **kwargs)
        if not isinstance(body, dict):
            raise InstanodeError(0, "unexpected_response", f"{method} {path} did not answer JSON.")
        return body

    # -- claim, sign-in, capabilities ------------------------------------------------------
    def claim(self, upgrade_jwt: str, email: str) -> dict[str, Any]:
        """Mail ``email`` a sign-in link that moves the resource's network to their team."""
        return self._json("POST", "/claim", json={"token": upgrade_jwt, "email": email})

    def capabilities(self) -> dict[str, Any]:
        return self._json("GET", "/api/v1/capabilities")

    def me(self) -> dict[str, Any]:
        return self._json("GET", "/auth/me")

    def device_login_start(self) -> DeviceLogin:
        return DeviceLogin.from_json(self._json("POST", "/auth/cli"))

    def device_login_poll(self, session_id: str) -> dict[str, Any]:
        """``status`` ``pending``, ``approved`` (with ``api_token``, once) or ``expired``."""
        return self._json("GET", f"/auth/cli/{_seg(session_id)}")

    # -- deploys ---------------------------------------------------------------------------
    def deploy(
        self,
        source: Source,
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        redeploy: bool = False,
        ttl_policy: str | None = None,
        idempotency_key: str | None = None,
    ) -> Deployment:
        """Build and run ``source`` (a directory, tarred here honouring .dockerignore, a
        .tar.gz file or its bytes) as the app ``name``; ``redeploy``: rebuild that app in
        place. Answers at once (``building``): follow with ``deployments.logs`` or ``wait``."""
        tarball = source_bytes(source)
        key = idempotency_key or new_key()
        fields: dict[str, str] = {"name": name}
        if port is not None:
            fields["port"] = str(port)
        if env:
            fields["env_vars"] = json.dumps(dict(env))
        if redeploy:
            fields["redeploy"] = "true"
        if ttl_policy:
            fields["ttl_policy"] = ttl_policy
        if len(tarball) > MULTIPART_TARBALL_MAX_BYTES:
            upload = self._json("POST", "/deploy/upload-url", idempotency_key=new_key())
            self._transport.put_url(str(upload["upload_url"]), tarball)
            body = self._json(
                "POST",
                "/deploy/new",
                json={**fields, "upload_key": upload["upload_key"]},
                idempotency_key=key,
            )
        else:
            body = self._json(
                "POST",
                "/deploy/new",
                data=fields,
                files={"tarball": ("app.tar.gz", tarball, "application/gzip")},
                idempotency_key=key,
            )
        return Deployment.from_json(body)

    def _follow(
        self, path: str, follow: bool, fresh_status: Callable[[], str | None] | None = None
    ) -> Iterator[str]:
        """The log lines of an SSE log route; ``follow``: reconnecting (Last-Event-ID) until
        the status is final: the one the stream reports, else (a stream whose status may be
        a stored one, not yet refreshed) what ``fresh_status`` reads."""
        last: str | None = None
        while True:
            status, retry_ms = None, 2000
            with self._transport.events(path, last) as events:
                for event in events:
                    if event.event == "status":
                        status, retry_ms = event.data, event.retry or retry_ms
                        continue
                    if event.id:
                        last = event.id
                    yield event.data
            if follow and status not in FINAL_STATUSES and fresh_status is not None:
                status = fresh_status()
            if not follow or status is None or status in FINAL_STATUSES:
                return
            time.sleep(retry_ms / 1000)


class _Namespace:
    def __init__(self, client: Client) -> None:
        self._client = client


class ResourceKind(_Namespace):
    """One kind of resource: ``new`` provisions it."""

    def __init__(self, client: Client, path: str) -> None:
        super().__init__(client)
        self._path = path

    def new(self, name: str, *, idempotency_key: str | None = None, **fields: Any) -> Resource:
        body = self._client._json(
            "POST",
            self._path,
            json={"name": name, **fields},
            idempotency_key=idempotency_key or new_key(),
        )
        return Resource.from_json(body)


class Storage(ResourceKind):
    def presign(
        self,
        token: str,
        key: str,
        *,
        operation: str = "GET",
        content_length: int | None = None,
        expires_in: int | None = None,
    ) -> Presigned:
        """A short-lived signed URL for ``key`` under the resource's prefix (a PUT needs the
        exact ``content_length``; send ``Presigned.headers`` with it)."""
        body: dict[str, Any] = {"operation": operation, "key": key}
        if content_length is not None:
            body["content_length"] = content_length
        if expires_in is not None:
            body["expires_in"] = expires_in
        answer = self._client._json("POST", f"/storage/{_seg(token)}/presign", json=body)
        return Presigned.from_json(answer)


class Webhook(ResourceKind):
    def requests(self, token: str, *, after: int | None = None) -> list[WebhookRequest]:
        """The inbox's captured requests, oldest first (``after``: only those with a greater
        ``seq``)."""
        found: list[WebhookRequest] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = self._client._json(
                "GET", f"/api/v1/webhooks/{_seg(token)}/requests", params=params
            )
            items = [WebhookRequest.from_json(r) for r in page.get("requests", [])]
            found.extend(r for r in items if after is None or r.seq > after)
            before = page.get("next_before")
            if not before or (after is not None and items and items[-1].seq <= after):
                return sorted(found, key=lambda r: r.seq)
            params = {"limit": 100, "before": before}


class Resources(_Namespace):
    """The team's resources (needs a session or API key)."""

    def list(self) -> list[Resource]:
        found: list[Resource] = []
        params: dict[str, Any] = {}
        while True:
            page = self._client._json("GET", "/api/v1/resources", params=params)
            found.extend(Resource.from_json(r) for r in page.get("items", []))
            if not page.get("next_cursor"):
                return found
            params = {"cursor": page["next_cursor"]}

    def get(self, resource_id: str) -> Resource:
        return Resource.from_json(
            self._client._json("GET", f"/api/v1/resources/{_seg(resource_id)}")
        )

    def delete(self, resource_id: str) -> dict[str, Any]:
        return self._client._json("DELETE", f"/api/v1/resources/{_seg(resource_id)}")

    def rotate(self, resource_id: str) -> Resource:
        """New credentials (the old ones stop working), with the resource's kind and name."""
        path = f"/api/v1/resources/{_seg(resource_id)}/rotate-credentials"
        rotated = self._client._json("POST", path)
        details = self._client._json("GET", f"/api/v1/resources/{_seg(resource_id)}")
        return Resource.from_json({**details, **rotated})


class Deployments(_Namespace):
    def list(self) -> list[Deployment]:
        page = self._client._json("GET", "/api/v1/deployments")
        return [Deployment.from_json(d) for d in page.get("items", [])]

    def get(self, app_id: str) -> Deployment:
        path = f"/api/v1/deployments/{_seg(app_id)}"
        return Deployment.from_json(self._client._json("GET", path))

    def events(self, app_id: str) -> Records:
        """The revision's classified events: ``reason``, ``message``, ``last_lines``, ``hint``."""
        body = self._client._json("GET", f"/api/v1/deployments/{_seg(app_id)}/events")
        events = body.get("events", [])
        return [e for e in events if isinstance(e, dict)]

    def logs(self, app_id: str, *, follow: bool = False) -> Iterator[str]:
        """The build and app log lines so far; ``follow``: and new ones until the deploy is
        healthy, failed or gone."""
        path = f"/deploy/{_seg(app_id)}/logs"
        # the route's status event is the stored one; GET of the app refreshes it
        return self._client._follow(path, follow, lambda: self.get(app_id).status)

    def delete(self, app_id: str, *, skip_email_confirmation: bool = False) -> dict[str, Any]:
        """``pending_confirmation`` (a token is mailed), or deleted at once with
        ``skip_email_confirmation`` (only with the user's consent)."""
        headers = {"X-Skip-Email-Confirmation": "yes"} if skip_email_confirmation else None
        path = f"/api/v1/deployments/{_seg(app_id)}"
        return self._client._json("DELETE", path, headers=headers)

    def set_env(self, app_id: str, env: Mapping[str, str]) -> dict[str, Any]:
        """Merge ``env`` into the app's (``""`` deletes a key) and roll out a new revision."""
        path = f"/deploy/{_seg(app_id)}/env"
        return self._client._json("PATCH", path, json={"env_vars": dict(env)})

    def redeploy(self, app_id: str) -> Deployment:
        body = self._client._json("POST", f"/deploy/{_seg(app_id)}/redeploy")
        return Deployment.from_json(body)

    def wait(
        self,
        app_id: str,
        *,
        until: Iterable[str] = ("healthy", "failed"),
        timeout: float = 600,
        poll: float = 2,
    ) -> Deployment:
        """Poll until the status is one of ``until``; InstanodeError ``wait_timeout`` (its
        body: the last answer) after ``timeout`` seconds."""
        wanted = frozenset(until)
        deadline = time.monotonic() + timeout
        while True:
            app = self.get(app_id)
            if app.status in wanted:
                return app
            if time.monotonic() >= deadline:
                raise InstanodeError(
                    0,
                    "wait_timeout",
                    f"{app_id} is still {app.status} after {timeout:g}s.",
                    agent_action="Read its events and logs, or wait longer.",
                    body=app.raw,
                )
            time.sleep(poll)


class Stacks(_Namespace):
    def new(
        self,
        manifest: str | os.PathLike[str],
        *,
        name: str | None = None,
        dirs: Mapping[str, Source] | None = None,
        idempotency_key: str | None = None,
    ) -> Stack:
        """Deploy the services of an ``instant.yaml``: each one's build context is
        ``dirs[service]`` (a directory, .tar.gz or bytes), else the directory named after it
        next to the manifest, else (for a single service) the manifest's own directory."""
        path = Path(manifest)
        text = path.read_bytes()
        root = path.resolve().parent
        services = service_names(text)
        files: list[tuple[str, tuple[str, bytes, str]]] = [
            ("instant.yaml", ("instant.yaml", text, "application/yaml"))
        ]
        for service in services:
            tarball = source_bytes(_context_of(service, services, root, dirs or {}))
            files.append((service, (f"{service}.tar.gz", tarball, "application/gzip")))
        body = self._client._json(
            "POST",
            "/stacks/new",
            data={"name": name or _name_of(root)},
            files=files,
            idempotency_key=idempotency_key or new_key(),
        )
        return Stack.from_json(body)

    def get(self, slug: str) -> Stack:
        return Stack.from_json(self._client._json("GET", f"/api/v1/stacks/{_seg(slug)}"))

    def set_env(self, slug: str, env: Mapping[str, str]) -> dict[str, Any]:
        """Set the stack-level env (``""`` deletes a key); it applies at the next redeploy."""
        path = f"/stacks/{_seg(slug)}/env"
        return self._client._json("PATCH", path, json={"env_vars": dict(env)})

    def redeploy(self, slug: str) -> Stack:
        return Stack.from_json(self._client._json("POST", f"/stacks/{_seg(slug)}/redeploy"))

    def logs(self, slug: str, service: str, *, follow: bool = False) -> Iterator[str]:
        return self._client._follow(f"/stacks/{_seg(slug)}/logs/{_seg(service)}", follow)

    def delete(self, slug: str, *, skip_email_confirmation: bool = False) -> dict[str, Any]:
        headers = {"X-Skip-Email-Confirmation": "yes"} if skip_email_confirmation else None
        return self._client._json("DELETE", f"/api/v1/stacks/{_seg(slug)}", headers=headers)


class ApiKeys(_Namespace):
    """The team's API keys (minting one needs a signed-in session)."""

    def create(self, name: str, *, scope: str | None = None) -> dict[str, Any]:
        """The new key, its secret once in ``api_token``; ``scope``: read (default), write,
        admin."""
        body: dict[str, Any] = {"name": name}
        if scope is not None:
            body["scope"] = scope
        return self._client._json("POST", "/api/v1/api-keys", json=body)

    def list(self) -> Records:
        items = self._client._json("GET", "/api/v1/api-keys").get("items", [])
        return [k for k in items if isinstance(k, dict)]


def service_names(manifest: bytes) -> list[str]:
    """The services an instant.yaml lists, in order (the API checks the rest of it)."""
    import yaml

    try:
        parsed = yaml.safe_load(manifest)
    except yaml.YAMLError as exc:
        raise InstanodeError(0, "invalid_manifest", f"instant.yaml is not YAML: {exc}") from exc
    services = parsed.get("services") if isinstance(parsed, dict) else None
    if not isinstance(services, dict) or not services:
        raise InstanodeError(
            0,
            "invalid_manifest",
            "instant.yaml needs a 'services' mapping of 1 to 5 services.",
            agent_action="Write services: {web: {port: 8080}} (see GET /llms.txt, Stacks).",
        )
    return [str(s) for s in services]


def _context_of(
    service: str, services: list[str], root: Path, dirs: Mapping[str, Source]
) -> Source:
    if service in dirs:
        given = dirs[service]
        return given if isinstance(given, bytes) else root / given
    if (root / service).is_dir():
        return root / service
    if len(services) == 1:
        return root
    raise InstanodeError(
        0,
        "service_context_not_found",
        f"No build context for service {service!r}: no directory {root / service}.",
        agent_action=f"Put service {service!r}'s Dockerfile in {root / service}, or pass "
        f"dirs={{{service!r}: <directory>}}.",
    )


def _name_of(root: Path) -> str:
    """A stack name from the manifest's directory (names: ^[A-Za-z0-9][A-Za-z0-9 _-]*$)."""
    cleaned = _NAME_CHARS.sub("-", root.name).strip(" _-")[:64]
    return cleaned or "stack"
