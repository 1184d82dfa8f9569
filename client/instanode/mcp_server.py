"""``instanode mcp``: the MCP server, on the official ``mcp`` SDK, over stdio (what an MCP host
such as Claude Code or Cursor spawns) or streamable HTTP (``--http HOST:PORT``, at ``/mcp``).

It runs where the agent's files are (create_deploy packs a local directory) and talks to the API
as the CLI does: ``--api``, else ``$INSTANODE_API``, else http://127.0.0.1:8000; the token from
``$INSTANODE_TOKEN``, else the one ``instanode login`` saved for that API; none is anonymous.

Only click is imported at module level, so the CLI can register this command cheaply; the MCP
SDK and the tools are imported when the command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

LLMS_URI = "instanode://llms.txt"
INSTRUCTIONS = (
    "instanode provisions real Postgres, pgvector, Redis, MongoDB, NATS, S3 storage and webhook "
    "inboxes in one call each, and deploys container apps. No signup: anonymous resources work "
    "at once and expire after 24 hours unless claimed (show the user the `upgrade` link from a "
    "create answer, or use claim_token). Errors carry `agent_action`: follow it. The API's "
    f"own guide is the resource {LLMS_URI}."
)


def create_server(api: str | None = None, token: str | None = None) -> MCPServer[Any]:
    """The server with every tool and the llms.txt resource, for ``api`` (resolved as the CLI
    does) and ``token`` (None: the environment's or the saved one)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.resources import FunctionResource

    from instanode.client import Client
    from instanode.credentials import load
    from instanode.mcp_tools import register

    # api None: $INSTANODE_API, else the default; token None: $INSTANODE_TOKEN
    client = Client(api, token)
    if client.token is None:
        client.token = load(client.api).token  # what `instanode login` saved for this API
    server: MCPServer[Any] = MCPServer(
        "instanode", instructions=INSTRUCTIONS, website_url=client.api, log_level="WARNING"
    )
    register(server, client)

    def llms_txt() -> str:
        return str(client.request("GET", "/llms.txt"))

    server.add_resource(
        FunctionResource.from_function(
            llms_txt,
            uri=LLMS_URI,
            name="llms.txt",
            title="instanode API guide for agents",
            description="The API's llms.txt: every route, the anonymous tier, conventions.",
            mime_type="text/plain",
        )
    )
    return server


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:8765", param_hint="--http")
    return host.strip("[]"), int(port)


@click.command("mcp")
@click.option(
    "--api",
    metavar="URL",
    help="The instanode API (default: $INSTANODE_API, else http://127.0.0.1:8000).",
)
@click.option(
    "--http",
    "address",
    metavar="HOST:PORT",
    help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio. Every client of it "
    "acts with this server's token: keep HOST 127.0.0.1 unless that is meant.",
)
@click.pass_context
def mcp_command(ctx: click.Context, api: str | None, address: str | None) -> None:
    """Run the MCP server for agents (stdio, or streamable HTTP with --http).

    \b
    Claude Code:  claude mcp add instanode -- instanode mcp
    Any host:     {"mcpServers": {"instanode": {"command": "instanode", "args": ["mcp"]}}}

    The token is $INSTANODE_TOKEN, else the one `instanode login` saved; without one the
    resources are anonymous (24 h unless claimed). The get_api_token tool signs in from the
    agent's side.
    """
    where = parse_address(address) if address is not None else None
    root = ctx.find_root().params  # `instanode --api URL --token T mcp`: the group's options
    server = create_server(api or root.get("api"), root.get("token"))
    if where is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host=where[0], port=where[1])


if __name__ == "__main__":
    mcp_command()
