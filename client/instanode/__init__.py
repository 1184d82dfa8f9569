"""instanode: SDK, CLI and MCP server for an instanode API.

``from instanode import Client, InstanodeError``. The names load on first use, so ``import
instanode`` (and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from instanode.client import Client
    from instanode.errors import InstanodeError
    from instanode.models import (
        Deployment,
        DeviceLogin,
        Presigned,
        Resource,
        Stack,
        WebhookRequest,
    )

_EXPORTS = {
    "Client": "instanode.client",
    "InstanodeError": "instanode.errors",
    "Resource": "instanode.models",
    "Presigned": "instanode.models",
    "WebhookRequest": "instanode.models",
    "Deployment": "instanode.models",
    "Stack": "instanode.models",
    "DeviceLogin": "instanode.models",
}

__all__ = [
    "Client",
    "Deployment",
    "DeviceLogin",
    "InstanodeError",
    "Presigned",
    "Resource",
    "Stack",
    "WebhookRequest",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'instanode' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
