"""The ``instant.yaml`` manifest of a stack (``POST /stacks/new``), parsed and checked.

The manifest (YAML, validated strictly; anything else is ``400 invalid_manifest``)::

    services:                 # required: 1 to 5 services, in order
      web:                    # a DNS label: [a-z][a-z0-9-]{0,30}, no '-' at the end
        port: 8080            # optional: the port the app listens on (default 8080)
        expose: true          # optional: gets a public URL (default: true for the first service
                              #   only)
        env:                  # optional: env vars, keys [A-Z_][A-Z0-9_]*, string values
          API_URL: "service://api"
      api:
        port: 9000

No other keys are allowed, at the top or in a service. ``service://<name>`` inside an env value
is replaced, when the service is built, by the URL the other service's containers reach it at
(``DeployBackend.internal_url_of``: on Kubernetes its cluster Service, locally the host port
through ``host.containers.internal``). The multipart form carries one tarball per service,
named after it (``-F web=@web.tar.gz``); every service needs one and every tarball a service.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from chalicelib import errors
from chalicelib.deploy.env import valid_env

MAX_SERVICES = 5
SERVICE_NAME = re.compile(r"[a-z]([a-z0-9-]{0,29}[a-z0-9])?")  # a DNS label, 1-31 chars
RESERVED_NAMES = ("name", "manifest")  # form fields of POST /stacks/new
SERVICE_REF = re.compile(r"service://([a-z](?:[a-z0-9-]{0,29}[a-z0-9])?)")
DEFAULT_PORT = 8080
_SERVICE_KEYS = ("port", "expose", "env")
MAX_MANIFEST_BYTES = 64 * 1024
MAX_DEPTH = 8  # services > name > env > key is 4; YAML nested deeper is refused before it is built


class InvalidManifestError(errors.BadRequestError):
    code = "invalid_manifest"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int
    expose: bool
    env: Mapping[str, str]


@dataclass(frozen=True)
class Manifest:
    services: tuple[ServiceSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services)


def _bad(message: str) -> InvalidManifestError:
    return InvalidManifestError(
        message,
        agent_action="Fix instant.yaml: services: {<name>: {port, expose, env}}, 1-5 services, "
        "names [a-z][a-z0-9-]{0,30} not ending in - (see GET /llms.txt, Stacks).",
    )


class _TooDeep(ValueError):
    pass


class _ShallowLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting past MAX_DEPTH as it composes (its composer
    recurses: a document nested thousands deep would take seconds, then a RecursionError)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._depth >= MAX_DEPTH:
            raise _TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _load(raw: bytes) -> Any:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _bad(f"instant.yaml is {len(raw)} bytes; at most {MAX_MANIFEST_BYTES} are read.")
    try:
        return yaml.load(raw.decode("utf-8"), Loader=_ShallowLoader)  # noqa: S506 (a SafeLoader)
    except _TooDeep as exc:
        raise _bad(f"instant.yaml is {exc}.") from exc
    except ValueError as exc:  # int() of a number over 4,300 digits (UnicodeDecodeError too)
        raise _bad("instant.yaml is not UTF-8, or holds a number too long to read.") from exc
    except yaml.YAMLError as exc:
        raise _bad(f"instant.yaml is not valid YAML: {str(exc).splitlines()[0]}") from exc


def parse_manifest(raw: bytes) -> Manifest:
    """The manifest in ``raw``, validated; ``InvalidManifestError`` says what is wrong."""
    doc = _load(raw)
    if not isinstance(doc, dict):
        raise _bad("instant.yaml must be a mapping with a 'services' key.")
    unknown = [str(k) for k in doc if k != "services"]
    if unknown:
        raise _bad(f"Unknown top-level key(s) in instant.yaml: {', '.join(unknown)}.")
    services = doc.get("services")
    if not isinstance(services, dict) or not services:
        raise _bad("'services' must map each service name to its settings.")
    if len(services) > MAX_SERVICES:
        raise _bad(f"A stack has at most {MAX_SERVICES} services; this one has {len(services)}.")
    specs = [_service(name, body, first=i == 0) for i, (name, body) in enumerate(services.items())]
    names = {s.name for s in specs}
    for spec in specs:
        for key, value in spec.env.items():
            for ref in SERVICE_REF.findall(value):
                if ref not in names:
                    raise _bad(f"{spec.name}.env.{key} names service://{ref}, not in the stack.")
    return Manifest(tuple(specs))


def _service(name: Any, body: Any, first: bool) -> ServiceSpec:
    if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name) or name in RESERVED_NAMES:
        raise _bad(
            f"Service name {name!r} must match [a-z][a-z0-9-]{{0,30}}, not end in - "
            f"(and not be {' or '.join(RESERVED_NAMES)})."
        )
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise _bad(f"Service '{name}' must be a mapping (port, expose, env).")
    unknown = [str(k) for k in body if k not in _SERVICE_KEYS]
    if unknown:
        raise _bad(f"Unknown key(s) in service '{name}': {', '.join(unknown)}.")
    port = body.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise _bad(f"{name}.port must be a number from 1 to 65535.")
    expose = body.get("expose", first)
    if not isinstance(expose, bool):
        raise _bad(f"{name}.expose must be true or false.")
    env = body.get("env") or {}
    if not isinstance(env, dict):
        raise _bad(f"{name}.env must be a mapping of names to strings.")
    if not all(isinstance(v, str) for v in env.values()):
        raise _bad(f"{name}.env values must be strings (quote numbers and booleans).")
    return ServiceSpec(name, port, expose, valid_env(env))
