import base64
import json
import time

import jwt
import pytest

from chalicelib.tokens import SESSION_TTL_SECONDS, UPGRADE_TTL_SECONDS, InvalidTokenError, Signer

SECRET = "s" * 40
NOW = int(time.time())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(body: dict[str, object]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(body).encode())}."


def test_upgrade_token_round_trips_resource_and_owner() -> None:
    signer = Signer(SECRET)
    token = signer.upgrade_token("res_1", "fp:10.0.0.0/24", NOW)
    claims = signer.read_upgrade_token(token)
    assert (claims.resource_id, claims.owner) == ("res_1", "fp:10.0.0.0/24")
    assert claims.expires_at - claims.issued_at == UPGRADE_TTL_SECONDS


def test_read_upgrade_token_rejects_other_key() -> None:
    token = Signer("o" * 40).upgrade_token("res_1", "fp:x", NOW)
    with pytest.raises(InvalidTokenError):
        Signer(SECRET).read_upgrade_token(token)


def test_read_upgrade_token_rejects_alg_none() -> None:
    body = {"iss": "instanode", "typ": "upgrade", "sub": "res_1", "own": "x", "iat": NOW}
    with pytest.raises(InvalidTokenError):
        Signer(SECRET).read_upgrade_token(_unsigned({**body, "exp": NOW + 9**9}))


def test_read_upgrade_token_rejects_expired() -> None:
    token = Signer(SECRET).upgrade_token("res_1", "fp:x", NOW - UPGRADE_TTL_SECONDS - 10)
    with pytest.raises(InvalidTokenError):
        Signer(SECRET).read_upgrade_token(token)


def test_read_upgrade_token_judges_expiry_on_given_clock() -> None:
    token = Signer(SECRET).upgrade_token("res_1", "fp:x", NOW)
    with pytest.raises(InvalidTokenError):
        Signer(SECRET).read_upgrade_token(token, now=NOW + UPGRADE_TTL_SECONDS)


def test_read_upgrade_token_rejects_tampered_payload() -> None:
    header, _, signature = Signer(SECRET).upgrade_token("res_1", "fp:x", NOW).split(".")
    body = {"iss": "instanode", "typ": "upgrade", "sub": "res_2", "own": "fp:x"}
    forged = _b64(json.dumps({**body, "iat": NOW, "exp": NOW + 60}).encode())
    with pytest.raises(InvalidTokenError):
        Signer(SECRET).read_upgrade_token(f"{header}.{forged}.{signature}")


def test_session_token_round_trips_user_team_and_jti() -> None:
    signer = Signer(SECRET)
    claims = signer.read_session_token(signer.session_token("usr_1", "team_1", "a@b.io", NOW))
    assert (claims.user_id, claims.team_id, claims.email) == ("usr_1", "team_1", "a@b.io")
    assert claims.expires_at - claims.issued_at == SESSION_TTL_SECONDS and claims.jti


def test_read_session_token_rejects_upgrade_token() -> None:
    signer = Signer(SECRET)
    with pytest.raises(InvalidTokenError):
        signer.read_session_token(signer.upgrade_token("res_1", "fp:x", NOW))


def test_read_upgrade_token_rejects_session_token() -> None:
    signer = Signer(SECRET)
    with pytest.raises(InvalidTokenError):
        signer.read_upgrade_token(signer.session_token("usr_1", "team_1", "a@b.io", NOW))


@pytest.mark.filterwarnings("ignore:The HMAC key")  # HS512 wants 64 bytes: beside the point
def test_read_session_token_rejects_other_algorithm() -> None:
    body = {"iss": "instanode", "typ": "session", "sub": "u", "team": "t", "jti": "j", "iat": NOW}
    token = jwt.encode({**body, "exp": NOW + 60}, SECRET, algorithm="HS512")
    with pytest.raises(InvalidTokenError):
        Signer(SECRET).read_session_token(token)


# -- rotation: the current key signs, every listed key verifies -----------------------------------
OLD = "a" * 40
NEW = "b" * 40


def test_read_token_accepts_one_signed_under_a_previous_key() -> None:
    upgrade = Signer(OLD).upgrade_token("res_1", "fp:x", NOW)
    session = Signer(OLD).session_token("usr_1", "team_1", "a@b.io", NOW)
    rotated = Signer((NEW, OLD))
    assert rotated.read_upgrade_token(upgrade).resource_id == "res_1"
    assert rotated.read_session_token(session).user_id == "usr_1"


def test_read_token_refuses_a_key_that_was_dropped() -> None:
    token = Signer(OLD).session_token("usr_1", "team_1", "a@b.io", NOW)
    with pytest.raises(InvalidTokenError, match="Signature verification failed"):
        Signer((NEW, "c" * 40)).read_session_token(token)


def test_new_tokens_are_signed_with_the_current_key_only() -> None:
    token = Signer((NEW, OLD)).upgrade_token("res_1", "fp:x", NOW)
    assert Signer(NEW).read_upgrade_token(token).resource_id == "res_1"
    with pytest.raises(InvalidTokenError):
        Signer(OLD).read_upgrade_token(token)


def test_read_token_under_a_previous_key_still_checks_expiry_and_type() -> None:
    old = Signer(OLD)
    rotated = Signer((NEW, OLD))
    expired = old.upgrade_token("res_1", "fp:x", NOW - UPGRADE_TTL_SECONDS - 10)
    with pytest.raises(InvalidTokenError, match="expired"):
        rotated.read_upgrade_token(expired)
    with pytest.raises(InvalidTokenError, match="not a session token"):
        rotated.read_session_token(old.upgrade_token("res_1", "fp:x", NOW))


def test_signer_needs_a_key() -> None:
    with pytest.raises(ValueError):
        Signer(())
