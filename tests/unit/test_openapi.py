"""The OpenAPI document against the app's routes, and against the OpenAPI 3.1 specification
(openapi-spec-validator). tests/contract checks it against the served API (schemathesis)."""

from typing import Any

from openapi_spec_validator import validate

from app import app
from chalicelib import openapi

DOCUMENT = openapi.document("http://x", "0")
PATHS: dict[str, Any] = DOCUMENT["paths"]


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in PATHS.items()
        for method, operation in item.items()
        if method != "parameters"
    ]


def test_openapi_documents_every_route() -> None:
    for path, methods in app.routes.items():
        for method in methods:
            assert method.lower() in PATHS.get(path, {}), f"{method} {path} missing"


def test_openapi_lists_no_route_the_app_lacks() -> None:
    routes = {(p, m.lower()) for p, methods in app.routes.items() for m in methods}
    assert {(p, m) for p, m, _ in operations()} == routes


def test_openapi_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)  # raises OpenAPIValidationError, naming the first problem


def test_every_route_chalice_checks_the_content_type_of_documents_415() -> None:
    for path, methods in app.routes.items():
        for method, entry in methods.items():
            if entry.content_types != ["*/*"]:
                responses = PATHS[path][method.lower()]["responses"]
                assert "415" in responses, f"{method} {path}: Chalice answers 415"


def test_every_json_body_is_checked_and_documents_415() -> None:
    for path, method, operation in operations():
        content = operation.get("requestBody", {}).get("content", {})
        # the billing webhook reads its signed raw body whatever the Content-Type says
        if list(content) == ["application/json"] and path != "/webhooks/razorpay":
            assert "415" in operation["responses"], f"{method} {path} reads JSON"


def test_operation_ids_are_unique() -> None:
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))


def test_every_response_says_its_request_id_and_errors_are_the_envelope() -> None:
    for path, method, operation in operations():
        for status, response in operation["responses"].items():
            assert "X-Request-Id" in response["headers"], f"{method} {path} {status}"
            # the health checks' 503 is their own body; answers to a HEAD have none
            if status >= "400" and path not in ("/healthz", "/readyz") and method != "head":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path}"


def test_creates_say_their_idempotency_source_on_every_answer() -> None:
    creates = [PATHS[p]["post"] for p in ("/db/new", "/deploy/new", "/stacks/new")]
    for operation in creates:
        assert {"$ref": "#/components/parameters/Idempotency-Key"} in operation["parameters"]
        for response in operation["responses"].values():
            source = response["headers"]["X-Idempotency-Source"]
            assert source == {"$ref": "#/components/headers/X-Idempotency-Source.required"}


def test_app_treats_multipart_as_binary() -> None:
    assert "multipart/form-data" in app.api.binary_types
