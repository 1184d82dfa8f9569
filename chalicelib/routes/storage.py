"""POST /storage/{token}/presign: short-lived signed S3 URLs for a broker-mode storage resource.

The key is relative to the resource's prefix (a key that starts with ``<prefix>/`` is taken as
the full key and the prefix is not added twice) and validated so the signed URL can only name an
object under ``<prefix>/``. An upload URL carries its size: a PUT is signed for the exact
``content_length`` the agent declares (required: S3 refuses a body of any other size), a POST
form for a ``content-length-range`` up to ``content_length`` (default: all the bytes left).
That size is reserved for the key until the URL expires (chalicelib/upload_reservations.py),
so the URLs of one prefix can never together carry more than its tier's storage limit; an
upload that does not fit is refused (403 ``storage_quota_exceeded``).
Each token may mint at most ``PRESIGNS_PER_MINUTE`` URLs per minute (a DynamoDB counter).
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalice.app import Blueprint, Response

from chalicelib import errors
from chalicelib.config import get_settings
from chalicelib.deps import get_dynamo, get_provider
from chalicelib.dynamo import Dynamo
from chalicelib.models import Backend, Kind, Resource
from chalicelib.providers.base import BackendDownError
from chalicelib.routes import requests
from chalicelib.service import iso
from chalicelib.store import ResourceStore
from chalicelib.tiers import all_tiers
from chalicelib.upload_reservations import Ledger, Reservations

if TYPE_CHECKING:  # the provider (and boto3's S3 machinery) loads on the first presign only
    from chalicelib.providers.storage import StorageProvider

bp = Blueprint(__name__)

ANY_CONTENT_TYPE = ["*/*"]
OPERATIONS = ("GET", "PUT", "POST")
DEFAULT_EXPIRES_IN = 900
MAX_EXPIRES_IN = 3600
MAX_OBJECT_KEY_BYTES = 1024  # S3's limit on the full key (prefix included)
PRESIGNS_PER_MINUTE = 60
RESERVE_ATTEMPTS = 3  # optimistic writes of the upload reservations before a 429
RATE_COUNTER_TTL_SECONDS = 180
KEY_ACTION = (
    "Send a key relative to your prefix such as 'reports/2024/a.png': no leading '/', "
    "no '.' or '..' segments, no backslashes or control characters, at most {limit} bytes."
)


@bp.route("/storage/{token}/presign", methods=["POST"], content_types=ANY_CONTENT_TYPE)
def presign(token: str) -> Response:
    from chalicelib.providers.storage import object_key  # loads boto3's S3 machinery: on use

    body = requests.json_object(bp.current_request)
    operation = _operation(body.get("operation"))
    expires_in = _expires_in(body.get("expires_in", DEFAULT_EXPIRES_IN))
    resource = _storage_resource(token)
    key = validate_key(
        relative_key(body.get("key"), resource.ref.namespace),
        max_bytes=MAX_OBJECT_KEY_BYTES - len(resource.ref.namespace) - 1,
    )
    content_length = _content_length(body.get("content_length"), operation)
    backend = _backend(resource)
    provider = _provider()
    now = int(time.time())
    take_presign_slot(get_dynamo(), resource.id, now)
    out: dict[str, Any] = {"ok": True, "method": operation, "key": object_key(resource.ref, key)}
    try:
        if operation == "GET":
            out["url"] = provider.presign_get(backend, resource.ref, key, expires_in)
        else:
            upload = Upload(provider, backend, resource, key)
            out.update(upload.sign(operation, expires_in, content_length, now))
    except BackendDownError as exc:
        raise errors.BackendUnavailableError(
            "The storage backend did not answer; try again shortly.",
            agent_action="Retry the presign request in a few seconds.",
        ) from exc
    out["expires_at"] = iso(now + expires_in)
    return Response(out, status_code=200)


# -- request validation ------------------------------------------------------------------------
def validate_key(value: Any, max_bytes: int = MAX_OBJECT_KEY_BYTES) -> str:
    """``value`` as an object key that stays under the tenant's prefix, or InvalidKeyError."""
    action = KEY_ACTION.format(limit=max_bytes)
    if not isinstance(value, str) or not value:
        raise errors.InvalidKeyError("'key' must be a non-empty string.", agent_action=action)
    if len(value) > max_bytes or len(value.encode("utf-8")) > max_bytes:  # first: it is cheap
        raise errors.InvalidKeyError(
            f"'key' must be at most {max_bytes} bytes (UTF-8).", agent_action=action
        )
    if value.startswith("/"):
        raise errors.InvalidKeyError("'key' must not start with '/'.", agent_action=action)
    if "\\" in value:
        raise errors.InvalidKeyError("'key' must not contain backslashes.", agent_action=action)
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise errors.InvalidKeyError(
            "'key' must not contain control characters.", agent_action=action
        )
    if any(segment in (".", "..") for segment in value.split("/")):
        raise errors.InvalidKeyError(
            "'key' must not contain '.' or '..' path segments.", agent_action=action
        )
    return value


