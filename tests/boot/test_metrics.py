"""First boot of the metrics stack (kube-prometheus-stack 88.5.3 in ``monitoring``): its pods, what they scrape and
who may talk to them, proved on the synthesized assemblies.

* the reviewed table (tools/boot/upstream_pods.yaml) gives the release's pods with our values, and only those (no
  hook Job, no node-exporter, no Alertmanager), each admitted by Pod Security baseline (and restricted), on the
  system nodes, its Prometheus volume on an encrypted StorageClass;
* every PodMonitor / ServiceMonitor (ours and the chart's) is one the Prometheus selects and resolves to pods (or
  nodes) that declare the ports it names, and a broken one fails with a clear message;
* the network policies let Prometheus reach every scrape target, the API server and DNS, the Ray heads reach
  Grafana and Prometheus, Grafana reach Prometheus; and nothing else gets in or out.

The variant configuration runs two Ray teams (alpha, beta) and a domain (the hub's proxy serves Grafana).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from charts.ray_teams import RayTeam
from tests.support.assembly_copy import copy_assembly, edit_template_text
from tools.boot import admission, netpol
from tools.boot.model import STRANGER, BootModel, Verdict
from tools.boot.workloads import Monitor, _from_table, condition, load_table

RELEASE = "kube-prometheus-stack"
NS = "monitoring"
STACK = {"operator": "kube-prometheus-stack-operator",
         "prometheus": "prometheus-kube-prometheus-stack-prometheus",
         "grafana": "kube-prometheus-stack-grafana",
         "kube-state-metrics": "kube-prometheus-stack-kube-state-metrics"}
CHART_MONITORS = {f"ServiceMonitor {NS}/{RELEASE}-{m}" for m in ("operator", "prometheus", "kubelet", "kube-state-metrics")}
OUR_MONITORS = {f"PodMonitor {NS}/{m}" for m in ("ray-nodes", "ray-head", "karpenter", "cilium-agent", "cilium-operator")}


# The session's models (tests/boot/conftest.py), under this module's names.
@pytest.fixture(scope="module")
def default_boot(boot) -> BootModel:
    return boot


@pytest.fixture(scope="module")
def default_verdicts(boot_verdicts) -> list[Verdict]:
    return boot_verdicts


@pytest.fixture(scope="module")
def teams_boot(variant_boot) -> BootModel:
    return variant_boot


@pytest.fixture(scope="module")
def teams_verdicts(variant_verdicts) -> list[Verdict]:
    return variant_verdicts


def _by(verdicts: list[Verdict], check: str) -> dict[str, Verdict]:
    return {v.subject: v for v in verdicts if v.check == check}


def _failures(verdicts: list[Verdict]) -> list[str]:
    return [f"[{v.step}] {v.line()}" for v in verdicts if not v.ok]


def _merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """A copy of Helm values with ``change`` merged in (maps merged key by key, as Helm merges values)."""
    out = json.loads(json.dumps(base))
    todo = [(out, change)]
    while todo:
        into, extra = todo.pop()
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                todo.append((into[k], v))
            else:
                into[k] = v
    return out


def _release_values(model: BootModel) -> dict[str, Any]:
    (res,) = [r for r in model.graph.assembly.helm_releases().values() if r.properties.get("Chart") == RELEASE]
    return res.values


# ------------------------------------------------------------------ the release's pods


def test_the_release_starts_its_four_pods_and_nothing_else(default_boot):
    pods = {w.name: w for w in default_boot.workloads if w.origin.startswith(f"helm {RELEASE} ")}
    assert set(pods) == set(STACK.values()), sorted(pods)
    assert {w.role for w in pods.values()} == set(STACK)
    assert all(w.namespace == NS and w.replicas == 1 and w.idle and not w.transient for w in pods.values())
    prom, grafana = pods[STACK["prometheus"]], pods[STACK["grafana"]]
    assert [c["name"] for c in prom.pod_spec["containers"]] == ["prometheus", "config-reloader"]
    assert [c["name"] for c in prom.pod_spec["initContainers"]] == ["init-config-reloader"]
    assert prom.labels["app.kubernetes.io/name"] == "prometheus"
    assert prom.labels["prometheus"] == prom.labels["operator.prometheus.io/name"] == f"{RELEASE}-prometheus"
    # The operator creates the StatefulSet: Helm's --wait does not wait for it.
    assert not prom.waits and pods[STACK["grafana"]].waits
    assert [c["name"] for c in grafana.pod_spec["containers"]] == ["grafana-sc-dashboard", "grafana-sc-datasources",
                                                                    "grafana"]
    assert "initContainers" not in grafana.pod_spec  # init-chown-data only with persistence
    assert pods[STACK["operator"]].named_ports() == {"http": 8080}  # TLS off: plain http, no webhook certificate
    assert prom.service_account == f"{RELEASE}-prometheus"


def test_requests_and_placement_come_from_our_values(default_boot):
    values = _release_values(default_boot)
    pods = {w.role: w for w in default_boot.workloads if w.role}
    spec = values["prometheus"]["prometheusSpec"]
    reloader = values["prometheusOperator"]["prometheusConfigReloader"]["resources"]["requests"]
    prom_containers = {c["name"]: c["resources"]["requests"] for c in pods["prometheus"].pod_spec["containers"]}
    assert prom_containers == {"prometheus": spec["resources"]["requests"], "config-reloader": reloader}
    graf = {c["name"]: c["resources"]["requests"] for c in pods["grafana"].pod_spec["containers"]}
    assert graf["grafana"] == values["grafana"]["resources"]["requests"]
    assert graf["grafana-sc-dashboard"] == graf["grafana-sc-datasources"] == values["grafana"]["sidecar"]["resources"]["requests"]
    for role, w in pods.items():
        assert w.node_selector and w.tolerations, role
    assert pods["prometheus"].node_selector == spec["nodeSelector"]
    assert pods["kube-state-metrics"].tolerations == values["kube-state-metrics"]["tolerations"]


@pytest.mark.parametrize("values, appears, refused", [
    ({"prometheusOperator": {"admissionWebhooks": {"enabled": True, "patch": {"enabled": True}}}},
     "kube-prometheus-stack-admission-create", None),
    ({"crds": {"upgradeJob": {"enabled": True}}}, "kube-prometheus-stack-crd-upgrade", None),
    ({"grafana": {"testFramework": {"enabled": True}}}, "kube-prometheus-stack-grafana-test", None),
    ({"nodeExporter": {"enabled": True}}, "kube-prometheus-stack-prometheus-node-exporter", "hostNetwork=true"),
    ({"alertmanager": {"enabled": True}}, "alertmanager-kube-prometheus-stack-alertmanager", None),
], ids=["webhook-certificate-job", "crd-upgrade-job", "grafana-test-pod", "node-exporter", "alertmanager"])
def test_what_our_values_turn_off_would_start(default_boot, values, appears, refused):
    """Each hook Job / pod the chart can start is off with our values, and its condition really reads them: the same
    values with the switch flipped start it (node-exporter then fails Pod Security baseline)."""
    entry = load_table()["releases"][RELEASE]
    ours = _release_values(default_boot)

    def started(vals):
        return {w.name: w for e in entry["workloads"]
                if (w := _from_table(e, vals, namespace=NS, origin="t", creator=("s", "r"), waits=True))}

    assert appears not in started(ours)
    pod = started(_merge(ours, values)).get(appears)
    assert pod is not None
    bad = admission.violations("baseline", pod.pod_spec)
    assert (refused in " ".join(bad)) if refused else not bad, bad


def test_every_metrics_pod_is_admitted_under_baseline_and_restricted(default_verdicts):
    admitted = _by(default_verdicts, "admitted")
    for name in STACK.values():
        v = admitted[f"{NS}/{name}"]
        assert v.ok and "Pod Security 'baseline'" in v.detail, v.detail
        assert "warn/audit 'restricted': admits it too" in v.detail, v.detail


def test_every_metrics_pod_lands_on_a_system_node(default_boot, default_verdicts):
    schedulable = _by(default_verdicts, "schedulable")
    for name in STACK.values():
        assert schedulable[f"{NS}/{name}"].ok and "on system" in schedulable[f"{NS}/{name}"].detail
    placement = default_boot.idle_placement()
    placed = {p for n in placement.nodes for p, _, _ in n.placed}
    assert {f"{NS}/{n}" for n in STACK.values()} <= placed
    assert not placement.karpenter_nodes and not placement.unplaced


def test_the_prometheus_volume_is_an_encrypted_gp3_claim(default_verdicts, teams_verdicts):
    for verdicts in (default_verdicts, teams_verdicts):
        (claim,) = [v for v in verdicts if v.check == "storage class" and "claim" in v.subject]
        assert claim.ok and "'gp3'" in claim.detail and "encrypted" in claim.detail, claim.detail


# ------------------------------------------------------------------ the Services clients reach


def test_clients_resolve_to_the_listening_pod(teams_verdicts):
    """The Ray heads' RAY_GRAFANA_HOST / RAY_PROMETHEUS_HOST, Grafana's data source and the hub's proxy route to
    Grafana: each URL resolves to a Service the chart creates, whose port targets the port the pod declares."""
    clients = _by(teams_verdicts, "client")
    for team in ("alpha", "beta"):
        grafana = clients[f"ray-{team}/ray-head RAY_GRAFANA_HOST"]
        assert grafana.ok and f"Service {NS}/{RELEASE}-grafana:80" in grafana.detail and "listening on 3000" in grafana.detail
        prom = clients[f"ray-{team}/ray-head RAY_PROMETHEUS_HOST"]
        assert prom.ok and f"{NS}/{STACK['prometheus']} listening on 9090" in prom.detail
    source = clients[f"{NS}/{STACK['grafana']} data source Prometheus"]
    assert source.ok and f"Service {NS}/{RELEASE}-prometheus:9090" in source.detail
    proxy = clients["jupyterhub/proxy hub service grafana (/services/grafana/)"]
    assert proxy.ok and "listening on 3000" in proxy.detail


def test_a_client_of_a_missing_service_port_fails(default_boot):
    head = default_boot._find("ray", {"ray.io/node-type": "head"})
    wrong_port = default_boot._resolve(head, "x", f"http://{RELEASE}-grafana.{NS}.svc.cluster.local:3000", True)
    assert "port 3000 is not a port of Service monitoring/kube-prometheus-stack-grafana ([80])" in wrong_port.problem
    missing = default_boot._resolve(head, "x", f"http://{RELEASE}-grafanas.{NS}.svc.cluster.local:80", True)
    assert missing.problem == f"no Service {NS}/{RELEASE}-grafanas is created"


# ------------------------------------------------------------------ monitors: what is scraped


@pytest.mark.parametrize("which", ["default", "teams"])
def test_every_monitor_resolves_to_pods_that_declare_its_ports(which, default_boot, teams_boot, default_verdicts,
                                                               teams_verdicts):
    verdicts = default_verdicts if which == "default" else teams_verdicts
    monitors = _by(verdicts, "scrape target")
    model = default_boot if which == "default" else teams_boot
    # Grafana's ServiceMonitor exists unless our values turn it off (kube-prometheus-stack's default: on).
    grafana_sm = (_release_values(model).get("grafana", {}).get("serviceMonitor") or {}).get("enabled", True)
    assert set(monitors) == CHART_MONITORS | OUR_MONITORS | ({f"ServiceMonitor {NS}/{RELEASE}-grafana"} if grafana_sm else set())
    assert [f"{s}: {v.detail}" for s, v in monitors.items() if not v.ok] == []
    assert "every node https-metrics->10250" in monitors[f"ServiceMonitor {NS}/{RELEASE}-kubelet"].detail
    assert "kube-system/cilium hubble-metrics->9965" in monitors[f"PodMonitor {NS}/cilium-agent"].detail
    if which == "teams":
        ray = monitors[f"PodMonitor {NS}/ray-nodes"].detail
        assert all(f"ray-{t}/ray-{g} metrics->8080" in ray for t in ("alpha", "beta") for g in ("head", "cpu-worker"))


def _broken(selector=None, namespaces=("ray",), endpoints=("metrics",), labels=None) -> Monitor:
    return Monitor(kind="PodMonitor", namespace=NS, name="broken",
                   labels={"release": RELEASE} if labels is None else labels, namespaces=namespaces,
                   selector={"matchLabels": selector or {"ray.io/is-ray-node": "yes"}}, endpoints=endpoints,
                   origin="test")


@pytest.mark.parametrize("monitor, message", [
    (_broken(selector={"ray.io/is-ray-node": "no"}),
     "its selector {'ray.io/is-ray-node': 'no'} matches no pod in namespaces ['ray']: Prometheus scrapes nothing"),
    (_broken(namespaces=("rays",)), "matches no pod in namespaces ['rays']"),
    (_broken(namespaces=("ray", "ray-gamma")), "matches no pod in namespaces ['ray-gamma']"),
    (_broken(endpoints=("http-metrics",)), "ray/ray-head declares no container port 'http-metrics'"),
    (_broken(labels={}), "selects monitors labelled {'release': 'kube-prometheus-stack'}; this one lacks"),
], ids=["selector", "namespace", "one-empty-namespace", "port-name", "not-selected-by-prometheus"])
def test_a_broken_monitor_fails_with_a_clear_message(platform, monitor, message):
    model = BootModel(platform.outdir)
    model.monitors = [*model.monitors, monitor]
    (verdict,) = [v for v in model._check_monitors() if v.subject == monitor.subject]
    assert not verdict.ok and message in verdict.detail, verdict.detail


def test_a_broken_service_monitor_fails(platform):
    model = BootModel(platform.outdir)
    svc = Monitor(kind="ServiceMonitor", namespace=NS, name="broken", labels={"release": RELEASE},
                  namespaces=(NS,), selector={"matchLabels": {"app.kubernetes.io/name": "grafana"}},
                  endpoints=("http",), origin="test")
    nothing = Monitor(kind="ServiceMonitor", namespace=NS, name="nothing", labels={"release": RELEASE},
                      namespaces=(NS,), selector={"matchLabels": {"app": "nothing"}}, endpoints=("http",), origin="test")
    model.monitors = [svc, nothing]
    verdicts = {v.subject: v for v in model._check_monitors()}
    assert "Service monitoring/kube-prometheus-stack-grafana has no port 'http'" in verdicts[svc.subject].detail
    assert "matches no Service in namespaces ['monitoring']" in verdicts[nothing.subject].detail
    assert not any(v.ok for v in verdicts.values())






@pytest.mark.parametrize("pattern, replacement, expect", [
    (r'(\\"podMetricsEndpoints\\":\[\{\\"port\\":\\")http-metrics\\"', r'\1metrics\\"',
     "PodMonitor monitoring/karpenter: kube-system/karpenter declares no container port 'metrics'"),
    (r'(\\"selector\\":\{\\"matchLabels\\":\{\\"ray\.io/is-ray-)node', r'\1nodes',
     "PodMonitor monitoring/ray-nodes: its selector {'ray.io/is-ray-nodes': 'yes'} matches no pod"),
], ids=["port", "selector"])
def test_the_model_catches_a_broken_monitor_in_the_assembly(platform, tmp_path, pattern, replacement, expect):
    root = copy_assembly(platform.outdir, tmp_path / "cdk.out")
    edit_template_text(root, pattern, replacement)
    failures = _failures(BootModel(root).run())
    assert any("scrape target" in f and expect in f for f in failures), failures


def test_monitors_are_applied_after_the_release_that_installs_their_crds(platform, tmp_path):
    root = copy_assembly(platform.outdir, tmp_path / "cdk.out")
    for path in root.rglob("*bservability*.template.json"):
        template = json.loads(path.read_text())
        for res in template["Resources"].values():
            if res["Type"] == "Custom::AWSCDK-EKS-KubernetesResource" and "PodMonitor" in json.dumps(res["Properties"]):
                res["DependsOn"] = [d for d in res.get("DependsOn", []) if not d.startswith("Metrics")]
        path.write_text(json.dumps(template))
    failures = _failures(BootModel(root).run())
    assert any("no matches for kind PodMonitor" in f for f in failures), failures


# ------------------------------------------------------------------ flows the metrics stack needs


def _flows(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return _by(verdicts, "flow")


def test_prometheus_reaches_each_scrape_target(teams_verdicts):
    flows = _flows(teams_verdicts)

    def one(prefix: str) -> Verdict:
        (v,) = [v for name, v in flows.items() if name.startswith(prefix)]
        return v

    wanted = [f"Prometheus -> ray-{t}/ray-{g} metrics (PodMonitor {NS}/ray-nodes)" for t in ("alpha", "beta")
              for g in ("head", "cpu-worker", "gpu-worker")]
    wanted += [f"Prometheus -> ray-{t}/ray-head {p} (PodMonitor {NS}/ray-head)" for t in ("alpha", "beta")
               for p in ("as-metrics", "dash-metrics")]
    wanted += ["Prometheus -> kube-system/karpenter http-metrics",
               f"Prometheus -> {NS}/{STACK['kube-state-metrics']} http",
               f"Prometheus -> {NS}/{STACK['operator']} http"]
    for entity in ("host", "remote-node"):
        wanted += [f"Prometheus -> every node https-metrics (ServiceMonitor {NS}/{RELEASE}-kubelet) as {entity}",
                   f"Prometheus -> kube-system/cilium prometheus (PodMonitor {NS}/cilium-agent) as {entity}",
                   f"Prometheus -> kube-system/cilium hubble-metrics (PodMonitor {NS}/cilium-agent) as {entity}",
                   f"Prometheus -> kube-system/cilium-operator prometheus (PodMonitor {NS}/cilium-operator) as {entity}"]
    wanted += [f"prometheus {NS}/{STACK['prometheus']} -> Kubernetes API", f"prometheus {NS}/{STACK['prometheus']} -> DNS"]
    ports = {}
    for prefix in wanted:
        v = one(prefix)
        assert v.ok, f"{prefix}: {v.detail}"
        ports[prefix] = int(v.detail.split()[1].rstrip(":"))
    assert {ports[p] for p in wanted if "cilium " in p and "hubble" not in p} == {9962}
    assert {ports[p] for p in wanted if "hubble" in p} == {9965}
    assert {ports[p] for p in wanted if "cilium-operator" in p} == {9963}
    assert {ports[p] for p in wanted if "kubelet" in p} == {10250}
    assert {ports[p] for p in wanted if "ray-head as-metrics" in p} == {44217}


def test_every_scrape_target_is_reachable(default_verdicts, teams_verdicts):
    """All scrapes the monitors make, the chart's own included (the operator, Prometheus itself, Grafana)."""
    for verdicts in (default_verdicts, teams_verdicts):
        bad = [f"{n}: {v.detail}" for n, v in _flows(verdicts).items() if n.startswith("Prometheus -> ") and not v.ok]
        assert bad == []


