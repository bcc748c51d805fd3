"""Kubernetes NetworkPolicy semantics as Cilium enforces them, for the flows the platform needs.

Standard semantics (a pod selected by any policy of a direction is isolated in that direction and only what
some rule allows gets through), with Cilium's identity rules: an ``ipBlock`` never matches a pod or the API
server (those have the pod's and the ``kube-apiserver`` identities), so only pod/namespace selectors reach
pods, and only a rule without ``to`` reaches the API server.

Destinations outside the cluster are ``world`` endpoints with an address (``WORLD_SAMPLE`` unless given) and,
for names a pod resolves, a DNS name: a CiliumNetworkPolicy's ``toFQDNs`` matches such an endpoint by its name
(Cilium allows the addresses its DNS proxy saw answered for an allowed name), a CIDR rule by its address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
WORLD_SAMPLE = "52.94.0.1"  # a public (AWS) address standing for "the internet / AWS APIs"


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace + labels) or an entity: ``kube-apiserver``, ``world`` or ``host`` (the pod's own node,
    where the EKS Pod Identity agent listens). A ``world`` endpoint may carry its ``address`` and the DNS
    ``fqdn`` the pod looked up to reach it."""

    namespace: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    entity: str | None = None
    address: str | None = None
    fqdn: str | None = None

    @staticmethod
    def pod(namespace: str, labels: Mapping[str, str]) -> "Endpoint":
        return Endpoint(namespace=namespace, labels=tuple(sorted(labels.items())))

    @staticmethod
    def world(fqdn: str | None = None, address: str = WORLD_SAMPLE) -> "Endpoint":
        """Something outside the cluster: an address, reached by ``fqdn`` when the pod resolved a name."""
        return Endpoint(entity="world", address=address, fqdn=fqdn)


# Cilium entities (docs "Layer 3 Examples: Entities Based"): what each names among this model's endpoints.
# ``cluster`` is every endpoint of the local cluster (pods, the host, other nodes), ``all`` everything.
_CLUSTER_ENTITIES = frozenset({"host", "remote-node", "kube-apiserver", "health", "init", "ingress", "unmanaged"})
KNOWN_ENTITIES = frozenset({"all", "world", "cluster", *_CLUSTER_ENTITIES})


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


def fqdn_matches(selector: Mapping[str, str], name: str) -> bool:
    """Whether a ``toFQDNs`` selector allows the DNS name ``name`` (cilium/cilium pkg/fqdn/matchpattern:
    ``matchName`` is exact; in ``matchPattern`` a ``*`` is any run of DNS characters within one label, a lone
    ``*`` any name, and a leading ``**.`` one or more whole labels; both ignore case and a trailing dot)."""
    name = name.lower().rstrip(".")
    if "matchName" in selector:
        return name == selector["matchName"].lower().rstrip(".")
    pattern = selector["matchPattern"].lower().strip().rstrip(".")
    if pattern == "*":
        return True
    prefix = ""
    if pattern.startswith("**."):
        prefix, pattern = r"([-a-z0-9_]+\.)+", pattern[3:]
    regex = prefix + re.escape(pattern).replace(r"\*", "[-a-z0-9_]*")
    return re.fullmatch(regex, name) is not None


def _peer_matches(peer: Mapping[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "entities" in peer:  # a CiliumNetworkPolicy's toEntities / fromEntities (see cilium_policy)
        entities = set(peer["entities"])
        if "all" in entities:
            return True
        if other.entity is None:  # a pod of this cluster
            return "cluster" in entities
        return other.entity in entities or ("cluster" in entities and other.entity in _CLUSTER_ENTITIES)
    if "fqdns" in peer:  # a CiliumNetworkPolicy's toFQDNs: names the pod resolved through Cilium's DNS proxy
        return other.entity == "world" and other.fqdn is not None and any(
            fqdn_matches(selector, other.fqdn) for selector in peer["fqdns"])
    if "ipBlock" in peer:
        if other.entity != "world":
            return False
        block = peer["ipBlock"]
        addr = ipaddress.ip_address(other.address or WORLD_SAMPLE)
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


# z2jh 4.4.0's component pods, their ports (the Services' named ports) and the access labels its policies select
# (zero-to-jupyterhub-k8s@4.4.0: jupyterhub/templates/{hub,proxy,singleuser}/netpol.yaml; the hub pod carries
# network-access-proxy-api/-http and -singleuser, the proxy pod network-access-hub and -singleuser, a notebook pod
# network-access-hub).
_Z2JH_COMPONENTS = {"hub": "hub", "proxy": "proxy", "singleuser": "singleuser-server"}
_Z2JH_PORTS = {"hub": {"http": 8081}, "proxy": {"http": 8000, "https": 8443, "api": 8001},
               "singleuser": {"notebook-port": 8888}}
_ACCESS = "hub.jupyter.org/network-access-"


def _component(name: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {"component": _Z2JH_COMPONENTS[name]}}}


def _labelled(what: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {f"{_ACCESS}{what}": "true"}}}