def relative_key(value: Any, prefix: str) -> Any:
    """``value`` without the resource's ``prefix/`` in front: the keys a listing returns (and
    ``key`` in this route's answer) are full, and an agent may send one back. Stripped once."""
    if isinstance(value, str) and value.startswith(prefix + "/"):
        return value[len(prefix) + 1 :]
    return value


def _operation(value: Any) -> str:
    if value not in OPERATIONS:
        raise errors.BadRequestError(
            '\'operation\' must be "PUT", "GET" or "POST".',
            agent_action='Send {"operation": "PUT", "key": "path/to/file", "content_length": '
            "<size in bytes>} to upload.",
        )
    return str(value)


def _content_length(value: Any, operation: str) -> int | None:
    """The upload's size in bytes: required for a PUT (its URL is signed for that size), the
    largest size a POST form accepts (default: all that is left), ignored for a GET."""
    if operation == "GET" or (value is None and operation == "POST"):
        return None
    size = _json_integer(value)
    if size is None or size < 0:
        raise errors.BadRequestError(
            "'content_length' must be the exact size in bytes of the object a PUT uploads "
            "(the URL is signed for that size).",
            agent_action='Send {"operation": "PUT", "key": "<key>", "content_length": <file '
            'size in bytes>}, or use "operation": "POST" for a form upload of up to the bytes '
            "left.",
        )
    return size


