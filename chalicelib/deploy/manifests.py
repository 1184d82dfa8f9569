"""The Kubernetes objects of one app revision, as plain dicts (no client, no I/O).

Per app: a Deployment, a Service, a NetworkPolicy and (unless the app is private) an Ingress
named ``app_name(slug)``; per revision: a Secret with the app's env vars (``<name>-env-<rev>``,
so an older revision keeps its own env until it is replaced) and a kaniko build Job
(``<name>-build-<rev>``). The Job carries the revision's run settings in an annotation:
``observe`` rebuilds the Deployment (and decides on the Ingress) from it.

The NetworkPolicy admits to an app's pods, on its port only, the ingress controller's pods (a
public app) and the app pods of its own stack (a stack's service); nothing else in the cluster.
Egress stays open: apps call external APIs.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from chalicelib.config import DeploySettings
from chalicelib.deploy.backend import BuildSpec, PodLimits

Manifest = dict[str, Any]

BUILD_DEADLINE_SECONDS = 900
BUILD_TTL_SECONDS = 86400  # the Job (and its pod's log) stays a day for observe/logs
BUILD_CPU = ("500m", "2")  # request, limit
BUILD_MEMORY = ("1Gi", "4Gi")
BUILD_DISK = ("2Gi", "8Gi")
SERVICE_PORT = 80

NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
APP_ID = "instanode.dev/app-id"
REVISION = "instanode.dev/revision"
SPEC = "instanode.dev/spec"  # the Job's annotation: what observe needs to run the image
STACK = "instanode.dev/stack"  # on a stack service's objects and pods: the stack's slug
NAMESPACE_NAME = "kubernetes.io/metadata.name"  # set by the API server on every namespace

_MAX = 63
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def app_name(slug: str) -> str:
    """The Deployment/Service/Ingress name: a DNS-1035 label (starts with a letter)."""
    return _fit(slug, "")


def env_secret_name(slug: str, revision: int) -> str:
    return _fit(slug, f"-env-{revision}")


def tls_secret_name(slug: str) -> str:
    return _fit(slug, "-tls")


def job_name(slug: str, revision: int) -> str:
    return _fit(slug, f"-build-{revision}")


def image_of(registry: str, slug: str, revision: int) -> str:
    return f"{registry.rstrip('/')}/{app_name(slug)}:{revision}"


def host_of(slug: str, domain: str) -> str:
    return f"{slug}.{domain}"


def _fit(slug: str, suffix: str) -> str:
    """``slug + suffix`` as a DNS label of at most 63 characters; a long slug is cut and keeps
    a hash of the whole, so two long slugs with the same start get different names."""
    base = _NOT_DNS.sub("-", slug.lower()).strip("-") or "app"
    if not base[0].isalpha():
        base = "a-" + base
    if len(base) + len(suffix) <= _MAX:
        return base + suffix
    digest = hashlib.sha256(slug.encode()).hexdigest()[:8]
    keep = _MAX - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-')}-{digest}{suffix}"


def _labels(spec: BuildSpec, component: str) -> dict[str, str]:
    labels = {
        NAME: app_name(spec.slug),
        COMPONENT: component,
        MANAGED_BY: "instanode",
        APP_ID: spec.app_id,
        REVISION: str(spec.revision),
    }
    if spec.group is not None:
        labels[STACK] = _fit(spec.group, "")
    return labels


def selector(slug: str) -> dict[str, str]:
    """The app's pods (never its build pods): the Deployment's and the Service's selector."""
    return {NAME: app_name(slug), COMPONENT: "app"}


def group_selector(group: str) -> dict[str, str]:
    """The app pods (never the build pods) of every service of the stack ``group``."""
    return {STACK: _fit(group, ""), COMPONENT: "app"}


def _meta(name: str, ns: str, labels: dict[str, str]) -> Manifest:
    return {"name": name, "namespace": ns, "labels": dict(labels)}


def env_secret(spec: BuildSpec, settings: DeploySettings) -> Manifest:
    labels = _labels(spec, "env")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(
            env_secret_name(spec.slug, spec.revision), settings.kube_namespace, labels
        ),
        "type": "Opaque",
        "stringData": dict(spec.env),
    }


def spec_annotation(spec: BuildSpec) -> str:
    return json.dumps(
        {
            "app_id": spec.app_id,
            "port": spec.port,
            "cpu_millis": spec.limits.cpu_millis,
            "memory_mb": spec.limits.memory_mb,
            "public": spec.public,
            "group": spec.group,
        },
        sort_keys=True,
    )


def spec_from_annotation(slug: str, revision: int, text: str) -> BuildSpec:
    """The BuildSpec a Job was started with, minus what the app no longer needs (context, env)."""
    data = json.loads(text)
    return BuildSpec(
        app_id=str(data["app_id"]),
        slug=slug,
        revision=revision,
        bucket="",
        context_key="",
        port=int(data["port"]),
        limits=PodLimits(cpu_millis=int(data["cpu_millis"]), memory_mb=int(data["memory_mb"])),
        public=bool(data.get("public", True)),  # Jobs made before private apps were public
        group=data.get("group"),
    )


def kaniko_args(spec: BuildSpec, settings: DeploySettings) -> list[str]:
    return [
        f"--context=s3://{spec.bucket}/{spec.context_key}",
        "--dockerfile=Dockerfile",
        f"--destination={image_of(settings.registry, spec.slug, spec.revision)}",
        "--cache=false",  # no shared cache repo: one app's layers never reach another's build
        "--snapshot-mode=redo",
        "--log-format=text",
        "--verbosity=info",
    ]


