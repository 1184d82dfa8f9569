"""The OpenAPI 3.1 document of every route (``GET /openapi.json``), exact enough to generate a
client from: what each handler in chalicelib/routes takes and every status it answers with. The
schemas are in openapi_schemas.py; tests/unit/test_openapi.py holds the document against the
app's routes and openapi-spec-validator, and tests/contract runs schemathesis against the API.

What the helpers keep for every operation: each response carries ``X-Request-Id`` and every
error is the ``Error`` envelope; a route whose Content-Type Chalice checks (its default,
``application/json``: the GET and DELETE routes) or whose handler reads a JSON body answers 415
``unsupported_content_type`` to another type (``op(any_content_type=True)`` marks the routes that
take any body as it is and read no JSON)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from chalicelib.idempotency import MAX_KEY_LENGTH
from chalicelib.models import Kind
from chalicelib.openapi_schemas import (
    BOOL,
    DATETIME,
    DEPLOY_STATUS,
    EMAIL,
    ENV_CHANGES,
    HEADERS,
    INT,
    JWT,
    NAME,
    SCHEMAS,
    STR,
    STRINGS,
    URI,
    USER_CODE,
    Schema,
    array,
    deduplicated_ref,
    deleted,
    deletion_pending,
    enum,
    int_range,
    merged,
    nullable,
    obj,
    ok,
    provisioned_ref,
    ref,
)
from chalicelib.resources import MAX_PAGE
from chalicelib.routes import webhooks
from chalicelib.routes.provision import ROUTES as PROVISION_ROUTES
from chalicelib.routes.requests import MULTIPART_MAX_BYTES

JSON = "application/json"
Status = int | tuple[int, str]  # an error status with its usual description, or with its own
Security = list[dict[str, list[str]]]

# What each error status means where an operation says no more (the envelope's ``error`` codes).
ERROR_TEXT: dict[int, str] = {
    400: "invalid_json or bad_request: the body or a parameter is malformed",
    401: "unauthorized: no credential, or one that does not verify (unknown, expired, logged out)",
    402: "resource_limit_reached: the tier's cap is reached",
    403: "insufficient_scope: the credential may not do this",
    404: "not_found",
    409: "idempotency_in_progress: the record changed while this request ran; retry (Retry-After)",
    413: "tarball_too_large",
    415: "unsupported_content_type: a body or Content-Type other than application/json",
    429: "rate_limited (see Retry-After)",
    503: "backend_unavailable or provision_timeout: nothing was kept; retry (Retry-After)",
}
# Who may call: a session (its cookie, or the same JWT as Bearer) or an API key (Bearer ink_...).
SIGNED_IN: Security = [{"session": []}, {"bearer": []}]
ANYONE_OR_SIGNED_IN: Security = [{}, *SIGNED_IN]
SESSION_ONLY = "Needs a signed-in session (its cookie, or its JWT as Bearer): an API key is a 403."
SESSION_403 = (403, "insufficient_scope: only a signed-in session can do this, not an API key")
WRITE_403 = (403, "insufficient_scope: an API key without the write scope")
BAD_CREDENTIAL_401 = (401, "unauthorized: a credential came that does not verify")


# -- building blocks ----------------------------------------------------------------------------
def headers(*optional: str, required: Sequence[str] = ()) -> dict[str, Schema]:
    """Response headers, by component name: X-Request-Id, and ``required`` ones, always come."""
    out = {name: {"$ref": f"#/components/headers/{name}"} for name in ("X-Request-Id", *optional)}
    out.update({name: {"$ref": f"#/components/headers/{name}.required"} for name in required})
    return out


def answer(
    description: str,
    schema: Schema | None = None,
    media: str = JSON,
    with_headers: Mapping[str, Schema] | None = None,
) -> Schema:
    """A response: ``schema`` as ``media`` (None: no body)."""
    out: Schema = {"description": description, "headers": dict(with_headers or headers())}
    if schema is not None:
        out["content"] = {media: {"schema": schema}}
    return out


def ok200(schema: Schema, description: str = "OK") -> dict[int, Schema]:
    return {200: answer(description, schema)}


def error_answers(*statuses: Status) -> dict[str, Schema]:
    out = {}
    for status in statuses:
        code, text = status if isinstance(status, tuple) else (status, ERROR_TEXT[status])
        retry = headers(required=["Retry-After"]) if code == 429 else headers("Retry-After")
        out[str(code)] = answer(text, ref("Error"), with_headers=retry)
    return out


def json_body(schema: Schema) -> Schema:
    return {"required": True, "content": {JSON: {"schema": schema}}}


def op(
    summary: str,
    responses: Mapping[int, Schema],
    *statuses: Status,
    body: Schema | None = None,
    params: Sequence[Schema] = (),
    auth: Security | None = None,
    description: str = "",
    any_content_type: bool = False,
) -> Schema:
    """One operation: its success ``responses`` and error ``statuses``, and 415 unless it takes
    any body as it is (``any_content_type``: Chalice checks none and the handler reads no JSON)."""
    if not any_content_type:
        statuses = (*statuses, 415)
    out: Schema = {
        "summary": summary,
        "responses": {**{str(s): r for s, r in responses.items()}, **error_answers(*statuses)},
    }
    if description:
        out["description"] = description
    if params:
        out["parameters"] = list(params)
    if body is not None:
        out["requestBody"] = body
    if auth is not None:
        out["security"] = auth
    return out


def param(where: str, name: str, schema: Schema = STR, description: str = "") -> Schema:
    """A parameter; path parameters are required (and never empty), the others optional."""
    if where == "path":
        schema = {**schema, "minLength": 1}
    out: Schema = {"name": name, "in": where, "required": where == "path", "schema": schema}
    if description:
        out["description"] = description
    return out


def required(parameter: Schema) -> Schema:
    return {**parameter, "required": True}


IDEMPOTENCY_KEY = {"$ref": "#/components/parameters/Idempotency-Key"}
IDEMPOTENCY_400 = (
    "invalid_idempotency_key: an Idempotency-Key that is present but empty, blank or not 1-255 "
    "printable ASCII characters"
)
IDEMPOTENCY_409 = (
    409,
    "idempotency_key_conflict: this Idempotency-Key came with another body; "
    "idempotency_in_progress: the first request with it still runs (Retry-After)",
)


def create(
    summary: str, responses: Mapping[int, Schema], *statuses: Status, **kwargs: Any
) -> Schema:
    """An idempotent create (spec convention 7): it takes an Idempotency-Key; every answer says
    X-Idempotency-Source, and a replay is the first answer (same status and body) with
    X-Idempotent-Replay: true."""
    params = [IDEMPOTENCY_KEY, *kwargs.pop("params", ())]
    out = op(summary, responses, *statuses, IDEMPOTENCY_409, params=params, **kwargs)
    for status, response in out["responses"].items():
        replay = ["X-Idempotent-Replay"] if status.startswith("2") else []
        response["headers"].update(headers(*replay, required=["X-Idempotency-Source"]))
    return out


LAST_EVENT_ID = param("header", "Last-Event-ID", {**STR, "pattern": "^[0-9]+$"}, "resume after")
CONFIRMATION_TOKEN = param("query", "token", STR, "the token the confirmation mail carried")
SKIP_CONFIRMATION = param(
    "header", "X-Skip-Email-Confirmation", STR, "'yes' (any case): delete at once, no mail"
)


def confirm_deletion(what: str, id_field: str, path_param: Schema, not_found: Status) -> Schema:
    """The two-step deletion's second step: confirm with the mailed token, or cancel."""
    return {
        "parameters": [path_param],
        "post": op(
            f"Confirm {what} with the mailed token",
            ok200(deleted(id_field, "deleted")),
            (400, "invalid_confirmation_token: wrong or expired"),
            401,
            WRITE_403,
            not_found,
            409,
            params=[CONFIRMATION_TOKEN],
            auth=SIGNED_IN,
            any_content_type=True,
        ),
        "delete": op(
            f"Cancel {what} while it is pending",
            ok200(deleted(id_field, "cancelled")),
            401,
            WRITE_403,
            not_found,
            409,
            auth=SIGNED_IN,
        ),
    }


