"""The OpenAPI 3.1 document for every implemented route (tests check nothing is missing)."""

from __future__ import annotations

from typing import Any

from chalicelib.routes import storage, webhooks

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
            "/api/v1/capabilities": _get("Tier limits", obj),
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
        "components": {"schemas": SCHEMAS},
    }
