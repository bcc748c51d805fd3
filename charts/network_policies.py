"""Ingress isolation of a Ray namespace (``ray``, or ``ray-<team>``): standard Kubernetes ``NetworkPolicy`` objects.

Policies (all in the Ray namespace, all ``policyTypes: [Ingress]``):

1. ``default-deny-ingress`` selects every pod and allows nothing: a pod no other policy admits traffic
   to is unreachable from outside the namespace (and a Ray pod created before any other policy applies
   is covered from its first second).
2. ``allow-same-namespace``: every pod in ``ray`` may reach every other on any port. Ray's own traffic
   (GCS 6379, raylet / object manager / worker ports, which are many and dynamic) never leaves the
   namespace, so it is allowed wholesale.
3. ``allow-notebooks-to-ray-head``: JupyterHub single-user pods (namespace ``jupyterhub``, label
   ``component: singleuser-server``) may reach the Ray *head* only, on 8265 (Jobs API / dashboard) and
   10001 (Ray Client). Not the workers, not GCS.
4. ``allow-kuberay-operator-to-ray-head``: the KubeRay operator (namespace ``kuberay-system``, the chart's
   pod label ``app.kubernetes.io/name: kuberay-operator``) may reach the head's dashboard, 8265: it calls
   the Jobs / Serve REST API there for RayJob and RayService. A plain RayCluster needs nothing from the
   operator over the pod network (it reconciles through the Kubernetes API).

Every peer is a ``namespaceSelector`` on ``kubernetes.io/metadata.name`` (set by the API server, cannot be
forged by a namespace owner) AND a ``podSelector`` in the same peer entry; never an ``ipBlock``: Cilium
derives pod identities from labels and does not apply ``ipBlock`` to pod IPs.

Why standard NetworkPolicies: Cilium enforces ``networking.k8s.io/v1`` NetworkPolicy natively (it
translates them into its own policy model), they validate against the Kubernetes API schema, and they
keep the platform portable. A ``CiliumNetworkPolicy`` is only needed for what NetworkPolicy cannot
express: Cilium *entities* and DNS names. The Ray pods' egress is limited by CiliumNetworkPolicies in
charts/ray_egress.py (namespace, DNS, the Pod Identity agent on the host, S3, PyPI, the API server for the head);
these policies here restrict ingress. Each team's namespace (charts/ray_teams.py) gets the same policies, and its
head admits only the notebooks the hub labelled with that team. If the operator is ever run with
``useKubernetesProxy``, its requests arrive from the API server (the ``kube-apiserver`` entity) and a
CiliumNetworkPolicy would be needed too.

Not affected: kubelet probes (Cilium always allows the local host to reach its pods) and
``kubectl port-forward`` to the dashboard (it enters the pod's network namespace through the kubelet).
A job submitter in another namespace (e.g. a pipeline Job) needs its own rule like (3).

The chart does not create the namespace; add a dependency on the chart that does (cdk8s orders objects
only by explicit dependencies).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import cdk8s
from constructs import Construct

from charts import raycluster
from charts.k8s import DNS_PORTS, NAMESPACE_NAME_LABEL, api_object, namespace_peer, tcp_ports

__all__ = [
    "JUPYTERHUB_NAMESPACE",
    "KUBERAY_OPERATOR_LABELS",
    "KUBERAY_OPERATOR_NAMESPACE",
    "NAMESPACE_NAME_LABEL",
    "NOTEBOOK_POD_LABELS",
    "RAY_CLIENT_PORT",
    "RAY_DASHBOARD_PORT",
    "RAY_NAMESPACE",
    "RayNetworkPoliciesChart",
    "ray_network_policies",
]

RAY_NAMESPACE = raycluster.NAMESPACE
RAY_CLUSTER_NAME = raycluster.CLUSTER_NAME
JUPYTERHUB_NAMESPACE = "jupyterhub"
KUBERAY_OPERATOR_NAMESPACE = "kuberay-system"
RAY_DASHBOARD_PORT = raycluster.DASHBOARD_PORT
RAY_CLIENT_PORT = raycluster.CLIENT_PORT

# KubeSpawner (z2jh 4.x) labels user pods with both `component` and `app.kubernetes.io/component`.
NOTEBOOK_POD_LABELS = {"component": "singleuser-server"}
# The kuberay-operator chart's pod template label (`kuberay-operator.name`: the chart name).
KUBERAY_OPERATOR_LABELS = {"app.kubernetes.io/name": "kuberay-operator"}

_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_API_VERSION = "networking.k8s.io/v1"


def _check_labels(what: str, labels: Mapping[str, str]) -> list[str]:
    problems = []
    if not labels:
        problems.append(f"{what}: at least one label is required (an empty selector matches every pod)")
    for k, v in labels.items():
        if not _LABEL_KEY_RE.match(k) or len(k.split("/")[-1]) > 63:
            problems.append(f"{what}: {k!r} is not a valid label key")
        if not isinstance(v, str) or not _LABEL_VALUE_RE.match(v) or len(v) > 63:
            problems.append(f"{what}: {k}={v!r} is not a valid label value")
    return problems


def _policy(name: str, namespace: str, pod_selector: Mapping[str, Any], ingress: list[dict[str, Any]],
            description: str) -> dict[str, Any]:
    return {
        "apiVersion": _API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "dynamic-factory", "app.kubernetes.io/component": "ray"},
            "annotations": {"dynamic-factory/description": description},
        },
        "spec": {"podSelector": dict(pod_selector), "policyTypes": ["Ingress"], "ingress": ingress},
    }


def ray_network_policies(
    *,
    ray_namespace: str = RAY_NAMESPACE,
    ray_cluster_name: str = RAY_CLUSTER_NAME,
    jupyterhub_namespace: str = JUPYTERHUB_NAMESPACE,
    notebook_pod_labels: Mapping[str, str] = NOTEBOOK_POD_LABELS,
    operator_namespace: str = KUBERAY_OPERATOR_NAMESPACE,
    operator_pod_labels: Mapping[str, str] = KUBERAY_OPERATOR_LABELS,
    dashboard_port: int = RAY_DASHBOARD_PORT,
    client_port: int = RAY_CLIENT_PORT,
    scraper: tuple[str, Mapping[str, str]] | None = None,
    scrape_ports: Sequence[int] = (),
) -> list[dict[str, Any]]:
    """The NetworkPolicy manifests (plain dicts, in apply order). Raises ValueError on bad arguments.

    ``scraper``: (namespace, pod labels) of the Prometheus that may scrape every Ray pod on ``scrape_ports``
    (charts/metrics.py), or None when metrics are off."""
    problems = []
    for what, ns in (("ray_namespace", ray_namespace), ("jupyterhub_namespace", jupyterhub_namespace),
                     ("operator_namespace", operator_namespace)):
        if not isinstance(ns, str) or not _DNS_LABEL_RE.match(ns) or len(ns) > 63:
            problems.append(f"{what} {ns!r} is not a namespace name (DNS label)")
    if not isinstance(ray_cluster_name, str) or not _LABEL_VALUE_RE.match(ray_cluster_name) or not ray_cluster_name:
        problems.append(f"ray_cluster_name {ray_cluster_name!r} is not a valid label value")
    if ray_namespace in (jupyterhub_namespace, operator_namespace):
        problems.append(f"ray_namespace {ray_namespace!r} must differ from the JupyterHub and operator "
                        "namespaces (same-namespace traffic is allowed wholesale)")
    problems += _check_labels("notebook_pod_labels", notebook_pod_labels)
    problems += _check_labels("operator_pod_labels", operator_pod_labels)
    for what, port in (("dashboard_port", dashboard_port), ("client_port", client_port)):
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            problems.append(f"{what} {port!r} is not a TCP port")
    if dashboard_port == client_port:
        problems.append("dashboard_port and client_port must differ")
    if problems:
        raise ValueError("ray network policies: " + "; ".join(problems))

    if scraper is not None:
        problems += _check_labels("scraper pod labels", scraper[1])
        if not scrape_ports:
            problems.append("scrape_ports: a scraper needs the ports it scrapes")
    if problems:
        raise ValueError("ray network policies: " + "; ".join(problems))

    head = {"matchLabels": {"ray.io/cluster": ray_cluster_name, "ray.io/node-type": "head"}}
    scrape = [] if scraper is None else [
        _policy("allow-prometheus-scrape", ray_namespace, {"matchLabels": {"ray.io/cluster": ray_cluster_name}},
                [{"from": [namespace_peer(*scraper)], "ports": tcp_ports(*scrape_ports)}],
                "Prometheus scrapes the Ray pods' metrics (Ray's metrics port; the head's autoscaler and dashboard)."),
    ]
    return [
        _policy("default-deny-ingress", ray_namespace, {}, [],
                "Deny all ingress to pods in this namespace unless another policy allows it."),
        _policy("allow-same-namespace", ray_namespace, {}, [{"from": [{"podSelector": {}}]}],
                "Ray head and workers talk to each other on many dynamic ports."),
        _policy("allow-notebooks-to-ray-head", ray_namespace, head,
                [{"from": [namespace_peer(jupyterhub_namespace, notebook_pod_labels)],
                  "ports": tcp_ports(dashboard_port, client_port)}],
                "JupyterHub single-user servers submit jobs (Jobs API) and use Ray Client on the head."),
        _policy("allow-kuberay-operator-to-ray-head", ray_namespace, head,
                [{"from": [namespace_peer(operator_namespace, operator_pod_labels)],
                  "ports": tcp_ports(dashboard_port)}],
                "The KubeRay operator calls the head's dashboard API (RayJob / RayService)."),
        *scrape,
    ]


class RayNetworkPoliciesChart(cdk8s.Chart):
    """The policies of :func:`ray_network_policies` as a cdk8s chart (fixed object names).

    :param ray_namespace: namespace of the RayCluster (must exist; add a dependency on its chart).
    :param ray_cluster_name: RayCluster name (``ray.io/cluster`` label of its pods).
    :param jupyterhub_namespace / notebook_pod_labels: where the single-user servers run, and their labels.
    :param operator_namespace / operator_pod_labels: where the KubeRay operator runs, and its pod labels.
    :param dashboard_port / client_port: the head's Jobs API / dashboard and Ray Client ports.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        ray_namespace: str = RAY_NAMESPACE,
        ray_cluster_name: str = RAY_CLUSTER_NAME,
        jupyterhub_namespace: str = JUPYTERHUB_NAMESPACE,
        notebook_pod_labels: Mapping[str, str] = NOTEBOOK_POD_LABELS,
        operator_namespace: str = KUBERAY_OPERATOR_NAMESPACE,
        operator_pod_labels: Mapping[str, str] = KUBERAY_OPERATOR_LABELS,
        dashboard_port: int = RAY_DASHBOARD_PORT,
        client_port: int = RAY_CLIENT_PORT,
        scraper: tuple[str, Mapping[str, str]] | None = None,
        scrape_ports: Sequence[int] = (),
    ) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.manifests = ray_network_policies(
            ray_namespace=ray_namespace,
            ray_cluster_name=ray_cluster_name,
            jupyterhub_namespace=jupyterhub_namespace,
            notebook_pod_labels=notebook_pod_labels,
            operator_namespace=operator_namespace,
            operator_pod_labels=operator_pod_labels,
            dashboard_port=dashboard_port,
            client_port=client_port,
            scraper=scraper,
            scrape_ports=scrape_ports,
        )
        for manifest in self.manifests:
            api_object(self, manifest["metadata"]["name"], manifest)