# -- provisioning (routes/provision.py, service.py) ---------------------------------------------
def _provision(kind: Kind, summary: str) -> Schema:
    dedup = (
        "Spec convention 6: an anonymous network past its provisions of the day that holds a "
        "resource of this kind gets that one (its token, no credentials: they were in its 201)"
    )
    return {
        "post": create(
            summary,
            {
                201: answer("Created (or the replay of it)", provisioned_ref(kind)),
                200: answer(dedup, deduplicated_ref(kind)),
            },
            (400, f"invalid_json, name_required, invalid_name, {IDEMPOTENCY_400}"),
            BAD_CREDENTIAL_401,
            (
                402,
                "resource_limit_reached (the network or team holds its tier's cap of this "
                "kind: see existing, and an anonymous network's claim_url), "
                "free_tier_recycle_requires_claim (see claim_url)",
            ),
            WRITE_403,
            (
                429,
                "daily_limit_reached: this network's anonymous provisions for today are made, "
                "and it holds none of this kind to give back (Retry-After)",
            ),
            503,
            body=json_body(
                {
                    **obj({"name": NAME}),
                    "description": "Other fields are ignored (and listed in ignored_fields).",
                }
            ),
            auth=ANYONE_OR_SIGNED_IN,
            description="Anonymous (the caller's /24 or /64 network owns it for 24h), or a "
            "team's with a session or an API key of scope write (the team's tier and caps).",
        )
    }


