"""Build contexts too big for a request body (Lambda takes 6 MB, base64 makes binaries a third
bigger): ``POST /deploy/upload-url`` hands out a presigned PUT to a key under the team's own
``uploads/<hash of owner>/`` prefix, and ``POST /deploy/new {"upload_key"}`` builds what was put
there (up to the tier's tarball cap). The object is deleted once an app was made from it; the
bucket's lifecycle rule removes the ones never used (infra/terraform/s3.tf)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from chalicelib import errors
from chalicelib.accounts import secret_hash
from chalicelib.deploy.contexts import ContextStore
from chalicelib.service import iso
from chalicelib.tiers import Tier

UPLOAD_URL_SECONDS = 15 * 60


class Uploads:
    def __init__(
        self, contexts: ContextStore, bucket: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._contexts = contexts
        self._bucket = bucket
        self._clock = clock

    def url_for(self, owner: str, tier: Tier) -> dict[str, Any]:
        key = f"{_prefix(owner)}{secrets.token_hex(12)}.tar.gz"
        now = int(self._clock())
        url = self._contexts.upload_url(self._bucket, key, UPLOAD_URL_SECONDS)
        return {
            "ok": True,
            "upload_url": url,
            "upload_key": key,
            "method": "PUT",
            "expires_at": iso(now + UPLOAD_URL_SECONDS),
            "max_bytes": tier.deploys.tarball_bytes,
            "next": "PUT the tarball to upload_url, then POST /deploy/new with JSON "
            '{"name": ..., "upload_key": ...}',
        }

    def read(self, owner: str, tier: Tier, key: Any) -> bytes:
        """The context ``owner`` uploaded to ``key``, one of its own upload keys."""
        if not isinstance(key, str) or not key.startswith(_prefix(owner)):
            raise errors.BadRequestError(
                "'upload_key' must be a key POST /deploy/upload-url gave this team.",
                agent_action="Call POST /deploy/upload-url, PUT the tarball, then deploy.",
            )
        size = self._contexts.size(self._bucket, key)
        if size is None:
            raise errors.BadRequestError(
                "Nothing was uploaded to this upload_key (or it expired, or was deployed).",
                agent_action="PUT the tarball to the upload_url first.",
            )
        if size > tier.deploys.tarball_bytes:
            raise errors.TarballTooLargeError(
                f"The upload is {size} bytes; the {tier.name} tier takes "
                f"{tier.deploys.tarball_mb} MB.",
                agent_action="Slim the tarball (leave out node_modules, .git, build outputs).",
            )
        return self._contexts.get(self._bucket, key)

    def discard(self, key: str) -> None:
        """Delete an upload an app was made from (the app has a copy of its own)."""
        self._contexts.delete(self._bucket, key)


def _prefix(owner: str) -> str:
    return f"uploads/{secret_hash(owner)[:16]}/"
