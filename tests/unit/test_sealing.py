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


# -- rotation: the current key seals, every listed key opens --------------------------------------
NEW = "n" * 40


def test_open_takes_a_record_sealed_under_a_previous_key() -> None:
    sealed = Sealer(SECRET).seal(b"payload", "k")
    assert Sealer((NEW, SECRET)).open(sealed, "k") == b"payload"
    assert Sealer((NEW, SECRET)).open(OLD_SEAL, "key#1") == b"postgres://u:hunter2@h/db"


def test_open_refuses_a_record_whose_key_was_dropped_or_that_was_altered() -> None:
    sealed = Sealer(SECRET).seal(b"payload", "k")
    with pytest.raises(CryptoError):
        Sealer(NEW).open(sealed, "k")
    with pytest.raises(CryptoError):
        Sealer((NEW, SECRET)).open(sealed, "k2")
    with pytest.raises(CryptoError):
        Sealer((NEW, SECRET)).open(sealed[:-1] + bytes([sealed[-1] ^ 1]), "k")


def test_new_seals_use_the_current_key_derived_as_before() -> None:
    sealed = Sealer((NEW, SECRET)).seal(b"payload", "k")
    with pytest.raises(CryptoError):
        Sealer(SECRET).open(sealed, "k")
    key = hmac.new(NEW.encode(), IDEMPOTENCY_LABEL, hashlib.sha256).digest()
    assert AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], b"k") == b"payload"


def test_sealer_needs_a_key() -> None:
    with pytest.raises(ValueError):
        Sealer([])


# -- reseal: a previous key's seal again under the current key ------------------------------------
def test_reseal_moves_a_previous_keys_seal_to_the_current_key() -> None:
    resealed = Sealer((NEW, SECRET)).reseal(Sealer(SECRET).seal(b"payload", "k"), "k")
    assert resealed is not None
    assert Sealer(NEW).open(resealed, "k") == b"payload"
    with pytest.raises(CryptoError):
        Sealer(NEW).open(resealed, "k2")  # still bound to its record


def test_reseal_leaves_a_current_seal_alone() -> None:
    sealer = Sealer((NEW, SECRET))
    assert sealer.reseal(sealer.seal(b"payload", "k"), "k") is None


def test_reseal_refuses_what_no_key_opens() -> None:
    foreign = Sealer("o" * 40).seal(b"payload", "k")
    for sealer in (Sealer((NEW, SECRET)), Sealer(NEW)):
        with pytest.raises(CryptoError):
            sealer.reseal(foreign, "k")
    with pytest.raises(CryptoError):
        Sealer((NEW, SECRET)).reseal(Sealer(SECRET).seal(b"payload", "k"), "k2")
