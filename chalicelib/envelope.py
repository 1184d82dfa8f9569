"""HTTP middleware: every error leaves as ``{ok: false, error, message, request_id, ...}``.

It turns our ``ApiError``s into the envelope, rewrites Chalice's own error bodies
(``{Code, Message}`` for 400/405/415/500) into it, and hides unexpected exceptions behind a
generic 500 (the stack trace goes to the log, never to the client).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from chalice.app import Request, Response

from chalicelib import errors
from chalicelib.errors import ConfigError

log = logging.getLogger(__name__)

_CHALICE_CODES: dict[int, type[errors.ApiError]] = {
    400: errors.BadRequestError,
    404: errors.NotFoundError,
    405: errors.MethodNotAllowedError,
    415: errors.UnsupportedContentTypeError,
}


def request_id_of(request: Request) -> str:
    return str((request.context or {}).get("requestId") or uuid.uuid4())


def envelope(request: Request, get_response: Callable[[Request], Response]) -> Response:
    request_id = request_id_of(request)
    try:
        response = _translate(get_response(request), request_id)
    except errors.ApiError as exc:
        response = error_response(exc, request_id)
    except ConfigError:
        log.exception("misconfigured deployment")
        response = error_response(errors.InternalError("The service is misconfigured."), request_id)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(errors.InternalError("An internal error occurred."), request_id)
    response.headers["X-Request-Id"] = request_id
    return response


def error_response(exc: errors.ApiError, request_id: str) -> Response:
    return Response(exc.body(request_id), status_code=exc.status, headers=dict(exc.headers))


def _translate(response: Response, request_id: str) -> Response:
    """Rewrite Chalice's built-in ``{Code, Message}`` error bodies into the envelope."""
    body: Any = response.body
    if response.status_code < 400 or not isinstance(body, dict) or "Code" not in body:
        return response
    if response.status_code >= 500:
        exc: errors.ApiError = errors.InternalError("An internal error occurred.")
    else:
        cls = _CHALICE_CODES.get(response.status_code, errors.BadRequestError)
        exc = cls(str(body.get("Message", "Bad request.")))
    exc.status = response.status_code
    translated = error_response(exc, request_id)
    translated.headers.update({k: v for k, v in response.headers.items() if k.lower() == "allow"})
    return translated
