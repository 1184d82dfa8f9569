import pytest

from chalicelib.deploy.backend import Event
from chalicelib.deploy.classify import classify_build, classify_runtime

AT = 1_760_000_000

# -- build logs, as kaniko and buildah print them --------------------------------------------

KANIKO_PREAMBLE = [
    "INFO[0000] Retrieving image manifest node:20-alpine",
    "INFO[0000] Retrieving image node:20-alpine from registry index.docker.io",
    "INFO[0001] Built cross stage deps: map[]",
    "INFO[0001] Executing 0 build triggers",
    "INFO[0001] Building stage 'node:20-alpine' [idx: '0', base-idx: '-1']",
    "INFO[0001] Unpacking rootfs as cmd RUN npm ci requires it.",
    "INFO[0004] WORKDIR /app",
    "INFO[0004] COPY package*.json ./",
]
KANIKO_RUN_FAILED = (
    "error building image: error building stage: failed to execute command: "
    "waiting for process to exit: exit status 1"
)

KANIKO_MAKE = [
    *KANIKO_PREAMBLE,
    "INFO[0004] RUN make build",
    "INFO[0004] Cmd: /bin/sh",
    "INFO[0004] Args: [-c make build]",
    "INFO[0004] Running: [/bin/sh -c make build]",
    "cc -O2 -o server server.c",
    "server.c:4:10: fatal error: missing.h: No such file or directory",
    "compilation terminated.",
    "make: *** [Makefile:3: build] Error 1",
    KANIKO_RUN_FAILED,
]
KANIKO_NPM = [
    *KANIKO_PREAMBLE,
    "INFO[0004] RUN npm ci",
    "INFO[0004] Running: [/bin/sh -c npm ci]",
    "npm ERR! code EUSAGE",
    "npm ERR! ",
    "npm ERR! The `npm ci` command can only install with an existing package-lock.json or",
    "npm ERR! npm-shrinkwrap.json with lockfileVersion >= 1. Run an install with npm@5 or",
    "npm ERR! later to generate a package-lock.json file, then try again.",
    "npm ERR! A complete log of this run can be found in:",
    "npm ERR!     /root/.npm/_logs/2025-01-01T10_00_00_000Z-debug-0.log",
    KANIKO_RUN_FAILED,
]
KANIKO_SYNTAX = [
    "error building image: parsing dockerfile: dockerfile parse error line 3: "
    "unknown instruction: RUNN",
]
KANIKO_PULL = [
    "INFO[0000] Retrieving image manifest pyhton:3.12",
    "INFO[0000] Retrieving image pyhton:3.12 from registry index.docker.io",
    "error building image: GET https://index.docker.io/v2/library/pyhton/manifests/3.12: "
    "UNAUTHORIZED: authentication required; [map[Action:pull Class: Name:library/pyhton "
    "Type:repository]]",
]
KANIKO_COPY = [
    "INFO[0000] Retrieving image manifest python:3.12-slim",
    "error building image: error building stage: failed to get files used from context: "
    "failed to get fileinfo for /kaniko/buildcontext/requirements.txt: "
    "lstat /kaniko/buildcontext/requirements.txt: no such file or directory",
]
KANIKO_EXEC_FORMAT = [
    "INFO[0003] RUN apt-get update",
    "INFO[0003] Running: [/bin/sh -c apt-get update]",
    "error building image: error building stage: failed to execute command: "
    "starting command: fork/exec /bin/sh: exec format error",
]
KANIKO_PUSH = [
    "INFO[0040] Pushing image to registry.example.com/instanode/shop:3",
    "error pushing image: failed to push to destination registry.example.com/instanode/shop:3: "
    "UNAUTHORIZED: authentication required",
]
# kaniko's command line stops before building: cobra prints the error, then the usage and flags
KANIKO_USAGE = [
    "Usage:",
    "  executor [flags]",
    "  executor [command]",
    "",
    "Available Commands:",
    "  help        Help about any command",
    "  version     Print the version number of kaniko",
    "",
    "Flags:",
    "      --build-arg multi-arg type                  This flag allows you to pass in ARG values "
    "at build time. Set it repeatedly for multiple values.",
    "      --cache                                     Use cache when building image",
    "      --cache-dir string                          Specify a local directory to use as a "
    'cache. (default "/cache")',
]
KANIKO_NO_DOCKERFILE_ERROR = (
    "Error: error resolving dockerfile path: please provide a valid path to a Dockerfile within "
    "the build context with --dockerfile"
)
KANIKO_NO_DOCKERFILE = [KANIKO_NO_DOCKERFILE_ERROR, *KANIKO_USAGE]
KANIKO_CONTEXT_UNREADABLE = [
    "Error: error resolving source context: NoCredentialProviders: no valid providers in chain. "
    "Deprecated.",
    "\tFor verbose messaging see aws.Config.CredentialsChainVerboseErrors",
    *KANIKO_USAGE,
]
KANIKO_PUSH_CHECK = [
    "error checking push permissions -- make sure you entered the correct tag name, and that you "
    'are authenticated correctly, and try again: checking push permission for "registry.example.'
    'com/instanode/shop:3": POST https://registry.example.com/v2/instanode/shop/blobs/uploads/: '
    "UNAUTHORIZED: authentication required; [map[Action:pull Class: Name:instanode/shop "
    "Type:repository] map[Action:push Class: Name:instanode/shop Type:repository]]",
]

