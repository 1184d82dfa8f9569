"""``instanode deploy`` and ``instanode stacks up``: build, follow, then the URL or the reason."""

from __future__ import annotations

import shlex
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from instanode.cli_base import (
    EXIT_API_ERROR,
    EXIT_DEPLOY_FAILED,
    Settings,
    emit,
    key_values,
    note,
    pass_settings,
    progress,
)

if TYPE_CHECKING:
    from instanode.models import Deployment, Stack

LOG_DRAIN_SECONDS = 5.0
ENV_OPTION = click.option(
    "--env", "env_pairs", multiple=True, metavar="KEY=VALUE", help="An env var (repeatable)."
)
TIMEOUT_OPTION = click.option(
    "--timeout",
    type=click.FloatRange(1),
    default=900,
    show_default=True,
    help="Seconds to wait for healthy or failed.",
)


@click.command()
@click.argument(
    "source", default=".", type=click.Path(exists=True, path_type=Path), metavar="[DIR]"
)
@click.option("--name", required=True, help="The app's name (its URL is made from it).")
@click.option("--redeploy", is_flag=True, help="Rebuild the existing app of this name in place.")
@ENV_OPTION
@click.option("--port", type=click.IntRange(1, 65535), help="The port the app listens on (8080).")
@TIMEOUT_OPTION
@pass_settings
def deploy(
    settings: Settings,
    source: Path,
    name: str,
    redeploy: bool,
    env_pairs: tuple[str, ...],
    port: int | None,
    timeout: float,
) -> None:
    """Build and run a directory as an app; print its URL.

    DIR (default: here) holds a Dockerfile at its root; .dockerignore is honoured; a .tar.gz
    works too. The build log streams to stderr, then the app's URL is printed on stdout. A
    failed build or start prints the classified reason, the log's last lines and a hint, and
    exits 3. Needs the token of a team on a tier with apps (instanode login).

    \b
    Examples:
      instanode deploy . --name my-app
      instanode deploy ./web --name my-app --env DATABASE_URL=$DATABASE_URL --port 3000
      instanode deploy . --name my-app --redeploy
      URL=$(instanode deploy . --name my-app)
    """
    env = key_values(env_pairs, "--env")
    client = settings.client()
    started = time.monotonic()
    with progress(f"uploading {source}"):
        made = client.deploy(source, name=name, env=env or None, port=port, redeploy=redeploy)
    note(f"building {made.id} ({made.slug}), revision {made.revision}")
    follower = _follow_log(settings, made.id)
    left = max(1.0, timeout - (time.monotonic() - started))
    final = client.deployments.wait(made.id, timeout=left)
    follower.join(timeout=LOG_DRAIN_SECONDS)  # the log's last lines, then the result
    if final.status == "healthy":
        emit(settings, final.raw, final.url or final.id)
        return
    _failed(settings, final, client.deployments.events(made.id))


def _follow_log(settings: Settings, app_id: str) -> threading.Thread:
    """The build log, line by line to stderr, in a thread: the status is polled beside it
    (the log route's status is the stored one, which only a read of the deployment refreshes,
    so the log alone would not see the end)."""

    def follow() -> None:
        try:
            with settings.new_client() as c:
                for line in c.deployments.logs(app_id, follow=True):
                    note(line)
        except Exception as exc:  # the log is a view of the build; its status decides
            note(f"(the build log stopped: {exc})")

    follower = threading.Thread(target=follow, name="build-log", daemon=True)
    follower.start()
    return follower


def _failed(settings: Settings, app: Deployment, events: list[dict[str, Any]]) -> None:
    if settings.json:
        emit(settings, {**app.raw, "events": events}, "")
    else:
        classified: dict[str, Any] = next((e for e in reversed(events) if e.get("reason")), {})
        reason = classified.get("reason", app.status)
        note(f"deploy failed: {reason}: {classified.get('message') or app.error_message or ''}")
        for line in classified.get("last_lines") or []:
            note(f"  | {line}")
        if classified.get("hint"):
            note(f"hint: {classified['hint']}")
    raise click.exceptions.Exit(EXIT_DEPLOY_FAILED)


