"""``instanode login`` (device flow), ``whoami`` and ``logout``: the saved API token."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

from instanode import credentials
from instanode.cli_base import EXIT_API_ERROR, Settings, emit, note, pass_settings, progress

if TYPE_CHECKING:
    from instanode.client import Client


@click.command()
@click.option("--no-save", is_flag=True, help="Print the token instead of saving it.")
@pass_settings
def login(settings: Settings, no_save: bool) -> None:
    """Sign in by device flow and save an API token.

    Prints a URL and a code: open the URL, sign in there and enter the code. The CLI waits
    for the approval and saves the API token (scope write) for this API, mode 0600, in
    $XDG_CONFIG_HOME/instanode/credentials.json (~/.config/instanode/credentials.json).

    \b
    Examples:
      instanode login
      instanode --api https://api.example.com login
    """
    client = settings.client()
    device = client.device_login_start()
    note(f"Open {device.auth_url}\nand enter the code {device.user_code}")
    if device.expires_at:
        note(f"(the code expires at {device.expires_at})")
    with progress("waiting for the approval"):
        polled = _approved(client, device.session_id, device.poll_interval)
    token = str(polled["api_token"])
    if no_save:
        emit(settings, {"ok": True, "api": settings.api, "api_token": token}, token)
        return
    path = credentials.save(settings.api, replace(credentials.load(settings.api), token=token))
    result = {"ok": True, "api": settings.api, "credentials": str(path)}
    emit(settings, result, f"logged in to {settings.api}; the token is saved in {path}")


def _approved(client: Client, session_id: str, interval: float) -> dict[str, Any]:
    """Poll until the session is approved (its token); exit 1 when it expires or is closed."""
    while True:
        polled = client.device_login_poll(session_id)
        status = polled.get("status")
        if status == "approved" and polled.get("api_token"):
            return polled
        if status != "pending":
            note(
                f"error: the login was not approved (status {status}); run 'instanode login' again"
            )
            raise click.exceptions.Exit(EXIT_API_ERROR)
        time.sleep(interval)


@click.command()
@pass_settings
def whoami(settings: Settings) -> None:
    """Show who the token is: email, team, tier.

    \b
    Examples:
      instanode whoami
      instanode --json whoami
    """
    me = settings.client().me()
    emit(settings, me, lambda: _who(me))


def _who(me: dict[str, Any]) -> str:
    user, team, auth = (me.get(k) or {} for k in ("user", "team", "auth"))
    return (
        f"{user.get('email') or 'user ' + str(user.get('id', '?'))} "
        f"(team {team.get('name') or team.get('id', '?')}, "
        f"tier {team.get('tier', '?')}, via {auth.get('via', '?')})"
    )


@click.command()
@pass_settings
def logout(settings: Settings) -> None:
    """Forget the token saved for this API.

    The API key itself stays valid until it is revoked in the dashboard.

    \b
    Examples:
      instanode logout
    """
    saved = credentials.load(settings.api)
    credentials.save(settings.api, replace(saved, token=None))
    removed = saved.token is not None
    text = f"logged out of {settings.api}" if removed else f"no token was saved for {settings.api}"
    emit(settings, {"ok": True, "api": settings.api, "removed": removed}, text)
