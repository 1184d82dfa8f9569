"""The JSON Schemas of the OpenAPI document (chalicelib/openapi.py): what the routes take and the
bodies they answer with, read off the handlers and the bodies chalicelib builds (named in each
comment). Response objects list the fields that are always there as ``required``; more fields may
come (``additionalProperties`` stays open, so an added field is not a breaking change)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from chalicelib.accounts import TEAM_TTL_POLICIES, Scope
from chalicelib.deploy.backend import DeployStatus
from chalicelib.deploy.service import MAX_CUSTOM_TTL_HOURS, TTL_POLICIES
from chalicelib.idempotency import Source
from chalicelib.models import Kind, Status
from chalicelib.routes import storage
from chalicelib.routes.requests import NAME_RULE
from chalicelib.service import TOKEN_URLS

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
NUM: Schema = {"type": "number"}
URI: Schema = {"type": "string", "format": "uri"}
DATETIME: Schema = {"type": "string", "format": "date-time"}
STRINGS: Schema = {"type": "array", "items": STR}
STRING_MAP: Schema = {"type": "object", "additionalProperties": STR}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """``schema`` or null (a JSON Schema 2020-12 type list; ``$ref``s go through anyOf)."""
    if "type" not in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}


def enum(values: Iterable[str]) -> Schema:
    return {"type": "string", "enum": list(values)}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(required: Mapping[str, Schema], optional: Mapping[str, Schema] | None = None) -> Schema:
    """An object whose ``required`` properties are always there and ``optional`` ones may be."""
    schema: Schema = {"type": "object", "properties": {**required, **(optional or {})}}
    if required:
        schema["required"] = list(required)
    return schema


def ok(required: Mapping[str, Schema], optional: Mapping[str, Schema] | None = None) -> Schema:
    """A success body: ``{"ok": true, ...}``."""
    return obj({"ok": {"const": True}, **required}, optional)


def merged(*schemas: Schema) -> Schema:
    return {"allOf": list(schemas)}


NAME: Schema = {
    "type": "string",
    "pattern": "^[A-Za-z0-9][A-Za-z0-9 _-]{0,63}$",
    "description": NAME_RULE,
}
DEPLOY_STATUS = enum(s.value for s in DeployStatus)
OPTIONAL_DATETIME = nullable(DATETIME)

# -- provisioning (chalicelib/service.py ProvisionService._body, _existing_body) --------------
# The URLs of this API that take a resource's token, per kind (service.TOKEN_URLS).
TOKEN_URL_FIELDS = {kind: {name: URI for name in urls} for kind, urls in TOKEN_URLS.items()}
# What each kind's provider adds to a 201 (chalicelib/providers/*: Credentials and extra).
_URLS = {"connection_url": URI, "internal_url": URI}
KIND_FIELDS: dict[Kind, Schema] = {
    Kind.POSTGRES: _URLS,
    Kind.VECTOR: _URLS,
    Kind.REDIS: {**_URLS, "key_prefix": {**STR, "description": "every key must start with it"}},
    Kind.QUEUE: {
        **_URLS,
        "credentials": obj({"nats_jwt": STR, "nats_nkey": STR, "creds_file": STR}),
        "subject_prefix": STR,
        "auth_mode": {"const": "isolated"},
    },
    Kind.MONGODB: _URLS,
    Kind.STORAGE: {
        "connection_url": URI,
        "endpoint": URI,
        "prefix": STR,
        "mode": {"const": "broker"},
        "agent_action": {"const": "use_presign_endpoint"},
    },
    Kind.WEBHOOK: {},
}
_LIMITS = obj(
    {"storage_mb": INT},
    {
        "connections": {**INT, "description": "simultaneous connections (absent where none)"},
        "kept_requests": {**INT, "description": "webhook inboxes: received requests kept"},
    },
)
_UPGRADE = {
    "upgrade_jwt": {**STR, "description": "the claim token: POST /claim {token}"},
    "upgrade": {**URI, "description": "the claim page, carrying upgrade_jwt"},
}


def _schema_name(kind: Kind, what: str) -> str:
    return f"{kind.value.capitalize()}{what}"


def provisioned(kind: Kind) -> Schema:
    """The 201 of ``POST /<kind>/new``: the new resource and everything needed to use it."""
    return ok(
        {
            "id": STR,
            "token": STR,
            **TOKEN_URL_FIELDS.get(kind, {}),
            "name": STR,
            "kind": {"const": kind.value},
            **KIND_FIELDS[kind],
            "tier": STR,
            "limits": _LIMITS,
            "expires_at": OPTIONAL_DATETIME,
            "note": STR,
            **_UPGRADE,
        },
        {"ignored_fields": {**STRINGS, "description": "body fields other than name"}},
    )


def deduplicated(kind: Kind) -> Schema:
    """The 200 of ``POST /<kind>/new`` when an anonymous network is at its daily limit or holds
    its one resource of a capped kind: that resource, without its credentials."""
    return ok(
        {
            "deduplicated": {"const": True},
            "id": STR,
            "token": STR,
            **TOKEN_URL_FIELDS.get(kind, {}),
            "name": STR,
            "kind": {"const": kind.value},
            "tier": STR,
            "expires_at": OPTIONAL_DATETIME,
            "note": STR,
            **_UPGRADE,
        }
    )


def provisioned_ref(kind: Kind) -> Schema:
    return ref(_schema_name(kind, "Provisioned"))


def deduplicated_ref(kind: Kind) -> Schema:
    return ref(_schema_name(kind, "Deduplicated"))


# -- accounts (accounts.py Team, ApiKey; resources.py; claims.py; devices.py) -----------------
_TEAM = obj(
    {"id": STR, "name": STR, "tier": STR, "default_deployment_ttl_policy": enum(TEAM_TTL_POLICIES)}
)
_SUMMARY = obj(
    {
        "id": STR,
        "name": STR,
        "kind": enum(k.value for k in Kind),
        "tier": STR,
        "status": enum(s.value for s in Status),
        "created_at": DATETIME,
        "expires_at": OPTIONAL_DATETIME,
    }
)
# an active resource's token and the URLs that take it (resources.py _detail)
_TOKEN_FIELDS = {"token": STR, **{n: URI for urls in TOKEN_URL_FIELDS.values() for n in urls}}
_ROTATED = ok(
    {"id": STR, "rotated_at": DATETIME},
    {
        **_TOKEN_FIELDS,
        **{k: v for fields in KIND_FIELDS.values() for k, v in fields.items()},
    },
)
_PREVIEW = ok(
    {
        "token_valid": BOOL,
        "token_expires_at": OPTIONAL_DATETIME,
        "resource": nullable(ref("ResourceSummary")),
        "items": array(ref("ResourceSummary")),
        "recycle_blocked": BOOL,
    }
)
USER_CODE: Schema = {"type": "string", "pattern": "^[A-Z]{4}-[A-Z]{4}$"}
_CLI_STARTED = ok(
    {
        "session_id": {"type": "string", "format": "uuid"},
        "user_code": {**USER_CODE, "description": "for the CLI to print; approval asks for it"},
        "auth_url": URI,
        "expires_at": DATETIME,
        "poll_interval_seconds": INT,
    }
)
_CLI_POLLED = ok(
    {"status": enum(["pending", "approved", "expired"]), "expires_at": DATETIME},
    {"api_token": {**STR, "description": "the first poll after approval only"}},
)
_ME = ok(
    {
        "user": obj({"id": STR, "email": nullable(STR)}),
        "team": ref("Team"),
        "auth": obj(
            {
                "via": enum(["session", "api_key"]),
                "scope": enum(s.value for s in Scope),
                "expires_at": OPTIONAL_DATETIME,
            }
        ),
    }
)
_API_KEY = obj({"id": STR, "name": STR, "scope": enum(s.value for s in Scope)})

# -- deploys and stacks (deploy/store.py Deployment.as_json, backend.py Event, stack_store.py) --
_DEPLOYMENT = obj(
    {
        "id": STR,
        "app_id": STR,
        "name": STR,
        "slug": STR,
        "url": URI,
        "status": DEPLOY_STATUS,
        "error_message": nullable(STR),
        "port": INT,
        "revision": INT,
        "ttl_policy": enum(TTL_POLICIES),
        "created_at": DATETIME,
        "updated_at": DATETIME,
        "expires_at": OPTIONAL_DATETIME,
        "env_vars": {**STRINGS, "description": "names only: values are secrets"},
        "deletion_status": nullable(enum(["pending_confirmation", "expired"])),
    }
)


def deleted(key: str, status: str) -> Schema:
    """What a deletion answers (deploy/deletion.py): ``key`` names the app (id) or stack (slug)."""
    return ok({key: STR, "deletion_status": {"const": status}})


def deletion_pending(key: str) -> Schema:
    return ok(
        {
            key: STR,
            "deletion_status": {"const": "pending_confirmation"},
            "confirmation_expires_at": DATETIME,
            "agent_action": STR,
        }
    )


_EVENT = obj(
    {
        "reason": STR,
        "message": STR,
        "exit_code": nullable(INT),
        "last_lines": STRINGS,
        "hint": STR,
        "at": DATETIME,
    }
)
_SERVICE = obj(
    {"name": STR, "url": nullable(URI), "status": DEPLOY_STATUS},
    {
        "internal_url": URI,
        "port": INT,
        "expose": BOOL,
        "revision": INT,
        "error_message": nullable(STR),
    },
)
_STACK_FIELDS = {
    "slug": STR,
    "name": STR,
    "stack_url": nullable(URI),
    "status": DEPLOY_STATUS,
    "error_message": nullable(STR),
    "services": array(_SERVICE),
    "anonymous": BOOL,
    "expires_at": OPTIONAL_DATETIME,
}
_STACK_DETAIL = {
    "manifest": obj(
        {
            "services": {
                "type": "object",
                "additionalProperties": obj({"port": INT, "expose": BOOL, "env": STRINGS}),
            }
        }
    ),
    "env_vars": {**STRINGS, "description": "stack-level env names only"},
    "created_at": DATETIME,
    "updated_at": DATETIME,
}

# -- request bodies (routes/storage.py, claim.py, deploy.py, stacks.py) -----------------------
BINARY: Schema = {"type": "string", "format": "binary"}


def int_range(low: int, high: int, default: int | None = None) -> Schema:
    out: Schema = {"type": "integer", "minimum": low, "maximum": high}
    if default is not None:
        out["default"] = default
    return out


# An object key as routes/storage.py validate_key takes it: segments split by '/', none of them
# '.' or '..', the first not empty (no leading '/'), no backslash or control character.
_KEY_CHAR = r"[^/\\\x00-\x1f\x7f-\x9f]"
_FIRST_CHAR = r"[^./\\\x00-\x1f\x7f-\x9f]"  # a segment's first character, unless '.' or '..'
_SEGMENT = rf"(?:{_FIRST_CHAR}{_KEY_CHAR}*|\.{_FIRST_CHAR}{_KEY_CHAR}*|\.\.{_KEY_CHAR}+)"
_KEY = {
    **STR,
    "pattern": rf"^{_SEGMENT}(?:/{_SEGMENT}?)*$",
    "description": "relative to the prefix (one that starts with '<prefix>/', as listings and "
    "this route's answer give keys, is taken as the full key); with the prefix at most "
    f"{storage.MAX_OBJECT_KEY_BYTES} bytes (UTF-8)",
}
_EXPIRES_IN = {
    **int_range(1, storage.MAX_EXPIRES_IN, storage.DEFAULT_EXPIRES_IN),
    "description": "seconds",
}


_BYTES: Schema = {**INT, "minimum": 0}


def _presign(operation: str, size: Schema | None = None, size_required: bool = False) -> Schema:
    """The presign body of one operation with its content_length (``size``; a GET has none:
    whatever comes is ignored)."""
    sized = {"content_length": size} if size else {}
    return {
        **obj(
            {"operation": {"const": operation}, "key": _KEY, **(sized if size_required else {})},
            {"expires_in": _EXPIRES_IN, **({} if size_required else sized)},
        ),
        "title": f"presign {operation}",
    }


_PRESIGN_REQUEST = {
    "oneOf": [
        _presign("GET"),
        _presign("PUT", {**_BYTES, "description": "the exact size, signed into the URL"}, True),
        _presign(
            "POST",
            {
                **nullable(_BYTES),
                "description": "the largest size the form accepts (null or absent: all left)",
            },
        ),
    ]
}
_PRESIGNED = ok(
    {
        "method": enum(storage.OPERATIONS),
        "key": {**STR, "description": "the full object key, prefix included"},
        "url": URI,
        "expires_at": DATETIME,
    },
    {
        "content_length": {**INT, "description": "PUT: the size the URL is signed for"},
        "headers": {**STRING_MAP, "description": "PUT: headers the upload must send"},
        "fields": {**STRING_MAP, "description": "POST: the form fields to send with the file"},
        "max_bytes": {**INT, "description": "POST: the largest file the form accepts"},
    },
)
EMAIL: Schema = {**STR, "format": "email", "maxLength": 254, "description": "dotted domain"}
JWT: Schema = {**STR, "minLength": 1}
_CLAIM_REQUEST = {
    **obj(
        {"email": EMAIL},
        {
            "token": {**JWT, "description": "the upgrade_jwt of a resource (canonical)"},
            "jwt": {**JWT, "deprecated": True, "description": "alias of token (token wins)"},
            "team_name": {
                **STR,
                "maxLength": 64,
                "description": "a letter or digit, then letters, digits, spaces or . , ' & ( ) _ -",
            },
        },
    ),
    "anyOf": [{"required": ["token"]}, {"required": ["jwt"]}],
    "description": "email, and the upgrade_jwt as token (or as its deprecated alias jwt)",
}
# Deploy fields as routes/deploy.py _request reads them: multipart text parts, or JSON values.
_DEPLOY_FIELDS = {
    "port": {**int_range(1, 65535, 8080), "description": "the port the app listens on"},
    "redeploy": {**BOOL, "description": "rebuild the team's app of this name instead"},
    "ttl_policy": {**enum(TTL_POLICIES), "description": "default: the team's default policy"},
    "ttl_hours": {
        **int_range(1, MAX_CUSTOM_TTL_HOURS),
        "description": "hours to live: with ttl_policy custom, and only then required",
    },
}
_ENV_NAMES = "names [A-Z_][A-Z0-9_]*, at most 64 KiB in all"
_DEPLOY_FORM = obj(
    {
        "tarball": {**BINARY, "description": "gzipped tar with a Dockerfile at its root"},
        "name": NAME,
    },
    {
        **_DEPLOY_FIELDS,
        "env_vars": {**STR, "description": f"a JSON object of strings, {_ENV_NAMES}"},
    },
)
_DEPLOY_JSON = obj(
    {"name": NAME, "upload_key": {**STR, "description": "from POST /deploy/upload-url"}},
    {**_DEPLOY_FIELDS, "env_vars": {**STRING_MAP, "description": _ENV_NAMES}},
)
_STACK_FORM = {
    **obj(
        {
            "instant.yaml": {**BINARY, "description": "the manifest (GET /llms.txt, Stacks)"},
            "name": NAME,
        }
    ),
    "additionalProperties": {
        **BINARY,
        "description": "one gzipped tarball per service, in the part named after it",
    },
}
ENV_CHANGES = obj({"env_vars": {**STRING_MAP, "description": f"'' deletes one; {_ENV_NAMES}"}})

# -- tiers (tiers.py Tier.as_json) and readiness checks (health.py) --------------------------
_TIER = obj(
    {
        "name": STR,
        "price_usd_month": INT,
        "self_serve": BOOL,
        "ttl_hours": nullable(INT),
        "daily_provisions": nullable(INT),
        "kinds": {
            "type": "object",
            "additionalProperties": obj(
                {
                    "storage_mb": INT,
                    "connections": INT,
                    "max_resources": nullable(INT),
                    "kept_requests": nullable(INT),
                }
            ),
        },
        "deploys": obj(
            {
                "apps": INT,
                "cpu_millis": INT,
                "memory_mb": INT,
                "tarball_mb": INT,
                "stack_ttl_hours": nullable(INT),
            }
        ),
    }
)
_CHECK = obj(
    {"status": enum(["ok", "down"]), "latency_ms": NUM, "last_checked": DATETIME},
    {"message": STR},
)

# -- meta (routes/meta.py, health.py, tiers.py Tier.as_json, deploy/baseimage.py) ------------
_HEALTH = obj({"ok": BOOL, "commit_id": STR, "build_time": STR, "version": STR})
_READINESS = obj(
    {
        "ok": BOOL,
        "overall": enum(["ok", "degraded", "down"]),
        "checks": {"type": "object", "additionalProperties": ref("ReadinessCheck")},
        "commit_id": STR,
    }
)
_BASE_IMAGE = obj({"names": STRINGS, "recipe": STR, "status": STR, "size_mb": nullable(INT)})
_CAPABILITIES = ok(
    {
        "tiers": {"type": "object", "additionalProperties": ref("Tier")},
        "resource_count_limit": {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": nullable(INT)},
        },
        "deploy_base_images": obj(
            {"backend": STR, "images": nullable(array(_BASE_IMAGE)), "note": STR}
        ),
    }
)

# -- webhook inboxes (inbox.py _public) ----------------------------------------------------
_RECEIVED = obj(
    {
        "seq": INT,
        "method": STR,
        "path": {**STR, "description": "as received, with {token} in the token's place"},
        "query": {"type": "object", "additionalProperties": STRINGS},
        "headers": {"type": "object", "additionalProperties": STR},
        "body": {**STR, "contentEncoding": "base64", "description": "the raw body (kept part)"},
        "body_size": INT,
        "body_truncated": {**BOOL, "description": "only the first 256 KiB are kept"},
        "source_ip": STR,
        "received_at": {**INT, "description": "Unix time in milliseconds"},
    },
    {"body_text": {**STR, "description": "the body as text, when it is UTF-8"}},
)

ERROR: Schema = obj(
    {"ok": {"const": False}, "error": STR, "message": STR, "request_id": STR},
    {
        "agent_action": {**STR, "description": "what an agent should do or tell the user"},
        "retry_after_seconds": INT,
        "claim_url": URI,
        "existing": obj({"id": STR, "name": STR}),
        "expired_resource_id": STR,
        "attempts_left": INT,
        "used_bytes": INT,
        "reserved_bytes": INT,
        "limit_bytes": INT,
        "remaining_bytes": INT,
    },
)

SCHEMAS: dict[str, Schema] = {
    "Error": ERROR,
    "Team": _TEAM,
    "ApiKey": _API_KEY,
    "ResourceSummary": _SUMMARY,
    "Resource": merged(ref("ResourceSummary"), obj({}, _TOKEN_FIELDS)),
    "RotatedCredentials": _ROTATED,
    "ClaimPreview": _PREVIEW,
    "CliStarted": _CLI_STARTED,
    "CliPolled": _CLI_POLLED,
    "Me": _ME,
    "Deployment": _DEPLOYMENT,
    "DeploymentEvent": _EVENT,
    "Stack": obj(_STACK_FIELDS),
    "StackDetail": obj({**_STACK_FIELDS, **_STACK_DETAIL}),
    "Tier": _TIER,
    "ReadinessCheck": _CHECK,
    "ReceivedRequest": _RECEIVED,
    "PresignRequest": _PRESIGN_REQUEST,
    "Presigned": _PRESIGNED,
    "ClaimRequest": _CLAIM_REQUEST,
    "DeployForm": _DEPLOY_FORM,
    "DeployRequest": _DEPLOY_JSON,
    "StackForm": _STACK_FORM,
    "Health": _HEALTH,
    "Readiness": _READINESS,
    "Capabilities": _CAPABILITIES,
    **{_schema_name(k, "Provisioned"): provisioned(k) for k in Kind},
    **{_schema_name(k, "Deduplicated"): deduplicated(k) for k in Kind},
}


# -- response headers (components/headers: NAME, and NAME.required where it always comes) -------
_HEADERS: dict[str, tuple[str, Schema]] = {
    "X-Request-Id": ("the request's id (request_id in error bodies)", STR),
    "Retry-After": ("seconds to wait before retrying", {"type": "integer", "minimum": 0}),
    "X-Idempotency-Source": (
        "how the request's idempotency key was found: explicit (its Idempotency-Key header), "
        "fingerprint (no header: the same body within 120s), miss (new)",
        enum(s.value for s in Source),
    ),
    "X-Idempotent-Replay": ("the first answer to this key, replayed", {"const": "true"}),
    "Location": ("where to go", STR),
    "Set-Cookie": ("the session cookie instanode_session (HttpOnly, SameSite=Lax)", STR),
    "Content-Security-Policy": ("the page's policy", STR),
    "X-Content-Type-Options": ("nosniff", {"const": "nosniff"}),
    "Cache-Control": ("no-store", {"const": "no-store"}),
}
HEADERS: dict[str, Schema] = {
    f"{name}{suffix}": {"schema": schema, "description": text, "required": bool(suffix)}
    for name, (text, schema) in _HEADERS.items()
    for suffix in ("", ".required")
}