BUILDAH_PIP = [
    "STEP 1/6: FROM python:3.12-slim",
    "STEP 2/6: WORKDIR /app",
    "--> 3b1f0c2d4e5f",
    "STEP 3/6: COPY requirements.txt .",
    "--> 9a8b7c6d5e4f",
    "STEP 4/6: RUN pip install --no-cache-dir -r requirements.txt",
    "ERROR: Could not find a version that satisfies the requirement fastapi==9.9.9 "
    "(from versions: 0.1.0, 0.1.1, 0.115.0)",
    "ERROR: No matching distribution found for fastapi==9.9.9",
    'Error: building at STEP "RUN pip install --no-cache-dir -r requirements.txt": '
    "while running runtime: exit status 1",
]
BUILDAH_NPM_RUN = [
    "STEP 1/5: FROM node:20-alpine",
    "STEP 4/5: RUN npm ci",
    "npm error code ERESOLVE",
    "npm error ERESOLVE could not resolve",
    'error building at STEP "RUN npm ci": while running runtime: exit status 1',
]
BUILDAH_PULL_DNS = [
    "STEP 1/4: FROM node:20",
    'Resolving "node" using unqualified-search registries (/etc/containers/registries.conf)',
    "Trying to pull docker.io/library/node:20...",
    "Error: error creating build container: initializing source docker://node:20: "
    'pinging container registry registry-1.docker.io: Get "https://registry-1.docker.io/v2/": '
    "dial tcp: lookup registry-1.docker.io on 10.0.2.3:53: no such host",
]
BUILDAH_PULL_TAG = [
    "STEP 1/4: FROM python:3.99-slim",
    "Trying to pull docker.io/library/python:3.99-slim...",
    "Error: creating build container: initializing source docker://python:3.99-slim: "
    "reading manifest 3.99-slim in docker.io/library/python: manifest unknown",
]
BUILDAH_COPY = [
    "STEP 1/5: FROM node:20-alpine",
    "STEP 2/5: WORKDIR /app",
    "STEP 3/5: COPY package.json package-lock.json ./",
    'Error: building at STEP "COPY package.json package-lock.json ./": checking on sources '
    'under "/var/tmp/libpod_builder2785/build": copier: stat: "/package-lock.json": '
    "no such file or directory",
]
BUILDAH_SYNTAX = [
    "STEP 1/3: FROM alpine:3.20",
    'Error: building at STEP "RUNN echo hi": Build error: Unknown instruction: "RUNN"',
]
BUILDAH_APT = [
    "STEP 2/4: RUN apt-get install -y libpq-dev",
    "Reading package lists...",
    "Building dependency tree...",
    "E: Unable to locate package libpq-dev",
    'Error: building at STEP "RUN apt-get install -y libpq-dev": while running runtime: '
    "exit status 100",
]
BUILDAH_NOT_FOUND = [
    "STEP 3/5: RUN yarn install --frozen-lockfile",
    "/bin/sh: 1: yarn: not found",
    'Error: building at STEP "RUN yarn install --frozen-lockfile": while running runtime: '
    "exit status 127",
]
BUILDAH_OOM = [
    "STEP 5/6: RUN npm run build",
    "> next build",
    "<--- Last few GCs --->",
    "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
    'Error: building at STEP "RUN npm run build": while running runtime: exit status 134',
]
BUILDAH_MODULE = [
    "STEP 5/6: RUN python manage.py collectstatic --noinput",
    "Traceback (most recent call last):",
    '  File "/app/manage.py", line 11, in main',
    "    from django.core.management import execute_from_command_line",
    "ModuleNotFoundError: No module named 'django'",
    'Error: building at STEP "RUN python manage.py collectstatic --noinput": '
    "while running runtime: exit status 1",
]
DOCKER_LEGACY_COPY = [
    "Step 3/6 : COPY requirements.txt .",
    "COPY failed: file not found in build context or excluded by .dockerignore: "
    "stat requirements.txt: file does not exist",
]


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        (KANIKO_SYNTAX, "DockerfileSyntax"),
        (BUILDAH_SYNTAX, "DockerfileSyntax"),
        (KANIKO_PULL, "BaseImagePullFailed"),
        (BUILDAH_PULL_DNS, "BaseImagePullFailed"),
        (BUILDAH_PULL_TAG, "BaseImagePullFailed"),
        (KANIKO_COPY, "CopySourceMissing"),
        (BUILDAH_COPY, "CopySourceMissing"),
        (DOCKER_LEGACY_COPY, "CopySourceMissing"),
        (KANIKO_NPM, "DependencyInstallFailed"),
        (BUILDAH_NPM_RUN, "DependencyInstallFailed"),
        (BUILDAH_PIP, "DependencyInstallFailed"),
        (BUILDAH_APT, "DependencyInstallFailed"),
        (BUILDAH_MODULE, "MissingDependency"),
        (BUILDAH_NOT_FOUND, "ExecutableNotFound"),
        (KANIKO_EXEC_FORMAT, "ExecFormat"),
        (BUILDAH_OOM, "OOMKilled"),
        (KANIKO_MAKE, "BuildCommandFailed"),
        (KANIKO_PUSH, "ImagePushFailed"),
        (KANIKO_PUSH_CHECK, "ImagePushFailed"),
        (KANIKO_NO_DOCKERFILE, "DockerfileNotFound"),
        (KANIKO_CONTEXT_UNREADABLE, "BuildContextUnavailable"),
    ],
)
def test_classify_build_recognises_reason(log: list[str], reason: str) -> None:
    event = classify_build(log, 1, AT)
    assert event.reason == reason
    assert event.hint and event.at == AT and event.exit_code == 1