def test_the_ray_heads_reach_grafana_and_prometheus_and_grafana_reaches_prometheus(teams_verdicts):
    flows = _flows(teams_verdicts)
    for team in ("alpha", "beta"):
        g = flows[f"ray-{team}/ray-head RAY_GRAFANA_HOST -> {NS}/{RELEASE}-grafana"]
        p = flows[f"ray-{team}/ray-head RAY_PROMETHEUS_HOST -> {NS}/{RELEASE}-prometheus"]
        assert g.ok and g.detail.startswith("TCP 3000") and p.ok and p.detail.startswith("TCP 9090"), (g, p)
    source = flows[f"{NS}/{STACK['grafana']} data source Prometheus -> {NS}/{RELEASE}-prometheus"]
    assert source.ok and source.detail.startswith("TCP 9090")
    proxy = flows[f"jupyterhub/proxy hub service grafana (/services/grafana/) -> {NS}/{RELEASE}-grafana"]
    assert proxy.ok and proxy.detail.startswith("TCP 3000")
    for role in ("operator", "kube-state-metrics", "grafana"):
        assert flows[f"{role} {NS}/{STACK[role]} -> Kubernetes API"].ok


# ------------------------------------------------------------------ and nothing else


def test_the_isolation_verdicts_all_hold(default_verdicts, teams_verdicts):
    for verdicts in (default_verdicts, teams_verdicts):
        isolated = _by(verdicts, "isolated")
        assert len(isolated) > 50
        assert [f"{s}: {v.detail}" for s, v in isolated.items() if not v.ok] == []


