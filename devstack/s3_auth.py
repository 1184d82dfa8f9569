"""The signature checks of the local S3-only server, made as S3 makes them, before moto runs.

moto checks no signature here: its opt-in auth (``INITIAL_NO_AUTH_ACTION_COUNT``,
moto/iam/access_control.py) reads only the ``Authorization`` header and knows only IAM users
it holds, so every presigned (query-string) request, valid or forged, fails in it with a 500
(``KeyError: 'HTTP_AUTHORIZATION'``). ``authenticate`` checks each request with botocore's own
canonical-request and signature code against the platform's storage key:

- a presigned URL (``X-Amz-Algorithm/Credential/Date/Expires/SignedHeaders/Signature``): the
  signature over method, path, query and every signed header (``content-length`` too when the
  URL names it, so a body of another size is refused), the credential scope and the lifetime;
- an ``Authorization: AWS4-HMAC-SHA256`` request (the platform's boto3 calls): the same, within
  15 minutes of its ``X-Amz-Date``, and the body against a hex ``x-amz-content-sha256``;
- a presigned POST form: the policy's signature and expiry, every condition
  (``content-length-range`` included), and no form field the policy does not name
  (devstack/s3_post_policy.py);
- any request: every ``x-amz-*`` header it carries is signed (S3's ``HeadersNotSigned``).
Nothing else gets through: no credentials, SigV2, an unknown key are S3's XML errors.
Not checked: the chunk signatures of ``STREAMING-*`` payloads, temporary credentials (there
are none), bucket policies and ACLs (the one key may do anything, as the platform's key may).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from urllib.parse import quote

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest

from devstack.s3_post_policy import check_post_policy, is_post_form
from devstack.s3_request import (
    ALGORITHM,
    REGION,
    Received,
    S3Error,
    Scope,
    argument_error,
    denied,
    header_error,
    instant,
    mismatch,
    query_error,
    unsupported,
)

MAX_SKEW = timedelta(minutes=15)
MAX_EXPIRES_SECONDS = 7 * 24 * 3600  # SigV4's longest presigned lifetime
QUERY_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=(\w+)"
)


def authenticate(request: Received, now: datetime) -> None:
    """Return if S3 would accept ``request``'s credentials at ``now``; else raise S3Error."""
    if request.method == "OPTIONS":
        return  # a CORS preflight carries no credentials, on S3 too
    names = [name for name, _ in request.query]
    if len(names) != len(set(names)):
        raise argument_error("A query parameter is repeated.")  # each must mean one thing
    in_query = any(name in QUERY_PARAMS for name in names)
    if "authorization" in request.headers and in_query:
        raise argument_error("Only one auth mechanism allowed.")
    if "authorization" in request.headers:
        _check_header_auth(request, now)
    elif in_query:
        _check_query_auth(request, now)
    elif is_post_form(request):
        check_post_policy(request, now)
    elif "AWSAccessKeyId" in names:
        raise unsupported()
    else:
        raise denied()


# -- SigV4: presigned URLs and Authorization headers -------------------------------------------
def _check_query_auth(request: Received, now: datetime) -> None:
    params = dict(request.query)
    if any(name not in params for name in QUERY_PARAMS) or params["X-Amz-Algorithm"] != ALGORITHM:
        raise query_error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
            "X-Amz-Expires parameters."
        )
    timestamp = params["X-Amz-Date"]
    signed_at = instant(timestamp, "%Y%m%dT%H%M%SZ", query_error)
    scope = Scope.of(params["X-Amz-Credential"], timestamp, query_error)
    expires = _expires(params["X-Amz-Expires"])
    if now + MAX_SKEW < signed_at:
        raise denied("Request is not yet valid")
    if now > signed_at + timedelta(seconds=expires):
        raise denied("Request has expired")
    auth = S3SigV4QueryAuth(scope.credentials, "s3", REGION, expires=expires)
    covered = {k: v for k, v in request.query if k != "X-Amz-Signature"}
    signed = params["X-Amz-SignedHeaders"].split(";")
    _check_signature(auth, request, signed, covered, timestamp, params["X-Amz-Signature"])


def _expires(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_EXPIRES_SECONDS:
        raise query_error(
            f"X-Amz-Expires must be a number of seconds from 1 to {MAX_EXPIRES_SECONDS}."
        )
    return int(value)


def _check_header_auth(request: Received, now: datetime) -> None:
    authorization = request.headers["authorization"].strip()
    found = _AUTHORIZATION.fullmatch(authorization)
    if found is None:
        if authorization.startswith("AWS "):
            raise unsupported()
        raise header_error("The authorization header is malformed.")
    timestamp = request.headers.get("x-amz-date", "")
    signed_at = instant(timestamp, "%Y%m%dT%H%M%SZ", lambda _: denied("Missing x-amz-date."))
    if abs(now - signed_at) > MAX_SKEW:
        raise S3Error(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )
    credential, signed, signature = found.groups()
    scope = Scope.of(credential, timestamp, header_error)
    auth = S3SigV4Auth(scope.credentials, "s3", REGION)
    _check_signature(auth, request, signed.split(";"), dict(request.query), timestamp, signature)
    _check_payload(request)


def _check_signature(
    auth: SigV4Auth,
    request: Received,
    signed: list[str],
    params: Mapping[str, str],
    timestamp: str,
    given: str,
) -> None:
    """``given`` is the signature botocore makes of ``request`` (``signed`` headers only)."""
    unsigned = sorted(h for h in request.headers if h.startswith("x-amz-") and h not in signed)
    if unsigned:
        raise denied(
            "There were headers present in the request which were not signed "
            f"(HeadersNotSigned: {', '.join(unsigned)})."
        )
    if any(name not in request.headers for name in signed):
        raise mismatch()
    signable = AWSRequest(
        method=request.method,
        url="http://s3.local" + quote(request.path, safe="/~"),  # S3's canonical URI
        headers={name: request.headers[name] for name in signed},
        params=dict(params),
    )
    signable.context["timestamp"] = timestamp
    canonical = auth.canonical_request(signable)
    expected = auth.signature(auth.string_to_sign(signable, canonical), signable)
    if not hmac.compare_digest(expected, given):
        raise mismatch()


def _check_payload(request: Received) -> None:
    """A hex ``x-amz-content-sha256`` must be the body's; the unsigned forms are accepted."""
    declared = request.headers.get("x-amz-content-sha256")
    if declared is None:
        raise S3Error(
            400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256"
        )
    if declared == "UNSIGNED-PAYLOAD" or declared.startswith("STREAMING-"):
        return
    digest = hashlib.sha256()
    request.body.seek(0)
    while chunk := request.body.read(1 << 20):
        digest.update(chunk)
    if not hmac.compare_digest(declared, digest.hexdigest()):
        raise S3Error(
            400,
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