def test_classify_build_hint_for_base_image_names_from() -> None:
    hint = classify_build(BUILDAH_PULL_DNS, 125, AT).hint
    assert hint.startswith("The base image could not be pulled; check the image name and tag")
    assert "public image" in hint  # a registry (Kubernetes) serves public images


def test_classify_build_hint_lists_the_base_images_a_backend_without_registry_has() -> None:
    offered = ["python:3.11-slim", "node:18-slim", "debian:bookworm-slim"]
    event = classify_build(BUILDAH_PULL_DNS, 125, AT, base_images=lambda: offered)
    assert event.reason == "BaseImagePullFailed"
    assert event.hint.startswith("The base image could not be pulled; check the image name")
    assert "(python:3.11-slim, node:18-slim, debian:bookworm-slim)" in event.hint
    assert "public image" not in event.hint and "node:20" not in event.hint


def test_classify_build_lists_base_images_only_for_a_failed_pull() -> None:
    plain = classify_build(BUILDAH_PIP, 1, AT)
    asked: list[bool] = []
    listed = classify_build(BUILDAH_PIP, 1, AT, base_images=lambda: asked.append(True) or [])
    assert listed == plain and asked == []  # not even asked which images there are


def test_classify_build_message_quotes_first_matching_line() -> None:
    event = classify_build(KANIKO_NPM, 1, AT)
    assert event.message == "Installing the Node.js dependencies failed: npm ERR! code EUSAGE"


def test_classify_build_message_quotes_failed_step() -> None:
    event = classify_build(KANIKO_MAKE, 1, AT)
    assert event.message == f"A build step failed: {KANIKO_RUN_FAILED}"


def test_classify_build_tells_where_the_dockerfile_belongs() -> None:
    event = classify_build(KANIKO_NO_DOCKERFILE, 1, AT)
    assert event.message == (
        "There is no Dockerfile in the build context: " + KANIKO_NO_DOCKERFILE_ERROR
    )
    assert "`Dockerfile` at its root" in event.hint and "tar -czf" in event.hint


