"""Metrics (issue #14, charts/metrics.py) against the upstream files it is written for.

* The ``kube-prometheus-stack`` release's values: every key path exists in the chart's values.yaml
  (schemas/kube-prometheus-stack/, 88.5.3); the ``grafana.*`` and ``kube-state-metrics.*`` subtrees may also use
  the keys of the subcharts' own values.yaml (schemas/grafana/, schemas/kube-state-metrics/). Where those come
  from, and how far they are from the pinned subchart versions: schemas/PROVENANCE.md.
* The PodMonitors/ServiceMonitors the platform applies: strictly valid against the vendored CRDs (v1) and
  labelled the way the chart's Prometheus selects them.
* The ``monitoring`` namespace's CiliumNetworkPolicies (vendored Cilium CRD) and NetworkPolicies (the Kubernetes
  1.35 OpenAPI schema, as tests/unit/test_network_policies.py checks them).
* Grafana's access settings, Prometheus's retention and volume, and where every pod of the release runs.
"""

from __future__ import annotations

import copy
import pathlib
import re
from typing import Any, Mapping

import pytest
import yaml

from charts import metrics as mx
from charts.storage import DEFAULT_STORAGE_CLASS
from stacks.cluster_stack import SYSTEM_NODE_LABEL, SYSTEM_TOLERATION
from tests.support.cel_rules import CrdCelRules
from tests.support.helm_values import known_paths, set_paths
from tests.support.k8s_schema import CrdValidator

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "schemas"
KPS = SCHEMAS / "kube-prometheus-stack"
CILIUM_CRD = SCHEMAS / "cilium" / "ciliumnetworkpolicies.yaml"
KUBERNETES_VERSION = "1.35"

# Keys whose values are not the charts' own key trees, so the walk stops there (their contents are checked by the
# Kubernetes API or by the program that reads them, not by any values.yaml):
#   nodeSelector, tolerations, resources - Kubernetes objects (label map, Toleration list, ResourceRequirements)
#     copied verbatim into the pod specs (prometheus.yaml, the grafana chart's _pod.tpl, the deployments);
#   grafana.ini - Grafana's own configuration, rendered section by section into grafana.ini by the grafana chart
#     (its values.yaml lists only a few example sections; every Grafana setting is valid here);
#   storageSpec - the operator's StorageSpec (emptyDir / volumeClaimTemplate), copied verbatim into the
#     Prometheus object's spec.storage.
# Deliberately NOT free-form: sidecar, persistence, rbac, serviceAccount, admissionWebhooks, prometheusSpec and
# the other maps that are the charts' own trees, so a misspelt key there fails.
FREE_FORM = frozenset({"nodeSelector", "tolerations", "resources", "grafana.ini", "storageSpec"})

# The subcharts, by the key of the parent's values they are configured under (Chart.yaml dependencies).
SUBCHARTS = {
    "grafana": SCHEMAS / "grafana" / "values.yaml",
    "kube-state-metrics": SCHEMAS / "kube-state-metrics" / "values.yaml",
}

SYSTEM_NODE_SELECTOR = dict([SYSTEM_NODE_LABEL])


