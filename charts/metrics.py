"""Metrics: Prometheus and Grafana (the upstream ``kube-prometheus-stack`` chart, values built here), what they
scrape, and the network policies of their namespace.

What runs, all in namespace ``monitoring``, all on the system nodes (nothing here makes Karpenter keep a node):

* the Prometheus operator, which turns the ``Prometheus`` object and the PodMonitors/ServiceMonitors into a
  scrape configuration;
* one Prometheus (a StatefulSet the operator creates) with a short retention on an encrypted gp3 volume
  (charts/storage.py's default StorageClass: EBS encryption with the account's default EBS key);
* kube-state-metrics (object state: pending pods and why, nodes and their labels);
* Grafana, with its dashboards and its Prometheus data source provisioned from ConfigMaps by the chart's sidecar
  (charts/dashboards.py), a random admin password the chart generates once into a Secret, no anonymous access and
  no sign-up.

Scraped (``release: kube-prometheus-stack``-labelled monitors in this namespace, the selector the chart gives its
Prometheus by default): the Ray pods of every Ray namespace (head and workers on KubeRay's ``metrics`` port 8080;
the head's autoscaler 44217 and dashboard 44227), the Karpenter controller, the Cilium agent and operator and the
Hubble metrics server, kube-state-metrics, and every kubelet (the chart's kubelet ServiceMonitor at 88.5.3:
``/metrics``, ``/metrics/cadvisor`` and ``/metrics/probes``: node and container CPU and memory come from cAdvisor). Not run: node-exporter (a privileged host-network,
host-PID DaemonSet on every node, Spot workers included; the kubelet's cAdvisor already gives node totals), an
Alertmanager (alarms are CloudWatch alarms, stacks/observability_stack.py), the chart's default rules and
dashboards, and scrapes of what EKS manages (API server, scheduler, controller manager, etcd) or what the platform
does not run (kube-proxy).

Reaching them: ``kubectl -n monitoring port-forward svc/kube-prometheus-stack-grafana 3000:80`` (README). With a
domain and ``observability.grafana_behind_hub`` (off by default: it shares the hub's origin), Grafana is also served
by the hub's proxy under ``/services/grafana/`` over the same TLS listener.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import cdk8s
from constructs import Construct

from charts.k8s import DNS_PORTS, api_object, namespace_peer, namespace_with, tcp_ports

# ---------------------------------------------------------------------------------------------------------
# Contract: the stack, the Ray chart, the hub values, the boot model and the tests import these names.
# ---------------------------------------------------------------------------------------------------------
NAMESPACE = "monitoring"
RELEASE = "kube-prometheus-stack"  # cdk_constructs/helm.py names releases after their chart
# The chart's object names for this release name (kube-prometheus-stack.fullname = the release name, since it
# contains the chart name; the grafana subchart's fullname = <release>-grafana).
PROMETHEUS_SERVICE = f"{RELEASE}-prometheus"
PROMETHEUS_PORT = 9090
GRAFANA_SERVICE = f"{RELEASE}-grafana"
GRAFANA_SERVICE_PORT = 80
GRAFANA_PORT = 3000  # the container's port (grafana chart: service.targetPort)
GRAFANA_ADMIN_SECRET = GRAFANA_SERVICE
GRAFANA_PROXY_NAME = "grafana"  # with a domain: https://<domain>/services/grafana/ (the hub's proxy)  # the chart's Secret: keys admin-user, admin-password
PROMETHEUS_URL = f"http://{PROMETHEUS_SERVICE}.{NAMESPACE}.svc.cluster.local:{PROMETHEUS_PORT}"
GRAFANA_URL = f"http://{GRAFANA_SERVICE}.{NAMESPACE}.svc.cluster.local:{GRAFANA_SERVICE_PORT}"
# The data source the chart provisions (its sidecar datasource ConfigMap): name and uid.
DATASOURCE_NAME = "Prometheus"
DATASOURCE_UID = "prometheus"
# Monitors the chart's Prometheus selects (prometheus.prometheusSpec.*MonitorSelector default: release=<release>).
MONITOR_LABELS = {"release": RELEASE}

# Pod labels, for the network policies (kube-prometheus-stack 88.5.3 and its subcharts' selector labels).
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}  # set by the operator on Prometheus pods
GRAFANA_POD_LABELS = {"app.kubernetes.io/name": "grafana", "app.kubernetes.io/instance": RELEASE}
KUBE_STATE_METRICS_POD_LABELS = {"app.kubernetes.io/name": "kube-state-metrics"}
OPERATOR_POD_LABELS = {"app": f"{RELEASE}-operator"}
KUBE_STATE_METRICS_PORT = 8080
OPERATOR_PORT = 8080  # http (TLS off: no admission webhook, see values)
PROMETHEUS_RELOADER_PORT = 8080  # config-reloader's metrics (the chart's ServiceMonitor of Prometheus scrapes it)

# Scrape targets outside this namespace (ports by number, for the network policies; monitors use the names).
RAY_METRICS_PORT = 8080  # KubeRay's default `metrics` port on head and workers (ray start --metrics-export-port)
RAY_AUTOSCALER_METRICS_PORT = 44217  # the autoscaler (sidecar container of the head pod)
RAY_DASHBOARD_METRICS_PORT = 44227  # the dashboard process on the head
RAY_HEAD_METRICS_PORTS = (
    {"name": "as-metrics", "containerPort": RAY_AUTOSCALER_METRICS_PORT, "protocol": "TCP"},
    {"name": "dash-metrics", "containerPort": RAY_DASHBOARD_METRICS_PORT, "protocol": "TCP"},
)
KARPENTER_NAMESPACE = "kube-system"
KARPENTER_POD_LABELS = {"app.kubernetes.io/name": "karpenter", "app.kubernetes.io/instance": "karpenter"}
KARPENTER_METRICS_PORT = 8080  # karpenter chart: controller.metrics.port, container port `http-metrics`
CILIUM_NAMESPACE = "kube-system"
CILIUM_AGENT_POD_LABELS = {"k8s-app": "cilium"}
CILIUM_OPERATOR_POD_LABELS = {"io.cilium/app": "operator"}
CILIUM_AGENT_METRICS_PORT = 9962  # prometheus.port, container port `prometheus` (host network)
CILIUM_OPERATOR_METRICS_PORT = 9963  # operator.prometheus.port, container port `prometheus` (host network)
HUBBLE_METRICS_PORT = 9965  # hubble.metrics.port, container port `hubble-metrics` (host network)
KUBELET_PORT = 10250

DEFAULT_RETENTION = "3d"
DEFAULT_VOLUME_GIB = 10
SCRAPE_INTERVAL = "30s"

# Requests are what the boot model places on the system nodes; memory limits bound a runaway.
PROMETHEUS_RESOURCES = {"requests": {"cpu": "150m", "memory": "768Mi"}, "limits": {"memory": "1536Mi"}}
GRAFANA_RESOURCES = {"requests": {"cpu": "50m", "memory": "192Mi"}, "limits": {"memory": "384Mi"}}
SIDECAR_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
OPERATOR_RESOURCES = {"requests": {"cpu": "25m", "memory": "64Mi"}, "limits": {"memory": "192Mi"}}
KSM_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "192Mi"}}
RELOADER_RESOURCES = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}

# kube-state-metrics exposes node labels only when listed (`--metric-labels-allowlist`): the factory dashboard
# groups nodes by pool, capacity type and instance type.
KSM_LABELS_ALLOWLIST = (
    "nodes=[dynamic-factory/pool,karpenter.sh/capacity-type,karpenter.sh/nodepool,"
    "node.kubernetes.io/instance-type,eks.amazonaws.com/capacityType,topology.kubernetes.io/zone]",
)

# Grafana's image: Grafana Labs publishes it on Docker Hub only. It runs as one pod on a system node (pulled once
# per node, never by a Spot scale-out), so it is the one reviewed Docker Hub image (tests/policy/test_image_registries.py).
GRAFANA_IMAGE_REGISTRY = "docker.io"
GRAFANA_IMAGE_REPOSITORY = "grafana/grafana"


@dataclass(frozen=True)
class GrafanaAccess:
    """How people reach Grafana. ``domain`` None: port-forward only (http://localhost:3000). With a domain (the
    platform passes one only with ``observability.grafana_behind_hub``), the hub's proxy serves it at
    ``https://<domain>/services/grafana/`` (same NLB, same TLS listener)."""

    domain: str | None = None

    @property
    def sub_path(self) -> str | None:
        return f"/services/{GRAFANA_PROXY_NAME}/" if self.domain else None

    @property
    def root_url(self) -> str:
        return f"https://{self.domain}{self.sub_path}" if self.domain else "http://localhost:3000/"

    @property
    def iframe_host(self) -> str:
        """What the browser showing Ray's dashboard loads Grafana's panels from (RAY_GRAFANA_IFRAME_HOST)."""
        return f"https://{self.domain}/services/grafana" if self.domain else "http://localhost:3000"