def _json_integer(value: Any) -> int | None:
    """A JSON integer as JSON Schema counts them (``60`` and ``60.0``; not ``"60"`` or ``true``),
    else None."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _expires_in(value: Any) -> int:
    seconds = _json_integer(value)
    if seconds is None or not 1 <= seconds <= MAX_EXPIRES_IN:
        raise errors.BadRequestError(
            f"'expires_in' must be an integer number of seconds from 1 to {MAX_EXPIRES_IN}.",
            agent_action=f"Omit 'expires_in' (default {DEFAULT_EXPIRES_IN}) or send 1-3600.",
        )
    return seconds


# -- the resource, its backend and its quota ----------------------------------------------------
def _storage_resource(token: str) -> Resource:
    store = ResourceStore(get_dynamo(), get_settings())
    resource = store.live_by_token(token, Kind.STORAGE, time.time())
    if resource is None:
        raise errors.NotFoundError(
            "No active storage resource has this token.",
            agent_action="Check the token from /storage/new, or provision a new one.",
        )
    return resource


def _backend(resource: Resource) -> Backend:
    backend = get_settings().backend_of(resource)
    if backend is None:
        raise errors.BackendUnavailableError("This resource's storage backend is not configured.")
    return backend


def _provider() -> StorageProvider:
    from chalicelib.providers.storage import StorageProvider

    provider = get_provider(Kind.STORAGE)
    if not isinstance(provider, StorageProvider):
        raise errors.InternalError("The storage provider does not support presigning.")
    return provider


@dataclass(frozen=True)
class Upload:
    """A presigned upload to ``key`` (relative to the prefix) of a storage resource."""

    provider: StorageProvider
    backend: Backend
    resource: Resource
    key: str

    def sign(
        self, operation: str, expires_in: int, content_length: int | None, now: int
    ) -> dict[str, Any]:
        """A PUT URL for exactly the reserved bytes, or a POST form for at most them."""
        size = self.reserve(content_length, now + expires_in, now)
        ref = self.resource.ref
        if operation == "PUT":
            url = self.provider.presign_put(self.backend, ref, self.key, expires_in, size)
            return {"url": url, "content_length": size, "headers": {"Content-Length": str(size)}}
        post = self.provider.presign_post(self.backend, ref, self.key, expires_in, size)
        return {"url": post["url"], "fields": post["fields"], "max_bytes": size}

    def reserve(self, wanted: int | None, expires_at: int, now: int) -> int:
        """Reserve ``wanted`` bytes for the key until ``expires_at`` (None: all that is left for
        it) and return them; StorageQuotaExceededError when they do not fit."""
        from chalicelib.providers.storage import object_key

        full_key = object_key(self.resource.ref, self.key)
        limit = all_tiers()[self.resource.tier].limits(Kind.STORAGE).storage_bytes
        sizes = self.provider.sizes(self.backend, self.resource.ref)
        reservations = Reservations(get_dynamo(), get_settings().counters_table)
        for _ in range(RESERVE_ATTEMPTS):
            ledger = reservations.read(self.resource.ref, now)
            room = ledger.room_for(full_key, sizes, limit)
            size = room if wanted is None else wanted
            if room <= 0 or size > room:
                raise self._refusal(wanted, room, limit, sizes, ledger)
            if reservations.write(
                self.resource.ref, ledger.with_reservation(full_key, size, expires_at)
            ):
                return size
        raise errors.RateLimitedError(
            "Other presigns of this storage resource were being made at the same moment.",
            agent_action="Retry the presign request in a second.",
            headers={"Retry-After": "1"},
        )

    def _refusal(
        self, wanted: int | None, room: int, limit: int, sizes: dict[str, int], ledger: Ledger
    ) -> errors.StorageQuotaExceededError:
        from chalicelib.upgrades import more_of, or_more

        stored = sum(sizes.values())
        reserved = ledger.committed(sizes) - stored
        state = (
            f"this storage prefix holds {stored} bytes and live upload URLs may add {reserved}; "
            f"its limit is {limit}"
        )
        if room <= 0:
            message = f"Uploads are refused: {state}."
            start = "Tell the user this storage resource is full: wait for unused upload URLs to "
            start += "expire, or overwrite a key with a smaller object"
        else:
            message = f"{wanted} bytes do not fit: {state}, so {room} are left for this key."
            start = f"Tell the user the object does not fit: at most {room} bytes are left for it"
        tiers = all_tiers()
        bigger = more_of(
            tiers, tiers[self.resource.tier], lambda t: t.limits(Kind.STORAGE).storage_mb
        )
        return errors.StorageQuotaExceededError(
            message,
            agent_action=or_more(get_settings(), start, bigger, self.resource.owner),
            used_bytes=stored,
            reserved_bytes=reserved,
            limit_bytes=limit,
            remaining_bytes=max(room, 0),
        )


def take_presign_slot(db: Dynamo, resource_id: str, now: int) -> None:
    """Count one presign in this minute's counter; RateLimitedError past the limit."""
    taken = ResourceStore(db, get_settings()).take_slot(
        f"presign#{resource_id}#{now // 60}", PRESIGNS_PER_MINUTE, now + RATE_COUNTER_TTL_SECONDS
    )
    if not taken:
        retry_after = str(60 - now % 60)
        raise errors.RateLimitedError(
            f"At most {PRESIGNS_PER_MINUTE} presigned URLs per minute per storage resource.",
            agent_action=f"Wait {retry_after}s (Retry-After) and retry; reuse URLs until they "
            "expire instead of minting one per request.",
            headers={"Retry-After": retry_after},
        )
