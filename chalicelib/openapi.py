"""The OpenAPI 3.1 document for every implemented route (tests check nothing is missing)."""

from __future__ import annotations

from typing import Any

from chalicelib.routes import pages, storage, webhooks

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _json(_ERROR, "Error envelope") for c in codes}


def _provision(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 255},
                    "description": "Replays within 24h return the first response.",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/NewResource"}}
                },
            },
            "responses": {
                "201": _json({"$ref": "#/components/schemas/Provisioned"}, "Created"),
                "200": _json({"type": "object"}, "Idempotent replay or fingerprint dedup"),
                **_errors(400, 402, 409, 429, 503),
            },
        }
    }


def _get(summary: str, ok_schema: dict[str, Any], *error_codes: int) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": _json(ok_schema, "OK"), **_errors(*error_codes)},
        }
    }


def _op(
    summary: str, codes: tuple[int, ...], body: dict[str, Any] | None = None, auth: bool = False
) -> dict[str, Any]:
    """One operation: a JSON body with ``body`` properties (if any), 200 OK, error codes."""
    op: dict[str, Any] = {"summary": summary, "responses": {"200": _json({"type": "object"}, "OK")}}
    op["responses"].update(_errors(*codes))
    if body is not None:
        schema = {"type": "object", "properties": body}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    if auth:
        op["security"] = [{"session": []}, {"bearer": []}]
    return op


_STR = {"type": "string"}
_ID = [{"name": "resource_id", "in": "path", "required": True, "schema": _STR}]
ACCOUNT_PATHS: dict[str, Any] = {
    "/claim/preview": {"get": _op("Dry run of a claim: what it would take (query: t)", (400,))},
    "/claim": {
        "post": _op(
            "Claim an anonymous network's resources: mails a sign-in link",
            (400,),
            {
                "token": {**_STR, "description": "the upgrade_jwt (canonical)"},
                "jwt": {**_STR, "deprecated": True, "description": "alias of token"},
                "email": {**_STR, "format": "email", "maxLength": 254},
                "team_name": _STR,
            },
        )
    },
    "/auth/email/start": {
        "post": _op("Mail a sign-in link (always ok)", (400,), {"email": _STR, "next": _STR})
    },
    "/auth/email/callback": {
        "get": {
            "summary": "Follow a sign-in link: sets the session cookie, redirects (query: token)",
            "responses": {"302": {"description": "To the dashboard, or /login?error="}},
        }
    },
    "/auth/me": {"get": _op("The signed-in user and team", (401,), auth=True)},
    "/auth/logout": {"post": _op("Revoke this session", (401, 403), auth=True)},
    "/auth/cli": {"post": _op("Start a CLI device-flow sign-in (the CLI prints user_code)", ())},
    "/auth/cli/{session_id}": {"get": _op("Poll a CLI sign-in (api_token once approved)", (404,))},
    "/auth/cli/{session_id}/approve": {
        "post": _op(
            "Approve a CLI sign-in with the code the CLI printed (session only; 5 attempts)",
            (400, 401, 403, 404, 409),
            {"user_code": {**_STR, "description": "XXXX-XXXX, as POST /auth/cli returned it"}},
            auth=True,
        )
    },
    "/api/v1/api-keys": {
        "get": _op("The team's API keys", (401,), auth=True),
        "post": _op("Mint an API key (session only)", (400, 401, 403), {"name": _STR}, True),
    },
    "/api/v1/api-keys/{key_id}": {"delete": _op("Delete an API key", (401, 403, 404), auth=True)},
    "/api/v1/resources": {
        "get": _op("The team's resources (limit, cursor)", (400, 401), auth=True)
    },
    "/api/v1/resources/{resource_id}": {
        "parameters": _ID,
        "get": _op("One of the team's resources", (401, 404), auth=True),
        "delete": _op("Delete one of the team's resources", (401, 403, 404), auth=True),
    },
    "/api/v1/resources/{resource_id}/rotate-credentials": {
        "parameters": _ID,
        "post": _op("New credentials; the old ones stop working", (401, 403, 404), auth=True),
    },
    "/api/v1/team/settings": {
        "patch": _op(
            "Team settings",
            (400, 401, 403),
            {"default_deployment_ttl_policy": {"enum": ["auto_24h", "permanent"]}},
            auth=True,
        )
    },
    "/api/v1/billing/promotion/validate": {
        "post": _op("Check a promotion code", (400,), {"code": _STR})
    },
    "/webhooks/razorpay": {
        "post": _op("Razorpay webhook (X-Razorpay-Signature, HMAC-SHA256)", (400, 401), {})
    },
}

