"""The NetworkPolicy every kaniko build pod of the namespace runs under, as a plain dict: the
Kubernetes side of the local backend's build network (``chalicelib.deploy.firewall``).

A build pod admits no connection, and may open only DNS (to the cluster's resolver) and
addresses outside ``DeploySettings.kube_build_egress_except`` (the private and link-local
ranges by default): the package registries, S3 for its context and the image registry, but
no pod, Service or data server of the cluster, nor the cloud's metadata endpoint. An operator
whose registry has a private address narrows that list. Enforced only by a CNI that implements
NetworkPolicy (Calico, Cilium, ...).
"""

from __future__ import annotations

from chalicelib.config import DeploySettings
from chalicelib.deploy.manifests import COMPONENT, MANAGED_BY, Manifest

BUILDS_POLICY = "instanode-builds"
DNS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def build_network_policy(settings: DeploySettings) -> Manifest:
    builds = {COMPONENT: "build", MANAGED_BY: "instanode"}
    resolver = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    outside = {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(settings.kube_build_egress_except)}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": BUILDS_POLICY,
            "namespace": settings.kube_namespace,
            "labels": {MANAGED_BY: "instanode"},
        },
        "spec": {
            "podSelector": {"matchLabels": builds},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [{"to": [resolver], "ports": DNS}, {"to": [outside]}],
        },
    }