@dataclass(frozen=True)
class RayMetricsWiring:
    """What a RayCluster needs when metrics are on: Ray's dashboard finds Grafana and Prometheus (its embedded
    time-series panels), Prometheus may scrape the Ray pods, and the head may reach both backends."""

    access: GrafanaAccess = field(default_factory=GrafanaAccess)

    def head_env(self) -> list[dict[str, str]]:
        # Ray 2.60 dashboard (python/ray/dashboard/modules/metrics/metrics_head.py): RAY_GRAFANA_HOST is checked
        # from the head (/api/health), RAY_GRAFANA_IFRAME_HOST is what the browser loads the panels from,
        # RAY_PROMETHEUS_HOST is queried from the head, RAY_PROMETHEUS_NAME names the Grafana data source.
        grafana = GRAFANA_URL + (self.access.sub_path or "/").rstrip("/")
        return [
            {"name": "RAY_GRAFANA_HOST", "value": grafana},
            {"name": "RAY_GRAFANA_IFRAME_HOST", "value": self.access.iframe_host},
            {"name": "RAY_PROMETHEUS_HOST", "value": PROMETHEUS_URL},
            {"name": "RAY_PROMETHEUS_NAME", "value": DATASOURCE_NAME},
        ]

    # Declared on the Ray containers so the PodMonitors find them by name (a PodMonitor scrapes declared ports only).
    metrics_port: Mapping[str, Any] = field(
        default_factory=lambda: {"name": "metrics", "containerPort": RAY_METRICS_PORT, "protocol": "TCP"})
    head_ports: tuple[Mapping[str, Any], ...] = RAY_HEAD_METRICS_PORTS
    # (namespace, pod labels) of the scraper, and (namespace, pod labels, port) of what the head calls.
    scraper: tuple[str, Mapping[str, str]] = (NAMESPACE, PROMETHEUS_POD_LABELS)
    backends: tuple[tuple[str, Mapping[str, str], int], ...] = (
        (NAMESPACE, PROMETHEUS_POD_LABELS, PROMETHEUS_PORT),
        (NAMESPACE, GRAFANA_POD_LABELS, GRAFANA_PORT),
    )
    scrape_ports: tuple[int, ...] = (RAY_METRICS_PORT, RAY_AUTOSCALER_METRICS_PORT, RAY_DASHBOARD_METRICS_PORT)


