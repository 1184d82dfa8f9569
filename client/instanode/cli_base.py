"""What every CLI command shares: the global settings (API, token, --json), the SDK client made
from them on first use, machine or human output, errors, and a progress spinner.

Only click and the standard library are imported here: the SDK (httpx) loads when a command
first talks to the API, so ``instanode --help`` starts fast.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from instanode.client import Client
    from instanode.errors import InstanodeError

DEFAULT_API = "http://127.0.0.1:8000"
EXIT_API_ERROR = 1
EXIT_DEPLOY_FAILED = 3


@dataclass
class Settings:
    """The root command's options, resolved (``ctx.obj`` of every command)."""

    api: str
    token: str | None
    json: bool
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        """The client every call of the command shares (made on first use)."""
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self) -> Client:
        """A client of its own (for a thread)."""
        from instanode.client import Client

        return Client(self.api, self.token)


pass_settings = click.make_pass_decorator(Settings)


def emit(settings: Settings, data: Any, text: str | Callable[[], str]) -> None:
    """One result on stdout: ``data`` as JSON with --json, else ``text`` for a person."""
    if settings.json:
        click.echo(json.dumps(data, default=str))
    else:
        click.echo(text() if callable(text) else text)


def note(message: str) -> None:
    """A remark for the person at the terminal: stderr, never the machine output."""
    click.echo(message, err=True)


def report_api_error(settings: Settings, exc: InstanodeError) -> None:
    """``error: message`` and the API's hint on stderr; with --json the envelope on stdout."""
    if settings.json:
        envelope = exc.body or {
            "ok": False,
            "error": exc.error,
            "message": exc.message,
            "agent_action": exc.agent_action,
        }
        click.echo(json.dumps(envelope, default=str))
        return
    note(f"error: {exc.message or exc.error} ({exc.error})")
    if exc.agent_action:
        note(f"hint: {exc.agent_action}")


def key_values(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """``("K=V", ...)`` as a dict; a pair without ``=`` is a usage error (exit 2)."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        out[name] = value
    return out


FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


@contextmanager
def progress(label: str) -> Iterator[None]:
    """A spinner with ``label`` on stderr while the block runs, only when stderr is a terminal
    (pipes, files and CI logs get nothing)."""
    if not sys.stderr.isatty():
        yield
        return
    done = threading.Event()

    def spin() -> None:
        for frame in itertools.cycle(FRAMES):
            sys.stderr.write(f"\r{frame} {label}")
            sys.stderr.flush()
            if done.wait(0.1):
                break
        sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        yield
    finally:
        done.set()
        spinner.join()
