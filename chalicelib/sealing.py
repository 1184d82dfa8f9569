"""Responses kept for idempotent replays hold credentials (connection URLs with passwords), so
they are stored sealed: AES-256-GCM under a key derived from the platform secret, bound to the
record's key. A copy of the table (a backup, an export, an operator's read) reveals nothing.
The same holds for the accounts table's secrets in flight (a CLI session's API token, an outbox
message carrying a sign-in link), each under its own derived key (``label``).

``cryptography`` is imported on first use, not at cold start.
"""

from __future__ import annotations

import hashlib
import hmac
import os

IDEMPOTENCY_LABEL = b"instanode/idempotency-response/v1"
NONCE_BYTES = 12


class Sealer:
    def __init__(self, secret: str, label: bytes = IDEMPOTENCY_LABEL) -> None:
        self._key = hmac.new(secret.encode(), label, hashlib.sha256).digest()

    def seal(self, plaintext: bytes, bound_to: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self._key).encrypt(nonce, plaintext, bound_to.encode())

    def open(self, sealed: bytes, bound_to: str) -> bytes:
        """The plaintext; ``cryptography.exceptions.InvalidTag`` if anything was altered."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        return AESGCM(self._key).decrypt(nonce, ciphertext, bound_to.encode())