_PROVISION_SUMMARIES = {
    Kind.POSTGRES: "Provision a Postgres database",
    Kind.VECTOR: "Provision a Postgres database with pgvector",
    Kind.REDIS: "Provision a Redis keyspace with its own ACL user",
    Kind.QUEUE: "Provision a NATS JetStream account of its own",
    Kind.MONGODB: "Provision a MongoDB database with its own user",
    Kind.STORAGE: "Provision an S3 prefix (broker mode: presigned URLs)",
    Kind.WEBHOOK: "Provision a webhook inbox (receive_url)",
}
PROVISION_PATHS = {
    route: _provision(kind, _PROVISION_SUMMARIES[kind]) for route, kind in PROVISION_ROUTES.items()
}

# -- storage and webhook inboxes (routes/storage.py, routes/webhooks.py) -----------------------
TOKEN = param("path", "token", STR, "the resource's token, from its provision")
STORAGE_PATHS = {
    "/storage/{token}/presign": {
        "post": op(
            "Mint a short-lived signed S3 URL under a broker-mode storage prefix",
            ok200(ref("Presigned"), "Signed URL (PUT: with its size; POST: url and form fields)"),
            (400, "invalid_json, bad_request (operation, expires_in, content_length), invalid_key"),
            (403, "storage_quota_exceeded: the upload does not fit (PUT and POST only)"),
            (404, "not_found: no active storage resource has this token"),
            (429, "rate_limited: 60 URLs a minute per resource, or presigns at the same moment"),
            503,
            body=json_body(ref("PresignRequest")),
            params=[TOKEN],
        )
    }
}


def _receive(method: str, extra: Sequence[Schema]) -> Schema:
    """One method of an inbox's receive URL (the answers to a HEAD have no body)."""
    stored = ok({"received": {"const": True}, "seq": INT})
    receive = op(
        f"Capture a {method.upper()} request in the webhook inbox",
        {200: answer("Stored; the newest kept_requests stay", stored)},
        (404, "not_found: no live webhook inbox has this token"),
        (413, "payload_too_large: the body is above the tier's storage_mb"),
        params=[TOKEN, *extra],
        any_content_type=True,
        description="Any body, Content-Type and query string. Every method, DELETE included, is a "
        "request captured for the inbox's owner to read (GET /api/v1/webhooks/{token}/requests), "
        "not an operation on a resource.",
    )
    if method in ("post", "put", "patch"):
        receive["requestBody"] = {"required": False, "content": {"*/*": {"schema": {}}}}
    if method == "head":
        for response in receive["responses"].values():
            del response["content"]
    return receive


# The receive URL's sub-paths are API Gateway's greedy ``{path+}`` (one segment or more; Chalice
# passes only ``token`` to the view). OpenAPI path templates have no greedy form, but a template's
# name may be any string as long as a path parameter of exactly that name is declared: API
# Gateway's own swagger calls it ``path``, which openapi-spec-validator refuses (the template says
# ``path+``), so the parameter is ``path+``. The validator passes, schemathesis fills it in (its
# value percent-encoded: one segment), and the document's paths stay the app's routes.
SUB_PATH = param("path", "path+", STR, "the rest of the URL after the token: one or more segments")
_RECEIVE_METHODS = [m.lower() for m in webhooks.RECEIVE_METHODS]
WEBHOOK_PATHS = {
    "/webhook/receive/{token}": {m: _receive(m, ()) for m in _RECEIVE_METHODS},
    "/webhook/receive/{token}/{path+}": {m: _receive(m, [SUB_PATH]) for m in _RECEIVE_METHODS},
    "/api/v1/webhooks/{token}/requests": {
        "get": op(
            "List the requests an inbox received, newest first",
            ok200(
                ok({"requests": array(ref("ReceivedRequest")), "next_before": nullable(INT)}),
                "Received requests; pass next_before as before for the next page",
            ),
            (400, "bad_request: limit or before is out of range"),
            (404, "not_found: no live webhook inbox has this token"),
            params=[
                TOKEN,
                param(
                    "query",
                    "limit",
                    int_range(1, webhooks.MAX_LIMIT, webhooks.DEFAULT_LIMIT),
                    "fewer come when their bodies pass 1 MiB",
                ),
                param("query", "before", int_range(1, 2**62), "only requests of a lower seq"),
            ],
        )
    },
}