@dataclass(frozen=True)
class MetricsValues:
    """Values of the ``kube-prometheus-stack`` release (keys exist in schemas/kube-prometheus-stack/values.yaml or
    in its grafana and kube-state-metrics subcharts; tests check).

    :param node_selector / tolerations: the system nodes (every pod of the release runs there).
    :param retention: Prometheus ``--storage.tsdb.retention.time`` (e.g. ``3d``).
    :param volume_gib: size of Prometheus's volume; retention by size is set a little below it.
    :param storage_class: the encrypted StorageClass of the volume.
    :param access: how Grafana is reached (sets its root URL, cookies and sub path).
    """

    node_selector: Mapping[str, str]
    tolerations: Sequence[Mapping[str, Any]]
    storage_class: str
    retention: str = DEFAULT_RETENTION
    volume_gib: int = DEFAULT_VOLUME_GIB
    access: GrafanaAccess = field(default_factory=GrafanaAccess)

    def __post_init__(self) -> None:
        problems = []
        if not self.node_selector:
            problems.append("node_selector must pin the pods to the system nodes")
        if not isinstance(self.volume_gib, int) or not 2 <= self.volume_gib <= 1000:
            problems.append(f"volume_gib {self.volume_gib!r} must be 2..1000")
        if not isinstance(self.retention, str) or not self.retention[:-1].isdigit() or self.retention[-1] not in "hdw":
            problems.append(f"retention {self.retention!r} must be a number of hours, days or weeks (6h, 3d, 1w)")
        if problems:
            raise ValueError("MetricsValues: " + "; ".join(problems))

    def _placement(self) -> dict[str, Any]:
        return {"nodeSelector": dict(self.node_selector), "tolerations": [dict(t) for t in self.tolerations]}

    def grafana_ini(self) -> dict[str, Any]:
        access = self.access
        server: dict[str, Any] = {"root_url": access.root_url}
        if access.sub_path:
            server["serve_from_sub_path"] = True
        return {
            "server": server,
            # Ray's dashboard embeds Grafana panels in an iframe; the login cookie must then travel with it. Without
            # a domain both are on localhost (port-forwards): one site, so a `lax` cookie is sent. With a domain the
            # panels come from https://<domain> into a page on localhost: a cross-site frame, which gets the cookie
            # only as `SameSite=None; Secure` (Grafana's allow_embedding documentation); Grafana's own CSRF check
            # (Origin against root_url) still guards every state-changing request.
            "security": {
                "allow_embedding": True,
                "cookie_secure": bool(access.domain),
                "cookie_samesite": "none" if access.domain else "lax",
                "disable_gravatar": True,
                "disable_initial_admin_creation": False,
            },
            "auth": {"disable_login_form": False},
            "auth.anonymous": {"enabled": False},
            # auth.basic stays on (Grafana's default): the chart's sidecars call Grafana's reload API with the admin's
            # basic credentials; with it off, a datasource that loses the start-up race appears only after a restart.
            "users": {"allow_sign_up": False, "allow_org_create": False},
            # Nothing calls out to grafana.com (the egress policy would refuse it anyway).
            "analytics": {"reporting_enabled": False, "check_for_updates": False, "check_for_plugin_updates": False},
            "news": {"news_feed_enabled": False},
            "plugins": {"public_key_retrieval_disabled": True},
            "log": {"mode": "console"},
        }

    def grafana(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "defaultDashboardsEnabled": False,  # Kubernetes-mixin dashboards: they need rules and exporters not run here
            "forceDeployDatasources": False,
            "image": {"registry": GRAFANA_IMAGE_REGISTRY, "repository": GRAFANA_IMAGE_REPOSITORY},
            # The chart's admin Secret: admin-user "admin", admin-password random (40 characters, generated once and
            # kept on upgrades through Helm's lookup of the existing Secret).
            "adminUser": "admin",
            "persistence": {"enabled": False},  # dashboards and data source are code; sessions live in memory
            "initChownData": {"enabled": False},  # a root busybox init container, only needed with persistence
            "testFramework": {"enabled": False},  # its `helm test` pod pulls bats from Docker Hub
            "rbac": {"namespaced": True, "pspEnabled": False},  # the sidecars read ConfigMaps of this namespace only
            # Grafana's own metrics are not scraped (Prometheus may not reach Grafana: only Ray heads and the proxy).
            "serviceMonitor": {"enabled": False},
            "resources": dict(GRAFANA_RESOURCES),
            **self._placement(),
            "sidecar": {
                "resources": dict(SIDECAR_RESOURCES),
                "dashboards": {
                    "enabled": True,
                    # Its own namespace only: the parent chart's default is ALL, which the namespaced Role refuses.
                    "searchNamespace": NAMESPACE,
                    "label": "grafana_dashboard",
                    "labelValue": "1",
                    "folderAnnotation": "grafana_folder",
                    "provider": {"foldersFromFilesStructure": True, "allowUiUpdates": False},
                },
                "datasources": {"enabled": True, "defaultDatasourceEnabled": True, "searchNamespace": NAMESPACE},
            },
            "grafana.ini": self.grafana_ini(),
        }

    def prometheus(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "prometheusSpec": {
                "retention": self.retention,
                # Below the volume, so a burst of series deletes old blocks instead of filling the disk.
                "retentionSize": f"{max(1, int(self.volume_gib * 0.8))}GB",
                "scrapeInterval": SCRAPE_INTERVAL,
                "evaluationInterval": SCRAPE_INTERVAL,
                "replicas": 1,
                "resources": dict(PROMETHEUS_RESOURCES),
                **self._placement(),
                "storageSpec": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "storageClassName": self.storage_class,
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": f"{self.volume_gib}Gi"}},
                        }
                    }
                },
                # Only the monitors of this release (label release=kube-prometheus-stack), in this namespace.
                "serviceMonitorSelectorNilUsesHelmValues": True,
                "podMonitorSelectorNilUsesHelmValues": True,
                "ruleSelectorNilUsesHelmValues": True,
                "probeSelectorNilUsesHelmValues": True,
                "scrapeConfigSelectorNilUsesHelmValues": True,
            },
        }

    def to_values(self) -> dict[str, Any]:
        placement = self._placement()
        return {
            "crds": {"enabled": True},
            "defaultRules": {"create": False},
            "alertmanager": {"enabled": False},
            "grafana": self.grafana(),
            "kubernetesServiceMonitors": {"enabled": True},
            "kubeApiServer": {"enabled": False},
            "kubelet": {"enabled": True},
            "kubeControllerManager": {"enabled": False},
            "coreDns": {"enabled": False},
            "kubeDns": {"enabled": False},
            "kubeEtcd": {"enabled": False},
            "kubeScheduler": {"enabled": False},
            "kubeProxy": {"enabled": False},
            "kubeStateMetrics": {"enabled": True},
            "kube-state-metrics": {
                "resources": dict(KSM_RESOURCES),
                **placement,
                "metricLabelsAllowlist": list(KSM_LABELS_ALLOWLIST),
            },
            "nodeExporter": {"enabled": False},
            "windowsMonitoring": {"enabled": False},
            "prometheusOperator": {
                "enabled": True,
                # No admission webhook (and so no certificate Jobs): the platform's only PrometheusRules would be
                # its own, and there are none; without the webhook's certificate the operator serves plain HTTP.
                "admissionWebhooks": {"enabled": False, "patch": {"enabled": False}},
                "tls": {"enabled": False},
                "resources": dict(OPERATOR_RESOURCES),
                "prometheusConfigReloader": {"resources": dict(RELOADER_RESOURCES)},
                **placement,
            },
            "prometheus": self.prometheus(),
            "thanosRuler": {"enabled": False},
        }


