"""The HTTP transport of the SDK: one ``httpx.Client``, bearer auth, the API's error envelope
turned into ``InstanodeError``, and retries of transient failures with the same
``Idempotency-Key``."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
import httpx_sse

from instanode.errors import InstanodeError

SAFE_METHODS = frozenset({"GET", "HEAD"})
TRANSIENT_STATUSES = frozenset({502, 503, 504})
MAX_RETRY_WAIT = 60.0  # a longer Retry-After (a daily limit) is the caller's to wait for
BACKOFF_SECONDS = 0.5


class Transport:
    def __init__(
        self,
        api: str,
        token: str | None,
        *,
        timeout: float,
        retries: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.api = api
        self.token = token
        self.retries = retries
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=api,
            timeout=timeout,
            headers={"User-Agent": "instanode-python", **(headers or {})},
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        files: Any = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retry: bool = True,
    ) -> Any:
        """The parsed body of a 2xx answer; InstanodeError for anything else."""
        sent = self._headers(headers)
        if idempotency_key is not None:
            sent["Idempotency-Key"] = idempotency_key
        retryable = retry and (idempotency_key is not None or method.upper() in SAFE_METHODS)
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    content=content,
                    files=files,
                    data=data,
                    headers=sent,
                )
            except httpx.TransportError as exc:
                failure = network_error(exc)
            else:
                if response.is_success:
                    return parse_body(response)
                failure = error_of(response)
                if not is_transient(failure):
                    raise failure
            delay = failure.retry_after if failure.retry_after is not None else backoff(attempt)
            if not retryable or attempt >= self.retries or delay > MAX_RETRY_WAIT:
                raise failure
            time.sleep(delay)
            attempt += 1

    def put_url(self, url: str, content: bytes, headers: Mapping[str, str] | None = None) -> None:
        """PUT ``content`` to a presigned URL (no credential of ours goes with it)."""
        try:
            response = httpx.put(url, content=content, headers=headers, timeout=self.timeout)
        except httpx.TransportError as exc:
            raise network_error(exc) from exc
        if not response.is_success:
            raise error_of(response)

    @contextmanager
    def events(
        self, path: str, last_event_id: str | None = None
    ) -> Iterator[Iterator[httpx_sse.ServerSentEvent]]:
        """The server-sent events of one GET of ``path``."""
        headers = self._headers({"Last-Event-ID": last_event_id} if last_event_id else None)
        try:
            with httpx_sse.connect_sse(self._http, "GET", path, headers=headers) as source:
                if not source.response.is_success:
                    source.response.read()
                    raise error_of(source.response)
                yield source.iter_sse()
        except httpx.TransportError as exc:
            raise network_error(exc) from exc

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**headers, **(extra or {})}


def parse_body(response: httpx.Response) -> Any:
    if not response.content:
        return {}
    if "json" in response.headers.get("content-type", ""):
        return response.json()
    return response.text


def is_transient(failure: InstanodeError) -> bool:
    """Worth the same request again: no answer, a gateway's 5xx, a 429 that says when, or the
    first request with this Idempotency-Key still running."""
    return (
        failure.status == 0
        or failure.status in TRANSIENT_STATUSES
        or (failure.status == 429 and failure.retry_after is not None)
        or (failure.status == 409 and failure.error == "idempotency_in_progress")
    )


def backoff(attempt: int) -> float:
    return float(BACKOFF_SECONDS * 2**attempt)


def network_error(exc: httpx.TransportError) -> InstanodeError:
    what = type(exc).__name__
    return InstanodeError(
        0,
        "network_error",
        f"No answer from the API ({what}: {exc}).",
        agent_action="Check that the API URL is right and the server is up, then retry.",
    )


def error_of(response: httpx.Response) -> InstanodeError:
    """The API's error envelope as an InstanodeError (or a stand-in for a body that is none)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    retry_after = retry_after_of(response, body)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        action = body.get("agent_action")
        return InstanodeError(
            response.status_code,
            body["error"],
            str(body.get("message") or ""),
            agent_action=action if isinstance(action, str) else None,
            retry_after=retry_after,
            body=body,
        )
    text = response.text.strip()[:500]
    return InstanodeError(
        response.status_code,
        f"http_{response.status_code}",
        text or response.reason_phrase,
        retry_after=retry_after,
        body={"status": response.status_code, "text": text},
    )


def retry_after_of(response: httpx.Response, body: Any) -> float | None:
    """Seconds to wait: the Retry-After header (seconds or an HTTP date), else the envelope's
    ``retry_after_seconds``."""
    header = response.headers.get("retry-after")
    if header:
        try:
            return max(float(header), 0.0)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - time.time(), 0.0)
    seconds = body.get("retry_after_seconds") if isinstance(body, dict) else None
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        return float(seconds)
    return None
