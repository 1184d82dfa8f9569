import base64
import json
import time

import jwt
import pytest

from chalicelib.tokens import UPGRADE_TTL_SECONDS, Signer

SECRET = "s" * 40
NOW = int(time.time())


def test_upgrade_token_round_trips_resource_and_owner() -> None:
    signer = Signer(SECRET)
    token = signer.upgrade_token("res_1", "fp:10.0.0.0/24", NOW)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["sub"] == "res_1" and claims["own"] == "fp:10.0.0.0/24"
    assert claims["exp"] - claims["iat"] == UPGRADE_TTL_SECONDS


def test_read_upgrade_token_rejects_other_key() -> None:
    token = Signer("o" * 40).upgrade_token("res_1", "fp:x", NOW)
    with pytest.raises(jwt.InvalidSignatureError):
        Signer(SECRET).read_upgrade_token(token)


def test_read_upgrade_token_rejects_alg_none() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = {
        "iss": "instanode",
        "typ": "upgrade",
        "sub": "res_1",
        "own": "x",
        "iat": NOW,
        "exp": NOW + 9**9,
    }
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidTokenError):
        Signer(SECRET).read_upgrade_token(f"{header}.{payload}.")


def test_read_upgrade_token_rejects_expired() -> None:
    token = Signer(SECRET).upgrade_token("res_1", "fp:x", NOW - UPGRADE_TTL_SECONDS - 10)
    with pytest.raises(jwt.ExpiredSignatureError):
        Signer(SECRET).read_upgrade_token(token)