# ---------------------------------------------------------------------------------------------------------
# What Prometheus scrapes outside the chart's own monitors
# ---------------------------------------------------------------------------------------------------------


def _monitor(kind: str, name: str, namespaces: Sequence[str], selector: Mapping[str, str],
             endpoints: list[dict[str, Any]], description: str, *,
             pod_target_labels: Sequence[str] = ()) -> dict[str, Any]:
    key = "podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"
    extra = {"podTargetLabels": list(pod_target_labels)} if pod_target_labels else {}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(MONITOR_LABELS),
                     "annotations": {"dynamic-factory/description": description}},
        "spec": {
            "namespaceSelector": {"matchNames": list(namespaces)},
            "selector": {"matchLabels": dict(selector)},
            key: endpoints,
            **extra,
        },
    }


def _ray_relabelings() -> list[dict[str, Any]]:
    # Ray's dashboards filter by cluster (ray_io_cluster, KubeRay's own PodMonitor sample does the same) and the
    # factory dashboard by namespace (team).
    return [
        {"sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"], "targetLabel": "ray_io_cluster"},
        {"sourceLabels": ["__meta_kubernetes_pod_label_ray_io_node_type"], "targetLabel": "ray_io_node_type"},
    ]


def _constant_label(label: str, value: str) -> dict[str, Any]:
    return {"targetLabel": label, "replacement": value, "action": "replace"}


