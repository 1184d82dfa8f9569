"""Multi-service stacks (manifest format and rules: chalicelib/deploy/stacks.py):
``POST /stacks/new`` (multipart: ``instant.yaml``, ``name``, one tarball per service;
idempotent, spec convention 7),
``GET /api/v1/stacks/{slug}``, ``PATCH /stacks/{slug}/env``, ``POST /stacks/{slug}/redeploy``,
``GET /stacks/{slug}/logs/{svc}`` (plain text, or SSE with ``Accept: text/event-stream``) and
``DELETE /api/v1/stacks/{slug}`` with its ``confirm-deletion`` (confirm: POST, cancel: DELETE).

Creating needs no credential: without one (or with an anonymous resource's upgrade_jwt) the
stack is the network's, anonymous and short-lived. A session or API key (scope write for
changes), or a team resource's upgrade_jwt, makes it the team's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Request, Response

from chalicelib import errors
from chalicelib.deps import get_stacks
from chalicelib.routes import requests

if TYPE_CHECKING:  # the stack modules (and PyYAML) load on the first stack request
    from chalicelib.auth import Principal
    from chalicelib.deploy.stacks import StackCaller

bp = Blueprint(__name__)

MANIFEST_FIELDS = ("instant.yaml", "manifest")
UNCOUNTED_STACKS_PER_DAY = 3


def _creator(request: Request) -> StackCaller:
    """Who creates: the team of a credential or upgrade_jwt, else the anonymous network."""
    from chalicelib.accounts import Scope
    from chalicelib.deploy.stacks import StackCaller
    from chalicelib.routes.deploy import _caller_by_upgrade_jwt
    from chalicelib.tiers import get_tier

    signed_in = requests.signed_in_team(request, Scope.WRITE, "Creating a stack")
    if signed_in is not None:
        principal, team = signed_in
        return StackCaller(principal.owner, get_tier(team.tier), anonymous=False)
    anonymous = StackCaller(requests.caller(request).owner, get_tier("anonymous"), True)
    if not request.headers.get("authorization"):
        return anonymous
    by_jwt = _caller_by_upgrade_jwt(request)  # a bad token is a 401
    if by_jwt.owner.startswith("team:"):
        return StackCaller(by_jwt.owner, by_jwt.tier, anonymous=False)
    return anonymous


def _owner(request: Request, write: bool = False) -> str | None:
    """The team a credential names (None without one): reads of team stacks, and changes."""
    principal = _principal(request, write)
    return principal.owner if principal else None


def _principal(request: Request, write: bool = False) -> Principal | None:
    from chalicelib.accounts import Scope
    from chalicelib.deps import get_authenticator

    principal = get_authenticator().optional(request.headers)
    if principal is not None and write and not principal.scope.covers(Scope.WRITE):
        raise errors.ForbiddenError("Changing a stack needs an API key with the 'write' scope.")
    return principal


def _parts(request: Request) -> list[tuple[str, bytes]]:
    parts = requests.multipart_parts(
        request,
        f"A stack's multipart body is capped at {requests.MULTIPART_MAX_BYTES // 1_000_000} MB "
        "here (all tarballs together).",
        "Slim the tarballs (leave out node_modules, .git, build outputs).",
        "-F instant.yaml=@instant.yaml -F name=my-stack -F web=@web.tar.gz ...",
    )
    named = [(name, content) for name, content in parts if name is not None]
    if len(named) != len(parts):
        raise errors.BadRequestError("Every form part needs a name.")
    return named


@bp.route("/stacks/new", methods=["POST"], content_types=["*/*"])
@requests.creates(bp)
def stacks_new() -> Response:
    from chalicelib.deploy.manifest import parse_manifest

    request = bp.current_request
    caller = _creator(request)
    parts = _parts(request)
    names = [n for n, _ in parts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise errors.BadRequestError(f"Form part(s) sent twice: {', '.join(dupes)}.")
    form = dict(parts)
    name = requests.resource_name(form.pop("name", b"").decode("utf-8", "replace").strip())
    manifests = [form.pop(f) for f in MANIFEST_FIELDS if f in form]
    if len(manifests) != 1:
        raise errors.BadRequestError(
            "Send the manifest once, as the 'instant.yaml' part.",
            agent_action="Add -F instant.yaml=@instant.yaml (see GET /llms.txt, Stacks).",
        )
    manifest = parse_manifest(manifests[0])

    def charge() -> None:
        if caller.anonymous or caller.tier.deploys.apps <= 0:
            _take_uncounted_slot(caller.owner)

    def create() -> tuple[int, dict[str, Any]]:
        return 202, get_stacks().create(caller, name, manifest, form, charge)

    return requests.once(request, caller.owner, "/stacks/new", dict(parts), create)


def _take_uncounted_slot(owner: str) -> None:
    """Stacks no app cap counts (anonymous, free) are limited per network or team per day."""
    import time

    from chalicelib.config import get_settings
    from chalicelib.deps import get_dynamo
    from chalicelib.store import ResourceStore
    from chalicelib.tiers import lowest_deploying_tier
    from chalicelib.upgrades import or_more

    now = int(time.time())
    key = f"stacks#{owner}#{now // 86400}"
    settings = get_settings()
    if not ResourceStore(get_dynamo(), settings).take_slot(
        key, UNCOUNTED_STACKS_PER_DAY, now + 2 * 86400
    ):
        wait = 86400 - now % 86400
        raise errors.RateLimitedError(
            f"{UNCOUNTED_STACKS_PER_DAY} stacks a day without app slots; this one is over.",
            agent_action=or_more(
                settings,
                f"Tell the user this made its {UNCOUNTED_STACKS_PER_DAY} stacks for today: retry "
                f"POST {settings.public_base_url}/stacks/new after midnight UTC",
                lowest_deploying_tier(settings.tiers),
                owner,
            ),
            headers={"Retry-After": str(wait)},
            retry_after_seconds=wait,
        )


@bp.route("/api/v1/stacks/{slug}", methods=["GET"])
def get_stack(slug: str) -> dict[str, Any]:
    return get_stacks().get(_owner(bp.current_request), slug)


@bp.route("/stacks/{slug}/env", methods=["PATCH"], content_types=["*/*"])
def patch_stack_env(slug: str) -> dict[str, Any]:
    request = bp.current_request
    body = requests.json_object(request)
    return get_stacks().set_env(_owner(request, write=True), slug, body.get("env_vars"))


@bp.route("/stacks/{slug}/redeploy", methods=["POST"], content_types=["*/*"])
def redeploy_stack(slug: str) -> Response:
    body = get_stacks().redeploy(_owner(bp.current_request, write=True), slug)
    return Response(body, status_code=202)


@bp.route("/stacks/{slug}/logs/{svc}", methods=["GET"])
def stack_logs(slug: str, svc: str) -> Response:
    """The service's build log then app log: plain text, or server-sent events (one ``data:``
    line per log line, ``id`` = its line number; ``Last-Event-ID`` resumes) when the client
    accepts ``text/event-stream``."""
    request = bp.current_request
    sse = "text/event-stream" in request.headers.get("accept", "")
    last = request.headers.get("last-event-id", "")
    since = int(last) + 1 if sse and last.isdecimal() else 0
    status, lines = get_stacks().logs(_owner(request), slug, svc, since)
    if not sse:
        text = "".join(f"{line}\n" for line in lines)
        return Response(text, headers={"Content-Type": "text/plain; charset=utf-8"})
    events = [f"id: {since + i}\ndata: {line}\n\n" for i, line in enumerate(lines)]
    events.append(f"event: status\ndata: {status}\nretry: 2000\n\n")
    return Response(
        "".join(events),
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"},
    )


@bp.route("/api/v1/stacks/{slug}", methods=["DELETE"])
def delete_stack(slug: str) -> Response:
    """A team's stack: two-step (``X-Skip-Email-Confirmation: yes`` deletes at once); an
    anonymous one: at once, from the network that made it."""
    request = bp.current_request
    principal = _principal(request, write=True)
    owner = principal.owner if principal else requests.caller(request).owner
    skip = request.headers.get("x-skip-email-confirmation", "").lower() == "yes"
    email = principal.email if principal else ""
    status, body = get_stacks().delete(owner, email, slug, skip)
    return Response(body, status_code=status)


@bp.route("/api/v1/stacks/{slug}/confirm-deletion", methods=["POST"], content_types=["*/*"])
def confirm_stack_deletion(slug: str) -> dict[str, Any]:
    request = bp.current_request
    params = request.query_params
    token = str(params.get("token", "")) if params else ""
    return get_stacks().confirm_deletion(_team(request), slug, token)


@bp.route("/api/v1/stacks/{slug}/confirm-deletion", methods=["DELETE"])
def cancel_stack_deletion(slug: str) -> dict[str, Any]:
    return get_stacks().cancel_deletion(_team(bp.current_request), slug)


def _team(request: Request) -> str:
    principal = _principal(request, write=True)
    if principal is None:
        raise errors.UnauthorizedError(
            "Confirming a stack's deletion needs the team's session or API key.",
            agent_action="Send 'Authorization: Bearer <api key>' of the team owning the stack.",
        )
    return principal.owner
