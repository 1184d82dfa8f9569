"""What the SDK's typed methods return: frozen dataclasses of the main fields, each keeping the
API's whole JSON answer in ``raw``."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

# The env var lines of a resource, by the kind the API names: (variable, field of the answer).
ENV_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "postgres": (("DATABASE_URL", "connection_url"),),
    "vector": (("DATABASE_URL", "connection_url"),),
    "redis": (("REDIS_URL", "connection_url"), ("REDIS_KEY_PREFIX", "key_prefix")),
    "queue": (("NATS_URL", "connection_url"), ("NATS_SUBJECT_PREFIX", "subject_prefix")),
    "mongodb": (("MONGODB_URL", "connection_url"),),
    "storage": (
        ("STORAGE_URL", "connection_url"),
        ("STORAGE_ENDPOINT", "endpoint"),
        ("STORAGE_PREFIX", "prefix"),
        ("STORAGE_PRESIGN_URL", "presign_url"),
    ),
    "webhook": (("WEBHOOK_URL", "receive_url"),),
}
NATS_CREDENTIALS = (("NATS_JWT", "nats_jwt"), ("NATS_NKEY", "nats_nkey"))


def _str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and value else None


def _dict(raw: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = raw.get(key)
    return dict(value) if isinstance(value, dict) else None


def _int(raw: dict[str, Any], key: str) -> int | None:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def env_of(raw: dict[str, Any]) -> dict[str, str]:
    """``DATABASE_URL=...`` style lines for what the answer holds (its kind decides the names)."""
    kind = _str(raw, "kind") or ""
    env = {name: value for name, key in ENV_FIELDS.get(kind, ()) if (value := _str(raw, key))}
    credentials = raw.get("credentials")
    if kind == "queue" and isinstance(credentials, dict):
        env |= {name: value for name, key in NATS_CREDENTIALS if (value := _str(credentials, key))}
    return env


@dataclass(frozen=True)
class Resource:
    id: str
    kind: str | None
    name: str | None
    token: str | None
    connection_url: str | None  # None where the kind has none (webhook), or it was not sent
    internal_url: str | None
    upgrade_jwt: str | None
    expires_at: str | None
    tier: str | None
    env: dict[str, str]
    agent_action: str | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Resource:
        return cls(
            id=str(raw.get("id", "")),
            kind=_str(raw, "kind"),
            name=_str(raw, "name"),
            token=_str(raw, "token"),
            connection_url=_str(raw, "connection_url"),
            internal_url=_str(raw, "internal_url"),
            upgrade_jwt=_str(raw, "upgrade_jwt"),
            expires_at=_str(raw, "expires_at"),
            tier=_str(raw, "tier"),
            env=env_of(raw),
            agent_action=_str(raw, "agent_action"),
            raw=raw,
        )


@dataclass(frozen=True)
class Presigned:
    url: str
    method: str
    key: str
    expires_at: str | None
    headers: dict[str, str]  # to send with a PUT (its Content-Length)
    fields: dict[str, str] | None  # the form fields of a POST upload
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Presigned:
        return cls(
            url=str(raw.get("url", "")),
            method=str(raw.get("method", "")),
            key=str(raw.get("key", "")),
            expires_at=_str(raw, "expires_at"),
            headers=_dict(raw, "headers") or {},
            fields=_dict(raw, "fields"),
            raw=raw,
        )


@dataclass(frozen=True)
class WebhookRequest:
    seq: int
    method: str
    path: str
    query: dict[str, Any]
    headers: dict[str, str]
    body: bytes
    body_text: str | None  # the body as UTF-8, when it is
    received_at: Any
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> WebhookRequest:
        try:
            body = base64.b64decode(str(raw.get("body") or ""), validate=True)
        except (binascii.Error, ValueError):
            body = b""
        return cls(
            seq=_int(raw, "seq") or 0,
            method=str(raw.get("method", "")),
            path=str(raw.get("path", "")),
            query=_dict(raw, "query") or {},
            headers=_dict(raw, "headers") or {},
            body=body,
            body_text=raw.get("body_text") if isinstance(raw.get("body_text"), str) else None,
            received_at=raw.get("received_at"),
            raw=raw,
        )


@dataclass(frozen=True)
class Deployment:
    id: str
    slug: str | None
    name: str | None
    status: str | None  # building, deploying, healthy, failed, deleted, expired
    url: str | None
    revision: int | None
    error_message: str | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Deployment:
        return cls(
            id=str(raw.get("id") or raw.get("app_id") or ""),
            slug=_str(raw, "slug"),
            name=_str(raw, "name"),
            status=_str(raw, "status"),
            url=_str(raw, "url"),
            revision=_int(raw, "revision"),
            error_message=_str(raw, "error_message"),
            raw=raw,
        )


@dataclass(frozen=True)
class Stack:
    slug: str
    name: str | None
    status: str | None
    stack_url: str | None
    services: tuple[dict[str, Any], ...]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Stack:
        services = raw.get("services")
        return cls(
            slug=str(raw.get("slug", "")),
            name=_str(raw, "name"),
            status=_str(raw, "status"),
            stack_url=_str(raw, "stack_url"),
            services=tuple(s for s in services if isinstance(s, dict))
            if isinstance(services, list)
            else (),
            raw=raw,
        )


@dataclass(frozen=True)
class DeviceLogin:
    session_id: str
    user_code: str
    auth_url: str
    expires_at: str | None
    poll_interval: float
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DeviceLogin:
        interval = raw.get("poll_interval_seconds")
        return cls(
            session_id=str(raw.get("session_id", "")),
            user_code=str(raw.get("user_code", "")),
            auth_url=str(raw.get("auth_url", "")),
            expires_at=_str(raw, "expires_at"),
            poll_interval=float(interval) if isinstance(interval, int | float) else 5.0,
            raw=raw,
        )
