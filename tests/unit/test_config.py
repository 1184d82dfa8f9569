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


def test_from_env_reads_promo_codes_case_insensitively() -> None:
    raw = json.dumps({"earlybird": {"discount_percent": 20, "valid_until": "2027-01-01"}})
    s = Settings.from_env({"INSTANODE_JWT_SECRET": SECRET, "INSTANODE_PROMO_CODES": raw})
    promo = s.promo_codes["EARLYBIRD"]
    assert (promo.discount_percent, promo.valid_until) == (20, "2027-01-01")


@pytest.mark.parametrize(
    "raw",
    [
        '["EARLYBIRD"]',
        '{"X": 5}',
        '{"X": {"discount_percent": 101}}',
        '{"X": {"discount_percent": "a"}}',
    ],
)
def test_from_env_rejects_malformed_promo_codes(raw: str) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"INSTANODE_JWT_SECRET": SECRET, "INSTANODE_PROMO_CODES": raw})


@pytest.mark.parametrize("raw", ["nope", '["plan"]', '{"plan_1": 3}'])
def test_from_env_rejects_malformed_billing_plans(raw: str) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({"INSTANODE_JWT_SECRET": SECRET, "INSTANODE_BILLING_PLANS": raw})


def test_from_env_marks_cookies_secure_only_on_https() -> None:
    def base(url: str) -> bool:
        env = {"INSTANODE_JWT_SECRET": SECRET, "INSTANODE_PUBLIC_BASE_URL": url}
        return Settings.from_env(env).secure_cookies

    assert base("https://api.example.com") and not base("http://127.0.0.1:8000")


def test_from_env_reads_the_kaniko_secret_names() -> None:
    env = {
        "INSTANODE_JWT_SECRET": SECRET,
        "INSTANODE_KUBE_BUILD_AWS_SECRET": "ops-build-aws",
        "INSTANODE_KUBE_REGISTRY_AUTH_SECRET": "ops-registry",
    }
    deploy = Settings.from_env(env).deploy
    assert (deploy.kube_build_aws_secret, deploy.kube_registry_auth_secret) == (
        "ops-build-aws",
        "ops-registry",
    )


def test_from_env_reads_the_ingress_namespace_with_a_default() -> None:
    env = {"INSTANODE_JWT_SECRET": SECRET}
    assert Settings.from_env(env).deploy.ingress_namespace == "ingress-nginx"
    env["INSTANODE_INGRESS_NAMESPACE"] = "traefik"
    assert Settings.from_env(env).deploy.ingress_namespace == "traefik"


def test_from_env_defaults_the_kaniko_secret_names() -> None:
    deploy = Settings.from_env({"INSTANODE_JWT_SECRET": SECRET}).deploy
    assert (deploy.kube_build_aws_secret, deploy.kube_registry_auth_secret) == (
        "instanode-build-aws",
        "instanode-registry-auth",
    )


# -- INSTANODE_JWT_PREVIOUS_SECRETS ---------------------------------------------------------------
def _with_previous(raw: str) -> Settings:
    return Settings.from_env(
        {"INSTANODE_JWT_SECRET": SECRET, "INSTANODE_JWT_PREVIOUS_SECRETS": raw}
    )


def test_jwt_keys_are_the_current_secret_then_each_previous_one() -> None:
    old, older = "o" * 32, "p" * 40
    assert _with_previous(json.dumps([old, older])).jwt_keys == (SECRET, old, older)
    assert Settings.from_env({"INSTANODE_JWT_SECRET": SECRET}).jwt_keys == (SECRET,)
    assert _with_previous("").jwt_keys == (SECRET,)


def test_jwt_keys_drop_duplicates_and_the_current_secret() -> None:
    old = "o" * 32
    assert _with_previous(json.dumps([old, SECRET, old])).jwt_keys == (SECRET, old)


@pytest.mark.parametrize(
    "raw", ['["' + "o" * 31 + '"]', "[42]", '"' + "o" * 40 + '"', "o" * 40 + "," + "p" * 40]
)
def test_from_env_rejects_short_or_malformed_previous_secrets(raw: str) -> None:
    with pytest.raises(ConfigError, match="INSTANODE_JWT_PREVIOUS_SECRETS") as caught:
        _with_previous(raw)
    assert "o" * 31 not in str(caught.value)  # the message never carries a secret


def test_settings_repr_hides_the_jwt_secrets() -> None:
    shown = repr(_with_previous(json.dumps(["o" * 32])))
    assert SECRET not in shown and "o" * 32 not in shown
