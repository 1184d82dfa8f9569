"""The ``instanode`` command line: the root command, its global options and exit codes.

The commands live in cli_*.py; each imports only click and the standard library at start-up,
the SDK (httpx) when it first calls the API, and ``instanode mcp`` loads the MCP server
(``instanode.mcp_server:mcp_command``) only when it is run.
"""

from __future__ import annotations

from typing import Any

import click

from instanode import credentials
from instanode.cli_auth import login, logout, whoami
from instanode.cli_base import DEFAULT_API, EXIT_API_ERROR, Settings, report_api_error
from instanode.cli_deploy import deploy, stacks
from instanode.cli_resources import KINDS, claim, kind_group, resources
from instanode.cli_tokens import presign, tail

EPILOG = """\b
Examples:
  instanode db new --name app-db --env-file .env
  instanode --json cache new --name sessions
  instanode login && instanode whoami
  instanode deploy . --name my-app
  instanode webhook tail $WEBHOOK_TOKEN

\b
Machine output: with --json every command prints only JSON on stdout (an API error: its
envelope); progress, logs and notes go to stderr.

\b
Exit codes:
  0  ok
  1  the API refused or could not be reached (error: message, and its hint, on stderr)
  2  usage: a missing or bad option or argument
  3  a deploy or stack failed to build or start (reason, last lines and hint on stderr)
"""

MCP_HELP = "Serve the MCP tools to an agent: stdio, or --http HOST:PORT."


class Root(click.Group):
    """Turns SDK errors into exit 1, and loads ``mcp`` only when it is the command run."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from instanode.errors import InstanodeError

            if not isinstance(exc, InstanodeError) or not isinstance(ctx.obj, Settings):
                raise
            report_api_error(ctx.obj, exc)
            raise click.exceptions.Exit(EXIT_API_ERROR) from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "mcp"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "mcp":  # for the listing in --help: its real module loads mcp
            return click.Command("mcp", help=MCP_HELP)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] == "mcp":
            return "mcp", mcp_command(), args[1:]
        return super().resolve_command(ctx, args)


def mcp_command() -> click.Command:
    """The MCP helper's command, or one that says why it is not there."""
    try:
        from instanode.mcp_server import mcp_command as command
    except ImportError as exc:
        missing = str(exc)

        @click.command(
            "mcp",
            help=MCP_HELP,
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        )
        def unavailable() -> None:
            raise click.ClickException(f"the MCP server is not available here: {missing}")

        return unavailable
    return command


@click.group(cls=Root, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--api",
    envvar="INSTANODE_API",
    show_envvar=True,
    default=DEFAULT_API,
    show_default=True,
    help="The instanode API's base URL.",
)
@click.option(
    "--token",
    envvar="INSTANODE_TOKEN",
    show_envvar=True,
    help="An API key (default: the one 'instanode login' saved for this API; else anonymous).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only, on stdout.")
@click.version_option(package_name="instanode")
@click.pass_context
def cli(ctx: click.Context, api: str, token: str | None, as_json: bool) -> None:
    """instanode: databases, caches, queues, storage, webhooks and deploys from one command,
    against instanode.dev or a self-hosted API."""
    api = api.rstrip("/")
    ctx.obj = Settings(api, token or credentials.load(api).token, as_json)


_groups = {kind: kind_group(kind) for kind in KINDS}
_groups["webhook"].add_command(tail)
for _command in (
    *_groups.values(),
    resources,
    claim,
    presign,
    login,
    whoami,
    logout,
    deploy,
    stacks,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="instanode")


if __name__ == "__main__":
    main()
