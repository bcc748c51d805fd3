"""The parts of the first-boot model, each against known cases: Pod Security, scheduling, policies, the table."""

from __future__ import annotations

import pytest

import versions
from charts.karpenter_nodes import INSTANCE_TYPES
from tools.boot import admission, netpol
from tools.boot.scheduling import allocatable, reserved_cpu_millicores, tolerates
from tools.boot.workloads import TABLE, cpu_millicores, load_table, memory_mib, pod_requests, resolve

# ------------------------------------------------------------------ Pod Security

RESTRICTED_OK = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "app", "securityContext": {"allowPrivilegeEscalation": False,
                                                        "capabilities": {"drop": ["ALL"]}}}],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


def test_restricted_pod_passes_every_level():
    for level in admission.LEVELS:
        assert admission.violations(level, RESTRICTED_OK) == []


@pytest.mark.parametrize("spec, baseline_ok", [
    ({"containers": [{"name": "x", "securityContext": {"privileged": True}}]}, False),
    ({"hostNetwork": True, "containers": [{"name": "x"}]}, False),
    ({"containers": [{"name": "x"}], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, False),
    ({"containers": [{"name": "x", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]}, False),
    ({"initContainers": [{"name": "i", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
      "containers": [{"name": "x"}]}, False),
    ({"containers": [{"name": "x", "ports": [{"containerPort": 80, "hostPort": 80}]}]}, False),
    ({"containers": [{"name": "x", "securityContext": {"capabilities": {"add": ["CHOWN"]}}}]}, True),
    ({"containers": [{"name": "x", "securityContext": {"runAsUser": 0}}]}, True),  # root is baseline-legal
])
def test_baseline_and_restricted(spec, baseline_ok):
    assert (admission.violations("baseline", spec) == []) is baseline_ok
    assert admission.violations("restricted", spec) != []
    assert admission.violations("privileged", spec) == []


def test_namespace_without_enforce_label_is_privileged():
    assert admission.namespace_level(None) == "privileged"
    assert admission.namespace_level({"metadata": {"labels": {admission.ENFORCE_LABEL: "baseline"}}}) == "baseline"


# ------------------------------------------------------------------ scheduling


@pytest.mark.parametrize("toleration, ok", [
    ({"operator": "Exists"}, True),
    ({"key": "CriticalAddonsOnly", "operator": "Exists"}, True),
    ({"key": "CriticalAddonsOnly", "operator": "Exists", "effect": "NoExecute"}, False),
    ({"key": "CriticalAddonsOnly", "operator": "Equal", "value": "true", "effect": "NoSchedule"}, True),
    ({"key": "CriticalAddonsOnly", "value": "false"}, False),
    ({"key": "other", "operator": "Exists"}, False),
])
def test_toleration_semantics(toleration, ok):
    assert tolerates([toleration], {"key": "CriticalAddonsOnly", "value": "true", "effect": "NoSchedule"}) is ok


def test_eks_kubelet_reservation():
    # 6 % of the first core, 1 % of the second, 0.5 % of the 3rd and 4th, 0.25 % beyond.
    assert reserved_cpu_millicores(2) == 70
    assert reserved_cpu_millicores(4) == 80
    assert reserved_cpu_millicores(8) == 90
    cpu, mem = allocatable(INSTANCE_TYPES["t3a.large"], max_pods=35)
    assert cpu == 1930
    # 8 GiB less the VM overhead estimate, 11 MiB x 35 pods + 255 MiB, 100 MiB eviction threshold.
    assert mem == int(8192 * 0.925 - (11 * 35 + 255) - 100)


def test_quantities():
    assert cpu_millicores("250m") == 250 and cpu_millicores(2) == 2000 and cpu_millicores("0.5") == 500
    assert memory_mib("512Mi") == 512 and memory_mib("1Gi") == 1024 and memory_mib("1G") == 954
    spec = {"containers": [{"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                           {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "2"}}}]}
    # Limits stand in for missing requests; the largest init container counts when larger than the sum.
    assert pod_requests(spec) == (2000, 1088)


def test_table_values_resolve_from_our_values_else_default():
    spec = {"value": "hubble.relay.tolerations", "default": []}
    assert resolve(spec, {"hubble": {"relay": {"tolerations": [{"operator": "Exists"}]}}}) == [{"operator": "Exists"}]
    assert resolve(spec, {}) == []
    assert resolve("literal", {}) == "literal"


# ------------------------------------------------------------------ network policies (Cilium semantics)

POD_A = netpol.Endpoint.pod("a", {"app": "a"})
POD_B = netpol.Endpoint.pod("b", {"app": "b"})


def _policy(ns, selector, types, **rules):
    return {"metadata": {"name": "p", "namespace": ns}, "spec": {"podSelector": selector, "policyTypes": types, **rules}}


def test_unselected_pods_are_open_and_selected_ones_need_a_rule():
    assert netpol.flow_allowed([], POD_A, POD_B, 80)[0]
    deny = _policy("b", {}, ["Ingress"], ingress=[])
    assert not netpol.flow_allowed([deny], POD_A, POD_B, 80)[0]
    allow = _policy("b", {}, ["Ingress"], ingress=[{"from": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "a"}}, "podSelector": {"matchLabels": {"app": "a"}}}],
        "ports": [{"port": 80}]}])
    assert netpol.flow_allowed([deny, allow], POD_A, POD_B, 80)[0]
    assert not netpol.flow_allowed([deny, allow], POD_A, POD_B, 81)[0]


def test_ip_blocks_never_match_pods_or_the_api_server_under_cilium():
    egress = _policy("a", {}, ["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])
    assert not netpol.flow_allowed([egress], POD_A, POD_B, 80)[0]
    assert not netpol.flow_allowed([egress], POD_A, netpol.Endpoint(entity="kube-apiserver"), 443)[0]
    assert netpol.flow_allowed([egress], POD_A, netpol.Endpoint(entity="world"), 443)[0]
    open_443 = _policy("a", {}, ["Egress"], egress=[{"ports": [{"port": 443}]}])
    assert netpol.flow_allowed([open_443], POD_A, netpol.Endpoint(entity="kube-apiserver"), 443)[0]


# ------------------------------------------------------------------ the reviewed table


def test_table_covers_every_pinned_chart_at_its_version_and_cites_sources():
    table = load_table()
    for chart, (_, version) in versions.HELM_CHARTS.items():
        entry = table["releases"].get(chart)
        assert entry is not None, f"{TABLE.name} has no entry for the pinned chart {chart}"
        assert str(entry["version"]) == version, chart
        for w in entry["workloads"]:
            assert w.get("source"), f"{chart}/{w['name']} names no upstream source"
    for addon in versions.EKS_ADDONS:
        entry = table["addons"].get(addon)
        assert entry is not None, addon
        for w in entry["workloads"]:
            assert w.get("source") or entry.get("source"), f"{addon}/{w['name']} names no upstream source"


# ------------------------------------------------------------------ the table's reader: ports, containers, monitors


def test_conditions_any_all_and_in():
    from tools.boot.workloads import condition
    values = {"a": {"on": True, "mode": "x"}}
    assert condition({"any": [{"value": "a.off", "default": False}, {"value": "a.on", "default": False}]}, values)
    assert not condition({"all": [{"value": "a.on", "default": False}, {"value": "a.off", "default": False}]}, values)
    assert condition({"value": "a.mode", "default": "y", "in": ["x"]}, values)
    assert condition({"value": "a.missing", "default": True, "in": [True]}, values)


def test_table_containers_ports_and_claims_read_from_values():
    from tools.boot.workloads import _from_table
    entry = {
        "name": "p", "kind": "StatefulSet", "role": "prometheus",
        "security": {"run_as_non_root": {"value": "sc.nonRoot", "default": True}, "seccomp": "RuntimeDefault",
                     "allow_privilege_escalation": False, "capabilities_drop_all": True},
        "containers": [
            {"name": "main", "requests": {"value": "res", "default": {}},
             "ports": [{"name": {"value": "portName", "default": "http-web"}, "port": 9090},
                       {"name": "tls", "port": 10250, "enabled": {"value": "tls", "default": False}}]},
            {"name": "side", "requests": {"cpu": "10m"}, "enabled": {"value": "side", "default": True}},
        ],
        "init_containers": [{"name": "root-init", "requests": {}, "security": {"run_as_user": 0, "run_as_non_root": False}}],
        "volume_types": ["secret", "persistentVolumeClaim"],
        "claims": [{"name": "db", "storage_class": {"value": "sc.class", "default": None}}],
    }
    w = _from_table(entry, {"res": {"cpu": "100m", "memory": "1Gi"}, "sc": {"class": "fast"}},
                    namespace="m", origin="t", creator=("s", "r"), waits=True)
    assert [c["name"] for c in w.pod_spec["containers"]] == ["main", "side"]
    assert w.named_ports() == {"http-web": 9090} and w.requests == (110, 1024)
    assert w.claims == ({"name": "db", "storage_class": "fast", "size": None},) and w.role == "prometheus"
    assert w.waits  # helm_waits unset: Helm waits for it
    assert admission.violations("baseline", w.pod_spec) == []
    assert admission.violations("restricted", w.pod_spec) == [
        "container 'root-init' runAsNonRoot not true", "container 'root-init' runAsUser 0"]
    off = _from_table({**entry, "helm_waits": False}, {"side": False, "tls": True, "sc": {"nonRoot": False}},
                      namespace="m", origin="t", creator=("s", "r"), waits=True)
    assert [c["name"] for c in off.pod_spec["containers"]] == ["main"] and not off.waits
    assert off.named_ports() == {"http-web": 9090, "tls": 10250} and off.claims[0]["storage_class"] is None
    assert any("runAsNonRoot" in v for v in admission.violations("restricted", off.pod_spec))


def test_monitor_namespaces_follow_the_crd():
    from tools.boot.workloads import _monitor_from_object
    def monitor(spec):
        return _monitor_from_object({"kind": "PodMonitor", "metadata": {"name": "m", "namespace": "mon"},
                                     "spec": {"selector": {}, "podMetricsEndpoints": [{"port": "x"}], **spec}}, ("s", "r"))
    assert monitor({}).namespaces == ("mon",)  # no namespaceSelector: the monitor's own namespace
    assert monitor({"namespaceSelector": {"any": True}}).namespaces is None
    assert monitor({"namespaceSelector": {"matchNames": ["a", "b"]}}).namespaces == ("a", "b")
    assert monitor({}).endpoints == ("x",)


def test_the_metrics_release_is_tabled_with_sources_for_its_services_and_monitors():
    entry = load_table()["releases"]["kube-prometheus-stack"]
    assert {w["role"] for w in entry["workloads"] if w.get("role")} == {"operator", "prometheus", "grafana",
                                                                          "kube-state-metrics"}
    for item in [*entry["services"], *entry["monitors"], *entry["value_checks"]]:
        assert item.get("source"), item.get("name")
    assert "ea930baeebeba39f56d6b44e351f23b2a072a600" in entry["verification"]