# -- the HTML pages (routes/pages.py) ------------------------------------------------------------
_PAGE_HEADERS = headers(
    required=["Content-Security-Policy", "X-Content-Type-Options", "Cache-Control"]
)


def _page(summary: str, media: str = "text/html") -> Schema:
    return {"get": op(summary, {200: answer("OK", STR, media, _PAGE_HEADERS)})}


PAGE_PATHS = {
    "/start": _page("Claim page (query: t, the upgrade_jwt)"),
    "/login": _page("Email sign-in page (query: next, error)"),
    "/dashboard": _page("The team and its resources (needs a session)"),
    "/cli/approve": _page("Approve a CLI sign-in (query: session)"),
    "/assets/pages.js": _page("The pages' script", "application/javascript"),
}

# -- claims, sign-in, API keys, the team's resources and settings ------------------------------
_SESSION_ID = param("path", "session_id", {**STR, "format": "uuid"}, "from POST /auth/cli")
RESOURCE_ID = param("path", "resource_id", STR, "res_...")

ACCOUNT_PATHS: dict[str, Any] = {
    "/claim/preview": {
        "get": op(
            "Dry run of a claim: what it would take (token_valid false for a bad token)",
            ok200(ref("ClaimPreview")),
            (400, "bad_request: no t"),
            params=[required(param("query", "t", JWT, "the upgrade_jwt of a resource"))],
        )
    },
    "/claim": {
        "post": op(
            "Claim an anonymous network's resources: mails a sign-in link that finishes it",
            ok200(ok({"email": STR, "message": STR, "link_expires_at": DATETIME}), "Link mailed"),
            (
                400,
                "invalid_json, bad_request (no token), invalid_token, invalid_email_format, "
                "invalid_name (team_name)",
            ),
            (429, "rate_limited: this address was sent 5 sign-in links this hour"),
            body=json_body(ref("ClaimRequest")),
        )
    },
    "/auth/email/start": {
        "post": op(
            "Mail a sign-in link (the same answer whether or not the address has an account)",
            ok200(ok({})),
            (400, "invalid_json, invalid_email_format"),
            body=json_body(
                obj(
                    {"email": EMAIL},
                    {"next": {"description": "a same-site path to land on; else /dashboard"}},
                )
            ),
        )
    },
    "/auth/email/callback": {
        "get": op(
            "Follow a sign-in link: sets the session cookie and redirects",
            {
                302: answer(
                    "To next when signed in (Set-Cookie), else to /login?error= link_invalid, "
                    "link_in_use or sign_in_incomplete",
                    with_headers=headers("Set-Cookie", required=["Location"]),
                )
            },
            params=[param("query", "token", STR, "the link's secret")],
        )
    },
    "/auth/me": {"get": op("The signed-in user and team", ok200(ref("Me")), 401, auth=SIGNED_IN)},
    "/auth/logout": {
        "post": op(
            "Revoke this session and clear its cookie",
            {200: answer("Logged out", ok({}), with_headers=headers(required=["Set-Cookie"]))},
            401,
            SESSION_403,
            auth=SIGNED_IN,
            description=SESSION_ONLY,
            any_content_type=True,
        )
    },
    "/auth/cli": {
        "post": op(
            "Start a CLI device-flow sign-in (the CLI prints user_code)",
            ok200(ref("CliStarted")),
            any_content_type=True,
        )
    },
    "/auth/cli/{session_id}": {
        "get": op(
            "Poll a CLI sign-in (api_token once: on the first poll after approval)",
            ok200(ref("CliPolled")),
            (404, "session_not_found"),
            params=[_SESSION_ID],
        )
    },
    "/auth/cli/{session_id}/approve": {
        "post": op(
            "Approve a CLI sign-in with the code the CLI printed (5 attempts)",
            ok200(ok({"status": {"const": "approved"}})),
            (400, "invalid_json, bad_request (no user_code), invalid_user_code (attempts_left)"),
            401,
            SESSION_403,
            (404, "session_not_found"),
            (409, "session_not_pending: expired, approved already, or closed"),
            body=json_body(
                obj(
                    {
                        "user_code": {
                            **STR,
                            "minLength": 1,
                            "description": f"as POST /auth/cli gave it ({USER_CODE['pattern']}); "
                            "compared without case, spaces or '-'",
                        }
                    }
                )
            ),
            params=[_SESSION_ID],
            auth=SIGNED_IN,
            description=SESSION_ONLY,
        )
    },
    "/api/v1/api-keys": {
        "get": op(
            "The team's API keys", ok200(ok({"items": array(ref("ApiKey"))})), 401, auth=SIGNED_IN
        ),
        "post": op(
            "Mint an API key (its secret comes once, as api_token)",
            {201: answer("Created", merged(ref("ApiKey"), ok({"api_token": STR})))},
            (400, "invalid_json, name_required, invalid_name, bad_request (scope)"),
            401,
            SESSION_403,
            body=json_body(
                obj(
                    {"name": NAME},
                    {"scope": {**enum(["read", "write", "admin"]), "default": "read"}},
                )
            ),
            auth=SIGNED_IN,
            description=SESSION_ONLY,
        ),
    },
    "/api/v1/api-keys/{key_id}": {
        "delete": op(
            "Delete an API key",
            ok200(ok({"id": STR, "deleted": {"const": True}})),
            401,
            SESSION_403,
            (404, "not_found: no such key in this team"),
            params=[param("path", "key_id", STR, "key_...")],
            auth=SIGNED_IN,
            description=SESSION_ONLY,
        )
    },
    "/api/v1/resources": {
        "get": op(
            "The team's resources, newest first",
            ok200(ok({"items": array(ref("Resource")), "next_cursor": nullable(STR)})),
            (400, "bad_request: limit out of range, or a cursor this API did not give"),
            401,
            params=[
                param("query", "limit", int_range(1, MAX_PAGE, 50)),
                param("query", "cursor", STR, "next_cursor of the previous page"),
            ],
            auth=SIGNED_IN,
        )
    },
    "/api/v1/resources/{resource_id}": {
        "parameters": [RESOURCE_ID],
        "get": op(
            "One of the team's resources (token and its URLs while active)",
            ok200(merged(ok({}), ref("Resource"))),
            401,
            (404, "not_found: no such resource in this team"),
            auth=SIGNED_IN,
        ),
        "delete": op(
            "Delete one of the team's resources (its backend object goes at once)",
            ok200(ok({"id": STR, "status": {"const": "deleted"}})),
            401,
            WRITE_403,
            (404, "not_found: no such live resource in this team"),
            503,
            auth=SIGNED_IN,
        ),
    },
    "/api/v1/resources/{resource_id}/rotate-credentials": {
        "parameters": [RESOURCE_ID],
        "post": op(
            "New credentials (a new token for storage and webhooks); the old ones stop working",
            ok200(ref("RotatedCredentials")),
            401,
            WRITE_403,
            (404, "not_found: no such live resource in this team"),
            503,
            auth=SIGNED_IN,
            any_content_type=True,
        ),
    },
    "/api/v1/team/settings": {
        "patch": op(
            "Change the team's settings",
            ok200(ok({"team": ref("Team")})),
            (400, "invalid_json, bad_request: default_deployment_ttl_policy is not one of them"),
            401,
            (403, "insufficient_scope: an API key without the admin scope"),
            body=json_body(obj({"default_deployment_ttl_policy": enum(["auto_24h", "permanent"])})),
            auth=SIGNED_IN,
        )
    },
    "/api/v1/billing/promotion/validate": {
        "post": op(
            "Check a promotion code",
            ok200(
                ok(
                    {
                        "code": STR,
                        "discount_percent": INT,
                        "discount_amount_inr": INT,
                        "message": STR,
                    }
                )
            ),
            (400, "invalid_json, bad_request (no code), invalid_promo_code"),
            body=json_body(obj({"code": {**STR, "pattern": "\\S"}})),
        )
    },
    "/webhooks/razorpay": {
        "post": op(
            "Razorpay webhook: subscription.charged moves the team to its plan's tier",
            ok200(
                ok(
                    {},
                    {
                        "skipped": {"const": True},
                        "event": STR,
                        "matched": BOOL,
                        "team": ref("Team"),
                        "resources": INT,
                        "resized": INT,
                        "failed": INT,
                        "deploys_made_permanent": INT,
                    },
                ),
                "Handled (skipped: another event; matched: whether a team and plan matched)",
            ),
            (400, "invalid_json: the signed body is not a JSON object"),
            (401, "invalid_signature"),
            body={"required": True, "content": {JSON: {"schema": {"type": "object"}}}},
            params=[
                required(
                    param(
                        "header",
                        "X-Razorpay-Signature",
                        STR,
                        "hex HMAC-SHA256 of the raw body with the webhook secret",
                    )
                )
            ],
            any_content_type=True,  # the signed raw body, whatever its Content-Type
        )
    },
}