def build_job(spec: BuildSpec, settings: DeploySettings) -> Manifest:
    labels = _labels(spec, "build")
    meta = _meta(job_name(spec.slug, spec.revision), settings.kube_namespace, labels)
    meta["annotations"] = {SPEC: spec_annotation(spec)}
    container = {
        "name": "kaniko",
        "image": settings.kaniko_image,
        "args": kaniko_args(spec, settings),
        "envFrom": [_build_credentials(settings)],
        "resources": {
            "requests": {"cpu": BUILD_CPU[0], "memory": BUILD_MEMORY[0]}
            | {"ephemeral-storage": BUILD_DISK[0]},
            "limits": {"cpu": BUILD_CPU[1], "memory": BUILD_MEMORY[1]}
            | {"ephemeral-storage": BUILD_DISK[1]},
        },
        "volumeMounts": [
            {"name": "registry-auth", "mountPath": "/kaniko/.docker", "readOnly": True}
        ],
        # kaniko unpacks base images and runs RUN steps as root inside its own container: it
        # needs root and the file-ownership capabilities, but neither privileged mode nor
        # privilege escalation.
        "securityContext": {
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "runAsUser": 0,
            "capabilities": {
                "drop": ["ALL"],
                "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL"],
            },
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod = _build_pod(container, settings)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": BUILD_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": BUILD_TTL_SECONDS,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    }


def _build_credentials(settings: DeploySettings) -> Manifest:
    """The AWS_* variables kaniko reads the context with: from the operator's Secret, which a
    build service account (its credentials from EKS Pod Identity or IRSA) makes optional."""
    ref: Manifest = {"name": settings.kube_build_aws_secret}
    if settings.kube_build_service_account:
        ref["optional"] = True
    return {"secretRef": ref}


def _build_pod(container: Manifest, settings: DeploySettings) -> Manifest:
    pod: Manifest = {
        "restartPolicy": "Never",
        # no API token in the pod (Pod Identity and IRSA project their own, AWS-only ones)
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [
            {
                "name": "registry-auth",
                "secret": {
                    "secretName": settings.kube_registry_auth_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        ],
    }
    if settings.kube_build_service_account:
        pod["serviceAccountName"] = settings.kube_build_service_account
    return pod


def _app_container(spec: BuildSpec, settings: DeploySettings) -> Manifest:
    cpu = f"{spec.limits.cpu_millis}m"
    memory = f"{spec.limits.memory_mb}Mi"
    caps: Manifest = {"drop": ["ALL"]}
    if spec.port < 1024:
        caps["add"] = ["NET_BIND_SERVICE"]  # the app listens on a privileged port
    return {
        "name": "app",
        "image": image_of(settings.registry, spec.slug, spec.revision),
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "envFrom": [{"secretRef": {"name": env_secret_name(spec.slug, spec.revision)}}],
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu, "memory": memory},
        },
        "readinessProbe": {
            "tcpSocket": {"port": spec.port},
            "initialDelaySeconds": 1,
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": {
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "capabilities": caps,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def deployment(spec: BuildSpec, settings: DeploySettings) -> Manifest:
    labels = _labels(spec, "app")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(app_name(spec.slug), settings.kube_namespace, labels),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": selector(spec.slug)},
            # the new revision takes over only once it is ready: the URL keeps answering
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [_app_container(spec, settings)],
                },
            },
        },
    }


def service(spec: BuildSpec, settings: DeploySettings) -> Manifest:
    labels = _labels(spec, "app")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(app_name(spec.slug), settings.kube_namespace, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(spec.slug),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": spec.port, "protocol": "TCP"}
            ],
        },
    }


def ingress(spec: BuildSpec, settings: DeploySettings) -> Manifest:
    labels = _labels(spec, "app")
    meta = _meta(app_name(spec.slug), settings.kube_namespace, labels)
    meta["annotations"] = {"cert-manager.io/cluster-issuer": settings.cluster_issuer}
    host = host_of(spec.slug, settings.domain)
    backend = {"service": {"name": app_name(spec.slug), "port": {"number": SERVICE_PORT}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": {
            "ingressClassName": settings.ingress_class,
            "tls": [{"hosts": [host], "secretName": tls_secret_name(spec.slug)}],
            "rules": [
                {
                    "host": host,
                    "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
                }
            ],
        },
    }


def network_policy(spec: BuildSpec, settings: DeploySettings) -> Manifest:
    """Ingress to the app's pods on its port: from its own stack's app pods (a stack's service)
    and from the ingress controller's namespace (a public app); a private app without a stack
    gets none. Egress is not restricted."""
    peers: list[Manifest] = []
    if spec.group is not None:
        peers.append({"podSelector": {"matchLabels": group_selector(spec.group)}})
    if spec.public:
        ingress_controller = {NAMESPACE_NAME: settings.ingress_namespace}
        peers.append({"namespaceSelector": {"matchLabels": ingress_controller}})
    rules = [{"from": peers, "ports": [{"protocol": "TCP", "port": spec.port}]}] if peers else []
    labels = _labels(spec, "app")
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(app_name(spec.slug), settings.kube_namespace, labels),
        "spec": {
            "podSelector": {"matchLabels": selector(spec.slug)},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }
