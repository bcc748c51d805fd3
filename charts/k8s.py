"""Small helpers shared by the cdk8s charts."""

from __future__ import annotations

from typing import Any, Mapping

import cdk8s
from constructs import Construct


def api_object(scope: Construct, construct_id: str, manifest: Mapping[str, Any]) -> cdk8s.ApiObject:
    """An ApiObject from a plain manifest dict (apiVersion, kind, metadata + any top-level fields).

    The Python binding of ``ApiObject`` only takes apiVersion/kind/metadata, so the other
    top-level fields (``spec``, ``data``, ``provisioner`` ...) are added as JSON patches.
    """
    body = dict(manifest)
    metadata = dict(body.pop("metadata", {}))
    obj = cdk8s.ApiObject(
        scope,
        construct_id,
        api_version=body.pop("apiVersion"),
        kind=body.pop("kind"),
        metadata=cdk8s.ApiObjectMetadata(**_snake_metadata(metadata)),
    )
    for key, value in body.items():
        obj.add_json_patch(cdk8s.JsonPatch.add(f"/{key}", value))
    return obj


def _snake_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    allowed = {"name": "name", "namespace": "namespace", "labels": "labels", "annotations": "annotations"}
    unknown = set(metadata) - set(allowed)
    if unknown:
        raise ValueError(f"unsupported metadata keys: {sorted(unknown)}")
    return {allowed[k]: v for k, v in metadata.items()}


# ------------------------------------------------------------------ NetworkPolicy pieces (networking.k8s.io/v1)

# Set by the API server on every namespace (Kubernetes >= 1.22); namespace owners cannot change it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DNS_PORTS = ({"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53})


def namespace_peer(namespace: str, pod_labels: Mapping[str, str]) -> dict[str, Any]:
    """Pods with ``pod_labels`` in ``namespace`` (one peer entry: namespace AND pod selector)."""
    return {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}},
        "podSelector": {"matchLabels": dict(pod_labels)},
    }


def tcp_ports(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def namespace_with(chart: cdk8s.Chart, namespace: Mapping[str, Any],
                   manifests: list[Mapping[str, Any]]) -> cdk8s.ApiObject:
    """A Namespace object and ``manifests`` in it, each applied after it (a namespaced object is refused until its
    namespace exists; cdk8s orders objects only by explicit dependencies). Returns the Namespace object."""
    namespace_object = api_object(chart, "Namespace", namespace)
    for manifest in manifests:
        obj = api_object(chart, f"{manifest['kind']}-{manifest['metadata']['name']}", manifest)
        obj.add_dependency(namespace_object)
    return namespace_object


def cdk8s_app() -> cdk8s.App:
    """A cdk8s App for charts that CDK applies to the cluster (the App itself writes nothing)."""
    return cdk8s.App(yaml_output_type=cdk8s.YamlOutputType.FILE_PER_APP)


# Docker Hub's names: a reference without a registry host means Docker Hub (the container runtime prefixes
# docker.io/, and library/ for one-part names).
DOCKER_HUB_REGISTRIES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})


def image_registry(reference: str) -> str:
    """The registry host a node pulls ``reference`` from, following the distribution reference grammar: the first
    path component is a registry only if it contains a ``.`` or a ``:`` or is ``localhost``; otherwise the image
    comes from Docker Hub (returned as ``docker.io``)."""
    first, sep, _ = reference.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return "docker.io" if first in DOCKER_HUB_REGISTRIES else first
    return "docker.io"


def secret_writer_rbac(scope: Construct, *, namespace: str, service_account: str,
                       secret_name: str) -> tuple[cdk8s.ApiObject, cdk8s.ApiObject, cdk8s.ApiObject]:
    """ServiceAccount, Role and RoleBinding (all named ``service_account``) of a Job that creates one Secret:
    ``create`` on Secrets (RBAC cannot limit create by name, the name is in the body) and ``get`` on that Secret
    only. Construct ids ``sa``, ``role``, ``binding``."""
    sa = api_object(scope, "sa", {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": service_account, "namespace": namespace},
    })
    role = api_object(scope, "role", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": service_account, "namespace": namespace},
        "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret_name], "verbs": ["get"]},
        ],
    })
    binding = api_object(scope, "binding", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": service_account, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": service_account},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    })
    return sa, role, binding
