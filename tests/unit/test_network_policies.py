"""Ingress policies of the ``ray`` namespace: valid NetworkPolicy objects, evaluated over sample pods."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import cdk8s  # noqa: E402
import kubernetes_validate  # noqa: E402

from charts.network_policies import RayNetworkPoliciesChart, ray_network_policies  # noqa: E402
from tools.boot import netpol  # noqa: E402

KUBERNETES_VERSION = "1.35"


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    app = cdk8s.App()
    chart = RayNetworkPoliciesChart(app, "ray-network-policies")
    return json.loads(json.dumps(chart.to_json()))


# -- sample pods -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)


def allowed(policies: list[Mapping[str, Any]], source: Pod, dest: Pod, port: int, protocol: str = "TCP") -> bool:
    """The first-boot model's NetworkPolicy semantics (tools/boot/netpol.py), over the sample pods."""
    ok, _ = netpol.flow_allowed(policies, netpol.Endpoint.pod(source.namespace, source.labels),
                                netpol.Endpoint.pod(dest.namespace, dest.labels), port, protocol)
    return ok


HEAD = Pod("ray", {"ray.io/cluster": "ray", "ray.io/node-type": "head", "ray.io/is-ray-node": "yes"})
WORKER = Pod("ray", {"ray.io/cluster": "ray", "ray.io/node-type": "worker", "ray.io/group": "spot"})
NOTEBOOK = Pod("jupyterhub", {"component": "singleuser-server", "app": "jupyterhub",
                              "app.kubernetes.io/name": "jupyterhub", "hub.jupyter.org/username": "ana"})
HUB = Pod("jupyterhub", {"component": "hub", "app": "jupyterhub"})
OPERATOR = Pod("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator",
                                  "app.kubernetes.io/instance": "kuberay-operator"})
DEFAULT_POD = Pod("default", {"app": "something"})
IMPOSTOR = Pod("default", {"component": "singleuser-server"})  # right labels, wrong namespace


# -- tests ----------------------------------------------------------------------------------------------


def test_objects_validate_strictly_against_the_kubernetes_schema(manifests):
    assert len(manifests) == 4
    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_strict_validation_catches_a_typo(manifests):
    bad = json.loads(json.dumps(manifests[2]))
    bad["spec"]["ingress"][0]["form"] = bad["spec"]["ingress"][0].pop("from")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_fixed_names_and_namespace(manifests):
    assert [m["metadata"]["name"] for m in manifests] == [
        "default-deny-ingress", "allow-same-namespace", "allow-notebooks-to-ray-head",
        "allow-kuberay-operator-to-ray-head"]
    assert {m["metadata"]["namespace"] for m in manifests} == {"ray"}
    assert all(m["spec"]["policyTypes"] == ["Ingress"] for m in manifests)


def test_default_deny_selects_every_pod(manifests):
    deny = manifests[0]["spec"]
    assert deny["podSelector"] == {} and not deny.get("ingress")


def test_no_ip_blocks(manifests):
    assert "ipBlock" not in json.dumps(manifests)


def test_cross_namespace_peers_pin_namespace_and_pods(manifests):
    for m in manifests[2:]:
        for rule in m["spec"]["ingress"]:
            for peer in rule["from"]:
                assert set(peer) == {"namespaceSelector", "podSelector"}
                assert set(peer["namespaceSelector"]["matchLabels"]) == {"kubernetes.io/metadata.name"}
                assert peer["podSelector"]["matchLabels"]


@pytest.mark.parametrize("port", [8265, 10001])
def test_notebook_reaches_the_head_jobs_api_and_client(manifests, port):
    assert allowed(manifests, NOTEBOOK, HEAD, port)


@pytest.mark.parametrize(
    "source, dest, port",
    [
        (NOTEBOOK, WORKER, 6379),   # notebooks never talk to workers
        (NOTEBOOK, HEAD, 6379),     # nor to GCS
        (NOTEBOOK, HEAD, 8000),
        (NOTEBOOK, WORKER, 8265),
        (DEFAULT_POD, HEAD, 8265),  # other namespaces are denied
        (DEFAULT_POD, WORKER, 6379),
        (IMPOSTOR, HEAD, 8265),     # notebook labels outside the jupyterhub namespace
        (HUB, HEAD, 8265),          # the hub itself is not a notebook
        (OPERATOR, HEAD, 6379),
        (OPERATOR, WORKER, 8265),
    ],
)
def test_other_ingress_into_ray_is_denied(manifests, source, dest, port):
    assert not allowed(manifests, source, dest, port)


def test_kuberay_operator_reaches_the_head_dashboard(manifests):
    assert allowed(manifests, OPERATOR, HEAD, 8265)
    wrong_ns_operator = Pod("default", dict(OPERATOR.labels))
    assert not allowed(manifests, wrong_ns_operator, HEAD, 8265)


@pytest.mark.parametrize("port", [6379, 8265, 10001, 12345, 52365])
def test_ray_internal_traffic_is_allowed(manifests, port):
    assert allowed(manifests, WORKER, HEAD, port)
    assert allowed(manifests, HEAD, WORKER, port)
    assert allowed(manifests, WORKER, WORKER, port)


def test_evaluator_semantics_without_policies():
    assert allowed([], DEFAULT_POD, HEAD, 8265)  # sanity: no policy, no isolation


def test_function_and_chart_agree(manifests):
    assert manifests == json.loads(json.dumps(ray_network_policies()))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ray_namespace": "Ray"}, "ray_namespace"),
        ({"jupyterhub_namespace": "ray"}, "must differ"),
        ({"notebook_pod_labels": {}}, "at least one label"),
        ({"operator_pod_labels": {"bad key!": "x"}}, "not a valid label key"),
        ({"dashboard_port": 70000}, "dashboard_port"),
        ({"dashboard_port": 10001}, "must differ"),
        ({"ray_cluster_name": ""}, "ray_cluster_name"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ray_network_policies(**kwargs)