_APP = [{"name": "app_id", "in": "path", "required": True, "schema": _STR}]
DEPLOY_PATHS: dict[str, Any] = {
    "/deploy/new": {
        "post": {
            "summary": "Deploy a container from a gzipped tarball with a Dockerfile (202 building)",
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["tarball", "name"],
                            "properties": {
                                "tarball": {"type": "string", "format": "binary"},
                                "name": _STR,
                                "port": {"type": "integer", "default": 8080},
                                "env": _STR,
                                "env_vars": {**_STR, "description": "JSON object"},
                                "redeploy": {"type": "boolean"},
                                "ttl_policy": {"enum": ["auto_24h", "permanent"]},
                            },
                        }
                    }
                },
            },
            "responses": {
                "202": _json({"type": "object"}, "Building"),
                **_errors(400, 401, 402, 404, 413),
            },
        }
    },
    "/deploy/upload-url": {
        "post": _op(
            "A presigned PUT for a build context too big for one request; then POST /deploy/new "
            "with JSON {name, upload_key}",
            (401, 402),
            auth=True,
        )
    },
    "/api/v1/deployments": {"get": _op("The team's deployments", (401,), auth=True)},
    "/api/v1/deployments/{app_id}": {
        "parameters": _APP,
        "get": _op("One deployment: status, error_message, url", (401, 404), auth=True),
        "delete": _op("Delete (202 pending_confirmation, or 200)", (401, 404), auth=True),
    },
    "/api/v1/deployments/{app_id}/events": {
        "parameters": _APP,
        "get": _op("Classified events: reason, exit_code, last_lines, hint", (401, 404), auth=True),
    },
    "/api/v1/deployments/{app_id}/confirm-deletion": {
        "parameters": _APP,
        "post": _op("Confirm a deletion (query: token)", (400, 401, 404), auth=True),
        "delete": _op("Cancel a pending deletion", (401, 404), auth=True),
    },
    "/deploy/{app_id}/logs": {
        "parameters": _APP,
        "get": {
            "summary": "Build and app log as server-sent events (Last-Event-ID resumes)",
            "responses": {"200": {"description": "SSE", "content": {"text/event-stream": {}}}},
        },
    },
    "/deploy/{app_id}/redeploy": {
        "parameters": _APP,
        "post": _op("Rebuild in place: same id and URL", (401, 404), auth=True),
    },
    "/deploy/{app_id}/env": {
        "parameters": _APP,
        "patch": _op("Merge env vars ('' deletes) and roll out", (400, 401, 404), {}, True),
    },
}

