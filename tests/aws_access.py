"""What the code asks of AWS, as IAM sees it, and whether a policy document allows it.

``record()`` watches every boto3 client in the process (calls, presigned URLs and presigned
POST forms, which are used later with the signer's rights) and turns each into ``Access``es:
the IAM action, the resource's ARN and the condition keys IAM would evaluate.
``Policy`` answers which of them a policy allows, and which of its grants none of them used.
Only what IAM needs is modelled: Allow statements, ``*``/``?`` wildcards, StringEquals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parseaddr
from fnmatch import fnmatchcase
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.signers import S3PostPresigner


@dataclass(frozen=True)
class Where:
    """The account the ARNs are made in."""

    partition: str
    region: str
    account: str

    def arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        if not regional:
            return f"arn:{self.partition}:{service}:::{resource}"
        return f"arn:{self.partition}:{service}:{self.region}:{self.account}:{resource}"


@dataclass(frozen=True)
class Access:
    action: str  # "dynamodb:GetItem"
    resource: str  # an ARN
    context: tuple[tuple[str, str], ...] = ()  # condition keys, e.g. ("ses:FromAddress", …)

    def __str__(self) -> str:
        extra = "".join(f" [{k}={v}]" for k, v in self.context)
        return f"{self.action} on {self.resource}{extra}"


_TRANSACT = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem"}
_TRANSACT_CHECK = {"ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}
_S3_ACTION = {
    "GetObject": "GetObject",
    "HeadObject": "GetObject",
    "PutObject": "PutObject",
    "DeleteObject": "DeleteObject",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "AbortMultipartUpload": "AbortMultipartUpload",
}
_S3_BUCKET_ACTION = {"ListObjectsV2": "ListBucket", "ListObjects": "ListBucket"}
_S3_BUCKET_ACTION |= {"HeadBucket": "ListBucket"}


def accesses_of(
    service: str, operation: str, params: Mapping[str, Any], where: Where
) -> list[Access]:
    """The IAM actions one API call (or presigned request) needs. An operation not modelled
    here raises: the test must learn it before it can judge it."""
    if service == "dynamodb":
        return _dynamodb(operation, params, where)
    if service == "s3":
        return _s3(operation, params, where)
    if service == "secretsmanager" and operation == "GetSecretValue":
        return [Access("secretsmanager:GetSecretValue", str(params["SecretId"]))]
    if service == "ses" and operation == "SendEmail":
        sender = parseaddr(str(params["Source"]))[1]
        identity = where.arn("ses", f"identity/{sender}")
        return [Access("ses:SendEmail", identity, (("ses:FromAddress", sender),))]
    raise NotImplementedError(f"tests/aws_access.py does not model {service}:{operation}")


def _dynamodb(operation: str, params: Mapping[str, Any], where: Where) -> list[Access]:
    def table(name: str, index: str | None = None) -> str:
        return where.arn("dynamodb", f"table/{name}" + (f"/index/{index}" if index else ""))

    if operation == "TransactWriteItems":
        found = []
        for item in params["TransactItems"]:
            ((kind, op),) = item.items()
            action = _TRANSACT.get(kind) or _TRANSACT_CHECK[kind]
            found.append(Access(f"dynamodb:{action}", table(op["TableName"])))
        return found
    if operation == "TransactGetItems":
        return [
            Access("dynamodb:GetItem", table(i["Get"]["TableName"]))
            for i in params["TransactItems"]
        ]
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return [Access(f"dynamodb:{operation}", table(name)) for name in params["RequestItems"]]
    return [Access(f"dynamodb:{operation}", table(params["TableName"], params.get("IndexName")))]


def _s3(operation: str, params: Mapping[str, Any], where: Where) -> list[Access]:
    bucket = params["Bucket"]
    if operation in _S3_BUCKET_ACTION:
        return [
            Access(f"s3:{_S3_BUCKET_ACTION[operation]}", where.arn("s3", bucket, regional=False))
        ]
    if operation == "DeleteObjects":
        keys = [o["Key"] for o in params["Delete"]["Objects"]]
    else:
        keys = [params["Key"]]
        operation = _S3_ACTION.get(operation, operation)
        if operation not in _S3_ACTION.values():
            raise NotImplementedError(f"tests/aws_access.py does not model s3:{operation}")
        return [Access(f"s3:{operation}", where.arn("s3", f"{bucket}/{keys[0]}", regional=False))]
    return [
        Access("s3:DeleteObject", where.arn("s3", f"{bucket}/{k}", regional=False)) for k in keys
    ]


@contextmanager
def record(monkeypatch: pytest.MonkeyPatch, where: Where) -> Iterator[list[Access]]:
    """Every access the process's boto3 clients make (or sign for later) inside the block."""
    seen: list[Access] = []
    emit = BaseClient._emit_api_params
    post = S3PostPresigner.generate_presigned_post

    def emitting(self: BaseClient, api_params: Any, operation_model: Any, context: Any) -> Any:
        params = emit(self, api_params, operation_model, context)
        service = operation_model.service_model.signing_name
        presigned_post = (
            context.get("is_presign_request") and operation_model.name == "CreateBucket"
        )
        if not presigned_post:  # botocore builds a POST form's URL as a CreateBucket's
            seen.extend(accesses_of(service, operation_model.name, params, where))
        return params

    def posting(
        self: S3PostPresigner,
        request_dict: Any,
        fields: Any = None,
        conditions: Any = None,
        **kw: Any,
    ) -> Any:
        bucket = next(
            c["bucket"] for c in conditions or [] if isinstance(c, dict) and "bucket" in c
        )
        seen.extend(accesses_of("s3", "PutObject", {"Bucket": bucket, "Key": fields["key"]}, where))
        return post(self, request_dict, fields, conditions, **kw)

    monkeypatch.setattr(BaseClient, "_emit_api_params", emitting)
    monkeypatch.setattr(S3PostPresigner, "generate_presigned_post", posting)
    try:
        yield seen
    finally:
        monkeypatch.setattr(BaseClient, "_emit_api_params", emit)
        monkeypatch.setattr(S3PostPresigner, "generate_presigned_post", post)


