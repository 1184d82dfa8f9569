"""Why a build or an app failed, read from its log: one ``Event`` with a reason and a remedy.

The rules (classify_rules.py) are tables in priority order; the first rule whose pattern
matches a log line (or whose exit code is the one given) wins, so a specific cause (``npm
ERR!``) beats the generic symptom printed after it (kaniko's ``failed to execute command``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence

from chalicelib.deploy.backend import Event
from chalicelib.deploy.classify_rules import (
    BASE_IMAGE_PULL,
    BUILD_RULES,
    OOM,
    RUNTIME_RULES,
    Rule,
    base_image_hint,
)

LAST_LINES = 30
MAX_LINE = 500  # longer lines (minified code, base64) are cut
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_EXIT = re.compile(r"exit (?:status|code):? (\d+)|non-zero code: (\d+)")
_LISTENING = re.compile(r"(?:https?://)?(127\.0\.0\.1|localhost|0\.0\.0\.0|\[::1?\]):(\d{2,5})\b")


def classify_build(
    log: Sequence[str],
    exit_code: int | None,
    at: int,
    *,
    base_images: Callable[[], Sequence[str]] | None = None,
) -> Event:
    """The cause of a failed image build, from its log. ``base_images``: where a backend can
    only build on the images it has (the local one, without a registry), what names them, which
    a failed pull's hint then lists (asked only for a failed pull: it may cost a podman call)."""
    lines = _without_usage(_lines(log))
    code = _exit_code(exit_code, lines)
    found = _first_match(BUILD_RULES, lines, code)
    if found:
        event = _event(found[0], found[1], code, lines, at)
        if found[0] is BASE_IMAGE_PULL and base_images is not None:
            return dataclasses.replace(event, hint=base_image_hint(base_images()))
        return event
    return Event(
        reason="Unknown",
        message=_unknown("The build failed", code, lines),
        exit_code=code,
        last_lines=_tail(lines),
        hint="The build failed for a reason we could not classify; the error is in last_lines. "
        "Fix the Dockerfile or the files it uses and redeploy.",
        at=at,
    )


def classify_runtime(
    log: Sequence[str],
    exit_code: int | None,
    at: int,
    *,
    oom: bool = False,
    listening: bool | None = None,
    port: int | None = None,
) -> Event:
    """The cause of an app that does not serve. ``exit_code`` is its last exit (None while it
    has not exited), ``oom`` whether the runtime says it was killed for memory, ``listening``
    whether anything answers on ``port`` (None: not probed). A cause in the log comes first,
    then an exit (CrashLoop), then the probe (PortNotListening)."""
    lines = _lines(log)
    found = (OOM, "") if oom else _first_match(RUNTIME_RULES, lines, exit_code)
    if found:
        return _event(found[0], found[1], exit_code, lines, at)
    if exit_code is not None:
        return _crash(lines, exit_code, at)
    if listening is False:
        return _not_listening(lines, at, port)
    return Event(
        reason="Unknown",
        message=_unknown("The app is not serving", exit_code, lines),
        exit_code=exit_code,
        last_lines=_tail(lines),
        hint="The app is not serving for a reason we could not classify; read last_lines for "
        "its output, fix the app and redeploy.",
        at=at,
    )


def _not_listening(lines: list[str], at: int, port: int | None) -> Event:
    where = f"0.0.0.0:{port}" if port else "0.0.0.0 on the deploy's port"
    message = "The app runs but nothing answers on " + (f"port {port}" if port else "its port")
    bound = _bound_address(lines)
    if bound:
        message += f"; its log says it listens on {bound}"
    return Event(
        reason="PortNotListening",
        message=message + ".",
        exit_code=None,
        last_lines=_tail(lines),
        hint=f"Make the app listen on {where} (not 127.0.0.1 or localhost), or redeploy with "
        "`port` set to the port it listens on.",
        at=at,
    )


def _crash(lines: list[str], exit_code: int, at: int) -> Event:
    if exit_code == 0:
        hint = (
            "The app's main process exited with code 0; CMD must start a server that stays in "
            "the foreground, not a one-off script or a command that daemonises."
        )
    else:
        hint = (
            "The app exits soon after starting; the error is in last_lines (often a missing "
            "env var or a failed database connection). Fix it and redeploy."
        )
    return Event(
        reason="CrashLoop",
        message=_unknown("The app keeps exiting", exit_code, lines),
        exit_code=exit_code,
        last_lines=_tail(lines),
        hint=hint,
        at=at,
    )


def _first_match(
    rules: Iterable[Rule], lines: list[str], exit_code: int | None
) -> tuple[Rule, str] | None:
    for rule in rules:
        line = next((line for line in lines if rule.pattern.search(line)), None)
        if line is not None:
            return rule, line
        if exit_code in rule.exit_codes:
            return rule, ""
    return None


def _event(rule: Rule, line: str, exit_code: int | None, lines: list[str], at: int) -> Event:
    if line:
        message = f"{rule.summary}: {line.strip()[:300]}"
    elif exit_code is not None:
        message = f"{rule.summary} (exit code {exit_code})."
    else:
        message = f"{rule.summary}."
    return Event(
        reason=rule.reason,
        message=message,
        exit_code=exit_code,
        last_lines=_tail(lines),
        hint=rule.hint,
        at=at,
    )


def _lines(log: Sequence[str]) -> list[str]:
    """The log's non-empty lines, split where an entry holds several, without colour codes."""
    out: list[str] = []
    for entry in log:
        for raw in entry.splitlines():
            line = _ANSI.sub("", raw).rstrip()
            if line.strip():
                out.append(line if len(line) <= MAX_LINE else line[:MAX_LINE] + "...")
    return out


def _without_usage(lines: list[str]) -> list[str]:
    """The log without the help kaniko prints after ``Error: ...`` when it cannot start (the
    usage and some seventy flags), so last_lines ends with the error."""
    for i in range(len(lines) - 1):
        if lines[i] == "Usage:" and lines[i + 1].strip() == "executor [flags]":
            return lines[:i]
    return lines


def _tail(lines: list[str]) -> tuple[str, ...]:
    return tuple(lines[-LAST_LINES:])


def _exit_code(given: int | None, lines: list[str]) -> int | None:
    """``given``, or else the last exit status the log reports."""
    if given is not None:
        return given
    for line in reversed(lines):
        match = _EXIT.search(line)
        if match:
            return int(match.group(1) or match.group(2))
    return None


def _bound_address(lines: list[str]) -> str | None:
    for line in reversed(lines):
        match = _LISTENING.search(line)
        if match:
            return f"{match.group(1)}:{match.group(2)}"
    return None


def _unknown(summary: str, exit_code: int | None, lines: list[str]) -> str:
    message = summary + (f" (exit code {exit_code})" if exit_code is not None else "")
    return message + (f": {lines[-1].strip()[:300]}" if lines else ".")
