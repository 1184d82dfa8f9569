import pytest
from cryptography.exceptions import InvalidTag

from chalicelib.sealing import Sealer

SECRET = "s" * 40


def test_seal_round_trips_and_hides_the_plaintext() -> None:
    sealed = Sealer(SECRET).seal(b"postgres://u:hunter2@h/db", "key#1")
    assert b"hunter2" not in sealed
    assert Sealer(SECRET).open(sealed, "key#1") == b"postgres://u:hunter2@h/db"


def test_open_refuses_a_record_moved_to_another_key() -> None:
    sealed = Sealer(SECRET).seal(b"x", "key#1")
    with pytest.raises(InvalidTag):
        Sealer(SECRET).open(sealed, "key#2")


def test_open_refuses_tampered_or_foreign_ciphertext() -> None:
    sealed = bytearray(Sealer(SECRET).seal(b"payload", "k"))
    sealed[-1] ^= 1
    with pytest.raises(InvalidTag):
        Sealer(SECRET).open(bytes(sealed), "k")
    with pytest.raises(InvalidTag):
        Sealer("o" * 40).open(Sealer(SECRET).seal(b"payload", "k"), "k")
