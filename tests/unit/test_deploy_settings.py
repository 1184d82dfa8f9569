"""The Kubernetes deploy settings a prod stage insists on."""

import pytest

from chalicelib.config import DeploySettings
from chalicelib.errors import ConfigError

PROD_KUBE = {
    "INSTANODE_STAGE": "prod",
    "INSTANODE_DEPLOY_BACKEND": "kubernetes",
    "INSTANODE_KUBE_API_URL": "https://k8s.example.com",
}


def test_prod_refuses_a_cluster_whose_certificate_nothing_verifies() -> None:
    with pytest.raises(ConfigError, match="INSTANODE_KUBE_CA_DATA"):
        DeploySettings.from_env(PROD_KUBE)


@pytest.mark.parametrize(
    "trust", [{"INSTANODE_KUBE_CA_DATA": "UEVN"}, {"INSTANODE_KUBE_CA_FILE": "/etc/ca.pem"}]
)
def test_prod_takes_the_ca_as_data_or_as_a_file(trust: dict[str, str]) -> None:
    settings = DeploySettings.from_env(PROD_KUBE | trust)
    assert (settings.kube_ca_data, settings.kube_ca_file) == (
        trust.get("INSTANODE_KUBE_CA_DATA", ""),
        trust.get("INSTANODE_KUBE_CA_FILE", ""),
    )


def test_other_stages_may_skip_verification_for_test_servers() -> None:
    assert DeploySettings.from_env(PROD_KUBE | {"INSTANODE_STAGE": "dev"}).kube_ca_file == ""


def test_the_backend_is_named_as_terraform_passes_it() -> None:
    with pytest.raises(ConfigError, match="local or kubernetes"):
        DeploySettings.from_env({"INSTANODE_DEPLOY_BACKEND": "kube"})