def test_classify_build_drops_kaniko_usage_after_the_error() -> None:
    event = classify_build(KANIKO_NO_DOCKERFILE, 1, AT)
    assert event.last_lines == (KANIKO_NO_DOCKERFILE_ERROR,)


def test_classify_build_keeps_usage_lines_printed_by_a_run_step() -> None:
    log = ["Error: unknown flag: --prod", "Usage:", "  mytool build [flags]", KANIKO_RUN_FAILED]
    event = classify_build(log, 1, AT)
    assert event.reason == "BuildCommandFailed" and event.last_lines == tuple(log)


def test_classify_build_puts_push_failures_on_our_side() -> None:
    for log in (KANIKO_PUSH, KANIKO_PUSH_CHECK):
        assert "on our side" in classify_build(log, 1, AT).hint


def test_classify_build_puts_unreadable_context_on_our_side() -> None:
    event = classify_build(KANIKO_CONTEXT_UNREADABLE, 1, AT)
    assert "on our side" in event.hint
    assert event.last_lines == tuple(KANIKO_CONTEXT_UNREADABLE[:2])


def test_classify_build_prefers_install_error_over_failed_step() -> None:
    assert classify_build(BUILDAH_PIP, 1, AT).reason == "DependencyInstallFailed"


def test_classify_build_prefers_exec_format_over_failed_command() -> None:
    assert classify_build(KANIKO_EXEC_FORMAT, 1, AT).reason == "ExecFormat"


def test_classify_build_prefers_memory_over_npm_error() -> None:
    log = [*KANIKO_NPM[:-1], "npm ERR! signal SIGKILL", "Killed: out of memory", KANIKO_RUN_FAILED]
    assert classify_build(log, 1, AT).reason == "OOMKilled"


def test_classify_build_prefers_syntax_over_failed_step() -> None:
    assert "building at STEP" in BUILDAH_SYNTAX[-1]
    assert classify_build(BUILDAH_SYNTAX, 1, AT).reason == "DockerfileSyntax"


def test_classify_build_prefers_pull_failure_over_missing_file() -> None:
    log = [*BUILDAH_PULL_DNS, "open /etc/containers/policy.json: no such file or directory"]
    assert classify_build(log, 125, AT).reason == "BaseImagePullFailed"


def test_classify_build_treats_exit_137_as_oom() -> None:
    event = classify_build(["INFO[0010] RUN npm run build", "> next build"], 137, AT)
    assert (event.reason, event.message) == (
        "OOMKilled",
        "Killed for using too much memory (exit code 137).",
    )


def test_classify_build_reads_exit_code_from_log() -> None:
    assert classify_build(BUILDAH_APT, None, AT).exit_code == 100


def test_classify_build_keeps_unknown() -> None:
    event = classify_build(["INFO[0001] Building stage", "something odd happened"], 2, AT)
    assert event.reason == "Unknown"
    assert event.message == "The build failed (exit code 2): something odd happened"
    assert "last_lines" in event.hint


def test_classify_build_handles_empty_log() -> None:
    event = classify_build([], None, AT)
    assert event == Event(
        reason="Unknown",
        message="The build failed.",
        exit_code=None,
        last_lines=(),
        hint=event.hint,
        at=AT,
    )


# -- last_lines ------------------------------------------------------------------------------


def test_classify_keeps_last_30_non_empty_lines() -> None:
    log = [f"line {i}" if i % 3 else "   " for i in range(100)]
    event = classify_build(log, 1, AT)
    kept = [f"line {i}" for i in range(100) if i % 3]
    assert event.last_lines == tuple(kept[-30:])


def test_classify_splits_multiline_entries() -> None:
    event = classify_build(["a\nb\r\n\nc"], 1, AT)
    assert event.last_lines == ("a", "b", "c")


def test_classify_strips_colour_codes() -> None:
    event = classify_build(["\x1b[31mnpm ERR!\x1b[0m code E404"], 1, AT)
    assert event.reason == "DependencyInstallFailed"
    assert event.last_lines == ("npm ERR! code E404",)


def test_classify_cuts_long_lines() -> None:
    event = classify_build(["x" * 5000], 1, AT)
    assert len(event.last_lines[0]) == 503


def test_classify_keeps_short_log_whole() -> None:
    assert classify_build(KANIKO_COPY, 1, AT).last_lines == tuple(KANIKO_COPY)


# -- app (runtime) logs ----------------------------------------------------------------------

