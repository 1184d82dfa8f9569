"""``instanode <kind> new``, ``instanode resources ...`` and ``instanode claim``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from instanode import credentials
from instanode.cli_base import Settings, emit, note, pass_settings, progress

if TYPE_CHECKING:
    from instanode.models import Resource

# command name -> (the Client attribute, what it makes, the env line it gives)
KINDS = {
    "db": ("db", "a Postgres database", "DATABASE_URL"),
    "vector": ("vector", "a Postgres database with pgvector", "DATABASE_URL"),
    "cache": ("cache", "a Redis keyspace", "REDIS_URL"),
    "nosql": ("nosql", "a MongoDB database", "MONGODB_URL"),
    "queue": ("queue", "a NATS JetStream account", "NATS_URL"),
    "storage": ("storage", "an S3 prefix for objects", "STORAGE_URL"),
    "webhook": ("webhook", "an inbox that captures HTTP requests", "WEBHOOK_URL"),
}


def shown_url(resource: Resource) -> str:
    """What ``new`` prints: the connection URL; a webhook's receive URL; storage's URL."""
    if resource.kind == "webhook":
        return resource.env.get("WEBHOOK_URL", resource.id)
    return resource.connection_url or resource.id


def _new_command(kind: str, made: str, env_name: str) -> click.Command:
    @click.command(
        "new",
        help=f"Create {made} and print its URL.\n\n"
        "Without a token it is anonymous (24 h; claim it with 'instanode claim'); "
        "with one (instanode login) it is your team's.\n\n"
        f"--env-file adds its env lines ({env_name}=...) to a dotenv file: a name the file "
        "already sets is replaced, others are appended; a new file is made 0600.\n\n"
        "\b\nExamples:\n"
        f"  instanode {kind} new --name app-{kind}\n"
        f"  instanode {kind} new --name app-{kind} --env-file .env\n"
        f"  instanode --json {kind} new --name app-{kind}",
    )
    @click.option("--name", required=True, help="A name for it (letters, digits, - and _).")
    @click.option(
        "--env-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A dotenv file to put its env lines in.",
    )
    @pass_settings
    def new(settings: Settings, name: str, env_file: Path | None) -> None:
        namespace = getattr(settings.client(), KINDS[kind][0])
        with progress(f"creating {made}"):
            resource: Resource = namespace.new(name)
        _remember(settings, resource)
        if env_file is not None:
            _write_env(env_file, resource.env)
        emit(settings, resource.raw, lambda: shown_url(resource))

    return new


def _remember(settings: Settings, resource: Resource) -> None:
    """An anonymous resource's upgrade_jwt is what a later ``instanode claim`` sends."""
    if settings.token is None and resource.upgrade_jwt:
        saved = credentials.load(settings.api)
        credentials.save(settings.api, replace(saved, upgrade_jwt=resource.upgrade_jwt))


def _write_env(target: Path, env: dict[str, str]) -> None:
    from instanode.cli_envfile import update_env_file

    if not env:
        note(f"no env lines for this resource; {target} left as it was")
        return
    change = update_env_file(target, env)
    for verb, names in (("added", change.added), ("replaced", change.replaced)):
        if names:
            note(f"{verb} {', '.join(names)} in {target}")


def kind_group(kind: str) -> click.Group:
    _, made, env_name = KINDS[kind]
    group = click.Group(
        kind,
        help=f"Create {made}: 'instanode {kind} new --name N'.",
        short_help=f"{made[0].upper()}{made[1:]}.",
    )
    group.add_command(_new_command(kind, made, env_name))
    return group


# -- resources --------------------------------------------------------------------------------
@click.group(invoke_without_command=True)
@click.pass_context
def resources(ctx: click.Context) -> None:
    """Your team's resources: list, get, delete, rotate.

    Needs a token (instanode login). Without a subcommand: list.

    \b
    Examples:
      instanode resources
      instanode resources get res_0123
      instanode resources rotate res_0123
      instanode resources delete res_0123
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_resources)


@resources.command("list")
@pass_settings
def list_resources(settings: Settings) -> None:
    """List every resource: id, kind, name, tier, expiry."""
    items = settings.client().resources.list()
    emit(settings, {"ok": True, "items": [r.raw for r in items]}, lambda: _table(items))


def _table(items: list[Resource]) -> str:
    if not items:
        return "no resources"
    rows = [(r.id, r.kind or "", r.name or "", r.tier or "", r.expires_at or "-") for r in items]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[4]])
        for row in rows
    )


@resources.command("get")
@click.argument("resource_id")
@pass_settings
def get_resource(settings: Settings, resource_id: str) -> None:
    """Show one resource, its connection URL included."""
    resource = settings.client().resources.get(resource_id)
    emit(settings, resource.raw, lambda: _fields(resource.raw))


def _fields(raw: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in raw.items() if k != "ok" and v is not None)


@resources.command("delete")
@click.argument("resource_id")
@pass_settings
def delete_resource(settings: Settings, resource_id: str) -> None:
    """Delete a resource and its data, now."""
    result = settings.client().resources.delete(resource_id)
    emit(settings, result, f"deleted {resource_id}")


@resources.command("rotate")
@click.argument("resource_id")
@pass_settings
def rotate_resource(settings: Settings, resource_id: str) -> None:
    """New credentials for a resource (the old ones stop working); print its new URL."""
    with progress("rotating credentials"):
        resource = settings.client().resources.rotate(resource_id)
    emit(settings, resource.raw, lambda: shown_url(resource))


# -- claim ------------------------------------------------------------------------------------
@click.command()
@click.option("--email", required=True, help="Where the sign-in link is sent.")
@click.option(
    "--token",
    "--upgrade-jwt",
    "upgrade_jwt",
    help="The upgrade_jwt of a resource (default: the last anonymous one this CLI made).",
)
@pass_settings
def claim(settings: Settings, email: str, upgrade_jwt: str | None) -> None:
    """Claim your anonymous resources for an account.

    The link mailed to EMAIL signs in and moves every resource of your network to its team
    (their 24 h expiry is lifted by upgrading the team's tier).

    \b
    Examples:
      instanode claim --email me@example.com
      instanode claim --email me@example.com --token eyJhbGciOi...
    """
    jwt = upgrade_jwt or credentials.load(settings.api).upgrade_jwt
    if not jwt:
        raise click.UsageError(
            "No upgrade_jwt: pass --token <upgrade_jwt> (from a resource's JSON), or create an "
            "anonymous resource with this CLI first."
        )
    result = settings.client().claim(jwt, email)
    emit(settings, result, f"sent a sign-in link to {email}: follow it to claim the resources")
