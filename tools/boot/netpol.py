"""Kubernetes NetworkPolicy semantics as Cilium enforces them, for the flows the platform needs.

Standard semantics (a pod selected by any policy of a direction is isolated in that direction and only what
some rule allows gets through), with Cilium's identity rules: an ``ipBlock`` never matches a pod or the API
server (those have the pod's and the ``kube-apiserver`` identities), so only pod/namespace selectors reach
pods, and only a rule without ``to`` reaches the API server.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
WORLD_SAMPLE = "52.94.0.1"  # a public (AWS) address standing for "the internet / AWS APIs"


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace + labels) or an entity: ``kube-apiserver``, ``world`` or ``host`` (the pod's own node,
    where the EKS Pod Identity agent listens)."""

    namespace: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    entity: str | None = None

    @staticmethod
    def pod(namespace: str, labels: Mapping[str, str]) -> "Endpoint":
        return Endpoint(namespace=namespace, labels=tuple(sorted(labels.items())))


def _matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr.get("values", []):
            return False
        if op == "NotIn" and value in expr.get("values", []):
            return False
        if op == "Exists" and expr["key"] not in labels:
            return False
        if op == "DoesNotExist" and expr["key"] in labels:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "entities" in peer:  # a CiliumNetworkPolicy's toEntities / fromEntities (see cilium_policy)
        return other.entity is not None and (other.entity in peer["entities"] or "all" in peer["entities"])
    if "ipBlock" in peer:
        if other.entity != "world":
            return False
        block = peer["ipBlock"]
        addr = ipaddress.ip_address(WORLD_SAMPLE)
        return addr in ipaddress.ip_network(block["cidr"]) and not any(
            addr in ipaddress.ip_network(e) for e in block.get("except", []))
    if other.entity is not None:
        return False
    ns_labels = {"kubernetes.io/metadata.name": other.namespace}
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], ns_labels):
            return False
    elif other.namespace != policy_ns:
        return False
    return _matches(peer.get("podSelector"), dict(other.labels))