# -- container deploys (routes/deploy.py, deploy/service.py) ----------------------------------
APP_ID = param("path", "app_id", STR, "app_...")
APP_404 = (404, "not_found: no such deployment in this team")
_DEPLOYED = merged(ok({"redeployed": BOOL}), ref("Deployment"))
_DEPLOY_DESCRIPTION = (
    "Multipart with the tarball (the body at most "
    f"{MULTIPART_MAX_BYTES // 1_000_000} MB), or JSON naming an upload_key that POST "
    "/deploy/upload-url gave (up to the tier's tarball_mb). Needs a session or an API key of "
    "scope write, or 'Authorization: Bearer <upgrade_jwt>' of a resource (the team owning it)."
)


def _delete_answers(key: str) -> dict[int, Schema]:
    return {
        200: answer(
            "Deleted at once (X-Skip-Email-Confirmation, or no email)", deleted(key, "deleted")
        ),
        202: answer(
            "A confirmation token was mailed; nothing is deleted until it comes back",
            deletion_pending(key),
        ),
    }


DEPLOY_PATHS: dict[str, Any] = {
    "/deploy/new": {
        "post": create(
            "Deploy a container from a gzipped tarball with a Dockerfile (202: building)",
            {202: answer("Building (or the replay of it)", _DEPLOYED)},
            (
                400,
                "bad_request (port, env_vars, tarball, ttl_policy, ttl_hours, upload_key), "
                "invalid_tarball, dockerfile_not_found, invalid_env_key, name_required, "
                f"invalid_name, invalid_json, {IDEMPOTENCY_400}",
            ),
            401,
            (402, "deploy_requires_paid_tier, resource_limit_reached (the tier's app slots)"),
            WRITE_403,
            (404, "no_existing_deployment_to_redeploy: redeploy names no app of this team"),
            413,
            body={
                "required": True,
                "content": {
                    "multipart/form-data": {"schema": ref("DeployForm")},
                    JSON: {"schema": ref("DeployRequest")},
                },
            },
            auth=SIGNED_IN,
            description=_DEPLOY_DESCRIPTION,
            any_content_type=True,
        )
    },
    "/deploy/upload-url": {
        "post": op(
            "A presigned PUT for a build context too big for one request",
            ok200(
                ok(
                    {
                        "upload_url": URI,
                        "upload_key": STR,
                        "method": {"const": "PUT"},
                        "expires_at": DATETIME,
                        "max_bytes": INT,
                        "next": STR,
                    }
                )
            ),
            401,
            WRITE_403,
            auth=SIGNED_IN,
            description="Then PUT the tarball there and POST /deploy/new with JSON "
            "{name, upload_key}. Takes the same credentials as POST /deploy/new.",
            any_content_type=True,
        )
    },
    "/api/v1/deployments": {
        "get": op(
            "The team's deployments, newest first",
            ok200(ok({"items": array(ref("Deployment"))})),
            401,
            auth=SIGNED_IN,
        )
    },
    "/api/v1/deployments/{app_id}": {
        "parameters": [APP_ID],
        "get": op(
            "One deployment: status (refreshed from its backend), error_message, url",
            ok200(merged(ok({}), ref("Deployment"))),
            401,
            APP_404,
            auth=SIGNED_IN,
        ),
        "delete": op(
            "Delete a deployment: two steps (a mailed token) unless X-Skip-Email-Confirmation",
            _delete_answers("id"),
            401,
            WRITE_403,
            APP_404,
            409,
            params=[SKIP_CONFIRMATION],
            auth=SIGNED_IN,
        ),
    },
    "/api/v1/deployments/{app_id}/events": {
        "parameters": [APP_ID],
        "get": op(
            "Classified events: reason, exit_code, last_lines, hint",
            ok200(
                ok({"id": STR, "status": DEPLOY_STATUS, "events": array(ref("DeploymentEvent"))})
            ),
            401,
            APP_404,
            auth=SIGNED_IN,
        ),
    },
    "/api/v1/deployments/{app_id}/confirm-deletion": confirm_deletion(
        "a deletion", "id", APP_ID, APP_404
    ),
    "/deploy/{app_id}/logs": {
        "parameters": [APP_ID],
        "get": op(
            "Build and app log as server-sent events (Last-Event-ID resumes)",
            {
                200: answer(
                    "One event a log line (id: its number), then 'event: status' and retry: "
                    "reconnect with Last-Event-ID for what is new",
                    STR,
                    "text/event-stream",
                    headers(required=["Cache-Control"]),
                )
            },
            401,
            APP_404,
            params=[LAST_EVENT_ID],
            auth=SIGNED_IN,
        ),
    },
    "/deploy/{app_id}/redeploy": {
        "parameters": [APP_ID],
        "post": op(
            "Rebuild in place from the last context: same id and URL (202: building)",
            {202: answer("Building", _DEPLOYED)},
            (400, "invalid_tarball"),
            401,
            WRITE_403,
            APP_404,
            409,
            413,
            auth=SIGNED_IN,
            any_content_type=True,
        ),
    },
    "/deploy/{app_id}/env": {
        "parameters": [APP_ID],
        "patch": op(
            "Merge env vars ('' deletes one) and roll out a new revision (202: building)",
            {202: answer("Building", _DEPLOYED)},
            (400, "invalid_json, bad_request (env_vars, the 64 KiB cap), invalid_env_key"),
            401,
            WRITE_403,
            APP_404,
            409,
            body=json_body(ENV_CHANGES),
            auth=SIGNED_IN,
        ),
    },
}