# ---------------------------------------------------------------------------------------------------------
# The log shipper's namespace (charts/log_shipping.py): nothing comes in, and only what Fluent Bit needs goes out.
# ---------------------------------------------------------------------------------------------------------
# Fluent Bit reads files on its node and calls three things, all outbound:
#   * DNS (CoreDNS in kube-system, UDP/TCP 53) to resolve logs.<region>.amazonaws.com;
#   * CloudWatch Logs over HTTPS (TCP 443) through the NAT gateway: the `world` identity under Cilium, which an
#     ipBlock for the public address space matches (Cilium ignores ipBlock only for pod and host addresses);
#   * the EKS Pod Identity agent on its own node (169.254.170.23, TCP 80) for its credentials: Cilium gives that
#     address the `host` entity, which no NetworkPolicy peer can name, hence the one CiliumNetworkPolicy.
# It does not call the Kubernetes API (no kubernetes filter: the stream names carry namespace, pod and container).
# Kubelet probes still reach it: Cilium always lets the local host reach its pods.
LOG_SHIPPER_DNS_LABELS = {"k8s-app": "kube-dns"}
_PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10")
CILIUM_API_VERSION = "cilium.io/v2"
POD_IDENTITY_AGENT_PORT = 80
HTTPS_PORT = 443


