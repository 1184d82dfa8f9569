"""Presigned POST forms as S3 checks them: the policy's signature (botocore's own code) and
expiry, every condition (``content-length-range`` included), and no form field the policy does
not name.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from botocore.auth import S3SigV4PostAuth
from botocore.awsrequest import AWSRequest
from werkzeug.formparser import parse_form_data

from devstack.s3_request import (
    ALGORITHM,
    REGION,
    Received,
    S3Error,
    Scope,
    argument_error,
    denied,
    instant,
    mismatch,
    too_large,
    unsupported,
)

POST_FIELDS = ("policy", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature")
POST_UNCOVERED = {"policy", "x-amz-signature", "file"}  # fields a policy need not name


def is_post_form(request: Received) -> bool:
    return request.method == "POST" and request.headers.get("content-type", "").startswith(
        "multipart/form-data"
    )


def check_post_policy(request: Received, now: datetime) -> None:
    bucket = request.path.strip("/")
    if not bucket or "/" in bucket:
        raise denied()
    fields, size = _form(request)
    for name in POST_FIELDS:
        if name not in fields:
            raise argument_error(f"Bucket POST must contain a field named '{name}'.")
    if fields["x-amz-algorithm"] != ALGORITHM:
        raise unsupported()
    scope = Scope.of(fields["x-amz-credential"], fields["x-amz-date"], argument_error)
    signable = AWSRequest()
    signable.context["timestamp"] = fields["x-amz-date"]
    expected = S3SigV4PostAuth(scope.credentials, "s3", REGION).signature(
        fields["policy"], signable
    )
    if not hmac.compare_digest(expected, fields["x-amz-signature"]):
        raise mismatch()
    policy = _policy(fields["policy"])
    if now > instant(str(policy.get("expiration")), "%Y-%m-%dT%H:%M:%SZ", _policy_error):
        raise denied("Invalid according to Policy: Policy expired.")
    _check_conditions(policy.get("conditions"), fields, bucket, size)


def _form(request: Received) -> tuple[dict[str, str], int]:
    """The form's fields (lower-case names, each once) and the size of its one file."""
    request.body.seek(0)
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": request.headers["content-type"],
        "CONTENT_LENGTH": request.headers.get("content-length", ""),
        "wsgi.input": request.body,
    }
    _, form, files = parse_form_data(environ)
    names = [name.lower() for name in form]
    if len(names) != len(set(names)) or list(files) != ["file"]:
        raise argument_error("POST requires each field once and exactly one file named 'file'.")
    stream = files["file"].stream
    stream.seek(0, 2)
    return {name.lower(): form[name] for name in form}, stream.tell()


def _policy_error(message: str) -> S3Error:
    return S3Error(400, "InvalidPolicyDocument", f"Invalid Policy: {message}")


def _policy(encoded: str) -> dict[str, Any]:
    try:
        policy = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise _policy_error("Invalid JSON.") from None
    if not isinstance(policy, dict):
        raise _policy_error("Invalid JSON.")
    return policy


def _check_conditions(conditions: Any, fields: Mapping[str, str], bucket: str, size: int) -> None:
    if not isinstance(conditions, list):
        raise _policy_error("Policy missing conditions.")
    values = {**fields, "bucket": bucket}
    covered = {_check_condition(condition, values, size) for condition in conditions}
    extra = sorted(
        name
        for name in fields
        if name not in covered | POST_UNCOVERED and not name.startswith("x-ignore-")
    )
    if extra:
        raise denied(f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")


def _check_condition(condition: Any, values: Mapping[str, str], size: int) -> str:
    """Check one condition; the field name it covers ("" for content-length-range)."""
    if isinstance(condition, dict) and len(condition) == 1:
        ((name, expected),) = condition.items()
        operator = "eq"
    elif isinstance(condition, list) and len(condition) == 3:
        operator, name, expected = condition
        if operator == "content-length-range":
            _check_length(name, expected, size)
            return ""
        if not isinstance(name, str) or not name.startswith("$"):
            raise _policy_error(f"Invalid condition {json.dumps(condition)}.")
        name = name[1:]
    else:
        raise _policy_error(f"Invalid condition {json.dumps(condition)}.")
    actual = values.get(str(name).lower(), "")
    if operator not in ("eq", "starts-with") or not isinstance(expected, str):
        raise _policy_error(f"Invalid condition {json.dumps(condition)}.")
    if actual != expected if operator == "eq" else not actual.startswith(expected):
        raise denied(f"Invalid according to Policy: Policy Condition failed: {condition}")
    return str(name).lower()


def _check_length(low: Any, high: Any, size: int) -> None:
    if not isinstance(low, int) or not isinstance(high, int):
        raise _policy_error("content-length-range needs two integers.")
    if size > high:
        raise too_large()
    if size < low:
        raise S3Error(
            400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size"
        )