def monitors(ray_namespaces: Sequence[str], cluster_name: str) -> list[dict[str, Any]]:
    """PodMonitors for Ray, Karpenter, Cilium and Hubble (each target's pods declare the named port).

    Labels the upstream dashboards filter on (dashboards/): Cilium's agent and operator panels select
    ``k8s_app="cilium"`` / ``io_cilium_app="operator"`` (the pods' labels, copied by ``podTargetLabels``), Karpenter's
    performance dashboard ``job="karpenter"`` (a PodMonitor's job is otherwise ``<namespace>/<name>``), and the Hubble
    dashboards a ``cluster`` label (the EKS cluster's name)."""
    ray = [
        _monitor("PodMonitor", "ray-nodes", ray_namespaces, {"ray.io/is-ray-node": "yes"},
                 [{"port": "metrics", "relabelings": _ray_relabelings()}],
                 "Ray head and workers: Ray's system and application metrics (KubeRay's `metrics` port)."),
        _monitor("PodMonitor", "ray-head", ray_namespaces, {"ray.io/node-type": "head"},
                 [{"port": "as-metrics", "relabelings": _ray_relabelings()},
                  {"port": "dash-metrics", "relabelings": _ray_relabelings()}],
                 "The Ray head's autoscaler and dashboard metrics."),
    ]
    return ray + [
        # honorLabels: Karpenter's own `namespace` label (of the pods it counts) is not renamed exported_namespace.
        _monitor("PodMonitor", "karpenter", [KARPENTER_NAMESPACE], KARPENTER_POD_LABELS,
                 [{"port": "http-metrics", "honorLabels": True,
                   "relabelings": [_constant_label("job", "karpenter")]}],
                 "The Karpenter controller: nodes, pools, interruptions, disruption."),
        _monitor("PodMonitor", "cilium-agent", [CILIUM_NAMESPACE], CILIUM_AGENT_POD_LABELS,
                 [{"port": "prometheus", "relabelings": [_constant_label("cluster", cluster_name)]},
                  {"port": "hubble-metrics", "relabelings": [_constant_label("cluster", cluster_name)]}],
                 "Cilium agents (datapath, policy, drops) and their Hubble flow metrics.",
                 pod_target_labels=["k8s-app"]),
        _monitor("PodMonitor", "cilium-operator", [CILIUM_NAMESPACE], CILIUM_OPERATOR_POD_LABELS,
                 [{"port": "prometheus", "relabelings": [_constant_label("cluster", cluster_name)]}],
                 "The Cilium operator: ENI IP allocation.",
                 pod_target_labels=["io.cilium/app"]),
    ]


