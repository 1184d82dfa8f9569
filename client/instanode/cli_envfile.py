"""``--env-file``: a resource's env lines (``DATABASE_URL=...``) put into a dotenv file.

A name the file does not set yet is appended; a name it sets already (``NAME=`` or ``export
NAME=``) has that line replaced by the new value, so the file never holds two values for one
name (dotenv loaders disagree on which of two would win); a line already as wanted is left.
A new file is made 0600 (it holds credentials); an existing one keeps its mode. The file is
replaced atomically, so a crash never leaves half of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from instanode.credentials import write_atomically

_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
_PLAIN = re.compile(r"[A-Za-z0-9_./:@%+,=?&~-]*")


@dataclass(frozen=True)
class EnvFileChange:
    added: tuple[str, ...]
    replaced: tuple[str, ...]
    unchanged: tuple[str, ...]


def quoted(value: str) -> str:
    """``value`` as a dotenv value: bare when it is plain (URLs are), else double-quoted."""
    if _PLAIN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def update_env_file(target: Path, env: Mapping[str, str]) -> EnvFileChange:
    lines = target.read_text(encoding="utf-8").splitlines() if target.exists() else []
    wanted = {name: f"{name}={quoted(value)}" for name, value in env.items()}
    out: list[str] = []
    seen: set[str] = set()
    replaced: list[str] = []
    unchanged: list[str] = []
    for line in lines:
        match = _ASSIGNMENT.match(line)
        name = match.group(1) if match else None
        if name not in wanted:
            out.append(line)
        elif name not in seen:  # the first setting of the name takes the new line; later ones go
            seen.add(name)
            (unchanged if line == wanted[name] else replaced).append(name)
            out.append(wanted[name])
    added = [name for name in wanted if name not in seen]
    out.extend(wanted[name] for name in added)
    _write(target, "".join(f"{line}\n" for line in out))
    return EnvFileChange(tuple(added), tuple(replaced), tuple(unchanged))


def _write(target: Path, text: str) -> None:
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o600
    write_atomically(target, text, mode)
