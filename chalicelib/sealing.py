"""Responses kept for idempotent replays hold credentials (connection URLs with passwords), so
they are stored sealed: AES-256-GCM under a key derived from the platform secret, bound to the
record's key. A copy of the table (a backup, an export, an operator's read) reveals nothing.
The same holds for the accounts table's secrets in flight (a CLI session's API token, an outbox
message carrying a sign-in link), each under its own derived key (``label``).

The cipher is libsodium's (PyNaCl, which ``nkeys`` needs anyway), imported on first use, not at
cold start. A seal is the 12-byte nonce, the ciphertext and its 16-byte tag: the bytes
``cryptography``'s ``AESGCM`` made before, so older records open. libsodium's AES-256-GCM needs
the CPU's AES instructions (AES-NI, or the ARMv8 crypto extensions: every Lambda CPU); PyNaCl
checks ``crypto_aead_aes256gcm_is_available()`` on each call and raises
``nacl.exceptions.UnavailableError`` on a CPU without them.

Rotation: a Sealer holds the current secret and the previous ones (``Settings.jwt_keys``). It
seals under the current one only and opens with each in turn, so records sealed before a
rotation open until their secret is dropped. Each key is ``HMAC-SHA256(secret, label)``, as it
always was: a record sealed under a secret opens wherever that secret is listed. Before a
previous secret is dropped, ``SealedColumn.reseal`` seals a table's long-lived values again
under the current one (``python -m chalicelib.admin reseal``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chalicelib.dynamo import Dynamo

log = logging.getLogger(__name__)

IDEMPOTENCY_LABEL = b"instanode/idempotency-response/v1"
NONCE_BYTES = 12
TAG_BYTES = 16
Keys = str | Sequence[str]  # one secret, or the current one then each previous one


def ordered_keys(keys: Keys) -> tuple[str, ...]:
    """``keys`` as a tuple, the current (signing, sealing) secret first."""
    ordered = (keys,) if isinstance(keys, str) else tuple(keys)
    if not ordered:
        raise ValueError("at least one secret is needed")
    return ordered


class Sealer:
    def __init__(self, keys: Keys, label: bytes = IDEMPOTENCY_LABEL) -> None:
        self._keys = tuple(
            hmac.new(k.encode(), label, hashlib.sha256).digest() for k in ordered_keys(keys)
        )

    def seal(self, plaintext: bytes, bound_to: str) -> bytes:
        from nacl.bindings import crypto_aead_aes256gcm_encrypt

        nonce = os.urandom(NONCE_BYTES)
        return nonce + crypto_aead_aes256gcm_encrypt(
            plaintext, bound_to.encode(), nonce, self._keys[0]
        )

    def open(self, sealed: bytes, bound_to: str) -> bytes:
        """The plaintext; ``nacl.exceptions.CryptoError`` if anything was altered, or it was
        sealed under no secret this Sealer holds."""
        return self._open(sealed, bound_to, self._keys)

    def reseal(self, sealed: bytes, bound_to: str) -> bytes | None:
        """``sealed`` sealed again under the current key, or None when it opens under that key
        already; ``CryptoError`` when no key opens it."""
        from nacl.exceptions import CryptoError

        with contextlib.suppress(CryptoError):
            self._open(sealed, bound_to, self._keys[:1])
            return None
        return self.seal(self._open(sealed, bound_to, self._keys[1:]), bound_to)

    @staticmethod
    def _open(sealed: bytes, bound_to: str, keys: Sequence[bytes]) -> bytes:
        from nacl.bindings import crypto_aead_aes256gcm_decrypt
        from nacl.exceptions import CryptoError

        if len(sealed) < NONCE_BYTES + TAG_BYTES:
            raise CryptoError("Too short to be a seal.")
        nonce, ciphertext, aad = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], bound_to.encode()
        for key in keys:
            with contextlib.suppress(CryptoError):
                return crypto_aead_aes256gcm_decrypt(ciphertext, aad, nonce, key)
        raise CryptoError("Altered, or sealed under none of these keys.")


@dataclass(frozen=True)
class ResealReport:
    """One table's re-seal: values sealed again, already under the current key, opened by no
    key (left as they are), and rewritten by someone else between the read and the write."""

    resealed: int = 0
    current: int = 0
    failed: int = 0
    changed: int = 0


@dataclass(frozen=True)
class SealedColumn:
    """``attr`` of each item of ``table``, sealed bound to the item's ``key_attr``."""

    db: Dynamo
    table: str
    key_attr: str
    attr: str
    sealer: Sealer

    def reseal(self) -> ResealReport:
        """Seal every value not already under the current key again under it, page by page.
        Each write holds only while the value is still the one read, so a concurrent update
        (sealed under the current key) is never overwritten."""
        items = self.db.scan(self.table, [self.key_attr, self.attr])
        outcomes = Counter(
            self._reseal(str(i[self.key_attr]), bytes(i[self.attr]))
            for i in items
            if self.attr in i
        )
        return ResealReport(**outcomes)

    def _reseal(self, key: str, old: bytes) -> str:
        """What became of one value: a ``ResealReport`` field name."""
        from nacl.exceptions import CryptoError

        try:
            new = self.sealer.reseal(old, key)
        except CryptoError:
            log.warning("%s %s: %s opens under no key, left as it is", self.table, key, self.attr)
            return "failed"
        if new is None:
            return "current"
        written = self.db.update_if(
            self.table,
            {self.key_attr: key},
            "SET #a = :new",
            "#a = :old",
            {":new": new, ":old": old},
            names={"#a": self.attr},
        )
        return "resealed" if written else "changed"
