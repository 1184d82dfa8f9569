"""The env vars of apps and stacks, as the spec allows them: keys ``[A-Z_][A-Z0-9_]*``, string
values, 64 KiB in all."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chalicelib import errors

ENV_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")
ENV_MAX_BYTES = 64 * 1024


def valid_env(env: Mapping[str, Any], allow_empty: bool = False) -> dict[str, str]:
    """``env`` checked (``allow_empty``: an empty value, a deletion in a PATCH, is fine)."""
    bad = [k for k in env if not isinstance(k, str) or not ENV_KEY.fullmatch(k)]
    if bad:
        raise errors.InvalidEnvKeyError(
            f"Env var names must match [A-Z_][A-Z0-9_]*: {', '.join(map(str, bad[:5]))}.",
            agent_action="Rename the variables to upper case letters, digits and '_'.",
        )
    if not all(isinstance(v, str) and (v or allow_empty) for v in env.values()):
        raise errors.BadRequestError("Env var values must be non-empty strings.")
    check_size(env)
    return dict(env)


def check_size(*envs: Mapping[str, str]) -> None:
    """Refuse envs that together exceed the 64 KiB cap."""
    size = sum(len(k) + len(v) for env in envs for k, v in env.items())
    if size > ENV_MAX_BYTES:
        raise errors.BadRequestError(f"Env vars total {size} bytes; the cap is 64 KiB.")