# -- stacks (routes/stacks.py, deploy/stacks.py) ------------------------------------------------
SLUG = param("path", "slug", STR, "the stack's slug")
STACK_404 = (404, "not_found: no such stack here (or not this credential's)")
TEAM_STACK_404 = (404, "not_found: no stack of this team here")
IMMUTABLE_403 = (403, "stack_immutable: an anonymous stack; insufficient_scope: no write scope")
_LOG_LINES = {
    "description": "The log lines (SSE: one event a line, then the status, with Cache-Control)",
    "headers": headers("Cache-Control"),
    "content": {"text/plain": {"schema": STR}, "text/event-stream": {"schema": STR}},
}
_STACK_READER = (
    "An anonymous stack is readable by anyone holding its slug; a team's needs the team's "
    "credential."
)
STACK_PATHS: dict[str, Any] = {
    "/stacks/new": {
        "post": create(
            "Deploy a multi-service stack from an instant.yaml manifest (202: building)",
            {202: answer("Building (or the replay of it)", merged(ok({}), ref("Stack")))},
            (
                400,
                "bad_request (the form, its parts, the manifest), invalid_tarball, "
                f"dockerfile_not_found, invalid_env_key, name_required, invalid_name, "
                f"{IDEMPOTENCY_400}",
            ),
            BAD_CREDENTIAL_401,
            (402, "resource_limit_reached: the tier's app slots (a stack takes one)"),
            WRITE_403,
            413,
            (429, "rate_limited: 3 stacks a day for a network or a team without app slots"),
            body={
                "required": True,
                "content": {"multipart/form-data": {"schema": ref("StackForm")}},
            },
            auth=ANYONE_OR_SIGNED_IN,
            description="No credential (or an anonymous resource's upgrade_jwt as Bearer): an "
            "anonymous stack of the network, expiring after 6h and immutable. A session, an "
            "API key of scope write or a team resource's upgrade_jwt: the team's.",
            any_content_type=True,
        )
    },
    "/api/v1/stacks/{slug}": {
        "parameters": [SLUG],
        "get": op(
            "A stack: manifest, per-service status and URLs, env names",
            ok200(merged(ok({}), ref("StackDetail"))),
            BAD_CREDENTIAL_401,
            STACK_404,
            auth=ANYONE_OR_SIGNED_IN,
            description=_STACK_READER,
        ),
        "delete": op(
            "Delete a stack: a team's in two steps (a mailed token) unless "
            "X-Skip-Email-Confirmation; an anonymous one at once, from its network",
            _delete_answers("slug"),
            BAD_CREDENTIAL_401,
            WRITE_403,
            (404, "not_found: no stack of this credential (or network) here"),
            409,
            params=[SKIP_CONFIRMATION],
            auth=ANYONE_OR_SIGNED_IN,
        ),
    },
    "/api/v1/stacks/{slug}/confirm-deletion": confirm_deletion(
        "a stack's deletion", "slug", SLUG, TEAM_STACK_404
    ),
    "/stacks/{slug}/env": {
        "parameters": [SLUG],
        "patch": op(
            "Merge stack env vars ('' deletes one); the next redeploy applies them",
            ok200(ok({"slug": STR, "env_vars": STRINGS, "note": STR})),
            (
                400,
                "invalid_json, bad_request (env_vars, service:// names, 64 KiB), invalid_env_key",
            ),
            BAD_CREDENTIAL_401,
            IMMUTABLE_403,
            STACK_404,
            409,
            body=json_body(ENV_CHANGES),
            auth=ANYONE_OR_SIGNED_IN,
        ),
    },
    "/stacks/{slug}/redeploy": {
        "parameters": [SLUG],
        "post": op(
            "Rebuild every service as a new revision (202: building)",
            {202: answer("Building", merged(ok({"redeployed": {"const": True}}), ref("Stack")))},
            BAD_CREDENTIAL_401,
            IMMUTABLE_403,
            STACK_404,
            409,
            auth=ANYONE_OR_SIGNED_IN,
            any_content_type=True,
        ),
    },
    "/stacks/{slug}/logs/{svc}": {
        "parameters": [SLUG, param("path", "svc", STR, "a service of the stack")],
        "get": op(
            "A service's build and app log: text, or SSE with Accept: text/event-stream",
            {200: _LOG_LINES},
            BAD_CREDENTIAL_401,
            (404, "not_found: no such stack or service here"),
            params=[LAST_EVENT_ID],
            auth=ANYONE_OR_SIGNED_IN,
            description=_STACK_READER,
        ),
    },
}

