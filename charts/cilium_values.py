"""Typed builder for the Cilium Helm values.

Cilium replaces both the AWS VPC CNI and kube-proxy:

* ENI IPAM with native routing: pods get VPC addresses from ENIs that the Cilium
  operator attaches (through its own EKS Pod Identity role).
* kube-proxy replacement: with no kube-proxy, nothing on a new node knows the
  ``kubernetes`` Service's cluster IP, so the agent must be told how to reach the API
  server directly. ``k8sServiceHost`` is the endpoint *hostname* (an IP changes when
  EKS replaces control-plane ENIs) and the port is 443. Leaving them out is the outage
  this platform was born from: agents on new nodes never start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import aws_cdk as cdk

# Taint Cilium removes once its agent runs on a node; Karpenter NodePools set it as a
# startup taint so no pod lands on a node before its network is ready.
AGENT_NOT_READY_TAINT_KEY = "node.cilium.io/agent-not-ready"
OPERATOR_SERVICE_ACCOUNT = "cilium-operator"
# Hubble's flow metrics with metrics on (hubble.metrics.enabled): what the Hubble dashboards (dashboards/cilium/)
# read. Each is a metric family of the Hubble server; the options after ':' choose its labels (Cilium 1.20
# Documentation/observability/metrics.rst, "Hubble Exported Metrics").
_HUBBLE_CONTEXT = ("sourceContext=workload-name|reserved-identity;destinationContext=workload-name|reserved-identity;"
                   "labelsContext=source_namespace,destination_namespace")
HUBBLE_METRICS = (
    f"dns:query;ignoreAAAA;{_HUBBLE_CONTEXT}",
    f"drop:{_HUBBLE_CONTEXT}",
    f"tcp:{_HUBBLE_CONTEXT}",
    f"flow:{_HUBBLE_CONTEXT}",
    f"icmp:{_HUBBLE_CONTEXT}",
)
# Of the chart's default operator tolerations (values.yaml of 1.20.0, operator.tolerations), those that apply
# on EKS: the node lifecycle controller's not-ready taint and the cloud provider's uninitialized taint.
OPERATOR_BOOT_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists"},
    {"key": "node.cloudprovider.kubernetes.io/uninitialized", "operator": "Exists"},
)
NAMESPACE = "kube-system"


def endpoint_hostname(endpoint_url: str) -> str:
    """The host part of the cluster endpoint URL (``https://X.gr7.region.eks.amazonaws.com``).

    Works on a deploy-time token as well as on a literal string: the result is
    ``Fn::Select(1, Fn::Split("//", endpoint))``, resolved by CloudFormation.
    """
    if not cdk.Token.is_unresolved(endpoint_url):
        if "//" not in endpoint_url:
            raise ValueError(f"cluster endpoint {endpoint_url!r} is not a URL")
        return endpoint_url.split("//", 1)[1]
    return cdk.Fn.select(1, cdk.Fn.split("//", endpoint_url))


@dataclass(frozen=True)
class CiliumValues:
    cluster_name: str
    api_server_host: str
    # ENIs for pods are created only in subnets carrying this tag (the private subnets).
    subnet_tag: tuple[str, str] | None = None
    api_server_port: int = 443
    operator_replicas: int = 2
    hubble_relay: bool = True
    # Where the operator and the Hubble relay run: the system nodes (their label, and the toleration of
    # their taint). Both run at idle; the operator must run before any node is Ready.
    system_node_selector: Mapping[str, str] = field(default_factory=dict)
    system_tolerations: tuple[Mapping[str, str], ...] = ()
    # Metrics on (charts/metrics.py): the agent (9962) and the operator (9963) expose Prometheus metrics, and the
    # agents' Hubble server exposes these flow metrics (9965). The platform's PodMonitors scrape them: the chart's
    # own ServiceMonitors stay off, their CRD does not exist yet when Cilium is installed (before any node).
    metrics: bool = False
    hubble_metrics: tuple[str, ...] = HUBBLE_METRICS

    def __post_init__(self) -> None:
        host = self.api_server_host
        if not cdk.Token.is_unresolved(host) and (not host or "://" in host or "/" in host):
            raise ValueError(f"api_server_host must be a bare hostname, got {host!r}")
        if not 1 <= self.api_server_port <= 65535:
            raise ValueError(f"api_server_port must be a TCP port, got {self.api_server_port}")
        if self.operator_replicas < 1:
            raise ValueError("operator_replicas must be at least 1")

    def to_values(self) -> dict[str, Any]:
        return {
            "cluster": {"name": self.cluster_name},
            "eni": {
                "enabled": True,
                "awsReleaseExcessIPs": True,
                **({"subnetTagsFilter": ["=".join(self.subnet_tag)]} if self.subnet_tag else {}),
            },
            "ipam": {"mode": "eni"},
            "routingMode": "native",
            "kubeProxyReplacement": True,
            "k8sServiceHost": self.api_server_host,
            "k8sServicePort": self.api_server_port,
            # Two operators (one per system node); the operator is the only Cilium
            # component that calls the EC2 API.
            "operator": {
                "replicas": self.operator_replicas,
                # Setting tolerations replaces the chart's defaults, which do not include the system nodes'
                # taint: the operator would stay Pending, no node would get pod addresses, and none would
                # turn Ready. Keep the defaults that matter on EKS: the operator runs on nodes that are not
                # Ready yet (they become Ready only once it has given them addresses).
                **({"nodeSelector": dict(self.system_node_selector)} if self.system_node_selector else {}),
                "tolerations": [dict(t) for t in self.system_tolerations] + list(OPERATOR_BOOT_TOLERATIONS),
                "prometheus": {"enabled": self.metrics, "serviceMonitor": {"enabled": False}},
            },
            "prometheus": {"enabled": self.metrics, "serviceMonitor": {"enabled": False}},
            "serviceAccounts": {"operator": {"create": True, "name": OPERATOR_SERVICE_ACCOUNT}},
            "hubble": {
                "enabled": True,
                # The relay is a Deployment that runs at idle: it must fit on the system nodes and tolerate
                # their taint, or Karpenter keeps a node alive just for it.
                "relay": {
                    "enabled": self.hubble_relay,
                    **({"nodeSelector": dict(self.system_node_selector)} if self.system_node_selector else {}),
                    **({"tolerations": [dict(t) for t in self.system_tolerations]} if self.system_tolerations else {}),
                },
                "ui": {"enabled": False},
                **({"metrics": {"enabled": list(self.hubble_metrics), "serviceMonitor": {"enabled": False}}}
                   if self.metrics and self.hubble_metrics else {}),
            },
        }
