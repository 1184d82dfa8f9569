"""Commands that act on a resource by its token: ``presign`` (storage) and ``webhook tail``."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from instanode.cli_base import Settings, emit, note, pass_settings, progress


@click.command()
@click.argument("token")
@click.argument("key")
@click.option(
    "--put",
    "upload",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Upload this file to KEY first (a presigned PUT).",
)
@click.option(
    "--expires-in", type=click.IntRange(1, 3600), help="Seconds the URL stays valid (900)."
)
@pass_settings
def presign(
    settings: Settings, token: str, key: str, upload: Path | None, expires_in: int | None
) -> None:
    """Print a presigned URL of an object; --put uploads a file.

    Prints a presigned GET URL of KEY in the storage resource TOKEN. With --put FILE, FILE is
    uploaded to KEY first (a presigned PUT) and the URL printed reads it back.

    \b
    Examples:
      instanode presign $STORAGE_TOKEN reports/a.pdf
      instanode presign $STORAGE_TOKEN reports/a.pdf --put ./a.pdf
      curl -o a.pdf "$(instanode presign $STORAGE_TOKEN reports/a.pdf)"
    """
    storage = settings.client().storage
    uploaded = None
    if upload is not None:
        size = upload.stat().st_size
        put = storage.presign(token, key, operation="PUT", content_length=size)
        with progress(f"uploading {upload.name}"):
            _put(put.url, upload, put.headers or {"Content-Length": str(size)})
        uploaded = size
        note(f"uploaded {upload} ({size} bytes) to {key}")
    got = storage.presign(token, key, expires_in=expires_in)
    body = got.raw if uploaded is None else {**got.raw, "uploaded_bytes": uploaded}
    emit(settings, body, got.url)


def _put(url: str, source: Path, headers: dict[str, str]) -> None:
    """The presigned PUT (to S3, not to the API: plain httpx, the file streamed)."""
    import httpx

    with source.open("rb") as f:
        reply = httpx.put(url, content=f, headers=headers, timeout=300)
    if reply.is_error:
        raise click.ClickException(
            f"the upload failed: HTTP {reply.status_code} {reply.text[:300]}"
        )


# -- webhook tail -----------------------------------------------------------------------------
@click.command("tail")
@click.argument("token")
@click.option("--all", "everything", is_flag=True, help="Print the requests captured before, too.")
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 60),
    default=1.0,
    show_default=True,
    help="Seconds between polls.",
)
@pass_settings
def tail(settings: Settings, token: str, everything: bool, interval: float) -> None:
    """Print each request a webhook captures, as it arrives.

    Polls the inbox of the webhook TOKEN and prints every new request (time, method, path,
    body) until Ctrl-C (exit 0). With --json: one JSON object per line (body in base64,
    body_text when it is UTF-8). --all prints those captured before, too.

    \b
    Examples:
      instanode webhook tail $WEBHOOK_TOKEN
      instanode --json webhook tail $WEBHOOK_TOKEN | jq .body_text
    """
    webhook = settings.client().webhook
    # Ctrl-C stops it even where SIGINT came ignored (a background job of a shell without job
    # control hands that down, and Python then leaves it ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        seen = -1 if everything else max((r.seq for r in webhook.requests(token)), default=-1)
        note(f"tailing {token[:8]}... (Ctrl-C to stop)")
        while True:
            for request in webhook.requests(token, after=seen):
                seen = max(seen, request.seq)
                emit(settings, request.raw, _line(request.raw))
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def _line(raw: dict[str, Any]) -> str:
    at = datetime.fromtimestamp(int(raw.get("received_at", 0)) / 1000, UTC)
    query = "&".join(f"{k}={v}" for k, vs in (raw.get("query") or {}).items() for v in vs)
    path = f"{raw.get('path', '')}{'?' + query if query else ''}"
    body = raw.get("body_text")
    shown = json.dumps(body) if body is not None else f"<{raw.get('body_size', 0)} bytes, binary>"
    return f"{at:%Y-%m-%dT%H:%M:%S}Z {raw.get('method', '')} {path} {shown}"
