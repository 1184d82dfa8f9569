"""Why a build or an app failed, read from its log: one ``Event`` with a reason and a remedy.

Each table below is a list of rules in priority order; the first rule whose pattern matches a
log line (or whose exit code is the one given) wins, so a specific cause (``npm ERR!``) beats
the generic symptom printed after it (kaniko's ``failed to execute command``). The build rules
know the output of kaniko and of buildah/podman (and docker's legacy builder); the runtime rules
know what interpreters and container runtimes print when an app cannot start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chalicelib.deploy.backend import Event

LAST_LINES = 30
MAX_LINE = 500  # longer lines (minified code, base64) are cut
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_EXIT = re.compile(r"exit (?:status|code):? (\d+)|non-zero code: (\d+)")
_LISTENING = re.compile(r"(?:https?://)?(127\.0\.0\.1|localhost|0\.0\.0\.0|\[::1?\]):(\d{2,5})\b")


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    reason: str
    summary: str  # the start of Event.message; the matching log line follows it
    hint: str
    exit_codes: frozenset[int] = frozenset()  # also matches on these exit codes alone


def _rule(pattern: str, reason: str, summary: str, hint: str, *codes: int) -> Rule:
    return Rule(re.compile(pattern), reason, summary, hint, frozenset(codes))


OOM = _rule(
    r"(?i)\bOOMKilled\b|out of memory|cannot allocate memory|\bMemoryError\b|"
    r"exit (status|code):? 137\b|signal: killed",
    "OOMKilled",
    "Killed for using too much memory",
    "The process ran out of memory; use less (fewer workers, smaller caches, no full-size "
    "builds inside the image) or move to a tier with more memory.",
    137,
)
EXEC_FORMAT = _rule(
    r"(?i)exec format error",
    "ExecFormat",
    "A binary is for another CPU architecture",
    "A program in the image was built for another CPU architecture (apps run on linux/amd64) "
    "or a script lacks its #! line; use an amd64 or multi-arch base image and build for amd64.",
)
EXECUTABLE_NOT_FOUND = _rule(
    r"executable file `?[^`\s]*`? not found in \$PATH|executable file not found|"
    r": command not found|^(/bin/)?(ba)?sh: (\d+: )?\S+: not found|"
    r"^exec \S+: no such file or directory",
    "ExecutableNotFound",
    "A command does not exist in the image",
    "The command is not installed in the image or not on PATH; install it in an earlier RUN "
    "step (or use a base image that has it) and check the spelling in CMD, ENTRYPOINT or RUN; "
    "a script needs a valid #! line and Unix (LF) line endings.",
)
MISSING_MODULE = _rule(
    r"ModuleNotFoundError: No module named|"
    r"Error: Cannot find module|ERR_MODULE_NOT_FOUND|cannot load such file",
    "MissingDependency",
    "A module the code imports is not installed",
    "Add the missing module to requirements.txt or package.json and install it in the "
    "Dockerfile (RUN pip install -r requirements.txt, RUN npm ci) before the code runs.",
)

BUILD_RULES: tuple[Rule, ...] = (
    _rule(
        r"please provide a valid path to a Dockerfile",
        "DockerfileNotFound",
        "There is no Dockerfile in the build context",
        "The archive has no file named `Dockerfile` at its root; put one there (capital D, no "
        "extension), archive the directory's contents with `tar -czf app.tar.gz -C <dir> .` "
        "and redeploy.",
    ),
    _rule(
        r"error resolving source context",
        "BuildContextUnavailable",
        "The build could not read the uploaded archive",
        "The builder could not fetch the uploaded archive from our storage; this is on our "
        "side, so redeploy in a minute and contact support if it keeps happening.",
    ),
    _rule(
        r"(?i)dockerfile parse error|unknown instruction:|no FROM statement|"
        r"no build stage in current context|file with no instructions",
        "DockerfileSyntax",
        "The Dockerfile could not be parsed",
        "Fix the Dockerfile line named in the message (a misspelt instruction, or FROM missing "
        "as the first instruction) and redeploy.",
    ),
    _rule(
        r"error pushing image|failed to push to destination|error checking push permissions",
        "ImagePushFailed",
        "The image could not be stored in our registry",
        "Our image registry refused the image; this is on our side, not in the app, so "
        "redeploy in a minute and contact support if it keeps happening.",
    ),
    _rule(
        r"(?i)initializing source docker://|pinging container registry|manifest unknown|"
        r"/manifests/\S+: (UNAUTHORIZED|MANIFEST_UNKNOWN|NAME_UNKNOWN)|pull access denied|"
        r"error resolving base image|failed to get filesystem from image|"
        r"short-name resolution|repository does not exist",
        "BaseImagePullFailed",
        "The base image could not be pulled",
        "The base image could not be pulled; check the image name and tag in FROM, or use a "
        "public image (e.g. python:3.12-slim, node:20-alpine).",
    ),
    _rule(
        r"COPY failed|ADD failed|failed to get files used from context|"
        r"at STEP \"(COPY|ADD) [^\"]*\":.*no such file or directory|"
        r"failed to calculate checksum of ref|copier: stat: ",
        "CopySourceMissing",
        "A COPY or ADD source is not in the build context",
        "A file that COPY or ADD names is not in the tarball; add it to the archive (check "
        ".dockerignore) or fix the path, which is relative to the archive's root.",
    ),
    OOM,
    _rule(
        r"^npm ERR!|^npm error |ERR_PNPM_|^error (Couldn't find|An unexpected error occurred)|"
        r"YN0\d{3}: .*(Error|error)",
        "DependencyInstallFailed",
        "Installing the Node.js dependencies failed",
        "npm could not install the dependencies; read the npm ERR! lines, check package.json, "
        "and include package-lock.json in the tarball if the Dockerfile runs `npm ci`.",
    ),
    _rule(
        r"^ERROR: (Could not find a version|No matching distribution|Could not install packages|"
        r"Failed building wheel|ResolutionImpossible|Cannot install)|"
        r"error: subprocess-exited-with-error",
        "DependencyInstallFailed",
        "Installing the Python dependencies failed",
        "pip could not install the requirements; check the package names and pinned versions "
        "in requirements.txt against the base image's Python version.",
    ),
    _rule(
        r"^E: (Unable to locate package|Package '.*' has no installation candidate)|"
        r"unable to select packages",
        "DependencyInstallFailed",
        "A system package could not be installed",
        "The package manager could not find a package; run `apt-get update` in the same RUN as "
        "`apt-get install` (or `apk add --no-cache` on Alpine) and check the package's name for "
        "the base image's distribution.",
    ),
    MISSING_MODULE,
    EXEC_FORMAT,
    EXECUTABLE_NOT_FOUND,
    _rule(
        r"building at STEP \"|failed to execute command|returned a non-zero code|"
        r"did not complete successfully|while running runtime",
        "BuildCommandFailed",
        "A build step failed",
        "A RUN step in the Dockerfile exited with an error; the lines just before this one in "
        "last_lines show why. Fix the command (try it locally) and redeploy.",
    ),
)

RUNTIME_RULES: tuple[Rule, ...] = (
    OOM,
    EXEC_FORMAT,
    EXECUTABLE_NOT_FOUND,
    MISSING_MODULE,
    _rule(
        r"(?i)address already in use|EADDRINUSE|Connection in use",
        "PortInUse",
        "The port is already taken inside the container",
        "Two servers in the container bind the same port (e.g. the app started twice, or a "
        "second process); start one server process only.",
    ),
)


def classify_build(log: Sequence[str], exit_code: int | None, at: int) -> Event:
    """The cause of a failed image build, from its log."""
    lines = _without_usage(_lines(log))
    code = _exit_code(exit_code, lines)
    found = _first_match(BUILD_RULES, lines, code)
    if found:
        return _event(found[0], found[1], code, lines, at)
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