_SLUG = [{"name": "slug", "in": "path", "required": True, "schema": _STR}]
STACK_PATHS: dict[str, Any] = {
    "/stacks/new": {
        "post": {
            "summary": "Deploy a multi-service stack: an instant.yaml manifest and one tarball "
            "per service (202 building); no credential makes an anonymous 6h stack",
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["instant.yaml", "name"],
                            "properties": {
                                "instant.yaml": {"type": "string", "format": "binary"},
                                "name": _STR,
                            },
                            "additionalProperties": {
                                "type": "string",
                                "format": "binary",
                                "description": "one gzipped tarball per service, named after it",
                            },
                        }
                    }
                },
            },
            "responses": {
                "202": _json({"type": "object"}, "Building"),
                **_errors(400, 401, 402, 413),
            },
        }
    },
    "/api/v1/stacks/{slug}": {
        "parameters": _SLUG,
        "get": _op("A stack: manifest, per-service status and URLs, env names", (404,)),
        "delete": _op(
            "Delete a stack: a team's in two steps (202 pending_confirmation, or 200 with "
            "X-Skip-Email-Confirmation: yes), an anonymous one at once from its network",
            (404,),
        ),
    },
    "/api/v1/stacks/{slug}/confirm-deletion": {
        "parameters": _SLUG,
        "post": _op("Confirm a stack's deletion (query: token)", (400, 401, 404), auth=True),
        "delete": _op("Cancel a stack's pending deletion", (401, 404), auth=True),
    },
    "/stacks/{slug}/env": {
        "parameters": _SLUG,
        "patch": _op(
            "Merge stack env vars ('' deletes); applied by the next redeploy",
            (400, 401, 403, 404),
            {"env_vars": {"type": "object", "additionalProperties": _STR}},
            True,
        ),
    },
    "/stacks/{slug}/redeploy": {
        "parameters": _SLUG,
        "post": _op("Rebuild every service as a new revision", (401, 403, 404), auth=True),
    },
    "/stacks/{slug}/logs/{svc}": {
        "parameters": [
            *_SLUG,
            {"name": "svc", "in": "path", "required": True, "schema": _STR},
        ],
        "get": {
            "summary": "A service's build and app log: text, or SSE (Accept: text/event-stream)",
            "responses": {
                "200": {
                    "description": "Log lines",
                    "content": {"text/plain": {}, "text/event-stream": {}},
                },
                **_errors(404),
            },
        },
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["ok", "error", "message"],
        "properties": {
            "ok": {"const": False},
            "error": {"type": "string"},
            "message": {"type": "string"},
            "request_id": {"type": "string"},
            "agent_action": {"type": "string"},
            "retry_after_seconds": {"type": "integer"},
        },
    },
    "NewResource": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9 _-]*$", "maxLength": 64}
        },
    },
    "Provisioned": {
        "type": "object",
        "properties": {
            "ok": {"const": True},
            "id": {"type": "string"},
            "token": {"type": "string"},
            "name": {"type": "string"},
            "kind": {"type": "string"},
            "connection_url": {"type": "string"},
            "internal_url": {"type": "string"},
            "tier": {"type": "string"},
            "limits": {"type": "object"},
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
            "note": {"type": "string"},
            "upgrade_jwt": {"type": "string"},
            "upgrade": {"type": "string"},
            "ignored_fields": {"type": "array", "items": {"type": "string"}},
            "key_prefix": {"type": "string", "description": "/cache/new: the tenant's keys"},
            "credentials": {
                "type": "object",
                "description": "/queue/new: NATS account credentials",
                "properties": {
                    "nats_jwt": {"type": "string"},
                    "nats_nkey": {"type": "string"},
                    "creds_file": {"type": "string"},
                },
            },
            "subject_prefix": {"type": "string"},
            "auth_mode": {"enum": ["isolated", "legacy_open"]},
        },
    },
}


def document(base_url: str, version: str) -> dict[str, Any]:
    obj = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "instanode (self-hosted)", "version": version},
        "servers": [{"url": base_url}],
        "paths": {
            "/db/new": _provision("Provision a Postgres database"),
            "/vector/new": _provision("Provision a Postgres database with pgvector"),
            "/cache/new": _provision("Provision a Redis keyspace with its own ACL user"),
            "/queue/new": _provision("Provision a NATS JetStream account of its own"),
            "/nosql/new": _provision("Provision a MongoDB database with its own user"),
            "/storage/new": _provision("Provision an S3 prefix (broker mode: presigned URLs)"),
            "/webhook/new": _provision("Provision a webhook inbox (receive_url)"),
            **storage.OPENAPI_PATHS,
            **webhooks.OPENAPI_PATHS,
            **pages.OPENAPI_PATHS,
            **ACCOUNT_PATHS,
            **DEPLOY_PATHS,
            **STACK_PATHS,
            "/api/v1/capabilities": _get(
                "Tier limits and the base images deploys can start FROM", obj
            ),
            "/healthz": _get("Liveness", obj, 503),
            "/readyz": _get("Readiness of every dependency", obj, 503),
            "/openapi.json": _get("This document", obj),
            "/llms.txt": {
                "get": {
                    "summary": "This deployment described for LLM agents",
                    "responses": {
                        "200": {"description": "Markdown", "content": {"text/plain": {}}}
                    },
                }
            },
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "instanode_session"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
