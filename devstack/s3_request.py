"""A request as the local S3-only server authenticates it, the one key it trusts, and S3's XML
errors: shared by the SigV4 checks (devstack/s3_auth.py) and the POST policy checks
(devstack/s3_post_policy.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import IO, Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

from botocore.credentials import Credentials

REGION = "us-east-1"  # the storage backend's region (devstack/stack.py REGION)
KEYS = {"test": "test"}  # the platform's key (devstack/stack.py env()): the only one trusted
ALGORITHM = "AWS4-HMAC-SHA256"


class S3Error(Exception):
    """A refusal, answered as S3 answers it: an XML ``<Error>`` with S3's status and code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message

    def respond(self, start_response: Callable[..., Any]) -> list[bytes]:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>{escape(self.message)}</Message>"
            f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
        ).encode()
        status = f"{self.status} {HTTPStatus(self.status).phrase}"
        start_response(
            status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        )
        return [body]


def denied(message: str = "Access Denied") -> S3Error:
    return S3Error(403, "AccessDenied", message)


def too_large() -> S3Error:
    return S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")


def mismatch() -> S3Error:
    return S3Error(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    )


def query_error(message: str) -> S3Error:
    return S3Error(400, "AuthorizationQueryParametersError", message)


def header_error(message: str) -> S3Error:
    return S3Error(400, "AuthorizationHeaderMalformed", message)


def argument_error(message: str) -> S3Error:
    return S3Error(400, "InvalidArgument", message)


def unsupported() -> S3Error:
    return S3Error(
        400,
        "InvalidRequest",
        "The authorization mechanism you have provided is not supported. "
        "Please use AWS4-HMAC-SHA256.",
    )


@dataclass(frozen=True)
class Received:
    """A request as the signature covers it; its body is fully read and seekable."""

    method: str
    path: str  # decoded, ``/bucket/key``: the object S3 (and moto) act on
    query: tuple[tuple[str, str], ...]  # decoded pairs, in the order sent
    headers: Mapping[str, str]  # lower-case names; repeated headers joined by ","
    body: IO[bytes]

    @classmethod
    def of(cls, environ: Mapping[str, Any]) -> Received:
        target = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
        raw = urlsplit(target.encode("latin-1").decode("utf-8", "replace"))
        pairs = (p.partition("=") for p in raw.query.split("&") if p)
        return cls(
            method=environ["REQUEST_METHOD"],
            path=unquote(raw.path),
            query=tuple((unquote(k), unquote(v)) for k, _, v in pairs),
            headers=dict(_headers(environ)),
            body=environ["wsgi.input"],
        )


def _headers(environ: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            yield key[5:].lower().replace("_", "-"), value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            yield key.lower().replace("_", "-"), value


# -- the credential scope and times -----------------------------------------------------------
@dataclass(frozen=True)
class Scope:
    access_key: str
    secret_key: str

    @classmethod
    def of(cls, credential: str, timestamp: str, error: Callable[[str], S3Error]) -> Scope:
        """``<key>/<yyyymmdd>/<region>/s3/aws4_request``, dated as the request is."""
        parts = credential.split("/")
        if len(parts) != 5 or parts[3:] != ["s3", "aws4_request"]:
            raise error(f"Error parsing the credential '{credential}'.")
        key, date, region = parts[:3]
        if date != timestamp[:8]:
            raise error("Invalid credential date. Date is not the same as X-Amz-Date.")
        if region != REGION:
            raise error(f"The region '{region}' is wrong; expecting '{REGION}'.")
        if key not in KEYS:
            raise S3Error(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            )
        return cls(key, KEYS[key])

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.access_key, self.secret_key)


def instant(value: str, fmt: str, error: Callable[[str], S3Error]) -> datetime:
    try:
        return datetime.strptime(value, fmt).replace(tzinfo=UTC)
    except ValueError:
        raise error(f"Invalid date '{value}'.") from None