# -- policies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One action on one resource pattern, from statement ``sid``."""

    sid: str
    action: str
    resource: str
    conditions: tuple[tuple[str, str], ...]  # StringEquals key, value

    def allows(self, access: Access) -> bool:
        context = dict(access.context)
        return (
            fnmatchcase(access.action.lower(), self.action.lower())
            and _arn_match(self.resource, access.resource)
            and all(context.get(k) == v for k, v in self.conditions)
        )


def _arn_match(pattern: str, arn: str) -> bool:
    """IAM's ARN wildcards: ``*`` any run of characters, ``?`` one (no character classes)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, arn) is not None


@dataclass(frozen=True)
class Policy:
    grants: tuple[Grant, ...]

    @classmethod
    def parse(cls, text: str) -> Policy:
        doc = json.loads(text)
        grants = []
        for statement in doc["Statement"]:
            assert statement["Effect"] == "Allow", statement
            conditions = statement.get("Condition", {})
            assert set(conditions) <= {"StringEquals"}, f"condition not modelled: {conditions}"
            pairs = tuple(sorted(conditions.get("StringEquals", {}).items()))
            for action in _listed(statement["Action"]):
                for resource in _listed(statement["Resource"]):
                    grants.append(Grant(statement["Sid"], action, resource, pairs))
        return cls(tuple(grants))

    def missing(self, used: Iterable[Access]) -> list[Access]:
        """What the policy does not allow."""
        return sorted({a for a in used if not any(g.allows(a) for g in self.grants)}, key=str)

    def unused(self, used: Iterable[Access], sids: Iterable[str] = ()) -> list[Grant]:
        """The grants (of the statements named ``sids``, or all) no access needed."""
        used = list(used)
        wanted = set(sids)
        return [
            g
            for g in self.grants
            if (not wanted or g.sid in wanted) and not any(g.allows(a) for a in used)
        ]


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