@pytest.fixture(scope="module")
def teams_net(teams_boot):
    policies = teams_boot.network_policies()
    pods = {role: netpol.Endpoint.pod(NS, w.labels) for role in STACK if (w := teams_boot._by_role(role))}

    def ep(namespace: str | None, labels: dict[str, str]) -> netpol.Endpoint:
        w = teams_boot._find(namespace, labels)
        assert w is not None, labels
        return netpol.Endpoint.pod(w.namespace, w.labels)

    return policies, pods, ep


def test_nothing_else_gets_in(teams_boot, teams_net):
    policies, pods, ep = teams_net
    su = teams_boot._find(None, {"component": "singleuser-server"})
    sources = {
        "notebook (alpha)": netpol.Endpoint.pod(su.namespace, {**su.labels, **RayTeam("alpha").notebook_label}),
        "notebook": ep(None, {"component": "singleuser-server"}),
        "Ray worker (alpha)": ep("ray-alpha", {"ray.io/node-type": "worker"}),
        "Ray worker (beta)": ep("ray-beta", {"ray.io/node-type": "worker"}),
        "hub": ep("jupyterhub", {"component": "hub"}),
        "pod in default": STRANGER,
    }
    for who, src in sources.items():
        for role, port in (("prometheus", 9090), ("grafana", 3000), ("kube-state-metrics", 8080), ("operator", 8080)):
            ok, why = netpol.flow_allowed(policies, src, pods[role], port)
            assert not ok, f"{who} reaches {role}:{port}"
    # The monitoring namespace's own ingress rules refuse even a pod whose egress is open (no policy selects it).
    assert "ingress of monitoring pods" in netpol.flow_allowed(policies, STRANGER, pods["grafana"], 3000)[1]
    # The Ray heads reach Grafana and Prometheus, their workers do not.
    head = ep("ray-alpha", {"ray.io/node-type": "head"})
    assert netpol.flow_allowed(policies, head, pods["grafana"], 3000)[0]
    assert netpol.flow_allowed(policies, head, pods["prometheus"], 9090)[0]
    assert not netpol.flow_allowed(policies, head, pods["kube-state-metrics"], 8080)[0]