# -- health and descriptions (routes/meta.py, routes/docs.py) ----------------------------------
META_PATHS: dict[str, Any] = {
    "/api/v1/capabilities": {
        "get": op(
            "Tier limits and the base images deploys can start FROM", ok200(ref("Capabilities"))
        )
    },
    "/healthz": {
        "get": op(
            "Liveness: up, and the platform database answers",
            {
                200: answer("Live", ref("Health")),
                503: answer("The platform database does not answer (ok: false)", ref("Health")),
            },
        )
    },
    "/readyz": {
        "get": op(
            "Readiness of every dependency (cached a few seconds)",
            {
                200: answer(
                    "Every critical check passed (overall ok or degraded)", ref("Readiness")
                ),
                503: answer("A critical check failed (overall down)", ref("Readiness")),
            },
        )
    },
    "/openapi.json": {
        "get": op(
            "This document",
            ok200({"type": "object", "required": ["openapi", "info", "paths"]}),
        )
    },
    "/llms.txt": {
        "get": op(
            "This deployment described for LLM agents",
            {200: answer("Markdown", STR, "text/plain")},
        )
    },
}


COMPONENTS: dict[str, Any] = {
    "schemas": SCHEMAS,
    "headers": HEADERS,
    "parameters": {
        "Idempotency-Key": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": f"^[\\x21-\\x7e]{{1,{MAX_KEY_LENGTH}}}$"},
            "description": "A replay within 24h gets the first answer (same status and body, "
            "X-Idempotent-Replay: true); the same key with another body is a 409. Without it, "
            "the same body within 120s is deduplicated by its fingerprint.",
        }
    },
    "securitySchemes": {
        "session": {"type": "apiKey", "in": "cookie", "name": "instanode_session"},
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key (ink_...), a session JWT, or (deploys, stacks) the "
            "upgrade_jwt of a resource",
        },
    },
}


def _operation_ids(paths: dict[str, Any]) -> dict[str, Any]:
    """The operations with an operationId of their method and path: ``get_auth_cli_session_id``."""
    out: dict[str, Any] = {}
    for route, item in paths.items():
        words = re.sub(r"[^A-Za-z0-9]+", "_", route).strip("_")
        out[route] = {
            method: o if method == "parameters" else {"operationId": f"{method}_{words}", **o}
            for method, o in item.items()
        }
    return out


PATHS = _operation_ids(
    {
        **PROVISION_PATHS,
        **STORAGE_PATHS,
        **WEBHOOK_PATHS,
        **PAGE_PATHS,
        **ACCOUNT_PATHS,
        **DEPLOY_PATHS,
        **STACK_PATHS,
        **META_PATHS,
    }
)


def document(base_url: str, version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "instanode (self-hosted)", "version": version},
        "servers": [{"url": base_url}],
        "paths": PATHS,
        "components": COMPONENTS,
    }
