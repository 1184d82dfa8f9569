"""The settings a shared Redis server must run with before tenants are placed on it.

ACLs confine a tenant to its keys, but only the server can bound what one client allocates:
``SERVER_SETTINGS`` caps the server's memory without ever evicting anyone's keys, caps every
string and argument at 1 MiB (so SETRANGE/APPEND/SETBIT/BITFIELD cannot make more with one call),
and caps the request and reply buffers of one client and of all clients together.

The platform never changes a server's configuration (a self-hoster's Redis may serve others too,
CONFIG SET is lost on restart without CONFIG REWRITE, and managed services refuse it): the local
stack launches its server with these settings, a self-hoster puts them in redis.conf or the
service's parameter group, and ``verify_server`` refuses a server without them. A server that
refuses CONFIG (ElastiCache, MemoryDB) is judged on what INFO shows, its memory cap and policy;
the other settings cannot be read there and are logged as the parameter group's to carry.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping

import redis

from chalicelib.models import Backend
from chalicelib.providers.base import BackendDownError

log = logging.getLogger(__name__)

# Sizes are ceilings (a smaller non-zero value is fine); ``maxmemory`` is the server's own size and
# only has to be set (non-zero). The local stack launches with exactly these values.
SERVER_SETTINGS: Mapping[str, str] = {
    # a full server refuses writes with OOM; nobody's keys are evicted
    "maxmemory-policy": "noeviction",
    # the largest string or argument: bounds SETRANGE/APPEND/SETBIT/BITFIELD offsets and values
    "proto-max-bulk-len": "1mb",
    # one request in flight (a full-size argument and its framing)
    "client-query-buffer-limit": "2mb",
    # every client's buffers together: the arguments of one huge command, unread replies
    "maxmemory-clients": "64mb",
    # one client's replies; closes e.g. SRANDMEMBER k -1000000000 inside the command
    "client-output-buffer-limit": "normal 32mb 0 0",
}
RECHECK_SECONDS = 300  # a verified server is trusted this long, per process

_verified: dict[tuple[str, str], float] = {}  # (backend, admin_url) -> trusted until (monotonic)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 10**6,
    "mb": 1024**2,
    "g": 10**9,
    "gb": 1024**3,
}


def launch_args(maxmemory: str) -> list[str]:
    """``redis-server`` arguments for a server of ``maxmemory`` that meets the settings."""
    args = ["--maxmemory", maxmemory]
    for name, value in SERVER_SETTINGS.items():
        args += [f"--{name}", *value.split()]
    return args


def verify_server(client: redis.Redis, backend: Backend) -> None:
    """Raise ``BackendDownError`` unless the server runs with ``SERVER_SETTINGS`` and a memory cap
    (checked once per ``RECHECK_SECONDS``; a failing server is checked again every time)."""
    key = (backend.name, backend.admin_url)
    if _verified.get(key, 0.0) > time.monotonic():
        return
    found = _server_settings(client)
    if unknown := sorted(set(SERVER_SETTINGS) - set(found)):
        log.warning(
            "Redis backend %s hides %s: its parameter group must set them", backend.name, unknown
        )
    if problems := settings_problems(found):
        raise BackendDownError(f"Redis backend {backend.name} is unsafe: {'; '.join(problems)}")
    _verified[key] = time.monotonic() + RECHECK_SECONDS


def settings_problems(found: Mapping[str, str]) -> list[str]:
    """What is wrong with the server's values ``found`` (a setting not found is not judged)."""
    maxmemory = _bytes(found.get("maxmemory", "0"))
    problems = [] if maxmemory else ["maxmemory is 0: the server has no memory cap"]
    for name, wanted in SERVER_SETTINGS.items():
        value = found.get(name)
        if value is not None and not _within(name, value, wanted, maxmemory):
            bound = "" if name == "maxmemory-policy" else "at most "
            problems.append(f"{name} is {value!r}, needs {bound}{wanted!r}")
    return problems


def _server_settings(client: redis.Redis) -> dict[str, str]:
    """The server's values, by CONFIG GET or, where CONFIG is refused, by INFO memory."""
    try:
        found = client.config_get("maxmemory", *SERVER_SETTINGS)
    except redis.ResponseError:
        memory = client.info("memory")
        return {
            "maxmemory": str(memory["maxmemory"]),
            "maxmemory-policy": memory["maxmemory_policy"],
        }
    return {str(name): str(value) for name, value in found.items()}


def _within(name: str, value: str, wanted: str, maxmemory: int) -> bool:
    if name == "maxmemory-policy":
        return value == wanted
    return 0 < _bytes(_hard_limit(value), maxmemory) <= _bytes(_hard_limit(wanted))


def _hard_limit(value: str) -> str:
    """The normal class's hard limit of a client-output-buffer-limit value; others as they are."""
    words = value.split()
    return words[words.index("normal") + 1] if "normal" in words else value


def _bytes(size: str, of: int = 0) -> int:
    """A Redis size (``1mb``, ``1048576``, or ``25%`` of ``of``) in bytes."""
    if size.endswith("%"):
        return of * int(size[:-1]) // 100
    found = re.fullmatch(r"(\d+)([a-z]*)", size.lower())
    if not found or found.group(2) not in _UNITS:
        raise ValueError(f"not a Redis size: {size!r}")
    return int(found.group(1)) * _UNITS[found.group(2)]
