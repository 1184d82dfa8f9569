"""The one exception the SDK raises for what the API (or the network) refused."""

from __future__ import annotations

from typing import Any


class InstanodeError(Exception):
    """An API error envelope (``{"ok": false, "error", "message", "agent_action"}``), or a
    request that got no answer at all (``status`` 0, ``error`` ``"network_error"``)."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        agent_action: str | None = None,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{error}: {message}" if message else error)
        self.status = status
        self.error = error
        self.message = message
        self.agent_action = agent_action
        self.retry_after = retry_after
        self.body: dict[str, Any] = body if body is not None else {}

    def __repr__(self) -> str:
        fields = f"status={self.status}, error={self.error!r}, message={self.message!r}"
        return f"InstanodeError({fields})"
