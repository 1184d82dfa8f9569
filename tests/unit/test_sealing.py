import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # moto's dependency, dev only
from nacl.exceptions import CryptoError

from chalicelib.sealing import IDEMPOTENCY_LABEL, NONCE_BYTES, Sealer

SECRET = "s" * 40
# sealed by the cryptography-based Sealer (AESGCM) with the nonce 00..0b: a record stored before
# the switch to libsodium
OLD_SEAL = bytes.fromhex(
    "000102030405060708090a0b80a9537de08216e0efcac782ec7225b5888d95ab0ed4d51dcb17b0c618568c58"
    "0044f67cb73857ca82"
)


def test_seal_round_trips_and_hides_the_plaintext() -> None:
    sealed = Sealer(SECRET).seal(b"postgres://u:hunter2@h/db", "key#1")
    assert b"hunter2" not in sealed
    assert Sealer(SECRET).open(sealed, "key#1") == b"postgres://u:hunter2@h/db"


def test_open_refuses_a_record_moved_to_another_key() -> None:
    sealed = Sealer(SECRET).seal(b"x", "key#1")
    with pytest.raises(CryptoError):
        Sealer(SECRET).open(sealed, "key#2")


def test_open_refuses_tampered_truncated_or_foreign_ciphertext() -> None:
    sealed = bytearray(Sealer(SECRET).seal(b"payload", "k"))
    sealed[-1] ^= 1
    with pytest.raises(CryptoError):
        Sealer(SECRET).open(bytes(sealed), "k")
    for cut in (27, 12, 5):  # shorter than a nonce and a tag
        with pytest.raises(CryptoError):
            Sealer(SECRET).open(bytes(sealed[:cut]), "k")
    with pytest.raises(CryptoError):
        Sealer("o" * 40).open(Sealer(SECRET).seal(b"payload", "k"), "k")


def test_a_record_sealed_before_libsodium_opens() -> None:
    assert Sealer(SECRET).open(OLD_SEAL, "key#1") == b"postgres://u:hunter2@h/db"


def test_seals_are_cryptography_aesgcm_both_ways() -> None:
    key = hmac.new(SECRET.encode(), IDEMPOTENCY_LABEL, hashlib.sha256).digest()
    plaintext = b"postgres://u:hunter2@h/db" * 40

    ours = Sealer(SECRET).seal(plaintext, "key#1")
    nonce, ciphertext = ours[:NONCE_BYTES], ours[NONCE_BYTES:]
    assert AESGCM(key).decrypt(nonce, ciphertext, b"key#1") == plaintext

    theirs = nonce + AESGCM(key).encrypt(nonce, plaintext, b"key#1")
    assert theirs == ours  # the same bytes for the same nonce
    assert Sealer(SECRET).open(theirs, "key#1") == plaintext