PY_MISSING_MODULE = [
    "Traceback (most recent call last):",
    '  File "/app/main.py", line 3, in <module>',
    "    import psycopg",
    "ModuleNotFoundError: No module named 'psycopg'",
]
NODE_MISSING_MODULE = [
    "node:internal/modules/cjs/loader:1228",
    "  throw err;",
    "Error: Cannot find module 'express'",
    "Require stack:",
    "- /app/server.js",
]
CRUN_NOT_FOUND = [
    "Error: crun: executable file `uvicorn` not found in $PATH: No such file or directory: "
    "OCI runtime attempted to invoke a command that was not found",
]
RUNC_NOT_FOUND = [
    'exec: "gunicorn": executable file not found in $PATH',
]
CRLF_SCRIPT = ["exec /app/start.sh: no such file or directory"]
EXEC_FORMAT = ["exec /usr/local/bin/server: exec format error"]
ADDRESS_IN_USE = [
    "INFO:     Started server process [1]",
    "ERROR:    [Errno 98] error while attempting to bind on address ('0.0.0.0', 8080): "
    "address already in use",
]
NODE_EADDRINUSE = [
    "node:events:496",
    "Error: listen EADDRINUSE: address already in use :::8080",
]
UVICORN_LOCALHOST = [
    "INFO:     Started server process [1]",
    "INFO:     Waiting for application startup.",
    "INFO:     Application startup complete.",
    "INFO:     Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)",
]
PY_CRASH = [
    "Traceback (most recent call last):",
    '  File "/app/main.py", line 5, in <module>',
    '    DATABASE_URL = os.environ["DATABASE_URL"]',
    "KeyError: 'DATABASE_URL'",
]


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        (PY_MISSING_MODULE, "MissingDependency"),
        (NODE_MISSING_MODULE, "MissingDependency"),
        (CRUN_NOT_FOUND, "ExecutableNotFound"),
        (RUNC_NOT_FOUND, "ExecutableNotFound"),
        (CRLF_SCRIPT, "ExecutableNotFound"),
        (EXEC_FORMAT, "ExecFormat"),
        (ADDRESS_IN_USE, "PortInUse"),
        (NODE_EADDRINUSE, "PortInUse"),
        (
            ["FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"],
            "OOMKilled",
        ),
        (PY_CRASH, "CrashLoop"),
    ],
)
def test_classify_runtime_recognises_reason(log: list[str], reason: str) -> None:
    event = classify_runtime(log, 1, AT, listening=False, port=8080)
    assert event.reason == reason
    assert event.hint and event.exit_code == 1


def test_classify_runtime_trusts_oom_flag() -> None:
    event = classify_runtime(PY_CRASH, 1, AT, oom=True)
    assert (event.reason, event.message) == (
        "OOMKilled",
        "Killed for using too much memory (exit code 1).",
    )


def test_classify_runtime_treats_exit_137_as_oom() -> None:
    assert classify_runtime(["starting"], 137, AT).reason == "OOMKilled"


def test_classify_runtime_reports_port_not_listening() -> None:
    event = classify_runtime(UVICORN_LOCALHOST, None, AT, listening=False, port=8080)
    assert event.reason == "PortNotListening"
    assert event.message == (
        "The app runs but nothing answers on port 8080; its log says it listens on 127.0.0.1:8000."
    )
    assert "0.0.0.0:8080" in event.hint and "`port`" in event.hint


def test_classify_runtime_prefers_log_cause_over_not_listening() -> None:
    event = classify_runtime(PY_MISSING_MODULE, None, AT, listening=False, port=8080)
    assert event.reason == "MissingDependency"


def test_classify_runtime_prefers_exit_over_not_listening() -> None:
    assert classify_runtime(PY_CRASH, 1, AT, listening=False, port=8080).reason == "CrashLoop"


def test_classify_runtime_reports_crash_loop() -> None:
    event = classify_runtime(PY_CRASH, 1, AT)
    assert event.reason == "CrashLoop"
    assert event.message == "The app keeps exiting (exit code 1): KeyError: 'DATABASE_URL'"
    assert event.last_lines == tuple(PY_CRASH)


def test_classify_runtime_explains_clean_exit() -> None:
    assert "foreground" in classify_runtime(["done"], 0, AT).hint


def test_classify_runtime_keeps_unknown() -> None:
    event = classify_runtime(["INFO: started"], None, AT, listening=None)
    assert event.reason == "Unknown"
    assert event.exit_code is None
