"""Production settings come from one Secrets Manager JSON secret (moto in-process)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from chalicelib.config import Settings
from chalicelib.errors import ConfigError
from chalicelib.models import Kind

BACKENDS = [
    {
        "name": "rds1",
        "admin_url": "postgresql://admin:pw@rds:5432/postgres",
        "public_host": "db:5432",
    }
]


@pytest.fixture
def secret_arn(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sm = boto3.client("secretsmanager")
        value = {"INSTANODE_JWT_SECRET": "k" * 48, "INSTANODE_POSTGRES_BACKENDS": BACKENDS}
        yield sm.create_secret(Name="instanode/prod", SecretString=json.dumps(value))["ARN"]


def test_secret_keys_override_the_environment(secret_arn: str) -> None:
    settings = Settings.from_env(
        {"INSTANODE_SECRETS_ARN": secret_arn, "INSTANODE_JWT_SECRET": "from-env-but-short"}
    )
    assert settings.jwt_secret == "k" * 48
    assert settings.backends_for(Kind.POSTGRES)[0].name == "rds1"
    assert settings.backends_for(Kind.VECTOR)[0].public_host == "db:5432"


def test_secret_that_is_not_an_object_is_a_config_error(secret_arn: str) -> None:
    arn = boto3.client("secretsmanager").create_secret(Name="bad", SecretString="[1]")["ARN"]
    with pytest.raises(ConfigError):
        Settings.from_env({"INSTANODE_SECRETS_ARN": arn})
