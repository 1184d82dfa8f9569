"""What the CLI keeps between runs, per API URL: the API token of ``instanode login`` and the
``upgrade_jwt`` of the last anonymous resource it made (what ``instanode claim`` sends).

One JSON file, ``$XDG_CONFIG_HOME/instanode/credentials.json`` (else
``~/.config/instanode/credentials.json``), mode 0600 in a 0700 directory, replaced atomically
(a temporary file in the same directory, fsynced, then renamed over it)::

    {"version": 1, "apis": {"http://127.0.0.1:8000": {"token": "ink_...", "upgrade_jwt": "..."}}}

Read by the CLI and the MCP server; the SDK itself reads no config file. A file that is not
valid JSON reads as empty (and the next save replaces it).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VERSION = 1


@dataclass(frozen=True)
class Saved:
    """What is kept for one API."""

    token: str | None = None
    upgrade_jwt: str | None = None


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "instanode"


def path() -> Path:
    return config_dir() / "credentials.json"


def key(api: str) -> str:
    """The API URL as entries are keyed: without a trailing slash."""
    return api.rstrip("/")


def load(api: str) -> Saved:
    entry = _apis().get(key(api))
    if not isinstance(entry, dict):
        return Saved()
    return Saved(**{f: _text(entry.get(f)) for f in ("token", "upgrade_jwt")})


def save(api: str, saved: Saved) -> Path:
    """Keep ``saved`` for ``api`` (an all-empty ``Saved`` removes the entry); the file's path."""
    apis = _apis()
    entry = {k: v for k, v in asdict(saved).items() if v}
    if entry:
        apis[key(api)] = entry
    else:
        apis.pop(key(api), None)
    return _write({"version": VERSION, "apis": apis})


def _apis() -> dict[str, Any]:
    try:
        data = json.loads(path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    apis = data.get("apis") if isinstance(data, dict) else None
    return dict(apis) if isinstance(apis, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _write(data: dict[str, Any]) -> Path:
    folder = config_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    write_atomically(path(), json.dumps(data, indent=2, sort_keys=True) + "\n", 0o600)
    return path()


def write_atomically(target: Path, text: str, mode: int) -> None:
    """Replace ``target`` by ``text`` with permissions ``mode``: a temporary file in the same
    directory (made 0600), fsynced, chmod-ed, renamed over it; readers see old or new, never
    half (also used for the CLI's ``--env-file``)."""
    import tempfile  # loads random and shutil: only when something is written

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