# -- stacks -----------------------------------------------------------------------------------
@click.group()
def stacks() -> None:
    """Multi-service stacks from an instant.yaml."""


@stacks.command("up")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="The stack's name (default: the manifest's directory name).")
@click.option("--slug", help="Reconcile this existing stack instead of creating one.")
@ENV_OPTION
@TIMEOUT_OPTION
@pass_settings
def stacks_up(
    settings: Settings,
    manifest: Path,
    name: str | None,
    slug: str | None,
    env_pairs: tuple[str, ...],
    timeout: float,
) -> None:
    """Bring up an instant.yaml stack; print export lines.

    Each service of MANIFEST is built from the directory named after it next to the
    manifest (a single service: the manifest's directory). Waits until the stack is healthy
    and prints `export` lines of its URLs for a shell to eval.

    Reconciling: without --slug a new stack is made. With --slug SLUG (a team's stack made
    before) the stack is brought to the wanted state the API can change in place: the --env
    vars are set on it, then every service is rebuilt and restarted (--env only goes with
    --slug: a new stack's env is in the manifest). The API keeps no way
    to swap a stack's code or services, so for a changed manifest or code run 'up' without
    --slug (a new stack) and delete the old one. A failed service exits 3.

    \b
    Examples:
      instanode stacks up instant.yaml
      eval "$(instanode stacks up instant.yaml --name shop)"
      instanode stacks up instant.yaml --slug shop-1a2b3c --env LOG_LEVEL=debug
    """
    env = key_values(env_pairs, "--env")
    c = settings.client()
    if env and slug is None:
        raise click.UsageError(
            "--env goes with --slug; a new stack takes its env from the manifest"
        )
    with progress(f"sending {manifest}"):
        if slug is None:
            made = c.stacks.new(manifest, name=name)
        else:
            if env:
                c.stacks.set_env(slug, env)
            made = c.stacks.redeploy(slug)
    note(f"building stack {made.slug}: {', '.join(str(s.get('name')) for s in made.services)}")
    with progress(f"building {made.slug}"):
        final = _settled(settings, made.slug, timeout)
    if final.status != "healthy":
        _stack_failed(settings, final)
    emit(settings, final.raw, lambda: exports(final))


def _settled(settings: Settings, slug: str, timeout: float) -> Stack:
    deadline = time.monotonic() + timeout
    while True:
        stack = settings.client().stacks.get(slug)
        if stack.status in ("healthy", "failed", "deleted", "expired"):
            return stack
        if time.monotonic() >= deadline:
            note(f"error: stack {slug} is still {stack.status} after {timeout:g}s")
            raise click.exceptions.Exit(EXIT_API_ERROR)
        time.sleep(2)


def _stack_failed(settings: Settings, stack: Stack) -> None:
    if settings.json:
        emit(settings, stack.raw, "")
    else:
        note(f"stack failed: {stack.raw.get('error_message') or stack.status}")
        for service in stack.services:
            if service.get("status") == "failed":
                lines = list(settings.client().stacks.logs(stack.slug, str(service["name"])))
                for line in lines[-30:]:
                    note(f"  {service['name']} | {line}")
    raise click.exceptions.Exit(EXIT_DEPLOY_FAILED)


def exports(stack: Stack) -> str:
    """``export NAME=value`` lines: the slug, the stack's URL and each exposed service's."""
    pairs = [("STACK_SLUG", stack.slug), ("STACK_URL", stack.stack_url)]
    for service in stack.services:
        variable = str(service.get("name", "")).upper().replace("-", "_")
        pairs.append((f"{variable}_URL", service.get("url")))
    return "\n".join(f"export {k}={shlex.quote(str(v))}" for k, v in pairs if v)
