"""``.dockerignore`` matching as Docker does it (moby/patternmatcher): patterns are cleaned
paths relative to the context root, ``*`` and ``?`` never cross a ``/``, ``**`` crosses any
number of directories, ``!`` re-includes, the last matching pattern wins, and a pattern that
matches a directory matches everything under it."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_ESCAPED = frozenset(".+()|{}$^")  # regex specials that Go's filepath.Match takes literally


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool  # a "!" line: matching paths are included again
    regex: re.Pattern[str]

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None


def compile_pattern(line: str) -> Pattern | None:
    """One line of a .dockerignore as a Pattern; None for blanks and comments."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    exclusion = text.startswith("!")
    if exclusion:
        text = text[1:].strip()
    text = posixpath.normpath(text) if text else "."
    if len(text) > 1 and text.startswith("/"):
        text = text.lstrip("/") or "."
    return Pattern(text, exclusion, re.compile(_regex(text), re.DOTALL))


def _regex(pattern: str) -> str:
    out, i = ["^"], 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*" and pattern[i : i + 1] == "*":
            i += 1
            if pattern[i : i + 1] == "/":
                i += 1
            out.append(".*" if i == len(pattern) else "(.*/)?")
        elif ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i < len(pattern):
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch in _ESCAPED or ch == "\\":
            out.append("\\" + ch)
        else:
            out.append(ch)  # '[' and ']' keep their character-class meaning
    out.append("$")
    return "".join(out)


class Matcher:
    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self.patterns = tuple(patterns)
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    @classmethod
    def of_lines(cls, lines: Iterable[str]) -> Matcher:
        return cls(p for line in lines if (p := compile_pattern(line)) is not None)

    @classmethod
    def of_context(cls, root: Path) -> Matcher:
        """The matcher of ``root/.dockerignore`` (matches nothing without one)."""
        ignore = root / ".dockerignore"
        lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.is_file() else []
        return cls.of_lines(lines)

    def ignored(self, path: str) -> bool:
        """Whether ``path`` (relative, '/'-separated) is left out of the context."""
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue  # only a later pattern of the other sense can change the answer
            found = pattern.matches(path) or any(
                pattern.matches("/".join(parents[: i + 1])) for i in range(len(parents))
            )
            if found:
                matched = not pattern.exclusion
        return matched
