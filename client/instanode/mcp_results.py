"""What the MCP tools answer: the API's JSON as a tool result, with ``agent_action`` surfaced.

A success is the API's body (the SDK result's ``raw``) as structured content and as JSON text;
when it carries an ``agent_action`` (or, for a new resource, a ``note`` with its claim link),
that line comes first, so an agent reading only the text sees it. An API error is a tool error
result (``isError``) carrying the envelope (``error``, ``message``, ``agent_action``), never an
MCP protocol error: the agent reads it and acts on it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, ParamSpec

from mcp.types import CallToolResult, ContentBlock, TextContent

from instanode.errors import InstanodeError

P = ParamSpec("P")


def ok(body: dict[str, Any]) -> CallToolResult:
    return _result(body, is_error=False)


def failed(error: str, message: str, agent_action: str, **extra: Any) -> CallToolResult:
    """An error result of this server's own making (a path that does not exist, a failed build),
    shaped like the API's envelope."""
    body = {"ok": False, "error": error, "message": message, "agent_action": agent_action}
    return _result({**body, **extra}, is_error=True)


def from_error(exc: InstanodeError) -> CallToolResult:
    body: dict[str, Any] = {"ok": False, **exc.body}
    body.update(error=exc.error, message=exc.message, agent_action=exc.agent_action)
    body["http_status"] = exc.status  # 0: no answer (network_error)
    if exc.retry_after is not None:
        body["retry_after"] = exc.retry_after
    return _result(body, is_error=True)


def api_tool(fn: Callable[P, CallToolResult]) -> Callable[P, CallToolResult]:
    """Turn an ``InstanodeError`` the tool lets through, or an ``OSError`` reading the agent's
    files (a deploy's directory, a manifest), into an error result."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> CallToolResult:
        try:
            return fn(*args, **kwargs)
        except InstanodeError as exc:
            return from_error(exc)
        except OSError as exc:
            return failed(
                "local_file_error",
                str(exc),
                "Check that the path exists on the MCP server's machine and that its user can "
                "read it.",
            )

    return call


def _result(body: dict[str, Any], *, is_error: bool) -> CallToolResult:
    content: list[ContentBlock] = [
        TextContent(type="text", text=json.dumps(body, indent=2, default=str))
    ]
    lead = [f"{key}: {body[key]}" for key in ("agent_action", "note") if body.get(key)]
    if lead:
        content.insert(0, TextContent(type="text", text="\n".join(lead)))
    return CallToolResult(content=content, structured_content=body, is_error=is_error)