def _z2jh_builtin(component: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(egress, ingress) rules z2jh always renders for a component, besides the configurable ones."""
    tcp = lambda *ports: [{"port": p, "protocol": "TCP"} for p in ports]  # noqa: E731
    if component == "hub":
        return ([{"to": [_component("proxy")], "ports": tcp(8001)},
                 {"to": [_component("singleuser")], "ports": tcp(8888)}],
                [{"from": [_labelled("hub")], "ports": tcp(8081)}])
    if component == "proxy":
        return ([{"to": [_component("hub")], "ports": tcp(8081)},
                 {"to": [_component("singleuser")], "ports": tcp(8888)}],
                [{"from": [_labelled("proxy-http")], "ports": tcp(8000)},
                 {"from": [_labelled("proxy-api")], "ports": tcp(8001)}])
    return ([{"to": [_component("hub")], "ports": tcp(8081)},
             {"to": [_component("proxy")], "ports": tcp(8000)}],
            [{"from": [_labelled("singleuser")], "ports": tcp(8888)}])


def z2jh_policies(values: Mapping[str, Any], namespace: str) -> list[dict[str, Any]]:
    """The hub's, the proxy's and the single-user servers' NetworkPolicies, as z2jh 4.4.0 renders them from
    ``<component>.networkPolicy`` (``proxy.chp.networkPolicy`` for the proxy): z2jh's own rules between its
    components, ``allowedIngressPorts`` (from anywhere), the ``egressAllowRules`` (the
    ``jupyterhub.networkPolicy.renderEgressRules`` helper) and the extra ``ingress`` / ``egress`` rules.
    ``interNamespaceAccessLabels`` is modelled as ``ignore`` (the platform sets it so)."""
    out = []
    for component, label in _Z2JH_COMPONENTS.items():
        section = values.get(component) or {}
        np = ((section.get("chp") or {}) if component == "proxy" else section).get("networkPolicy") or {}
        if not np.get("enabled", True):
            continue
        allow = {"dnsPortsCloudMetadataServer": True, "dnsPortsKubeSystemNamespace": True, "dnsPortsPrivateIPs": True,
                 "nonPrivateIPs": True, "privateIPs": component != "singleuser", "cloudMetadataServer": False,
                 **(np.get("egressAllowRules") or {})}
        dns = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
        egress, ingress = _z2jh_builtin(component)
        if allow["dnsPortsKubeSystemNamespace"]:
            egress.append({"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                           "ports": dns})
        if allow["dnsPortsPrivateIPs"]:
            egress.append({"to": [{"ipBlock": {"cidr": c}} for c in PRIVATE], "ports": dns})
        if allow["nonPrivateIPs"]:
            egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [*PRIVATE, "169.254.169.254/32"]}}]})
        if allow["privateIPs"]:
            egress.append({"to": [{"ipBlock": {"cidr": c}} for c in PRIVATE]})
        if allow["cloudMetadataServer"]:
            egress.append({"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}]})
        egress += list(np.get("egress") or [])
        default_open = ["http", "https"] if component == "proxy" else []
        open_ports = [_Z2JH_PORTS[component].get(p, p) for p in np.get("allowedIngressPorts", default_open)]
        if open_ports:
            ingress.append({"ports": [{"port": p, "protocol": "TCP"} for p in open_ports]})
        ingress += list(np.get("ingress") or [])
        out.append({"metadata": {"name": f"{component} (z2jh)", "namespace": namespace},
                    "spec": {"podSelector": {"matchLabels": {"component": label}}, "policyTypes": ["Ingress", "Egress"],
                             "egress": egress, "ingress": ingress}})
    return out


# The parts of a CiliumNetworkPolicy rule the translation below understands; anything else raises, so a rule is
# never read as broader than it is (a rule whose only peer the model ignored would read as "to anything").
_PEER_KEYS = ("Endpoints", "Entities", "CIDR", "CIDRSet", "FQDNs")
_RULE_KEYS = {"egress": frozenset({f"to{k}" for k in _PEER_KEYS} | {"toPorts"}),
              "ingress": frozenset({f"from{k}" for k in _PEER_KEYS} | {"toPorts"})}


class UnsupportedPolicy(ValueError):
    """A CiliumNetworkPolicy uses something this model does not evaluate."""


def _endpoint_peer(sel: Mapping[str, Any]) -> dict[str, Any]:
    """A Cilium endpoint selector as a NetworkPolicy peer. Label keys may carry the ``k8s:`` source prefix; the
    namespace label ``io.kubernetes.pod.namespace`` becomes a namespace selector (absent: the policy's own)."""
    ns_key = "io.kubernetes.pod.namespace"

    def key(k: str) -> str:
        return k.removeprefix("k8s:")

    labels = {key(k): v for k, v in (sel.get("matchLabels") or {}).items()}
    expressions = [{**e, "key": key(e["key"])} for e in sel.get("matchExpressions") or []]
    if any(e["key"] == ns_key for e in expressions):
        raise UnsupportedPolicy("a namespace matchExpression in an endpoint selector")
    namespace = labels.pop(ns_key, None)
    peer: dict[str, Any] = {"podSelector": {"matchLabels": labels, "matchExpressions": expressions}}
    if namespace:
        peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    return peer


def _ports(rule: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A rule's ``toPorts`` as NetworkPolicy ports (``ANY`` is TCP, UDP and SCTP; a missing or 0 port is every
    port). Their L7 ``rules`` (the DNS rule toFQDNs needs, HTTP rules) filter requests on the allowed port and
    do not change which connections open."""
    out = []
    for tp in rule.get("toPorts") or []:
        for p in tp.get("ports") or [{}]:
            protocol = p.get("protocol", "ANY")
            entry: dict[str, Any] = {}
            if str(p.get("port", "0")) not in ("", "0"):
                entry["port"] = int(p["port"])
                if p.get("endPort"):
                    entry["endPort"] = int(p["endPort"])
            out += [{**entry, "protocol": proto}
                    for proto in (("TCP", "UDP", "SCTP") if protocol == "ANY" else (protocol,))]
    return out


def cilium_policy(cnp: Mapping[str, Any]) -> dict[str, Any]:
    """A ``cilium.io/v2`` CiliumNetworkPolicy as the NetworkPolicy-shaped dict this module evaluates.

    Covers: ``endpointSelector`` (the selected pods); egress rules with ``toEndpoints`` (same namespace unless the
    selector names one), ``toEntities``, ``toCIDR``, ``toCIDRSet`` (``cidr`` + ``except``) or ``toFQDNs``, and
    ``toPorts``; ingress rules alike with ``from*`` (and ``toPorts``). A policy isolates the selected pods in each
    direction it has at least one rule for (an omitted or empty list does not apply, as the CRD says); its allows
    add to those of every other policy, as with NetworkPolicy. Unlike a NetworkPolicy rule, a Cilium rule with
    neither peers nor ports (``{}``) allows nothing; one with ports only allows them to any peer. Anything else
    (deny rules, ``enableDefaultDeny``, ``toServices``, ``toRequires``, node selectors, entities Cilium does not
    define, ...) raises :class:`UnsupportedPolicy` rather than being read wrongly.
    """
    meta, spec = cnp["metadata"], cnp.get("spec") or {}
    unsupported = set(spec) - {"endpointSelector", "ingress", "egress", "description"}
    if unsupported:
        raise UnsupportedPolicy(f"{meta['name']}: spec keys {sorted(unsupported)}")

    def rules(direction: str) -> list[dict[str, Any]]:
        prefix = "to" if direction == "egress" else "from"
        out = []
        for rule in spec.get(direction) or []:
            unknown = set(rule) - _RULE_KEYS[direction]
            if unknown:
                raise UnsupportedPolicy(f"{meta['name']}: {direction} rule keys {sorted(unknown)}")
            peers: list[dict[str, Any]] = []
            if rule.get(f"{prefix}Entities"):
                entities = list(rule[f"{prefix}Entities"])
                if set(entities) - KNOWN_ENTITIES:
                    raise UnsupportedPolicy(f"{meta['name']}: entities {sorted(set(entities) - KNOWN_ENTITIES)}")
                peers.append({"entities": entities})
            for sel in rule.get(f"{prefix}Endpoints") or []:
                peers.append(_endpoint_peer(sel))
            for cidr in rule.get(f"{prefix}CIDR") or []:
                peers.append({"ipBlock": {"cidr": cidr}})
            for item in rule.get(f"{prefix}CIDRSet") or []:
                if "cidr" not in item:
                    raise UnsupportedPolicy(f"{meta['name']}: a CIDR set entry without cidr (CIDR groups)")
                peers.append({"ipBlock": {"cidr": item["cidr"], "except": list(item.get("except") or [])}})
            if rule.get(f"{prefix}FQDNs"):
                peers.append({"fqdns": [dict(f) for f in rule[f"{prefix}FQDNs"]]})
            if any(f"{prefix}{k}" in rule for k in _PEER_KEYS) and not peers:
                continue  # e.g. toEndpoints: [] selects nothing
            ports = _ports(rule)
            if not peers and not ports:  # Cilium: an empty rule selects no peer
                continue
            entry: dict[str, Any] = {prefix: peers} if peers else {}
            if ports:
                entry["ports"] = ports
            out.append(entry)
        return out

    subject = _endpoint_peer(spec.get("endpointSelector") or {})
    if "namespaceSelector" in subject:
        raise UnsupportedPolicy(f"{meta['name']}: a namespace label in endpointSelector")
    types = [t for t, key in (("Ingress", "ingress"), ("Egress", "egress")) if spec.get(key)]
    return {"metadata": {"name": f"{meta['name']} (cilium)", "namespace": meta.get("namespace", "default")},
            "spec": {"podSelector": subject["podSelector"], "policyTypes": types,
                     "ingress": rules("ingress"), "egress": rules("egress")}}