def log_shipper_network_policies(namespace: str, pod_labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """Default deny (both directions) for ``namespace``, the log shipper's egress as a NetworkPolicy, and the
    Pod Identity agent (Cilium's ``host`` entity, TCP 80) as a CiliumNetworkPolicy. No ingress is allowed."""
    problems = []
    if not isinstance(namespace, str) or not _DNS_LABEL_RE.match(namespace) or len(namespace) > 63:
        problems.append(f"namespace {namespace!r} is not a namespace name (DNS label)")
    problems += _check_labels("pod_labels", pod_labels)
    if problems:
        raise ValueError("log shipper network policies: " + "; ".join(problems))
    labels = {"app.kubernetes.io/part-of": "dynamic-factory", "app.kubernetes.io/component": "logging"}
    return [
        {
            "apiVersion": _API_VERSION,
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": namespace, "labels": dict(labels),
                         "annotations": {"dynamic-factory/description":
                                         "Deny all ingress and egress of every pod here unless another policy allows it."}},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []},
        },
        {
            "apiVersion": _API_VERSION,
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-log-shipper-egress", "namespace": namespace, "labels": dict(labels),
                         "annotations": {"dynamic-factory/description":
                                         "Fluent Bit resolves names (CoreDNS) and sends to CloudWatch Logs over HTTPS."}},
            "spec": {
                "podSelector": {"matchLabels": dict(pod_labels)},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [namespace_peer("kube-system", LOG_SHIPPER_DNS_LABELS)], "ports": list(DNS_PORTS)},
                    {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(_PRIVATE_RANGES)}}],
                     "ports": tcp_ports(HTTPS_PORT)},
                ],
            },
        },
        {
            "apiVersion": CILIUM_API_VERSION,
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "allow-log-shipper-pod-identity", "namespace": namespace, "labels": dict(labels),
                         "annotations": {"dynamic-factory/description":
                                         "Fluent Bit gets its AWS credentials from the EKS Pod Identity agent "
                                         "(169.254.170.23:80, the host entity under Cilium)."}},
            "spec": {
                "endpointSelector": {"matchLabels": dict(pod_labels)},
                "egress": [{"toEntities": ["host"],
                            "toPorts": [{"ports": [{"port": str(POD_IDENTITY_AGENT_PORT), "protocol": "TCP"}]}]}],
            },
        },
    ]