# ---------------------------------------------------------------------------------------------------------
# The namespace and its network policies
# ---------------------------------------------------------------------------------------------------------


def namespace_manifest() -> dict[str, Any]:
    """Pod Security ``baseline`` enforced and ``restricted`` warned and audited: every pod of the release runs as
    non-root with no added capabilities (the first-boot model finds each admitted by ``restricted`` too)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
        },
    }


_LABELS = {"app.kubernetes.io/part-of": "dynamic-factory", "app.kubernetes.io/component": "monitoring"}


def _netpol(name: str, selector: Mapping[str, str], description: str, *, ingress: list | None = None,
            egress: list | None = None) -> dict[str, Any]:
    types = [t for t, rules in (("Ingress", ingress), ("Egress", egress)) if rules is not None]
    spec: dict[str, Any] = {"podSelector": {"matchLabels": dict(selector)} if selector else {}, "policyTypes": types}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(_LABELS),
                         "annotations": {"dynamic-factory/description": description}},
            "spec": spec}


def _cnp(name: str, selector: Mapping[str, str], description: str, egress: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": dict(_LABELS),
                         "annotations": {"dynamic-factory/description": description}},
            "spec": {"endpointSelector": {"matchLabels": dict(selector)}, "egress": egress}}


def _cilium_ports(*ports: int) -> list[dict[str, Any]]:
    return [{"ports": [{"port": str(p), "protocol": "TCP"} for p in ports]}]


def network_policies(*, ray_namespaces: Sequence[str], grafana_clients: Sequence[tuple[str, Mapping[str, str]]] = (),
                     ) -> list[dict[str, Any]]:
    """Default deny both ways in ``monitoring``; then only:

    * Prometheus out to its targets: Ray pods (8080, 44217, 44227) in ``ray_namespaces``, Karpenter (8080),
      kube-state-metrics and the operator and itself in this namespace, and, as Cilium entities (they run on the
      host network), kubelets (10250), Cilium agents (9962), Hubble (9965) and the Cilium operator (9963);
      Prometheus in from Grafana only (9090), and from the head of each Ray cluster (Ray's dashboard queries it);
    * Grafana in (3000) from the Ray heads (health check) and ``grafana_clients`` (namespace, pod labels: the hub's
      proxy with a domain); Grafana out to Prometheus;
    * every pod of the release to DNS, and the operator, kube-state-metrics, Grafana (its sidecars watch ConfigMaps)
      and Prometheus (service discovery) to the API server (the ``kube-apiserver`` entity).

    ``kubectl port-forward`` enters the pod's network namespace through the kubelet, so it needs no rule.
    """
    ray_heads = [namespace_peer(ns, {"ray.io/node-type": "head"}) for ns in ray_namespaces]
    ray_nodes = [namespace_peer(ns, {"ray.io/is-ray-node": "yes"}) for ns in ray_namespaces]
    in_ns = lambda labels: {"podSelector": {"matchLabels": dict(labels)}}  # noqa: E731
    policies = [
        _netpol("default-deny", {}, "Deny all ingress and egress of every pod here unless another policy allows it.",
                ingress=[], egress=[]),
        _netpol("allow-dns", {}, "Every pod here resolves names through CoreDNS.",
                egress=[{"to": [namespace_peer("kube-system", {"k8s-app": "kube-dns"})], "ports": list(DNS_PORTS)}]),
        _netpol("prometheus", PROMETHEUS_POD_LABELS,
                "Prometheus scrapes Ray, Karpenter and this namespace; Grafana and Ray heads query it.",
                ingress=[{"from": [in_ns(GRAFANA_POD_LABELS), *ray_heads], "ports": tcp_ports(PROMETHEUS_PORT)}],
                egress=[
                    {"to": ray_nodes, "ports": tcp_ports(RAY_METRICS_PORT)},
                    {"to": ray_heads, "ports": tcp_ports(RAY_AUTOSCALER_METRICS_PORT, RAY_DASHBOARD_METRICS_PORT)},
                    {"to": [namespace_peer(KARPENTER_NAMESPACE, KARPENTER_POD_LABELS)], "ports": tcp_ports(KARPENTER_METRICS_PORT)},
                    {"to": [in_ns(KUBE_STATE_METRICS_POD_LABELS)], "ports": tcp_ports(KUBE_STATE_METRICS_PORT)},
                    {"to": [in_ns(OPERATOR_POD_LABELS)], "ports": tcp_ports(OPERATOR_PORT)},
                    {"to": [in_ns(PROMETHEUS_POD_LABELS)], "ports": tcp_ports(PROMETHEUS_PORT, PROMETHEUS_RELOADER_PORT)},
                ]),
        _netpol("prometheus-targets", {},
                "Only Prometheus scrapes kube-state-metrics, the operator and Prometheus itself.",
                ingress=[{"from": [in_ns(PROMETHEUS_POD_LABELS)],
                          "ports": tcp_ports(*sorted({KUBE_STATE_METRICS_PORT, OPERATOR_PORT, PROMETHEUS_PORT}))}]),
        _netpol("grafana", GRAFANA_POD_LABELS, "Grafana: reached by Ray heads and the hub's proxy; queries Prometheus.",
                ingress=[{"from": [*ray_heads, *(namespace_peer(ns, labels) for ns, labels in grafana_clients)],
                          "ports": tcp_ports(GRAFANA_PORT)}],
                egress=[{"to": [in_ns(PROMETHEUS_POD_LABELS)], "ports": tcp_ports(PROMETHEUS_PORT)}]),
        # Entities no NetworkPolicy peer can name (Cilium: host-network pods are `host`/`remote-node`, the API
        # server is `kube-apiserver`).
        _cnp("prometheus-host-targets", PROMETHEUS_POD_LABELS,
             "Prometheus scrapes kubelets, Cilium agents, Hubble and the Cilium operator (host network), and "
             "discovers targets through the API server.",
             [{"toEntities": ["host", "remote-node"],
               "toPorts": _cilium_ports(KUBELET_PORT, CILIUM_AGENT_METRICS_PORT, HUBBLE_METRICS_PORT,
                                        CILIUM_OPERATOR_METRICS_PORT)},
              {"toEntities": ["kube-apiserver"], "toPorts": _cilium_ports(443)}]),
    ]
    for name, labels, why in (
        ("grafana-api", GRAFANA_POD_LABELS, "Grafana's sidecars watch this namespace's dashboard ConfigMaps."),
        ("operator-api", OPERATOR_POD_LABELS, "The operator reconciles Prometheus and its monitors."),
        ("kube-state-metrics-api", KUBE_STATE_METRICS_POD_LABELS, "kube-state-metrics lists and watches objects."),
    ):
        policies.append(_cnp(name, labels, why, [{"toEntities": ["kube-apiserver"], "toPorts": _cilium_ports(443)}]))
    return policies


class MonitoringNamespaceChart(cdk8s.Chart):
    """Namespace ``monitoring`` and its network policies: apply it before the ``kube-prometheus-stack`` release."""

    def __init__(self, scope: Construct, construct_id: str, *, ray_namespaces: Sequence[str],
                 grafana_clients: Sequence[tuple[str, Mapping[str, str]]] = ()) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.policies = network_policies(ray_namespaces=ray_namespaces, grafana_clients=grafana_clients)
        self.namespace_object = namespace_with(self, namespace_manifest(), self.policies)


class MonitorsChart(cdk8s.Chart):
    """The PodMonitors: apply after the release (its CRDs) and its namespace."""

    def __init__(self, scope: Construct, construct_id: str, *, ray_namespaces: Sequence[str],
                 cluster_name: str) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.manifests = monitors(ray_namespaces, cluster_name)
        for manifest in self.manifests:
            api_object(self, f"{manifest['kind']}-{manifest['metadata']['name']}", manifest)

