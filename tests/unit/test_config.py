import json

import pytest

from chalicelib.config import Settings
from chalicelib.errors import ConfigError
from chalicelib.models import Kind

SECRET = "j" * 40
PG = [
    {"name": "pg1", "admin_url": "postgresql://a:b@h:1/postgres", "public_host": "db.example:5432"}
]


def test_from_env_requires_a_long_jwt_secret() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"INSTANODE_JWT_SECRET": "short"})


def test_from_env_vector_backends_default_to_postgres_ones() -> None:
    s = Settings.from_env(
        {"INSTANODE_JWT_SECRET": SECRET, "INSTANODE_POSTGRES_BACKENDS": json.dumps(PG)}
    )
    assert s.backends_for(Kind.VECTOR) == s.backends_for(Kind.POSTGRES)
    assert s.backends_for(Kind.POSTGRES)[0].internal_host == "db.example:5432"


def test_from_env_rejects_malformed_backends() -> None:
    for raw in ("not json", '{"a": 1}', '[{"name": "x"}]'):
        with pytest.raises(ConfigError):
            Settings.from_env({"INSTANODE_JWT_SECRET": SECRET, "INSTANODE_POSTGRES_BACKENDS": raw})


def test_backend_repr_hides_admin_url() -> None:
    s = Settings.from_env(
        {"INSTANODE_JWT_SECRET": SECRET, "INSTANODE_POSTGRES_BACKENDS": json.dumps(PG)}
    )
    assert "a:b@" not in repr(s.backends_for(Kind.POSTGRES)[0])


def test_from_env_rejects_bad_trusted_proxy() -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"INSTANODE_JWT_SECRET": SECRET, "INSTANODE_TRUSTED_PROXIES": "nope"})