def _port_matches(ports: Sequence[Mapping[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p or p["port"] == port or (p.get("endPort") and p["port"] <= port <= p["endPort"]):
            return True
    return False


def _direction_allows(policies: Iterable[Mapping[str, Any]], subject: Endpoint, other: Endpoint, port: int,
                      protocol: str, direction: str) -> tuple[bool, list[str]]:
    """(allowed, names of the policies that isolate ``subject`` in ``direction``)."""
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    isolating = [p for p in policies if p["metadata"].get("namespace") == subject.namespace
                 and direction in p["spec"].get("policyTypes", ["Ingress"])
                 and _matches(p["spec"].get("podSelector") or {}, dict(subject.labels))]
    if not isolating:
        return True, []
    for pol in isolating:
        for rule in pol["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(peer, pol["metadata"]["namespace"], other) for peer in peers)) \
                    and _port_matches(rule.get("ports"), port, protocol):
                return True, [pol["metadata"]["name"] for pol in isolating]
    return False, [pol["metadata"]["name"] for pol in isolating]


def flow_allowed(policies: Sequence[Mapping[str, Any]], src: Endpoint, dst: Endpoint, port: int,
                 protocol: str = "TCP") -> tuple[bool, str]:
    if src.entity is None:
        ok, names = _direction_allows(policies, src, dst, port, protocol, "Egress")
        if not ok:
            return False, f"egress of {src.namespace} pods is limited by {names} and none allows it"
    if dst.entity is None:
        ok, names = _direction_allows(policies, dst, src, port, protocol, "Ingress")
        if not ok:
            return False, f"ingress of {dst.namespace} pods is limited by {names} and none allows it"
    return True, "allowed"


def z2jh_policies(values: Mapping[str, Any], namespace: str) -> list[dict[str, Any]]:
    """The egress side of the hub's and the single-user servers' NetworkPolicies, as z2jh 4.4.0 renders them
    from ``<component>.networkPolicy`` (zero-to-jupyterhub-k8s@4.4.0: jupyterhub/templates/hub/netpol.yaml,
    singleuser/netpol.yaml and the ``jupyterhub.networkPolicy.renderEgressRules`` helper)."""
    out = []
    for component, label in (("hub", "hub"), ("singleuser", "singleuser-server")):
        np = (values.get(component) or {}).get("networkPolicy") or {}
        if not np.get("enabled", True):
            continue
        allow = {"dnsPortsCloudMetadataServer": True, "dnsPortsKubeSystemNamespace": True, "dnsPortsPrivateIPs": True,
                 "nonPrivateIPs": True, "privateIPs": component == "hub", "cloudMetadataServer": False,
                 **(np.get("egressAllowRules") or {})}
        dns = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
        rules: list[dict[str, Any]] = []
        if allow["dnsPortsKubeSystemNamespace"]:
            rules.append({"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                          "ports": dns})
        if allow["dnsPortsPrivateIPs"]:
            rules.append({"to": [{"ipBlock": {"cidr": c}} for c in PRIVATE], "ports": dns})
        if allow["nonPrivateIPs"]:
            rules.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [*PRIVATE, "169.254.169.254/32"]}}]})
        if allow["privateIPs"]:
            rules.append({"to": [{"ipBlock": {"cidr": c}} for c in PRIVATE]})
        if allow["cloudMetadataServer"]:
            rules.append({"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}]})
        rules += list(np.get("egress") or [])
        out.append({"metadata": {"name": f"{component} (z2jh)", "namespace": namespace},
                    "spec": {"podSelector": {"matchLabels": {"component": label}}, "policyTypes": ["Egress"],
                             "egress": rules}})
    return out


def cilium_policy(cnp: Mapping[str, Any]) -> dict[str, Any]:
    """A ``cilium.io/v2`` CiliumNetworkPolicy as the NetworkPolicy-shaped dict this module evaluates.

    Covers what the platform writes: ``endpointSelector`` (the selected pods), egress rules with ``toEntities``,
    ``toEndpoints`` (same namespace unless the selector names one) or ``toCIDR``, and ``toPorts``; ingress rules
    alike with ``from*``. A Cilium policy isolates the selected pods in each direction it has rules for, and its
    allows add to those of every other policy, as with NetworkPolicy.
    """
    meta, spec = cnp["metadata"], cnp.get("spec") or {}
    ns_key = "k8s:io.kubernetes.pod.namespace"

    def rules(direction: str) -> list[dict[str, Any]]:
        prefix = "to" if direction == "egress" else "from"
        out = []
        for rule in spec.get(direction) or []:
            peers: list[dict[str, Any]] = []
            if rule.get(f"{prefix}Entities"):
                peers.append({"entities": list(rule[f"{prefix}Entities"])})
            for sel in rule.get(f"{prefix}Endpoints") or []:
                labels = dict(sel.get("matchLabels") or {})
                namespace = labels.pop(ns_key, None)
                peer: dict[str, Any] = {"podSelector": {"matchLabels": labels}}
                if namespace:
                    peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                peers.append(peer)
            for cidr in rule.get(f"{prefix}CIDR") or []:
                peers.append({"ipBlock": {"cidr": cidr}})
            ports = [{"port": int(p["port"]), "protocol": p.get("protocol", "TCP")}
                     for tp in rule.get("toPorts") or [] for p in tp.get("ports") or []]
            entry: dict[str, Any] = {"to" if direction == "egress" else "from": peers}
            if ports:
                entry["ports"] = ports
            out.append(entry)
        return out

    types = [t for t, key in (("Ingress", "ingress"), ("Egress", "egress")) if key in spec]
    return {"metadata": {"name": f"{meta['name']} (cilium)", "namespace": meta.get("namespace", "default")},
            "spec": {"podSelector": spec.get("endpointSelector") or {}, "policyTypes": types,
                     "ingress": rules("ingress"), "egress": rules("egress")}}
