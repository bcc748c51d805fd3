"""The KubeRay operator's Helm values (stacks/ray_stack.py ``kuberay_operator_values``), issue #16: a namespaced
operator watching the Ray namespaces only, checked against the vendored 1.7.0 values.yaml (schemas/kuberay/).

How the chart uses the keys (ray-project/kuberay helm-chart/kuberay-operator/templates at the 1.7 line):
``role.yaml`` / ``rolebinding.yaml`` render the ClusterRole and its binding only without
``singleNamespaceInstall``; ``multiple_namespaces_role.yaml`` / ``multiple_namespaces_rolebinding.yaml`` render a
Role + RoleBinding in every namespace of ``watchNamespace`` (default: the release namespace) when ``rbacEnable``,
``singleNamespaceInstall`` and ``crNamespacedRbacEnable`` are all true; ``deployment.yaml`` passes
``--watch-namespace`` with the list joined by commas. Those templates are mirrored below (the repository has no
Helm binary to render them), so the test says which objects the values produce.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest
import yaml

from stacks.ray_stack import kuberay_operator_values
from tests.support.helm_values import unknown_paths

VALUES_FILE = pathlib.Path(__file__).resolve().parents[2] / "schemas" / "kuberay" / "values.yaml"
NAMESPACES = ["ray-team-a", "ray-team-b"]
RELEASE_NAMESPACE = "kuberay-system"
# Keys whose values are Kubernetes objects or lists, not the chart's own tree.
_FREE_FORM = frozenset({"nodeSelector", "tolerations", "resources", "watchNamespace"})


@pytest.fixture(scope="module")
def upstream_text() -> str:
    return VALUES_FILE.read_text()


@pytest.fixture(scope="module")
def upstream(upstream_text) -> dict[str, Any]:
    return yaml.safe_load(upstream_text)


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return kuberay_operator_values(NAMESPACES)


def test_every_key_exists_upstream(values, upstream, upstream_text):
    """Every key is in values.yaml, but watchNamespace, which values.yaml documents as a commented-out example."""
    assert unknown_paths(values, upstream, _FREE_FORM) == ["watchNamespace"]
    assert re.search(r"^# watchNamespace:\n#   - n1\n#   - n2$", upstream_text, re.MULTILINE), \
        "values.yaml no longer documents watchNamespace: check the chart's templates before relying on it"


def test_the_operator_is_namespaced_and_watches_the_ray_namespaces(values, upstream):
    assert values["singleNamespaceInstall"] is True and upstream["singleNamespaceInstall"] is False
    assert values["crNamespacedRbacEnable"] is True
    assert upstream["rbacEnable"] is True and "rbacEnable" not in values  # the chart's default, kept
    assert values["watchNamespace"] == NAMESPACES


def test_placement_and_resources_are_kept(values):
    assert values["nodeSelector"] == {"dynamic-factory/node-role": "system"}
    assert values["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert values["tolerations"]


# ------------------------------------------------------------------ what the chart renders from them


def _merged(values: dict[str, Any], upstream: dict[str, Any]) -> dict[str, Any]:
    return {**upstream, **values}


def rbac_objects(v: dict[str, Any], release_namespace: str) -> list[tuple[str, str | None]]:
    """(kind, namespace) of the operator's RBAC objects, as the 1.7 templates decide (module docstring)."""
    out: list[tuple[str, str | None]] = []
    if v["rbacEnable"] and not v["singleNamespaceInstall"]:
        out += [("ClusterRole", None), ("ClusterRoleBinding", None)]
    if v["rbacEnable"] and v["singleNamespaceInstall"] and v["crNamespacedRbacEnable"]:
        for ns in v.get("watchNamespace") or [release_namespace]:
            out += [("Role", ns), ("RoleBinding", ns)]
    return out


def watch_namespace_arg(v: dict[str, Any], release_namespace: str) -> list[str]:
    """The ``--watch-namespace`` argument deployment.yaml renders (configuration.enabled off)."""
    if v.get("singleNamespaceInstall") and not v.get("watchNamespace"):
        return ["--watch-namespace", release_namespace]
    if v.get("watchNamespace"):
        return ["--watch-namespace", ",".join(v["watchNamespace"])]
    return []


def test_no_cluster_wide_rbac_and_a_role_in_each_ray_namespace(values, upstream):
    merged = _merged(values, upstream)
    assert merged["configuration"]["enabled"] is False  # else the watch list would go through the ConfigMap
    objects = rbac_objects(merged, RELEASE_NAMESPACE)
    assert ("ClusterRole", None) not in objects and ("ClusterRoleBinding", None) not in objects
    assert sorted(objects) == sorted([(k, ns) for ns in NAMESPACES for k in ("Role", "RoleBinding")])
    assert watch_namespace_arg(merged, RELEASE_NAMESPACE) == ["--watch-namespace", ",".join(NAMESPACES)]
    # The chart's defaults, for contrast: cluster-wide.
    assert rbac_objects(upstream, RELEASE_NAMESPACE) == [("ClusterRole", None), ("ClusterRoleBinding", None)]
    assert watch_namespace_arg(upstream, RELEASE_NAMESPACE) == []


@pytest.mark.parametrize("bad", ["ray", [], ["ray", "ray"], [""], None])
def test_bad_watch_namespaces(bad):
    with pytest.raises((ValueError, TypeError)):
        kuberay_operator_values(bad)