def test_prometheus_reaches_nothing_outside_its_list(teams_boot, teams_net):
    policies, pods, ep = teams_net
    prom = pods["prometheus"]
    denied = [
        (ep("jupyterhub", {"component": "hub"}), 8081),
        (ep(None, {"component": "singleuser-server"}), 8888),
        (ep("ray-alpha", {"ray.io/node-type": "head"}), 8265),
        (ep("ray-alpha", {"ray.io/node-type": "head"}), 6379),
        (ep("ray-beta", {"ray.io/node-type": "worker"}), 10002),
        (ep("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"}), 8080),
        (netpol.Endpoint.world("example.org"), 443),
        (netpol.Endpoint.world(), 443),
        (netpol.Endpoint.world(address="169.254.169.254"), 80),
        (netpol.Endpoint(entity="host"), 22),
        (netpol.Endpoint(entity="kube-apiserver"), 6443),
    ]
    for dst, port in denied:
        assert not netpol.flow_allowed(policies, prom, dst, port)[0], (dst, port)
    assert not netpol.flow_allowed(policies, pods["grafana"], netpol.Endpoint.world("grafana.com"), 443)[0]


def test_the_isolation_check_catches_a_policy_that_opens_the_namespace(platform):
    model = BootModel(platform.outdir)
    wide = {"metadata": {"name": "allow-everything", "namespace": NS},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}}
    original = model.network_policies
    model.network_policies = lambda: [*original(), wide]
    failed = {v.subject for v in model._check_isolation() if not v.ok}
    assert f"a pod in namespace default -> grafana {NS}/{STACK['grafana']}:3000" in failed
    assert f"a pod in namespace default -> prometheus {NS}/{STACK['prometheus']}:9090" in failed
    assert not any(s.startswith("notebook ->") for s in failed)  # still refused by the notebook's own egress


