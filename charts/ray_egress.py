"""Egress allow-lists for the Ray pods of one namespace: CiliumNetworkPolicies (``cilium.io/v2``), issue #16.

Without them a job (arbitrary user code) reaches everything the node can: the VPC, the internet through the NAT
gateway, ``kube-system`` (Hubble relay, metrics), other namespaces' pods. With them, every Ray pod of the cluster
(KubeRay labels them ``ray.io/cluster: <cluster name>``) may open connections only to:

1. **its own namespace**, any port: the head and the workers talk on many dynamic ports (GCS 6379, raylet, object
   manager, worker ports), like the ingress policy ``allow-same-namespace`` (charts/network_policies.py);
2. **DNS**: CoreDNS (``kube-system``, ``k8s-app: kube-dns``) on 53/UDP and 53/TCP, with a ``dns`` rule. The rule
   sends lookups through Cilium's DNS proxy, which is how ``toFQDNs`` below learn the addresses behind the
   names; without it a ``toFQDNs`` rule allows nothing. The proxy allows every lookup (``matchPattern: "*"``): a
   narrower list would have to follow the resolver's search path (``<name>.<namespace>.svc.cluster.local``,
   ...) and a refused candidate can end a glibc lookup early. Residual risk: a job can still tunnel data out in
   DNS queries through the VPC resolver;
3. **the EKS Pod Identity agent** on its node, 169.254.170.23, TCP 80, for the S3 credentials. Cilium usually
   gives that address the ``host`` identity (hostNetwork DaemonSet on a link-local address of the node, as in
   cilium/cilium#34387, where Hubble shows ``169.254.170.23:80 (host)``), which only ``toEntities: [host]``
   matches; some datapath configurations classified it as ``world`` instead (cilium/cilium#35989, Cilium 1.16
   with BPF host routing: ``169.254.170.23:80 (world)``), which only a CIDR rule matches (CIDR rules never match
   addresses Cilium knows as the host). Both rules are present, each limited to that one address and port where
   the policy language allows: the ``host`` entity is the node, so its rule is limited to port 80. This settles
   the review item on the log shipper's policy (charts/network_policies.py), which has the entity rule only;
4. **S3** on 443 for checkpoints, by name (``toFQDNs``): the regional endpoint and its virtual-hosted bucket names
   (``s3.<region>.amazonaws.com``, ``*.s3.<region>.amazonaws.com``; pyarrow and boto3 address buckets
   virtual-hosted), plus the global ``s3.amazonaws.com`` names pyarrow uses to find a bucket's region. The VPC's
   S3 *gateway* endpoint adds a route for S3's public prefixes to the route tables; it has no address of its own,
   so the traffic still goes to public S3 addresses and a CIDR rule would have to list AWS's S3 prefixes for the
   region (which change); names are what stay true. Without a region (an environment-agnostic synth), every
   region's S3 names are allowed. Note: an allow-list by name cannot tell the platform's bucket from any other
   bucket in S3; a gateway endpoint policy limited to the platform's buckets would;
5. **PyPI** on 443 for ``runtime_env`` ``pip`` installs (``pypi.org``, ``files.pythonhosted.org``), and any
   ``extra_fqdns`` from the configuration (exact names, or Cilium patterns with ``*`` standing for one DNS label);
6. **the Kubernetes API server**, from the **head** only (``ray.io/node-type: head``), TCP 443: the KubeRay
   autoscaler sidecar scales the cluster through it (what it may change there: charts/ray_admission.py). EKS's API
   server listens on 443 and Cilium names it with the ``kube-apiserver`` entity.

The name-based rules (4, 5) are policies of their own: the CRD says a ``toFQDNs`` rule may not share its policy with
other ``to*`` rules (schemas/cilium/ciliumnetworkpolicies.yaml, ``toFQDNs`` description).

Nothing else: not the rest of the VPC (other nodes, the kubelet, other namespaces), not IMDS (169.254.169.254),
not the internet. Ingress is not restricted here (charts/network_policies.py does it). The token bootstrap Job in
the same namespace is not a Ray pod and is not selected.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import aws_cdk as cdk

__all__ = [
    "POD_IDENTITY_AGENT_CIDR",
    "PYPI_FQDNS",
    "RAY_CLUSTER_LABEL",
    "ray_egress_policies",
    "s3_fqdn_selectors",
]

API_VERSION = "cilium.io/v2"
RAY_CLUSTER_LABEL = "ray.io/cluster"  # KubeRay's label on every pod of a RayCluster
RAY_NODE_TYPE_LABEL = "ray.io/node-type"
NAMESPACE_LABEL = "k8s:io.kubernetes.pod.namespace"  # how Cilium selects a pod's namespace
POD_IDENTITY_AGENT_CIDR = "169.254.170.23/32"
POD_IDENTITY_AGENT_PORT = 80
HTTPS_PORT = 443
DNS_PORT = 53
PYPI_FQDNS = ("pypi.org", "files.pythonhosted.org")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
# An exact name or a Cilium matchPattern: labels of letters, digits, '-' (and '*' in a pattern).
_FQDN = re.compile(r"^(?=.{1,253}$)([a-z0-9*]([-a-z0-9*]{0,61}[a-z0-9*])?)(\.[a-z0-9*]([-a-z0-9*]{0,61}[a-z0-9*])?)+$")
_LABELS = {"app.kubernetes.io/part-of": "dynamic-factory", "app.kubernetes.io/component": "ray"}


def _fqdn_selector(name: str) -> dict[str, str]:
    return {"matchPattern": name} if "*" in name else {"matchName": name}


def s3_fqdn_selectors(region: str | None) -> list[dict[str, str]]:
    """The S3 names a Ray pod may connect to (see the module docstring); ``region`` may be a CDK token."""
    regional = (["s3.*.amazonaws.com", "*.s3.*.amazonaws.com"] if region is None
                else [f"s3.{region}.amazonaws.com", f"*.s3.{region}.amazonaws.com"])
    return [_fqdn_selector(n) for n in (*regional, "s3.amazonaws.com", "*.s3.amazonaws.com")]


def _ports(port: int, *protocols: str) -> list[dict[str, Any]]:
    return [{"ports": [{"port": str(port), "protocol": p} for p in protocols]}]


def _policy(name: str, namespace: str, selector: dict[str, str], description: str,
            egress: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(_LABELS),
                     "annotations": {"dynamic-factory/description": description}},
        "spec": {"endpointSelector": {"matchLabels": dict(selector)}, "egress": egress},
    }


def ray_egress_policies(namespace: str, cluster_name: str, *, region: str | None,
                        extra_fqdns: Sequence[str] = (),
                        metrics_backends: Sequence[tuple[str, Mapping[str, str], int]] = ()) -> list[dict[str, Any]]:
    """The CiliumNetworkPolicies limiting the egress of RayCluster ``cluster_name``'s pods in ``namespace``.

    ``region``: the AWS region of the checkpoint bucket (a literal such as ``eu-west-1`` or a CDK token), or None
    for S3 in any region. ``extra_fqdns``: more names (or Cilium patterns) the Ray pods may reach on 443.
    ``metrics_backends``: (namespace, pod labels, port) the head may reach with metrics on: Prometheus and Grafana,
    which Ray's dashboard queries for its time-series panels (charts/metrics.py). Raises ValueError on bad arguments.
    """
    problems = []
    if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace) or len(namespace) > 63:
        problems.append(f"namespace {namespace!r} is not a namespace name (DNS label)")
    if not isinstance(cluster_name, str) or not cluster_name or not _LABEL_VALUE.match(cluster_name) \
            or len(cluster_name) > 63:
        problems.append(f"cluster_name {cluster_name!r} is not a valid label value")
    if region is not None and not (isinstance(region, str) and (cdk.Token.is_unresolved(region)
                                                                or _REGION.match(region))):
        problems.append(f"region {region!r} is not an AWS region name (or a CDK token, or None)")
    if isinstance(extra_fqdns, (str, bytes)) or not isinstance(extra_fqdns, Sequence):
        problems.append(f"extra_fqdns {extra_fqdns!r} must be a list of names")
        extra_fqdns = ()
    for name in extra_fqdns:
        if not isinstance(name, str) or not _FQDN.match(name) or name.strip("*.") == "" or "**" in name:
            problems.append(f"extra_fqdns: {name!r} is not a lowercase DNS name (or a pattern with '*' for one "
                            "label)")
    if problems:
        raise ValueError("ray egress policies: " + "; ".join(problems))

    ray_pods = {RAY_CLUSTER_LABEL: cluster_name}
    head = {**ray_pods, RAY_NODE_TYPE_LABEL: "head"}
    web = [*PYPI_FQDNS, *(n for n in extra_fqdns if n not in PYPI_FQDNS)]
    return [
        _policy(
            "ray-egress-cluster", namespace, ray_pods,
            "Ray pods reach their own namespace, DNS (through Cilium's DNS proxy) and the EKS Pod Identity agent "
            "on their node; nothing else in the cluster or the VPC.",
            [
                {"toEndpoints": [{"matchLabels": {NAMESPACE_LABEL: namespace}}]},
                {"toEndpoints": [{"matchLabels": {NAMESPACE_LABEL: "kube-system", "k8s-app": "kube-dns"}}],
                 "toPorts": [{"ports": [{"port": str(DNS_PORT), "protocol": "UDP"},
                                        {"port": str(DNS_PORT), "protocol": "TCP"}],
                              "rules": {"dns": [{"matchPattern": "*"}]}}]},
                {"toEntities": ["host"], "toPorts": _ports(POD_IDENTITY_AGENT_PORT, "TCP")},
                {"toCIDR": [POD_IDENTITY_AGENT_CIDR], "toPorts": _ports(POD_IDENTITY_AGENT_PORT, "TCP")},
            ],
        ),
        _policy(
            "ray-egress-s3", namespace, ray_pods,
            "Ray pods write checkpoints to S3 over HTTPS (by name; the VPC's gateway endpoint carries the traffic).",
            [{"toFQDNs": s3_fqdn_selectors(region), "toPorts": _ports(HTTPS_PORT, "TCP")}],
        ),
        _policy(
            "ray-egress-packages", namespace, ray_pods,
            "Ray pods install runtime_env pip packages from PyPI (and the configured extra names) over HTTPS.",
            [{"toFQDNs": [_fqdn_selector(n) for n in web], "toPorts": _ports(HTTPS_PORT, "TCP")}],
        ),
        _policy(
            "ray-egress-head-apiserver", namespace, head,
            "The Ray head's autoscaler scales the RayCluster through the Kubernetes API server.",
            [{"toEntities": ["kube-apiserver"], "toPorts": _ports(HTTPS_PORT, "TCP")}],
        ),
        *([_policy(
            "ray-egress-head-metrics", namespace, head,
            "Ray's dashboard on the head queries Prometheus and checks Grafana for its embedded metrics panels.",
            [{"toEndpoints": [{"matchLabels": {NAMESPACE_LABEL: ns, **labels}}], "toPorts": _ports(port, "TCP")}
             for ns, labels, port in metrics_backends],
        )] if metrics_backends else []),
    ]
