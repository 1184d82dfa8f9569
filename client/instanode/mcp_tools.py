"""The MCP tools: one per thing an agent does on instanode, named as instanode.dev's own MCP
server names them (prompts written for it work here). Each calls the SDK and answers the API's
JSON (mcp_results.py); what the agent reads about each is in mcp_descriptions.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from instanode.mcp_descriptions import CLAIM_STORY, CREATE, TOOLS
from instanode.mcp_results import api_tool, failed, ok

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from instanode.client import Client

Name = Annotated[
    str,
    Field(
        description="A label the user will recognise (e.g. 'prod-db'): 1-64 characters, a "
        "letter or digit first, then letters, digits, spaces, '_' or '-'."
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Field(
        description="Optional. The same key again retries a create without making a second "
        "one (for 24 h); a fresh one is sent when omitted."
    ),
]
UpgradeJwt = Annotated[str, Field(description="The `upgrade_jwt` of a create_* answer.")]
ResourceId = Annotated[str, Field(description="The resource's `id` (see list_resources).")]
DeploymentId = Annotated[str, Field(description="The deployment's `id` (from create_deploy).")]
Slug = Annotated[str, Field(description="The stack's `slug` (from create_stack).")]
Env = Annotated[
    dict[str, str],
    Field(description="Environment variables, keys like DATABASE_URL ([A-Z_][A-Z0-9_]*)."),
]
Wait = Annotated[
    bool,
    Field(
        description="true: return once the app is `healthy` (with its `url`) or `failed` (an "
        "error result with the classified failure: `reason`, `last_lines`, `hint`); false: "
        "return at once (status `building`) and poll get_deployment."
    ),
]
WaitSeconds = Annotated[
    float, Field(description="How long `wait` waits at most, in seconds.", gt=0, le=1800)
]

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=True)
DESTRUCTIVE = ToolAnnotations(destructive_hint=True, open_world_hint=True)
HINTS = {
    "claim_resource": READ_ONLY,
    "list_resources": READ_ONLY,
    "get_stack": READ_ONLY,
    "list_deployments": READ_ONLY,
    "get_deployment": READ_ONLY,
    "get_deployment_events": READ_ONLY,
    "get_capabilities": READ_ONLY,
    "delete_resource": DESTRUCTIVE,
    "rotate_credentials": DESTRUCTIVE,
    "delete_deployment": DESTRUCTIVE,
}


def register(server: MCPServer[Any], client: Client) -> None:
    """Every tool of ``Tools(client)`` (and one create_* per resource kind) on ``server``."""
    for tool, (kind, what) in CREATE.items():
        description = f"{what} {CLAIM_STORY}"
        server.add_tool(api_tool(_creator(client, kind)), name=tool, description=description)
    tools = Tools(client)
    for tool, description in TOOLS.items():
        fn = api_tool(getattr(tools, tool))
        server.add_tool(fn, name=tool, description=description, annotations=HINTS.get(tool))


def _creator(client: Client, kind: str) -> Any:
    def create(name: Name, idempotency_key: IdempotencyKey = None) -> CallToolResult:
        made = getattr(client, kind).new(name, idempotency_key=idempotency_key)
        return ok(made.raw)

    return create


class Tools:
    """The tools other than create_*: each method is one, its parameters the tool's."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def claim_resource(self, upgrade_jwt: UpgradeJwt) -> CallToolResult:
        preview = self._c.request("GET", "/claim/preview", params={"t": upgrade_jwt})
        if not preview.get("token_valid"):
            return failed(
                "invalid_token",
                "This upgrade_jwt is invalid or expired (they last 7 days).",
                "Use the upgrade_jwt of a resource made in the last 7 days.",
            )
        claim_url = f"{self._c.api}/start?t={upgrade_jwt}"
        action = (
            f"Show the user this claim link: {claim_url} - opening it and entering their email "
            "keeps these resources past 24 hours. Or call claim_token with their email."
        )
        return ok({**preview, "claim_url": claim_url, "agent_action": action})

    def claim_token(
        self,
        upgrade_jwt: UpgradeJwt,
        email: Annotated[str, Field(description="The user's email address (ask them).")],
    ) -> CallToolResult:
        body = self._c.claim(upgrade_jwt, email)
        action = (
            f"Tell the user to open the sign-in link just mailed to {body.get('email', email)} "
            "within 15 minutes: it creates their account and moves every resource of this "
            "network into it."
        )
        return ok({"agent_action": action, **body})

    def get_api_token(
        self,
        session_id: Annotated[
            str | None,
            Field(description="Omit to start a sign-in; the `session_id` it gave, to finish."),
        ] = None,
        wait_seconds: Annotated[
            float,
            Field(description="With session_id: how long to wait for the approval.", ge=0, le=300),
        ] = 60,
    ) -> CallToolResult:
        if session_id is None:
            login = self._c.device_login_start()
            action = (
                f"Ask the user to open {login.auth_url}, sign in, and type the code "
                f"{login.user_code}; then call get_api_token with session_id={login.session_id!r}."
            )
            return ok({**login.raw, "agent_action": action})
        polled = self._poll_login(session_id, time.monotonic() + wait_seconds)
        if polled.get("api_token"):
            self._c.token = str(polled["api_token"])
            action = (
                "This MCP server now sends this token. It is shown once: to keep it, set "
                "INSTANODE_TOKEN in the server's environment (or run `instanode login`)."
            )
        elif polled.get("status") == "pending":
            action = "The user has not approved yet: call get_api_token with session_id again."
        else:
            action = "This sign-in is over: call get_api_token without session_id to start anew."
        return ok({**polled, "agent_action": action})

    def _poll_login(self, session_id: str, deadline: float) -> dict[str, Any]:
        while True:
            polled = self._c.device_login_poll(session_id)
            if polled.get("status") != "pending" or time.monotonic() >= deadline:
                return polled
            time.sleep(2)

    def list_resources(self) -> CallToolResult:
        items = [r.raw for r in self._c.resources.list()]
        return ok({"ok": True, "items": items, "count": len(items)})

    def delete_resource(self, resource_id: ResourceId) -> CallToolResult:
        return ok(self._c.resources.delete(resource_id))

    def rotate_credentials(self, resource_id: ResourceId) -> CallToolResult:
        return ok(self._c.resources.rotate(resource_id).raw)

    def presign_storage(
        self,
        token: Annotated[str, Field(description="The storage resource's `token`.")],
        key: Annotated[str, Field(description="The object's key, under the prefix or full.")],
        operation: Annotated[
            str, Field(description="GET (download), PUT (upload) or POST (form upload).")
        ] = "GET",
        content_length: Annotated[
            int | None, Field(description="PUT: the exact size in bytes of the body to send.")
        ] = None,
        expires_in: Annotated[
            int | None, Field(description="Seconds the URL stays valid, 1-3600.")
        ] = None,
    ) -> CallToolResult:
        signed = self._c.storage.presign(
            token, key, operation=operation, content_length=content_length, expires_in=expires_in
        )
        return ok(signed.raw)

    def create_deploy(
        self,
        path: Annotated[
            str,
            Field(
                description="A directory with a Dockerfile at its root (or a .tar.gz of one) on "
                "the machine this MCP server runs on; a relative path is from the server's "
                "working directory, so prefer an absolute one."
            ),
        ],
        name: Name,
        env: Annotated[
            dict[str, str] | None, Field(description="Environment variables for the app.")
        ] = None,
        port: Annotated[
            int | None, Field(description="The port the app listens on (default 8080).")
        ] = None,
        redeploy: Annotated[
            bool, Field(description="true: rebuild the existing app of this `name` in place.")
        ] = False,
        wait: Wait = False,
        timeout_seconds: WaitSeconds = 600,
    ) -> CallToolResult:
        source = Path(path).expanduser()
        if not source.exists():
            return failed(
                "path_not_found",
                f"{source.absolute()} does not exist on the machine the MCP server runs on.",
                "Pass the absolute path of the app's directory (with its Dockerfile).",
            )
        made = self._c.deploy(source, name=name, env=env, port=port, redeploy=redeploy)
        return self._settled(made.raw, wait, timeout_seconds)

    def create_stack(
        self,
        manifest: Annotated[
            str,
            Field(
                description="Path of an instant.yaml on the MCP server's machine; each "
                "service's build directory is the one named after it next to the manifest."
            ),
        ],
        name: Annotated[
            str | None, Field(description="The stack's name (default: its directory's).")
        ] = None,
    ) -> CallToolResult:
        source = Path(manifest).expanduser()
        if not source.is_file():
            return failed(
                "path_not_found",
                f"{source.absolute()} is not a file on the machine the MCP server runs on.",
                "Pass the absolute path of the stack's instant.yaml.",
            )
        return ok(self._c.stacks.new(source, name=name).raw)

    def get_stack(self, slug: Slug) -> CallToolResult:
        return ok(self._c.stacks.get(slug).raw)

    def update_stack_env(self, slug: Slug, env: Env) -> CallToolResult:
        return ok(self._c.stacks.set_env(slug, env))

    def list_deployments(self) -> CallToolResult:
        items = [d.raw for d in self._c.deployments.list()]
        return ok({"ok": True, "items": items, "count": len(items)})

    def get_deployment(self, deployment_id: DeploymentId) -> CallToolResult:
        return ok(self._c.deployments.get(deployment_id).raw)

    def get_deployment_events(self, deployment_id: DeploymentId) -> CallToolResult:
        events = self._c.deployments.events(deployment_id)
        return ok({"ok": True, "id": deployment_id, "events": events})

    def redeploy(
        self, deployment_id: DeploymentId, wait: Wait = False, timeout_seconds: WaitSeconds = 600
    ) -> CallToolResult:
        made = self._c.deployments.redeploy(deployment_id)
        return self._settled(made.raw, wait, timeout_seconds)

    def update_deploy_env(
        self,
        deployment_id: DeploymentId,
        env: Env,
        wait: Wait = False,
        timeout_seconds: WaitSeconds = 600,
    ) -> CallToolResult:
        changed = self._c.deployments.set_env(deployment_id, env)
        return self._settled(changed, wait, timeout_seconds)

    def delete_deployment(
        self,
        deployment_id: DeploymentId,
        skip_email_confirmation: Annotated[
            bool, Field(description="true deletes at once: only with the user's consent.")
        ] = False,
    ) -> CallToolResult:
        skip = skip_email_confirmation
        return ok(self._c.deployments.delete(deployment_id, skip_email_confirmation=skip))

    def get_capabilities(self) -> CallToolResult:
        return ok(self._c.capabilities())

    def _settled(self, answer: dict[str, Any], wait: bool, timeout: float) -> CallToolResult:
        """A new revision's ``answer`` as is, or (``wait``) once healthy; a failed build as an
        error result with its classified cause (the newest event)."""
        if not wait:
            return ok(answer)
        app_id = str(answer["id"])
        done = self._c.deployments.wait(app_id, timeout=timeout)  # wait_timeout: an error
        if done.status == "healthy":
            return ok(done.raw)
        events = self._c.deployments.events(app_id)
        failure = events[-1] if events else {}
        return failed(
            "deploy_failed",
            done.error_message or str(failure.get("message") or "The deploy failed."),
            f"{failure.get('hint') or 'Read failure.last_lines.'} Fix the app, then call "
            "create_deploy again with redeploy=true and the same name.",
            deployment=done.raw,
            failure=failure,
            events=events,
        )