# ------------------------------------------------------------------ value combinations that cannot work


def test_the_release_values_pass_the_tables_value_checks(default_verdicts, teams_verdicts):
    for verdicts in (default_verdicts, teams_verdicts):
        checks = {s: v for s, v in _by(verdicts, "values").items() if RELEASE in s}
        assert len(checks) == 2 and all(v.ok for v in checks.values()), checks


@pytest.mark.parametrize("change, message", [
    ({"grafana": {"sidecar": {"dashboards": {"searchNamespace": "ALL"}}}}, "no dashboard (or data source) is ever loaded"),
    ({"prometheusOperator": {"tls": {"enabled": True}}}, "the operator pod never starts"),
], ids=["sidecar-all-namespaces", "operator-tls-without-webhook"])
def test_a_value_combination_that_cannot_work_fails(platform, change, message):
    entry = load_table()["releases"][RELEASE]
    values = _merge(_release_values(BootModel(platform.outdir)), change)
    failing = [c for c in entry["value_checks"] if condition(c["fail_when"], values)]
    assert len(failing) == 1 and message in " ".join(failing[0]["message"].split())


# ------------------------------------------------------------------ dashboards: what Grafana's sidecar loads


def test_the_dashboards_chart_asset_renders_configmaps_only(default_boot):
    from tools.boot.workloads import local_chart_objects
    assets = [r for r in default_boot.graph.assembly.helm_releases().values() if r.properties.get("ChartAssetURL")]
    assert assets, "no chart asset in the assembly"
    for res in assets:
        objects = local_chart_objects(default_boot.graph, res)
        assert objects and {o["kind"] for o in objects} == {"ConfigMap"}, res.release
    assert not any("local_charts" in p or "chart asset" in p for p in default_boot.read_problems)


def test_every_dashboard_is_loaded_by_grafanas_sidecar(default_verdicts, teams_verdicts):
    for verdicts in (default_verdicts, teams_verdicts):
        dashboards = _by(verdicts, "dashboard")
        assert len(dashboards) >= 5
        assert [f"{s}: {v.detail}" for s, v in dashboards.items() if not v.ok] == []


@pytest.mark.parametrize("facts, message", [
    ({"namespaces": "grafana"}, "in namespace 'monitoring', the sidecar searches ['grafana'] only"),
    ({"label_value": "yes"}, "the sidecar loads grafana_dashboard='yes' only"),
    ({"enabled": False}, "Grafana's dashboard sidecar is off"),
], ids=["namespace", "label-value", "sidecar-off"])
def test_a_dashboard_the_sidecar_would_not_load_fails(platform, facts, message):
    model = BootModel(platform.outdir)
    grafana = model._by_role("grafana")
    grafana.facts["dashboard_sidecar"] = {**grafana.facts["dashboard_sidecar"], **facts}
    verdicts = list(model._check_dashboards())
    assert verdicts and all(not v.ok and message in v.detail for v in verdicts), verdicts[:1]
