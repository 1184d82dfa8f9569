"""Reading what the agent sent: JSON body, ``name``, idempotency header, caller."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Request, Response

from chalicelib import errors
from chalicelib.config import get_settings
from chalicelib.fingerprint import caller_of
from chalicelib.idempotency import MAX_KEY_LENGTH, Source, derive_key
from chalicelib.models import Caller

if TYPE_CHECKING:
    from chalicelib.accounts import Scope, Team
    from chalicelib.auth import Principal

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _-]{0,63}")
NAME_RULE = "1-64 characters: a letter or digit, then letters, digits, spaces, '_' or '-'"
_KEY_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}")


def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``."""
    raw = request.raw_body or b""
    if not raw.strip():
        return {}
    mimetype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise errors.UnsupportedContentTypeError(
            f"Send the body as JSON with 'Content-Type: application/json' (got '{mimetype}').",
            agent_action="Resend with the header 'Content-Type: application/json'.",
        )
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise errors.InvalidJsonError(
            "The request body is not valid JSON.",
            agent_action='Send a JSON object such as {"name": "my-db"}.',
        ) from exc
    if not isinstance(body, dict):
        raise errors.InvalidJsonError(
            "The request body must be a JSON object.",
            agent_action='Send a JSON object such as {"name": "my-db"}.',
        )
    return body


def resource_name(value: Any) -> str:
    if value is None or value == "":
        raise errors.NameRequiredError(
            "Every provision needs a 'name'.",
            agent_action='Add a descriptive name to the body, e.g. {"name": "prod-db"}.',
        )
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise errors.InvalidNameError(
            f"'name' must be {NAME_RULE}.",
            agent_action="Pick a name like 'prod-db' or 'sessions cache' and retry.",
        )
    return value


def idempotency_header(request: Request) -> str | None:
    """The ``Idempotency-Key`` header; present but blank or malformed is a 400 (a key the
    caller meant to send must not silently fall back to the 120 s fingerprint)."""
    value: str | None = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not _KEY_PATTERN.fullmatch(value):
        raise errors.InvalidIdempotencyKeyError(
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters, not blank.",
            agent_action="Send a fresh UUID as the Idempotency-Key header, or leave it out.",
        )
    return value


View = Callable[..., Response]


def creates(bp: Blueprint) -> Callable[[View], View]:
    """Marks a create route of ``bp`` (spec convention 7): its errors carry
    ``X-Idempotency-Source`` too, ``explicit`` when the request had an Idempotency-Key, else
    ``miss``."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Response:
            try:
                return view(*args, **kwargs)
            except errors.ApiError as exc:
                explicit = "idempotency-key" in bp.current_request.headers
                source = Source.EXPLICIT if explicit else Source.MISS
                exc.headers.setdefault("X-Idempotency-Source", source.value)
                raise

        return wrapped

    return decorate


def once(
    request: Request,
    scope: str,
    route: str,
    fields: Mapping[str, Any],
    create: Callable[[], tuple[int, dict[str, Any]]],
) -> Response:
    """Spec convention 7 for the creates outside ProvisionService (deploys, stacks): the
    ``Idempotency-Key`` header, or a fingerprint of ``fields`` (file parts by their SHA-256)."""
    from chalicelib.deps import get_idempotency

    body = {
        k: "sha256:" + hashlib.sha256(v).hexdigest() if isinstance(v, bytes) else v
        for k, v in fields.items()
    }
    key = derive_key(scope, route, body, idempotency_header(request))
    lease = get_settings().provisioning_lease_seconds
    outcome = get_idempotency().once(key, lease, create)
    return Response(outcome.body, status_code=outcome.status_code, headers=dict(outcome.headers))


def signed_in_team(request: Request, scope: Scope, what: str) -> tuple[Principal, Team] | None:
    """The credential's principal and team; None when the request carries no session or API
    key (an upgrade JWT is not one). 403 without ``scope`` (``what`` names the action), 401
    when the team is gone."""
    if not request.headers.get("authorization") and not request.headers.get("cookie"):
        return None  # the anonymous fast path: nothing to look up
    from chalicelib.deps import get_accounts, get_authenticator

    principal = get_authenticator().optional(request.headers)
    if principal is None:
        return None
    if not principal.scope.covers(scope):
        raise errors.ForbiddenError(f"{what} needs an API key with the '{scope.value}' scope.")
    team = get_accounts().team(principal.team_id)
    if team is None:
        raise errors.UnauthorizedError("This credential's team no longer exists.")
    return principal, team


def provisioning_caller(request: Request) -> Caller:
    """The network, and the team when a session or API key (scope write) came along: a team
    provisions on its own tier and caps; everyone else is anonymous."""
    from dataclasses import replace

    from chalicelib.accounts import Scope

    network = caller(request)
    signed_in = signed_in_team(request, Scope.WRITE, "Provisioning")
    if signed_in is None:
        return network
    team = signed_in[1]
    return replace(network, team_id=team.id, tier=team.tier)


def caller(request: Request) -> Caller:
    identity = (request.context or {}).get("identity") or {}
    return caller_of(
        identity.get("sourceIp", "127.0.0.1"),
        request.headers.get("x-forwarded-for"),
        get_settings().trusted_proxies,
    )


MULTIPART_MAX_BYTES = 4_400_000  # 6 MB Lambda payload after base64 (+1/3), minus headers
_PART_NAME = re.compile(rb'name="([^"]*)"')


def multipart_parts(
    request: Request, too_large: str, too_large_action: str, example: str
) -> list[tuple[str | None, bytes]]:
    """The parts of a multipart body as (name, content), name None where the part has none.
    Bodies over MULTIPART_MAX_BYTES are 413 ``tarball_too_large`` (``too_large`` and
    ``too_large_action`` say why and what to do); anything not multipart is a 400 whose
    agent_action shows ``example``."""
    from requests_toolbelt.multipart.decoder import (
        ImproperBodyPartContentException,
        MultipartDecoder,
        NonMultipartContentTypeException,
    )

    raw = request.raw_body or b""
    if len(raw) > MULTIPART_MAX_BYTES:
        raise errors.TarballTooLargeError(too_large, agent_action=too_large_action)
    try:
        decoded = MultipartDecoder(raw, request.headers.get("content-type", "")).parts
    except (
        ImproperBodyPartContentException,
        NonMultipartContentTypeException,
        ValueError,
        AttributeError,  # no boundary= in the Content-Type: the decoder finds None
    ) as exc:
        raise errors.BadRequestError(
            "The body is not a multipart form.",
            agent_action=f"Send {example} (multipart/form-data).",
        ) from exc
    parts: list[tuple[str | None, bytes]] = []
    for part in decoded:
        found = _PART_NAME.search(part.headers.get(b"Content-Disposition", b""))
        parts.append((found.group(1).decode("utf-8", "replace") if found else None, part.content))
    return parts
