"""The platform's own Grafana dashboard, "The factory" (uid ``dynamic-factory``), as a Python dict.

One screen that answers the questions an operator of this platform asks first: is work waiting, and why; what
nodes are running, in which pool and on which capacity type; is Spot being taken away and replaced; how close each
NodePool is to its limits; what the Ray clusters are doing; what the platform costs per hour right now; and is
Karpenter healthy. Every panel's ``description`` is the question it answers.

Metrics it reads (each name is in a reviewed list under ``dashboards/metrics/``; tests/schema/test_dashboards.py
walks every query's AST and fails on any other name):

* kube-state-metrics: ``kube_pod_status_unschedulable``, ``kube_pod_status_phase``,
  ``kube_pod_container_status_waiting_reason``, ``kube_pod_init_container_status_waiting_reason`` and
  ``kube_node_labels``. The last carries only the node labels kube-state-metrics is told to expose
  (:data:`KSM_NODE_LABELS`, its ``--metric-labels-allowlist``); it turns ``dynamic-factory/pool`` into
  ``label_dynamic_factory_pool`` and ``eks.amazonaws.com/capacityType`` into
  ``label_eks_amazonaws_com_capacity_type`` (non-alphanumerics to ``_``, then camelCase to snake_case).
* Karpenter: interruption, nodeclaim, NodePool usage/limit, cluster-state and cloud-provider metrics.
* Ray: the autoscaler's ``autoscaler_active_nodes`` / ``autoscaler_pending_nodes`` (head pod, port 44217) and
  ``ray_tasks`` (every Ray node, port 8080), grouped by ``namespace`` and ``ray_io_cluster`` (the PodMonitors copy
  the pod label ``ray.io/cluster`` into ``ray_io_cluster``).

Cost (panel "Cost per hour now"): the running nodes times a price table, built at synth time from
``node_prices`` (on-demand USD per hour by instance type). A node on Spot is priced at ``1 - spot_discount`` of its
on-demand price. It is an estimate of list prices, not a bill: real Spot prices move, and a node whose instance
type is not in the table adds nothing (the "Unpriced nodes" stat counts them, so a missing price shows).
``fixed_usd_per_hour`` (control plane, NAT gateways, load balancer...) is a separate constant series.

Capacity type of a node: Karpenter's label ``karpenter.sh/capacity-type`` (``spot`` / ``on-demand``); the system
managed node group has none and carries EKS's ``eks.amazonaws.com/capacityType`` (``ON_DEMAND`` / ``SPOT``)
instead, mapped to the same two values (:func:`node_series`).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

__all__ = [
    "CAPACITY_LABEL",
    "DASHBOARD_TITLE",
    "DASHBOARD_UID",
    "DATASOURCE",
    "INSTANCE_TYPE_LABEL",
    "KSM_LABELS_ALLOWLIST",
    "KSM_NODE_LABELS",
    "PANEL_TITLES",
    "POOL_LABEL",
    "cost_expressions",
    "factory_dashboard",
    "node_series",
]

DASHBOARD_UID = "dynamic-factory"
DASHBOARD_TITLE = "The factory"
# kube-prometheus-stack's provisioned data source (its sidecar datasource ConfigMap): name Prometheus, uid prometheus.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_DATASOURCE_NAME = "Prometheus"
_DATASOURCE_UID = "prometheus"

# Node labels kube-state-metrics must expose on kube_node_labels (its --metric-labels-allowlist, `nodes=[...]`).
KSM_NODE_LABELS = (
    "dynamic-factory/pool",
    "karpenter.sh/capacity-type",
    "eks.amazonaws.com/capacityType",
    "node.kubernetes.io/instance-type",
)
KSM_LABELS_ALLOWLIST = ("nodes=[" + ",".join(KSM_NODE_LABELS) + "]",)

# The Prometheus label names kube-state-metrics gives those node labels.
POOL_LABEL = "label_dynamic_factory_pool"
_KARPENTER_CAPACITY_LABEL = "label_karpenter_sh_capacity_type"
_EKS_CAPACITY_LABEL = "label_eks_amazonaws_com_capacity_type"
INSTANCE_TYPE_LABEL = "label_node_kubernetes_io_instance_type"
# The label node_series() adds: spot | on-demand.
CAPACITY_LABEL = "capacity_type"

PANEL_TITLES = (
    "Pending pods by reason",
    "Nodes by pool and capacity type",
    "Spot interruptions and replacements",
    "NodePool usage vs limits",
    "Ray worker nodes per cluster",
    "Ray tasks by state per cluster",
    "Cost per hour now (USD)",
    "Unpriced nodes",
    "Karpenter health",
)

_INSTANCE_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9-]*\.[a-z0-9]+$")
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GRID_W = 12
_GRID_H = 8


def node_series() -> str:
    """PromQL for one series per node (value 1) with ``capacity_type`` set to ``spot`` or ``on-demand``.

    Karpenter's nodes carry ``karpenter.sh/capacity-type``; the system node group only EKS's
    ``eks.amazonaws.com/capacityType``. ``label_replace(v, dst, value, "", "")`` sets a constant label (an empty
    source label matches the empty regex).
    """
    return (
        f'label_replace(kube_node_labels{{{_KARPENTER_CAPACITY_LABEL}!=""}}, '
        f'"{CAPACITY_LABEL}", "$1", "{_KARPENTER_CAPACITY_LABEL}", "(.*)")'
        f' or label_replace(kube_node_labels{{{_KARPENTER_CAPACITY_LABEL}="", {_EKS_CAPACITY_LABEL}="SPOT"}}, '
        f'"{CAPACITY_LABEL}", "spot", "", "")'
        f' or label_replace(kube_node_labels{{{_KARPENTER_CAPACITY_LABEL}="", {_EKS_CAPACITY_LABEL}!="SPOT"}}, '
        f'"{CAPACITY_LABEL}", "on-demand", "", "")'
    )


def _number(value: float) -> str:
    return format(float(value), ".10g")  # 0.3, not 0.30000000000000004


def _constant(value: float, label: str, label_value: str) -> str:
    return f'label_replace(vector({_number(value)}), "{label}", "{label_value}", "", "")'


def _validate(node_prices: Mapping[str, float], spot_discount: float, fixed_usd_per_hour: float,
              ray_namespaces: Sequence[str]) -> None:
    problems = []
    if not node_prices:
        problems.append("node_prices: at least one instance type with its on-demand USD/h")
    for instance_type, price in sorted(node_prices.items()):
        if not isinstance(instance_type, str) or not _INSTANCE_TYPE_RE.match(instance_type):
            problems.append(f"node_prices: {instance_type!r} is not an EC2 instance type (family.size)")
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price <= 0:
            problems.append(f"node_prices[{instance_type!r}]: {price!r} must be a positive number of USD per hour")
    if isinstance(spot_discount, bool) or not isinstance(spot_discount, (int, float)) or not 0 <= spot_discount < 1:
        problems.append(f"spot_discount: {spot_discount!r} must be a fraction in [0, 1) (0.7 = Spot costs 30%)")
    if (isinstance(fixed_usd_per_hour, bool) or not isinstance(fixed_usd_per_hour, (int, float))
            or not math.isfinite(fixed_usd_per_hour) or fixed_usd_per_hour < 0):
        problems.append(f"fixed_usd_per_hour: {fixed_usd_per_hour!r} must be a number >= 0")
    if not ray_namespaces:
        problems.append("ray_namespaces: at least one namespace")
    for ns in ray_namespaces:
        if not isinstance(ns, str) or not _NAMESPACE_RE.match(ns) or len(ns) > 63:
            problems.append(f"ray_namespaces: {ns!r} is not a namespace name")
    if problems:
        raise ValueError("factory_dashboard: " + "; ".join(problems))


def cost_expressions(node_prices: Mapping[str, float], spot_discount: float,
                     fixed_usd_per_hour: float) -> dict[str, str]:
    """The cost panel's queries: ``nodes`` (USD/h of the running nodes), ``fixed``, ``total`` and ``unpriced``.

    ``nodes`` = sum over nodes of price[instance type] x factor[capacity type] (0 with no priced node), where the
    price table and the two factors are constant vectors written into the query (only the instance types given),
    joined on the node's instance-type label and on ``capacity_type``. ``unpriced`` counts the nodes whose
    instance type is not in the table.
    """
    prices = " or ".join(_constant(node_prices[t], INSTANCE_TYPE_LABEL, t) for t in sorted(node_prices))
    factors = " or ".join((_constant(1, CAPACITY_LABEL, "on-demand"),
                           _constant(1 - spot_discount, CAPACITY_LABEL, "spot")))
    nodes_by_type = f"count by ({INSTANCE_TYPE_LABEL}, {CAPACITY_LABEL}) ({node_series()})"
    nodes = (f"sum({nodes_by_type} * on ({INSTANCE_TYPE_LABEL}) group_left () ({prices})"
             f" * on ({CAPACITY_LABEL}) group_left () ({factors})) or vector(0)")
    fixed = f"vector({_number(fixed_usd_per_hour)})"
    return {
        "nodes": nodes,
        "fixed": fixed,
        "total": f"({nodes}) + {fixed}",
        "unpriced": f"sum(({nodes_by_type}) unless on ({INSTANCE_TYPE_LABEL}) ({prices})) or vector(0)",
    }


def _target(expr: str, legend: str, ref: str, **extra: Any) -> dict[str, Any]:
    return {"datasource": dict(DATASOURCE), "expr": expr, "legendFormat": legend, "refId": ref, **extra}


def _panel(panel_id: int, title: str, description: str, kind: str, targets: list[dict[str, Any]], *,
           x: int, y: int, w: int = _GRID_W, h: int = _GRID_H, unit: str = "short",
           options: Mapping[str, Any] | None = None, stack: bool = False) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    if kind == "timeseries":
        custom = {"drawStyle": "line", "fillOpacity": 20 if stack else 0, "lineWidth": 1,
                  "stacking": {"group": "A", "mode": "normal" if stack else "none"}}
    return {
        "id": panel_id,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
        "options": dict(options or {}),
        "targets": targets,
    }


def _variables(ray_namespaces: Sequence[str]) -> list[dict[str, Any]]:
    namespaces = sorted(set(ray_namespaces))
    all_namespaces = "|".join(re.escape(ns) for ns in namespaces)
    return [
        {
            "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "hide": 2, "current": {"selected": False, "text": _DATASOURCE_NAME, "value": _DATASOURCE_UID},
        },
        {
            "name": "ray_namespace", "label": "Ray namespace", "type": "custom",
            "query": ",".join(namespaces), "multi": True, "includeAll": True, "allValue": all_namespaces,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [{"selected": False, "text": ns, "value": ns} for ns in namespaces],
        },
        {
            "name": "ray_cluster", "label": "Ray cluster", "type": "query", "datasource": dict(DATASOURCE),
            "query": {"query": 'label_values(ray_tasks{namespace=~"$ray_namespace"}, ray_io_cluster)',
                      "refId": "ray_cluster"},
            "definition": 'label_values(ray_tasks{namespace=~"$ray_namespace"}, ray_io_cluster)',
            "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        },
    ]


def factory_dashboard(*, node_prices: Mapping[str, float], spot_discount: float, fixed_usd_per_hour: float,
                      ray_namespaces: Sequence[str]) -> dict[str, Any]:
    """The dashboard as a dict (Grafana JSON model, schemaVersion 39).

    :param node_prices: on-demand USD per hour by EC2 instance type; only these types are priced.
    :param spot_discount: fraction of the on-demand price saved on Spot, in [0, 1) (0.7: Spot costs 30%).
    :param fixed_usd_per_hour: what the platform costs per hour whatever its nodes (control plane, NAT, ...).
    :param ray_namespaces: the namespaces of the Ray clusters (the "Ray namespace" filter's choices).
    """
    _validate(node_prices, spot_discount, fixed_usd_per_hour, ray_namespaces)
    cost = cost_expressions(node_prices, spot_discount, fixed_usd_per_hour)
    ray_sel = 'namespace=~"$ray_namespace", ray_io_cluster=~"$ray_cluster"'
    workers = 'NodeType!~"head.*"'  # the autoscaler reports the head group too (KubeRay names it headgroup)
    pending = 'on (namespace, pod) group_left () (kube_pod_status_phase{phase="Pending"} == 1)'
    rate = "[$__rate_interval]"
    legend_bottom = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]}}
    stat = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value", "graphMode": "area", "textMode": "value_and_name"}
    t = PANEL_TITLES
    panels = [
        _panel(1, t[0], "Is work waiting, and why: unschedulable pods (Karpenter should be adding a node) against "
               "pods whose containers cannot start yet (image pulls, volume mounts, missing secrets).",
               "timeseries", [
                   _target("sum(kube_pod_status_unschedulable)", "Unschedulable", "A"),
                   _target(f"sum by (reason) (kube_pod_container_status_waiting_reason * {pending})", "{{reason}}",
                           "B"),
                   _target(f"sum by (reason) (kube_pod_init_container_status_waiting_reason * {pending})",
                           "init: {{reason}}", "C"),
               ], x=0, y=0, options=legend_bottom, stack=True),
        _panel(2, t[1], "What is running: nodes per pool (system, spot, on-demand, gpu) and capacity type.",
               "timeseries", [
                   _target(f"count by ({POOL_LABEL}, {CAPACITY_LABEL}) ({node_series()})",
                           f"{{{{{POOL_LABEL}}}}} / {{{{{CAPACITY_LABEL}}}}}", "A"),
               ], x=12, y=0, options=legend_bottom, stack=True),
        _panel(3, t[2], "Is Spot being taken away, and is it replaced: interruption messages Karpenter received, "
               "nodeclaims it disrupted (by reason) and the nodeclaims it created, per pool.",
               "timeseries", [
                   _target(f"sum by (message_type) (increase(karpenter_interruption_received_messages_total{rate}))",
                           "message: {{message_type}}", "A"),
                   _target(f"sum by (nodepool, reason) (increase(karpenter_nodeclaims_disrupted_total{rate}))",
                           "disrupted {{nodepool}}: {{reason}}", "B"),
                   _target(f"sum by (nodepool) (increase(karpenter_nodeclaims_created_total{rate}))",
                           "created {{nodepool}}", "C"),
               ], x=0, y=8, options=legend_bottom),
        _panel(4, t[3], "How close each NodePool is to its limits (usage / limit per resource); a pool at 100% "
               "cannot grow, and its pods stay pending. Pools without limits are not shown.",
               "bargauge", [
                   _target("sum by (nodepool, resource_type) (karpenter_nodepools_usage)"
                           " / sum by (nodepool, resource_type) (karpenter_nodepools_limit)",
                           "{{nodepool}} {{resource_type}}", "A", instant=True),
               ], x=12, y=8, unit="percentunit",
               options={"orientation": "horizontal", "displayMode": "gradient",
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
        _panel(5, t[4], "Is each Ray cluster scaling: worker nodes its autoscaler has running and still pending, "
               "per namespace, cluster and worker group (the head group is left out).",
               "timeseries", [
                   _target(f"sum by (namespace, ray_io_cluster, NodeType) "
                           f"(autoscaler_active_nodes{{{ray_sel}, {workers}}})",
                           "{{namespace}}/{{ray_io_cluster}} active {{NodeType}}", "A"),
                   _target(f"sum by (namespace, ray_io_cluster, NodeType) "
                           f"(autoscaler_pending_nodes{{{ray_sel}, {workers}}})",
                           "{{namespace}}/{{ray_io_cluster}} pending {{NodeType}}", "B"),
               ], x=0, y=16, options=legend_bottom),
        _panel(6, t[5], "What each Ray cluster is doing: its tasks by state (running, waiting for resources, "
               "pending arguments...), per namespace and cluster.",
               "timeseries", [
                   _target(f"sum by (namespace, ray_io_cluster, State) (ray_tasks{{{ray_sel}}})",
                           "{{namespace}}/{{ray_io_cluster}} {{State}}", "A"),
               ], x=12, y=16, options=legend_bottom, stack=True),
        _panel(7, t[6], "What the platform costs per hour right now: running nodes x on-demand list price (Spot "
               f"at {1 - spot_discount:.0%} of it), plus the fixed part (control plane, NAT...). An estimate, not a "
               "bill.",
               "stat", [
                   _target(cost["nodes"], "nodes", "A", instant=True),
                   _target(cost["fixed"], "fixed", "B", instant=True),
                   _target(cost["total"], "total", "C", instant=True),
               ], x=0, y=24, w=8, unit="currencyUSD", options=stat),
        _panel(8, t[7], "Does the cost estimate miss anything: running nodes whose instance type has no price in "
               "the table (they count as 0 USD/h).",
               "stat", [_target(cost["unpriced"], "unpriced nodes", "A", instant=True)],
               x=8, y=24, w=4, options=stat),
        _panel(9, t[8], "Is Karpenter healthy: its cluster state is synced, interruption messages are deleted as "
               "fast as they arrive (the SQS backlog does not grow) and picked up quickly (p99 time on the "
               "queue), and cloud-provider calls do not fail.",
               "timeseries", [
                   _target("min(karpenter_cluster_state_synced)", "cluster state synced (1 = yes)", "A"),
                   _target(f"sum(rate(karpenter_interruption_received_messages_total{rate}))"
                           f" - sum(rate(karpenter_interruption_deleted_messages_total{rate}))",
                           "interruption messages received - deleted /s", "B"),
                   _target("histogram_quantile(0.99, sum by (le) "
                           f"(rate(karpenter_interruption_message_queue_duration_seconds_bucket{rate})))",
                           "p99 seconds on the interruption queue", "C"),
                   _target(f"sum by (method) (rate(karpenter_cloudprovider_errors_total{rate}))",
                           "cloud-provider errors/s {{method}}", "D"),
               ], x=12, y=24, options=legend_bottom),
    ]
    return {
        "uid": DASHBOARD_UID,
        "title": DASHBOARD_TITLE,
        "description": "Dynamic Factory: waiting work, nodes by pool and capacity type, Spot interruptions, "
                       "NodePool limits, Ray clusters, cost per hour and Karpenter's health.",
        "tags": ["dynamic-factory"],
        "timezone": "utc",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": _variables(ray_namespaces)},
        "annotations": {"list": []},
        "panels": panels,
    }
