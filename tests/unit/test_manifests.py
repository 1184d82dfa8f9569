"""The Kubernetes manifests of a revision: valid against the 1.30 schemas (kubernetes-validate,
strict: unknown fields fail; it does not check enum values or name formats, so those are asserted
here), and locked down where it matters."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import kubernetes_validate
import pytest

from chalicelib.config import DeploySettings
from chalicelib.deploy import manifests as m
from chalicelib.deploy.backend import BuildSpec, PodLimits
from chalicelib.deploy.kube_policies import build_network_policy
from chalicelib.errors import ConfigError

SETTINGS = DeploySettings(
    backend="kubernetes",
    domain="deployment.example.dev",
    bucket="instanode-deploys",
    state_dir="/nonexistent",
    port_range=(31000, 31999),
    kube_api_url="https://kube.example.dev:6443",
    kube_token="t",
    kube_namespace="instanode-apps",
    kube_ca_file="",
    registry="registry.example.dev/instanode",
    kaniko_image="gcr.io/kaniko-project/executor:v1.23.2",
    ingress_class="nginx",
    cluster_issuer="letsencrypt",
)
SPEC = BuildSpec(
    app_id="app_0123abcd",
    slug="expense-tracker-7f3a",
    revision=3,
    bucket="instanode-deploys",
    context_key="deploys/app_0123abcd/3.tar.gz",
    port=8080,
    limits=PodLimits(cpu_millis=250, memory_mb=256),
    env={"DATABASE_URL": "postgres://u:p@db/x"},
)
LONG_SLUG = "a" * 55 + "-1234abcd"  # 64 characters: a 64-char name plus nothing to spare

Builder = Callable[[BuildSpec, DeploySettings], m.Manifest]
BUILDERS: list[Builder] = [
    m.env_secret,
    m.build_job,
    m.deployment,
    m.service,
    m.ingress,
    m.network_policy,
]
STACK_SPEC = BuildSpec(**{**SPEC.__dict__, "slug": "shop-a1b2c3-api", "group": "shop-a1b2c3"})
INGRESS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
}
STACK_PEER = {
    "podSelector": {
        "matchLabels": {"instanode.dev/stack": "shop-a1b2c3", "app.kubernetes.io/component": "app"}
    }
}
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def pod_spec(manifest: m.Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def container(manifest: m.Manifest) -> dict[str, Any]:
    found: dict[str, Any] = pod_spec(manifest)["containers"][0]
    return found


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("slug", [SPEC.slug, LONG_SLUG, "9lives"])
def test_manifest_validates_against_kubernetes_1_30(build: Builder, slug: str) -> None:
    kubernetes_validate.validate(
        build(BuildSpec(**{**SPEC.__dict__, "slug": slug}), SETTINGS), "1.30", strict=True
    )


@pytest.mark.parametrize("build", BUILDERS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("public", [True, False])
def test_stack_service_manifest_validates_against_kubernetes_1_30(
    build: Builder, public: bool
) -> None:
    spec = BuildSpec(**{**STACK_SPEC.__dict__, "public": public})
    kubernetes_validate.validate(build(spec, SETTINGS), "1.30", strict=True)


def test_validate_rejects_an_unknown_field() -> None:
    bad = m.deployment(SPEC, SETTINGS)
    container(bad)["privilegd"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.30", strict=True)


@pytest.mark.parametrize("slug", [LONG_SLUG, LONG_SLUG[:-1] + "e", "9lives"])
def test_names_are_dns_labels_of_at_most_63(slug: str) -> None:
    names = [
        m.app_name(slug),
        m.env_secret_name(slug, 123456),
        m.tls_secret_name(slug),
        m.job_name(slug, 123456),
    ]
    for name in names:
        assert len(name) <= 63 and DNS_1123_LABEL.match(name), name
    assert DNS_1035_LABEL.match(m.app_name(slug))  # a Service name must start with a letter


def test_long_slugs_with_the_same_start_get_different_names() -> None:
    other = LONG_SLUG[:-1] + "e"
    assert m.app_name(LONG_SLUG) != m.app_name(other)
    assert m.job_name(LONG_SLUG, 1) != m.job_name(other, 1)


def test_short_slug_names_are_the_slug() -> None:
    assert m.app_name(SPEC.slug) == "expense-tracker-7f3a"
    assert m.job_name(SPEC.slug, 3) == "expense-tracker-7f3a-build-3"
    assert m.tls_secret_name(SPEC.slug) == "expense-tracker-7f3a-tls"


def test_every_object_is_in_the_configured_namespace() -> None:
    for build in BUILDERS:
        assert build(SPEC, SETTINGS)["metadata"]["namespace"] == "instanode-apps"


def test_build_job_runs_kaniko_once_with_a_deadline() -> None:
    job = m.build_job(SPEC, SETTINGS)
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 900
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert container(job)["args"][:3] == [
        "--context=s3://instanode-deploys/deploys/app_0123abcd/3.tar.gz",
        "--dockerfile=Dockerfile",
        "--destination=registry.example.dev/instanode/expense-tracker-7f3a:3",
    ]


def test_build_job_is_not_privileged_and_has_no_token() -> None:
    job = m.build_job(SPEC, SETTINGS)
    security = container(job)["securityContext"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert not {"SYS_ADMIN", "NET_RAW", "NET_ADMIN"} & set(security["capabilities"]["add"])
    assert pod_spec(job)["automountServiceAccountToken"] is False
    assert pod_spec(job)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(container(job)["resources"]["limits"]) == {"cpu", "memory", "ephemeral-storage"}


def test_build_job_reads_aws_credentials_from_the_operator_secret() -> None:
    job = m.build_job(SPEC, SETTINGS)
    assert container(job)["envFrom"] == [{"secretRef": {"name": SETTINGS.kube_build_aws_secret}}]
    assert "env" not in container(job)  # no customer secret reaches the build
    assert "serviceAccountName" not in pod_spec(job)  # the namespace's default: no AWS role


def test_build_job_with_a_service_account_takes_its_aws_identity() -> None:
    """EKS Pod Identity or IRSA: the role Terraform makes (infra/terraform/builds.tf), so the
    AWS key Secret may be absent; still no API token in the pod."""
    settings = replace(SETTINGS, kube_build_service_account="instanode-build")
    job = m.build_job(SPEC, settings)
    assert pod_spec(job)["serviceAccountName"] == "instanode-build"
    assert pod_spec(job)["automountServiceAccountToken"] is False
    ref = {"name": SETTINGS.kube_build_aws_secret, "optional": True}
    assert container(job)["envFrom"] == [{"secretRef": ref}]


@pytest.mark.parametrize("public", [True, False])
def test_build_job_annotation_round_trips_the_run_settings(public: bool) -> None:
    spec = BuildSpec(**{**SPEC.__dict__, "public": public})
    text = m.build_job(spec, SETTINGS)["metadata"]["annotations"][m.SPEC]
    back = m.spec_from_annotation(spec.slug, spec.revision, text)
    assert (back.app_id, back.port, back.limits) == (spec.app_id, spec.port, spec.limits)
    assert back.public is public
    assert back.group is None
    assert "postgres://" not in text


def test_build_job_annotation_round_trips_the_stack() -> None:
    text = m.build_job(STACK_SPEC, SETTINGS)["metadata"]["annotations"][m.SPEC]
    assert m.spec_from_annotation(STACK_SPEC.slug, 3, text).group == "shop-a1b2c3"


def test_a_build_job_annotated_before_private_apps_is_public() -> None:
    text = '{"app_id": "app_1", "cpu_millis": 250, "memory_mb": 256, "port": 8080}'
    back = m.spec_from_annotation(SPEC.slug, 1, text)
    assert (back.public, back.group) == (True, None)


def test_env_secret_holds_the_env_vars() -> None:
    secret = m.env_secret(SPEC, SETTINGS)
    assert secret["type"] == "Opaque"
    assert secret["stringData"] == {"DATABASE_URL": "postgres://u:p@db/x"}


def test_deployment_container_is_locked_down() -> None:
    dep = m.deployment(SPEC, SETTINGS)
    security = container(dep)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod_spec(dep)["automountServiceAccountToken"] is False
    assert pod_spec(dep)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_deployment_on_a_low_port_may_bind_it_only() -> None:
    dep = m.deployment(BuildSpec(**{**SPEC.__dict__, "port": 80}), SETTINGS)
    assert container(dep)["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["NET_BIND_SERVICE"],
    }


def test_deployment_runs_the_revision_with_its_limits() -> None:
    dep = m.deployment(SPEC, SETTINGS)
    app = container(dep)
    assert dep["spec"]["replicas"] == 1
    assert app["image"] == "registry.example.dev/instanode/expense-tracker-7f3a:3"
    assert app["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert app["envFrom"] == [{"secretRef": {"name": "expense-tracker-7f3a-env-3"}}]
    assert app["resources"]["limits"] == {"cpu": "250m", "memory": "256Mi"}
    assert app["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert app["readinessProbe"]["tcpSocket"] == {"port": 8080}
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels[m.NAME] == "expense-tracker-7f3a"
    assert labels[m.APP_ID] == "app_0123abcd"
    assert labels[m.REVISION] == "3"
    assert m.STACK not in labels


def test_stack_service_pods_carry_the_stack_label() -> None:
    labels = m.deployment(STACK_SPEC, SETTINGS)["spec"]["template"]["metadata"]["labels"]
    assert labels[m.STACK] == "shop-a1b2c3"
    assert all(labels[k] == v for k, v in m.group_selector("shop-a1b2c3").items())
    build = m.build_job(STACK_SPEC, SETTINGS)["spec"]["template"]["metadata"]["labels"]
    assert not all(build.get(k) == v for k, v in m.group_selector("shop-a1b2c3").items())


def test_deployment_selector_excludes_build_pods_and_survives_redeploys() -> None:
    dep = m.deployment(SPEC, SETTINGS)
    job = m.build_job(SPEC, SETTINGS)
    chosen = dep["spec"]["selector"]["matchLabels"]
    assert m.REVISION not in chosen
    build_labels = job["spec"]["template"]["metadata"]["labels"]
    assert not all(build_labels.get(k) == v for k, v in chosen.items())


def test_service_maps_port_80_to_the_app_port() -> None:
    svc = m.service(SPEC, SETTINGS)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    ]
    assert (
        svc["spec"]["selector"] == m.deployment(SPEC, SETTINGS)["spec"]["selector"]["matchLabels"]
    )


def test_ingress_serves_the_slug_host_over_tls() -> None:
    ing = m.ingress(SPEC, SETTINGS)
    host = "expense-tracker-7f3a.deployment.example.dev"
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert ing["spec"]["tls"] == [{"hosts": [host], "secretName": "expense-tracker-7f3a-tls"}]
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == host
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "expense-tracker-7f3a",
        "port": {"number": 80},
    }


def ingress_from(policy: m.Manifest) -> list[list[dict[str, Any]]]:
    """Each ingress rule's peers; every rule admits the app's port only."""
    rules: list[dict[str, Any]] = policy["spec"]["ingress"]
    assert all(rule["ports"] == [{"protocol": "TCP", "port": 8080}] for rule in rules)
    return [rule["from"] for rule in rules]


def test_network_policy_selects_the_app_pods_and_leaves_egress_open() -> None:
    policy = m.network_policy(SPEC, SETTINGS)
    assert policy["metadata"]["name"] == "expense-tracker-7f3a"
    assert policy["spec"]["podSelector"] == {"matchLabels": m.selector(SPEC.slug)}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert "egress" not in policy["spec"]


def test_network_policy_of_a_public_app_admits_the_ingress_controller_only() -> None:
    assert ingress_from(m.network_policy(SPEC, SETTINGS)) == [[INGRESS_PEER]]


def test_network_policy_of_a_public_stack_service_admits_its_stack_too() -> None:
    assert ingress_from(m.network_policy(STACK_SPEC, SETTINGS)) == [[STACK_PEER, INGRESS_PEER]]


def test_network_policy_of_a_private_stack_service_admits_its_stack_only() -> None:
    private = BuildSpec(**{**STACK_SPEC.__dict__, "public": False})
    assert ingress_from(m.network_policy(private, SETTINGS)) == [[STACK_PEER]]


def test_network_policy_of_a_private_app_without_a_stack_admits_nothing() -> None:
    private = BuildSpec(**{**SPEC.__dict__, "public": False})
    assert m.network_policy(private, SETTINGS)["spec"]["ingress"] == []


def test_build_network_policy_validates_and_guards_build_pods_only() -> None:
    policy = build_network_policy(SETTINGS)
    kubernetes_validate.validate(policy, "1.30", strict=True)
    selected = policy["spec"]["podSelector"]["matchLabels"].items()
    build_pod = m.build_job(SPEC, SETTINGS)["spec"]["template"]["metadata"]["labels"]
    app_pod = m.deployment(SPEC, SETTINGS)["spec"]["template"]["metadata"]["labels"]
    assert selected <= build_pod.items() and not selected <= app_pod.items()


def test_build_network_policy_admits_nothing_and_lets_out_dns_and_public_addresses() -> None:
    spec = build_network_policy(SETTINGS)["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []
    dns, outside = spec["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    block = outside["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0" and "ports" not in outside
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
        block["except"]
    )


def test_build_egress_except_is_the_operators_list() -> None:
    env = {"INSTANODE_KUBE_BUILD_EGRESS_EXCEPT": "10.0.0.0/8, 169.254.0.0/16"}
    assert DeploySettings.from_env(env).kube_build_egress_except == ("10.0.0.0/8", "169.254.0.0/16")
    with pytest.raises(ConfigError, match="INSTANODE_KUBE_BUILD_EGRESS_EXCEPT"):
        DeploySettings.from_env({"INSTANODE_KUBE_BUILD_EGRESS_EXCEPT": "10.0.0.0/8,nope"})