def _load(path: pathlib.Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def chart_values() -> dict[str, Any]:
    return _load(KPS / "values.yaml")


@pytest.fixture(scope="module")
def known(chart_values) -> set[tuple]:
    """Every key path Helm accepts for this release: the parent chart's, and under each subchart's key the
    subchart's own (Helm hands ``<subchart>.*`` to the subchart; the parent's templates read some of the same
    subtree, e.g. grafana.defaultDashboardsEnabled or grafana.sidecar.datasources.defaultDatasourceEnabled)."""
    paths = set(known_paths(chart_values))
    for key, values_file in SUBCHARTS.items():
        paths.add((key,))
        paths |= set(known_paths(_load(values_file), (key,)))
    return paths


def unknown(values: Mapping[str, Any], known_set: set[tuple]) -> list[str]:
    return [".".join(p) for p in set_paths(values, FREE_FORM) if p not in known_set]


def _release(platform) -> Any:
    releases = {r.properties.get("Chart"): r for r in platform.assembly.helm_releases().values()}
    assert mx.RELEASE in releases, sorted(releases)
    return releases[mx.RELEASE]


def _values(platform) -> dict[str, Any]:
    return _release(platform).values


def _merge(base: Any, over: Any) -> Any:
    """Helm's coalescing of user values over chart defaults (maps merge, everything else replaces)."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over if over is not None else base


def _effective(values: Mapping[str, Any], chart_values: Mapping[str, Any]) -> dict[str, Any]:
    """The values each template sees: subchart defaults < parent defaults < ours."""
    merged = _merge(chart_values, values)
    for key, values_file in SUBCHARTS.items():
        merged[key] = _merge(_load(values_file), merged.get(key) or {})
    return merged


def _get(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def direct_values(domain: str | None) -> dict[str, Any]:
    return mx.MetricsValues(
        node_selector=SYSTEM_NODE_SELECTOR,
        tolerations=(SYSTEM_TOLERATION,),
        storage_class=DEFAULT_STORAGE_CLASS,
        access=mx.GrafanaAccess(domain=domain),
    ).to_values()


ACCESS_MODES = {"port-forward": None, "domain": "hub.example.com"}


# --------------------------------------------------------------------------------------- values vs values.yaml


def test_provenance_says_how_far_the_subchart_files_are_from_the_pinned_versions():
    """The release's chart pins grafana 12.11.1 and kube-state-metrics 8.4.0. The vendored subchart values are
    the nearest stored copies, not those releases: schemas/PROVENANCE.md must say so until they are re-vendored."""
    chart = _load(KPS / "Chart.yaml")
    assert chart["name"] == mx.RELEASE and chart["version"] == "88.5.3"
    deps = {d["name"]: d for d in chart["dependencies"]}
    assert deps["grafana"]["version"] == "12.11.1"
    assert deps["grafana"]["repository"] == "https://grafana-community.github.io/helm-charts"
    assert deps["kube-state-metrics"]["version"] == "8.4.0"
    provenance = (SCHEMAS / "PROVENANCE.md").read_text()
    grafana_chart = _load(SCHEMAS / "grafana" / "Chart.yaml")
    assert grafana_chart["name"] == "grafana"
    if grafana_chart["version"] != deps["grafana"]["version"]:
        assert f"`version: {grafana_chart['version']}`" in provenance
        assert f"**Not the {deps['grafana']['version']} files.**" in provenance
    if not (SCHEMAS / "kube-state-metrics" / "Chart.yaml").exists():
        ksm = deps["kube-state-metrics"]["version"]
        assert f"**Not verified to be the {ksm} file, and no Chart.yaml.**" in provenance
    for values_file in SUBCHARTS.values():
        assert isinstance(_load(values_file), dict)


def test_the_synthesized_release_sets_only_known_keys(any_platform, known):
    assert unknown(_values(any_platform), known) == []


@pytest.mark.parametrize("mode", sorted(ACCESS_MODES))
def test_the_values_builder_sets_only_known_keys(mode, known):
    assert unknown(direct_values(ACCESS_MODES[mode]), known) == []


@pytest.mark.parametrize("where, mutate", [
    ("top level", lambda v: v.update(prometheusOperater={"enabled": True})),
    ("prometheusSpec", lambda v: v["prometheus"]["prometheusSpec"].update(retentionSizee="1GB")),
    ("grafana subchart", lambda v: v["grafana"]["sidecar"]["dashboards"].update(lable="x")),
    ("grafana persistence", lambda v: v["grafana"]["persistence"].update(enable=False)),
    ("kube-state-metrics subchart", lambda v: v["kube-state-metrics"].update(metricLabelsAllowList=[])),
    ("grafana key at top level", lambda v: v.update(sidecar={})),
    ("a subchart key under the wrong subchart", lambda v: v["kube-state-metrics"].update(sidecar={})),
])
def test_a_made_up_key_fails(where, mutate, known):
    values = copy.deepcopy(direct_values(None))
    mutate(values)
    assert unknown(values, known) != [], where


def test_free_form_maps_are_not_descended_into_but_their_keys_are_checked(known):
    """A key we set inside grafana.ini is Grafana's own (any section), but grafana.ini itself must exist."""
    values = {"grafana": {"grafana.ini": {"any_section": {"any_key": 1}}},
              "prometheus": {"prometheusSpec": {"nodeSelector": {"x": "y"}}}}
    assert unknown(values, known) == []
    assert unknown({"grafana": {"grafana.inii": {}}}, known) == ["grafana.grafana.inii"]


# --------------------------------------------------------------------------------------- monitors


def _monitors(platform) -> list[dict[str, Any]]:
    return [o for o in platform.assembly.kube_objects() if o.get("kind") in ("PodMonitor", "ServiceMonitor")]


@pytest.fixture(scope="module")
def monitor_validator() -> CrdValidator:
    return CrdValidator.from_files([KPS / "crd-podmonitors.yaml", KPS / "crd-servicemonitors.yaml"], version="v1")


def test_the_platform_applies_the_monitors(any_platform):
    names = sorted(m["metadata"]["name"] for m in _monitors(any_platform))
    assert names == sorted(m["metadata"]["name"] for m in mx.monitors(["ray"], "dynamic-factory")), names


def test_monitors_validate_strictly_against_the_crds(any_platform, monitor_validator):
    for monitor in _monitors(any_platform):
        assert monitor_validator.errors(monitor) == [], monitor["metadata"]["name"]


def test_the_monitor_schema_is_strict(monitor_validator):
    monitor = copy.deepcopy(mx.monitors(["ray"], "dynamic-factory")[0])
    monitor["spec"]["podMetricsEndpoint"] = monitor["spec"].pop("podMetricsEndpoints")  # misspelt
    assert monitor_validator.errors(monitor) != []


def _prometheus_selector(effective: Mapping[str, Any], kind: str, release: str) -> dict[str, Any]:
    """The selector the chart gives its Prometheus object, as templates/prometheus/prometheus.yaml renders it:

        {{- if .Values.prometheus.prometheusSpec.podMonitorSelector }}   -> that selector, verbatim
        {{ else if .Values.prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues }}
          podMonitorSelector: {matchLabels: {release: {{ $.Release.Name }}}}
        {{ else }} podMonitorSelector: {}   (every monitor)

    (the same for serviceMonitorSelector). The template at the pinned commit is not in the stored copies of
    prometheus-community/helm-charts; the versions stored at 0027117e971e8694d1b65b205f37d40f2b5b5402 and
    1514b96530e0e85ae1bf89eb256c029d0cf8ce03 both read as above, and the pinned values.yaml documents the same
    semantics next to podMonitorSelectorNilUsesHelmValues (default true, podMonitorSelector default {})."""
    spec = effective["prometheus"]["prometheusSpec"]
    explicit = spec.get(f"{kind}Selector")
    if explicit:
        return explicit
    if spec.get(f"{kind}SelectorNilUsesHelmValues"):
        return {"matchLabels": {"release": release}}
    return {}


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are modelled: {selector}"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def test_the_chart_documents_the_selector_semantics(chart_values):
    spec = chart_values["prometheus"]["prometheusSpec"]
    assert spec["podMonitorSelectorNilUsesHelmValues"] is True and spec["podMonitorSelector"] == {}
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is True and spec["serviceMonitorSelector"] == {}
    text = (KPS / "values.yaml").read_text()
    assert re.search(r"If true, a nil or \{\} value for prometheus\.prometheusSpec\.podMonitorSelector will cause the\n"
                     r"\s+## prometheus resource to be created with selectors based on values in the helm deployment",
                     text)


def test_every_monitor_is_selected_by_the_charts_prometheus(any_platform, chart_values):
    release = _release(any_platform)
    assert release.properties["Release"] == mx.RELEASE  # cdk_constructs/helm.py: release named after the chart
    effective = _effective(release.values, chart_values)
    monitors = _monitors(any_platform)
    assert monitors
    for monitor in monitors:
        kind = "podMonitor" if monitor["kind"] == "PodMonitor" else "serviceMonitor"
        selector = _prometheus_selector(effective, kind, release.properties["Release"])
        labels = monitor["metadata"].get("labels") or {}
        assert selector == {"matchLabels": {"release": mx.RELEASE}}, selector
        assert _selects(selector, labels), (monitor["metadata"]["name"], labels)
        assert labels.get("release") == mx.RELEASE
        # podMonitorNamespaceSelector / serviceMonitorNamespaceSelector render as {} (every namespace); ours
        # sit in the release's namespace anyway.
        assert monitor["metadata"]["namespace"] == mx.NAMESPACE


def test_a_monitor_without_the_label_would_not_be_selected(chart_values):
    effective = _effective(direct_values(None), chart_values)
    selector = _prometheus_selector(effective, "podMonitor", mx.RELEASE)
    assert not _selects(selector, {"app": "ray"})
    assert not _selects(selector, {"release": "prometheus"})


# --------------------------------------------------------------------------------------- network policies


def _monitoring_policies(platform, kind: str) -> list[dict[str, Any]]:
    return [o for o in platform.assembly.kube_objects()
            if o.get("kind") == kind and o.get("metadata", {}).get("namespace") == mx.NAMESPACE]


def test_the_cilium_policies_validate_against_the_crd(any_platform):
    validator = CrdValidator.from_files([CILIUM_CRD], version="v2")
    rules = CrdCelRules.load(CILIUM_CRD, version="v2")
    policies = _monitoring_policies(any_platform, "CiliumNetworkPolicy")
    assert {p["metadata"]["name"] for p in policies} == {
        "prometheus-host-targets", "grafana-api", "operator-api", "kube-state-metrics-api"}
    for policy in policies:
        assert validator.errors(policy) == [], policy["metadata"]["name"]
        report = rules.evaluate(policy)
        assert report.ok, report.failure_text()


def test_the_network_policies_validate_against_the_kubernetes_schema(any_platform):
    import kubernetes_validate

    policies = _monitoring_policies(any_platform, "NetworkPolicy")
    assert {p["metadata"]["name"] for p in policies} >= {"default-deny", "allow-dns", "prometheus", "grafana"}
    for policy in policies:
        kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    (namespace,) = [o for o in any_platform.assembly.kube_objects()
                    if o.get("kind") == "Namespace" and o["metadata"]["name"] == mx.NAMESPACE]
    kubernetes_validate.validate(namespace, KUBERNETES_VERSION, strict=True)


def test_the_network_policy_schema_is_strict(any_platform):
    import kubernetes_validate

    (policy,) = [p for p in _monitoring_policies(any_platform, "NetworkPolicy")
                 if p["metadata"]["name"] == "prometheus"]
    bad = copy.deepcopy(policy)
    bad["spec"]["egress"][0]["too"] = bad["spec"]["egress"][0].pop("to")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


# --------------------------------------------------------------------------------------- Grafana


@pytest.mark.parametrize("mode", sorted(ACCESS_MODES))
def test_grafana_access(mode, chart_values):
    domain = ACCESS_MODES[mode]
    effective = _effective(direct_values(domain), chart_values)
    grafana = effective["grafana"]
    ini = grafana["grafana.ini"]
    assert ini["auth.anonymous"]["enabled"] is False
    assert ini["users"]["allow_sign_up"] is False
    # Basic auth stays Grafana's default (on): the sidecars call the reload API with the admin's credentials.
    assert ini.get("auth.basic", {}).get("enabled", True) is True
    assert ini["security"]["allow_embedding"] is True  # Ray's dashboard shows Grafana panels in iframes
    if domain:
        assert ini["server"]["root_url"] == f"https://{domain}/services/grafana/"
        assert ini["server"]["serve_from_sub_path"] is True
        assert ini["security"]["cookie_secure"] is True
    else:
        assert ini["server"]["root_url"] == "http://localhost:3000/"
        assert "serve_from_sub_path" not in ini["server"]
        assert ini["security"]["cookie_secure"] is False
    # The chart generates the admin password into its Secret: none in the values, no existing Secret named.
    assert "adminPassword" not in grafana and not grafana["admin"]["existingSecret"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in (grafana.get("env") or {})
    assert not re.search(r"admin_password|password", yaml.safe_dump(ini), re.IGNORECASE)
    assert grafana["persistence"]["enabled"] is False
    assert grafana["initChownData"]["enabled"] is False
    assert grafana["testFramework"]["enabled"] is False


def test_grafana_root_url_follows_the_platforms_access(any_platform):
    ini = _values(any_platform)["grafana"]["grafana.ini"]
    config = any_platform.config
    domain = config.jupyterhub.domain if config.observability.grafana_behind_hub else None
    assert ini["server"]["root_url"] == mx.GrafanaAccess(domain=domain).root_url
    assert ini["auth.anonymous"]["enabled"] is False and ini["users"]["allow_sign_up"] is False


def test_grafanas_sidecars_search_only_where_their_role_reaches(chart_values):
    """The grafana chart's _pod.tpl passes sidecar.<kind>.searchNamespace to the k8s-sidecar as NAMESPACE
    (``ALL`` lists cluster-wide); with rbac.namespaced the chart grants a Role in its own namespace only."""
    grafana = _effective(direct_values(None), chart_values)["grafana"]
    assert grafana["rbac"]["namespaced"] is True
    for kind in ("dashboards", "datasources", "alerts", "notifiers", "plugins"):
        sidecar = grafana["sidecar"][kind]
        if sidecar.get("enabled"):
            assert sidecar.get("searchNamespace") in (None, "", mx.NAMESPACE, [mx.NAMESPACE]), (kind, sidecar)


# --------------------------------------------------------------------------------------- Prometheus


_SIZE = re.compile(r"^(\d+)(B|KB|MB|GB|TB|PB|EB)$")
_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti)$")


def _retention_bytes(size: str) -> int:
    """Prometheus's --storage.tsdb.retention.size units are base 2 (KB = 1024 bytes)."""
    match = _SIZE.match(size)
    assert match, f"retentionSize {size!r} is not a Prometheus size"
    power = ["B", "KB", "MB", "GB", "TB", "PB", "EB"].index(match.group(2))
    return int(match.group(1)) * 1024 ** power


def _quantity_bytes(quantity: str) -> int:
    match = _QUANTITY.match(quantity)
    assert match, f"storage request {quantity!r} is not a binary quantity"
    return int(match.group(1)) * 1024 ** (["Ki", "Mi", "Gi", "Ti"].index(match.group(2)) + 1)


def test_prometheus_retention_fits_its_volume(any_platform):
    spec = _values(any_platform)["prometheus"]["prometheusSpec"]
    obs = any_platform.config.observability
    assert spec["retention"] == obs.retention
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    volume = _quantity_bytes(claim["resources"]["requests"]["storage"])
    assert volume == obs.volume_gib * 1024 ** 3
    assert 0 < _retention_bytes(spec["retentionSize"]) < volume


@pytest.mark.parametrize("volume_gib", [2, 3, 10, 1000])
def test_retention_size_stays_below_the_volume_for_any_size(volume_gib):
    spec = mx.MetricsValues(node_selector=SYSTEM_NODE_SELECTOR, tolerations=(SYSTEM_TOLERATION,),
                            storage_class=DEFAULT_STORAGE_CLASS, volume_gib=volume_gib).prometheus()["prometheusSpec"]
    assert 0 < _retention_bytes(spec["retentionSize"]) < volume_gib * 1024 ** 3


def test_prometheus_volume_uses_the_encrypted_default_storage_class(any_platform):
    claim = _values(any_platform)["prometheus"]["prometheusSpec"]["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == DEFAULT_STORAGE_CLASS
    classes = {o["metadata"]["name"]: o for o in any_platform.assembly.kube_objects()
               if o.get("kind") == "StorageClass"}
    storage_class = classes[DEFAULT_STORAGE_CLASS]
    # Encrypted at rest. With no kmsKeyId the EBS CSI driver uses the account's default EBS key (aws/ebs), not a
    # key of the platform: stacks/cluster_stack.py builds StorageChart without kms_key_arn.
    assert storage_class["parameters"]["encrypted"] == "true"
    assert storage_class["provisioner"] == "ebs.csi.aws.com"
    assert storage_class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"


# --------------------------------------------------------------------------------------- placement

# Where each of the release's pods takes its nodeSelector and tolerations from, as the templates read them:
#   the Prometheus StatefulSet: the Prometheus object's spec.nodeSelector / spec.tolerations, rendered by
#     templates/prometheus/prometheus.yaml from prometheus.prometheusSpec.{nodeSelector,tolerations};
#   the operator: templates/prometheus-operator/deployment.yaml, prometheusOperator.{nodeSelector,tolerations};
#   Grafana: the grafana chart's templates/_pod.tpl, .Values.{nodeSelector,tolerations} of the subchart, i.e.
#     grafana.{nodeSelector,tolerations} here;
#   kube-state-metrics: its deployment.yaml, kube-state-metrics.{nodeSelector,tolerations}.
PLACEMENT_PATHS = {
    "prometheus": "prometheus.prometheusSpec",
    "operator": "prometheusOperator",
    "grafana": "grafana",
    "kube-state-metrics": "kube-state-metrics",
}
# Pods the release would also run, and the switch that keeps each of them off (else it needs placing too).
OFF_SWITCHES = {
    "alertmanager": "alertmanager.enabled",
    "thanos ruler": "thanosRuler.enabled",
    "node-exporter DaemonSet": "nodeExporter.enabled",
    "windows exporter": "windowsMonitoring.enabled",
    "admission webhook deployment": "prometheusOperator.admissionWebhooks.enabled",
    "admission webhook patch jobs": "prometheusOperator.admissionWebhooks.patch.enabled",
    "CRD upgrade job": "crds.upgradeJob.enabled",
    "grafana test pod": "grafana.testFramework.enabled",
    "grafana image renderer": "grafana.imageRenderer.enabled",
}


@pytest.mark.parametrize("component", sorted(PLACEMENT_PATHS))
def test_every_component_runs_on_the_system_nodes(component, any_platform, chart_values):
    effective = _effective(_values(any_platform), chart_values)
    where = _get(effective, PLACEMENT_PATHS[component])
    assert where["nodeSelector"] == SYSTEM_NODE_SELECTOR, component
    assert SYSTEM_TOLERATION in where["tolerations"], component


@pytest.mark.parametrize("component", sorted(OFF_SWITCHES))
def test_the_other_pods_of_the_release_stay_off(component, any_platform, chart_values):
    effective = _effective(_values(any_platform), chart_values)
    assert _get(effective, OFF_SWITCHES[component]) is False, component


def test_the_placement_paths_exist_in_the_charts(known):
    for path in PLACEMENT_PATHS.values():
        for key in ("nodeSelector", "tolerations"):
            assert tuple(path.split(".")) + (key,) in known, (path, key)
    for switch in OFF_SWITCHES.values():
        assert tuple(switch.split(".")) in known, switch
