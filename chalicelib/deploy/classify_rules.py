"""The rules ``classify`` reads logs with: each table is in priority order (the first match
wins). The build rules know the output of kaniko and of buildah/podman (and docker's legacy
builder); the runtime rules know what interpreters and container runtimes print when an app
cannot start.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


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

BASE_IMAGE_PULL = _rule(
    r"(?i)initializing source docker://|pinging container registry|manifest unknown|"
    r"/manifests/\S+: (UNAUTHORIZED|MANIFEST_UNKNOWN|NAME_UNKNOWN)|pull access denied|"
    r"error resolving base image|failed to get filesystem from image|"
    r"short-name resolution|repository does not exist",
    "BaseImagePullFailed",
    "The base image could not be pulled",
    "The base image could not be pulled; check the image name and tag in FROM, or use a "
    "public image (e.g. python:3.12-slim, node:20-alpine).",
)


def base_image_hint(images: Sequence[str]) -> str:
    """BASE_IMAGE_PULL's hint where no registry is reachable and only ``images`` (the local
    backend's, ``chalicelib.deploy.baseimage.offered_names``) can be built on."""
    return (
        "The base image could not be pulled; check the image name and tag in FROM. No image "
        "registry is reachable from this installation: start FROM one of the images it "
        f"provides ({', '.join(images)}) and install anything else in RUN steps."
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
    BASE_IMAGE_PULL,
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
