"""Every error the API returns, with its HTTP status, code and agent guidance.

An ``ApiError`` propagates out of a view (it is a ``ChaliceUnhandledError``) so the envelope
middleware in app.py turns it into ``{ok: false, error, message, request_id, agent_action?}``.
"""

from __future__ import annotations

from typing import Any

from chalice.app import ChaliceUnhandledError


class ConfigError(Exception):
    """The deployment is misconfigured (a missing secret or a malformed setting)."""


class ApiError(ChaliceUnhandledError):
    """Base of all client-visible errors."""

    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        agent_action: str | None = None,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.agent_action = agent_action
        self.headers = dict(headers or {})
        self.fields = fields

    def body(self, request_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error": self.code,
            "message": self.message,
            "request_id": request_id,
        }
        if self.agent_action:
            body["agent_action"] = self.agent_action
        body.update(self.fields)
        return body


class BadRequestError(ApiError):
    """The request body or parameters are malformed."""

    status = 400
    code = "bad_request"


class InvalidJsonError(BadRequestError):
    """The body is not a JSON object."""

    code = "invalid_json"


class UnsupportedContentTypeError(ApiError):
    """The body is not sent as application/json (Chalice's own check on the other routes
    answers 415 too: one status for one mistake)."""

    status = 415
    code = "unsupported_content_type"


class NameRequiredError(BadRequestError):
    """No ``name`` was given."""

    code = "name_required"


class InvalidNameError(BadRequestError):
    """``name`` breaks the 1-64 character rule."""

    code = "invalid_name"


class InvalidIdempotencyKeyError(BadRequestError):
    """An ``Idempotency-Key`` header that is blank or not 1-255 printable ASCII characters."""

    code = "invalid_idempotency_key"


class NotFoundError(ApiError):
    """No such route or resource."""

    status = 404
    code = "not_found"


class MethodNotAllowedError(ApiError):
    """The route exists but not with this method."""

    status = 405
    code = "method_not_allowed"


class IdempotencyKeyConflictError(ApiError):
    """The Idempotency-Key was already used with a different body."""

    status = 409
    code = "idempotency_key_conflict"


class IdempotencyInProgressError(ApiError):
    """The first request with this key is still running."""

    status = 409
    code = "idempotency_in_progress"


class ResourceLimitReachedError(ApiError):
    """The caller already holds as many resources of this kind as its tier allows."""

    status = 402
    code = "resource_limit_reached"


class DailyLimitReachedError(ApiError):
    """The caller's network made its daily number of anonymous provisions."""

    status = 429
    code = "daily_limit_reached"


class BackendUnavailableError(ApiError):
    """No backend server for this kind answered; nothing was created."""

    status = 503
    code = "backend_unavailable"


class InternalError(ApiError):
    """Something failed on our side; the details are in the logs, not the response."""

    status = 500
    code = "internal_error"


class InvalidKeyError(BadRequestError):
    """A storage object key that is empty, too long or could escape the tenant's prefix."""

    code = "invalid_key"


class StorageQuotaExceededError(ApiError):
    """The storage resource holds as many bytes as its tier allows: no more uploads."""

    status = 403
    code = "storage_quota_exceeded"


class RateLimitedError(ApiError):
    """Too many requests for this resource in the current window (see Retry-After)."""

    status = 429
    code = "rate_limited"


class PayloadTooLargeError(ApiError):
    """The received body is larger than the inbox's tier accepts."""

    status = 413
    code = "payload_too_large"


class InvalidEmailFormatError(BadRequestError):
    """The email is not a deliverable-looking RFC 5322 address."""

    code = "invalid_email_format"


class InvalidTokenError(BadRequestError):
    """A claim or upgrade token that is malformed, tampered with, expired or of another type."""

    code = "invalid_token"


class UnauthorizedError(ApiError):
    """No valid session or API token came with the request."""

    status = 401
    code = "unauthorized"


class ForbiddenError(ApiError):
    """The credential is valid but lacks the scope this route needs."""

    status = 403
    code = "insufficient_scope"


class SessionNotFoundError(NotFoundError):
    """No CLI device-flow session with this id."""

    code = "session_not_found"


class RecycleRequiresClaimError(ApiError):
    """This network's anonymous resource expired: it must claim once before provisioning again."""

    status = 402
    code = "free_tier_recycle_requires_claim"


class InvalidPromoCodeError(BadRequestError):
    """The promotion code is unknown or no longer valid."""

    code = "invalid_promo_code"


class InvalidSignatureError(ApiError):
    """A billing webhook whose signature does not verify."""

    status = 401
    code = "invalid_signature"


class SessionNotPendingError(ApiError):
    """The CLI sign-in session expired or was approved already."""

    status = 409
    code = "session_not_pending"


class TarballTooLargeError(ApiError):
    """The build context is larger than the tier accepts (or a request body can carry)."""

    status = 413
    code = "tarball_too_large"


class InvalidTarballError(BadRequestError):
    """The build context is not a gzipped tar, or holds members that could escape its tree."""

    code = "invalid_tarball"


class DockerfileNotFoundError(BadRequestError):
    """The build context has no Dockerfile at its root."""

    code = "dockerfile_not_found"


class NoExistingDeploymentError(NotFoundError):
    """``redeploy=true`` named an app this team does not have."""

    code = "no_existing_deployment_to_redeploy"


class DeployRequiresPaidTierError(ApiError):
    """The team's tier runs no container deploys."""

    status = 402
    code = "deploy_requires_paid_tier"


class InvalidEnvKeyError(BadRequestError):
    """An env var name outside ``[A-Z_][A-Z0-9_]*``."""

    code = "invalid_env_key"


class InvalidConfirmationTokenError(BadRequestError):
    """A deletion confirmation token that is wrong or expired."""

    code = "invalid_confirmation_token"
