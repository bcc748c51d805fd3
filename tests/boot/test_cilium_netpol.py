"""The first-boot model's reading of CiliumNetworkPolicies (tools/boot/netpol.py), and the Ray egress allow-lists
(charts/ray_egress.py) through it: what a Ray pod can reach, as SECURITY.md's reach tables say.

Cilium semantics the translation follows (Cilium 1.20 documentation, "Layer 3 Examples" / "Layer 4 Examples" /
"DNS based"; the CRD's own field descriptions in schemas/cilium/): an omitted or empty rule list does not apply;
a rule with no peer and no port allows nothing; a rule with ports only allows them to any peer; toFQDNs match the
names the pod resolved (``*`` within one label); CIDR rules never match the host or pods.
"""

from __future__ import annotations

import pytest

from charts.ray_egress import POD_IDENTITY_AGENT_CIDR, PYPI_FQDNS, ray_egress_policies
from tools.boot import netpol
from tools.boot.netpol import Endpoint, UnsupportedPolicy, cilium_policy, flow_allowed

POD = Endpoint.pod("n", {"app": "a"})
OTHER_POD = Endpoint.pod("other", {"app": "b"})
SAME_NS_POD = Endpoint.pod("n", {"app": "c"})
APISERVER = Endpoint(entity="kube-apiserver")
HOST = Endpoint(entity="host")
COREDNS = Endpoint.pod("kube-system", {"k8s-app": "kube-dns"})


def _cnp(*egress, selector=None, **spec) -> dict:
    return {"metadata": {"name": "p", "namespace": "n"},
            "spec": {"endpointSelector": selector if selector is not None else {"matchLabels": {"app": "a"}},
                     **({"egress": list(egress)} if egress else {}), **spec}}


def _allowed(cnp, dst, port, protocol="TCP", src=POD) -> bool:
    return flow_allowed([cilium_policy(cnp)], src, dst, port, protocol)[0]


# ------------------------------------------------------------------ the translation


def test_to_fqdns_allows_the_names_and_nothing_else():
    """Before: a toFQDNs rule lost its peers and read as 'to anything on 443' (the API server, the host...)."""
    cnp = _cnp({"toFQDNs": [{"matchName": "pypi.org"}, {"matchPattern": "*.s3.eu-west-1.amazonaws.com"}],
                "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]})
    assert _allowed(cnp, Endpoint.world("pypi.org"), 443)
    assert _allowed(cnp, Endpoint.world("my-bucket.s3.eu-west-1.amazonaws.com"), 443)
    assert not _allowed(cnp, Endpoint.world("pypi.org"), 80)
    assert not _allowed(cnp, Endpoint.world("evil.example"), 443)
    assert not _allowed(cnp, Endpoint.world("a.b.s3.eu-west-1.amazonaws.com"), 443)  # * is one label
    assert not _allowed(cnp, Endpoint.world(), 443)  # an address reached without a name
    assert not _allowed(cnp, APISERVER, 443)
    assert not _allowed(cnp, HOST, 443)
    assert not _allowed(cnp, SAME_NS_POD, 443)


@pytest.mark.parametrize("selector, name, match", [
    ({"matchName": "pypi.org"}, "PyPI.org.", True),
    ({"matchName": "pypi.org"}, "www.pypi.org", False),
    ({"matchPattern": "*"}, "anything.example", True),
    ({"matchPattern": "s3.*.amazonaws.com"}, "s3.eu-west-1.amazonaws.com", True),
    ({"matchPattern": "s3.*.amazonaws.com"}, "s3.a.b.amazonaws.com", False),
    ({"matchPattern": "*.example.com"}, "example.com", False),
    ({"matchPattern": "**.example.com"}, "a.b.example.com", True),
    ({"matchPattern": "**.example.com"}, "example.com", False),
])
def test_fqdn_patterns(selector, name, match):
    assert netpol.fqdn_matches(selector, name) is match


def test_an_empty_rule_allows_nothing_and_ports_alone_allow_any_peer():
    """Before: Cilium's ``{}`` (allow nothing, but isolate) read as NetworkPolicy's ``{}`` (allow everything)."""
    isolate = _cnp({})
    assert not _allowed(isolate, SAME_NS_POD, 80)
    assert not _allowed(isolate, Endpoint.world(), 443)
    ports_only = _cnp({"toPorts": [{"ports": [{"port": "8080"}]}]})  # protocol omitted: ANY
    assert _allowed(ports_only, OTHER_POD, 8080) and _allowed(ports_only, Endpoint.world(), 8080, "UDP")
    assert not _allowed(ports_only, OTHER_POD, 8081)


def test_an_omitted_direction_does_not_isolate():
    assert _allowed(_cnp(ingress=[{"fromEndpoints": [{}]}]), Endpoint.world(), 443)
    assert _allowed(_cnp(egress=[]), Endpoint.world(), 443)


def test_cidr_rules_match_addresses_outside_the_cluster_only():
    cnp = _cnp({"toCIDR": [POD_IDENTITY_AGENT_CIDR], "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]})
    assert _allowed(cnp, Endpoint.world(address="169.254.170.23"), 80)
    assert not _allowed(cnp, Endpoint.world(address="169.254.169.254"), 80)  # IMDS
    assert not _allowed(cnp, HOST, 80)  # the host identity is never a CIDR match
    assert not _allowed(cnp, Endpoint.world(address="169.254.170.23"), 81)
    cidr_set = _cnp({"toCIDRSet": [{"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}]})
    assert _allowed(cidr_set, Endpoint.world(), 443)
    assert not _allowed(cidr_set, Endpoint.world(address="169.254.170.23"), 80)


def test_entities_and_endpoint_selectors():
    cluster = _cnp({"toEntities": ["cluster"]})
    assert _allowed(cluster, OTHER_POD, 1) and _allowed(cluster, HOST, 1)
    assert not _allowed(cluster, Endpoint.world(), 1)
    assert _allowed(_cnp({"toEntities": ["all"]}), Endpoint.world(), 1)
    dns = _cnp({"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system",
                                                 "k8s:k8s-app": "kube-dns"}}],
                "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}], "rules": {"dns": [{"matchPattern": "*"}]}}]})
    assert _allowed(dns, COREDNS, 53, "UDP") and _allowed(dns, COREDNS, 53, "TCP")
    assert not _allowed(dns, Endpoint.pod("kube-system", {"k8s-app": "hubble-relay"}), 53, "UDP")
    same_ns = _cnp({"toEndpoints": [{}]})
    assert _allowed(same_ns, SAME_NS_POD, 6379) and not _allowed(same_ns, OTHER_POD, 6379)
    by_expression = _cnp({"toEndpoints": [{"matchExpressions": [{"key": "k8s:app", "operator": "In", "values": ["c"]}]}]})
    assert _allowed(by_expression, SAME_NS_POD, 1) and not _allowed(by_expression, Endpoint.pod("n", {"app": "d"}), 1)


def test_ingress_rules_use_to_ports():
    cnp = {"metadata": {"name": "p", "namespace": "n"},
           "spec": {"endpointSelector": {"matchLabels": {"app": "a"}},
                    "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "c"}}],
                                 "toPorts": [{"ports": [{"port": "8265", "protocol": "TCP"}]}]}]}}
    policies = [cilium_policy(cnp)]
    assert flow_allowed(policies, SAME_NS_POD, POD, 8265)[0]
    assert not flow_allowed(policies, SAME_NS_POD, POD, 6379)[0]
    assert not flow_allowed(policies, OTHER_POD, POD, 8265)[0]


@pytest.mark.parametrize("cnp", [
    _cnp({"toServices": [{"k8sService": {"serviceName": "x", "namespace": "n"}}]}),
    _cnp({"toRequires": [{"matchLabels": {"a": "b"}}]}),
    _cnp({"toEntities": ["no-such-entity"]}),
    _cnp({"toCIDRSet": [{"cidrGroupRef": "group"}]}),
    _cnp({"toEndpoints": [{}]}, egressDeny=[{"toEntities": ["world"]}]),
    _cnp({"toEndpoints": [{}]}, enableDefaultDeny={"egress": False}),
    _cnp({"toEndpoints": [{"matchExpressions": [{"key": "k8s:io.kubernetes.pod.namespace", "operator": "In",
                                                 "values": ["x"]}]}]}),
], ids=["toServices", "toRequires", "unknown-entity", "cidr-group", "egressDeny", "enableDefaultDeny",
        "namespace-expression"])
def test_what_the_model_does_not_evaluate_is_refused(cnp):
    with pytest.raises(UnsupportedPolicy):
        cilium_policy(cnp)


# ------------------------------------------------------------------ the Ray egress allow-lists


NS = "ray-team-a"
HEAD = Endpoint.pod(NS, {"ray.io/cluster": "ray", "ray.io/node-type": "head", "ray.io/group": "headgroup"})
WORKER = Endpoint.pod(NS, {"ray.io/cluster": "ray", "ray.io/node-type": "worker", "ray.io/group": "cpu"})
BOOTSTRAP = Endpoint.pod(NS, {"job-name": "ray-auth-token-bootstrap"})


@pytest.fixture(scope="module")
def ray_policies() -> list[dict]:
    return [cilium_policy(p) for p in ray_egress_policies(NS, "ray", region="eu-west-1", extra_fqdns=["github.com"])]


@pytest.mark.parametrize("src", [HEAD, WORKER], ids=["head", "worker"])
@pytest.mark.parametrize("dst, port, protocol, allowed", [
    (Endpoint.pod(NS, {"ray.io/cluster": "ray", "ray.io/node-type": "worker"}), 6379, "TCP", True),
    (Endpoint.pod(NS, {"anything": "here"}), 40123, "TCP", True),  # Ray's dynamic ports, same namespace
    (COREDNS, 53, "UDP", True),
    (COREDNS, 53, "TCP", True),
    (HOST, 80, "TCP", True),  # the EKS Pod Identity agent, host identity
    (Endpoint.world(address="169.254.170.23"), 80, "TCP", True),  # ... or classified as world
    (Endpoint.world("df-checkpoints-abc.s3.eu-west-1.amazonaws.com"), 443, "TCP", True),
    (Endpoint.world("s3.eu-west-1.amazonaws.com"), 443, "TCP", True),
    (Endpoint.world("df-checkpoints-abc.s3.amazonaws.com"), 443, "TCP", True),  # bucket-region lookup
    (Endpoint.world("pypi.org"), 443, "TCP", True),
    (Endpoint.world("files.pythonhosted.org"), 443, "TCP", True),
    (Endpoint.world("github.com"), 443, "TCP", True),  # extra_fqdns
    (Endpoint.world("pypi.org"), 80, "TCP", False),
    (Endpoint.world("s3.us-east-1.amazonaws.com"), 443, "TCP", False),  # another region
    (Endpoint.world("evil.example"), 443, "TCP", False),
    (Endpoint.world(), 443, "TCP", False),  # the internet by address
    (Endpoint.world(address="10.0.12.34"), 22, "TCP", False),  # the VPC
    (Endpoint.world(address="169.254.169.254"), 80, "TCP", False),  # IMDS
    (HOST, 10250, "TCP", False),  # the kubelet
    (Endpoint(entity="remote-node"), 10250, "TCP", False),
    (Endpoint.pod("kube-system", {"k8s-app": "hubble-relay"}), 4245, "TCP", False),
    (Endpoint.pod("jupyterhub", {"component": "singleuser-server"}), 8888, "TCP", False),
    (Endpoint.pod("ray", {"ray.io/cluster": "ray", "ray.io/node-type": "head"}), 6379, "TCP", False),  # other team
])
def test_what_a_ray_pod_reaches(ray_policies, src, dst, port, protocol, allowed):
    assert flow_allowed(ray_policies, src, dst, port, protocol)[0] is allowed


def test_only_the_head_reaches_the_api_server(ray_policies):
    assert flow_allowed(ray_policies, HEAD, APISERVER, 443)[0]
    assert not flow_allowed(ray_policies, WORKER, APISERVER, 443)[0]
    assert not flow_allowed(ray_policies, HEAD, APISERVER, 6443)[0]


def test_pods_that_are_not_ray_pods_are_not_selected(ray_policies):
    assert flow_allowed(ray_policies, BOOTSTRAP, APISERVER, 443)[0]


def test_without_a_region_every_regions_s3_names_are_allowed():
    policies = [cilium_policy(p) for p in ray_egress_policies(NS, "ray", region=None)]
    for name in ("s3.us-east-1.amazonaws.com", "bucket.s3.ap-south-2.amazonaws.com"):
        assert flow_allowed(policies, WORKER, Endpoint.world(name), 443)[0], name
    assert not flow_allowed(policies, WORKER, Endpoint.world("evil.example"), 443)[0]
    assert all(flow_allowed(policies, WORKER, Endpoint.world(n), 443)[0] for n in PYPI_FQDNS)


@pytest.mark.parametrize("kwargs, message", [
    ({"namespace": "Ray"}, "namespace 'Ray'"),
    ({"cluster_name": ""}, "cluster_name"),
    ({"region": "moon-1"}, "region 'moon-1'"),
    ({"extra_fqdns": "pypi.org"}, "must be a list"),
    ({"extra_fqdns": ["https://example.com"]}, "'https://example.com'"),
    ({"extra_fqdns": ["*"]}, r"'\*'"),
    ({"extra_fqdns": ["**.example.com"]}, r"'\*\*.example.com'"),
])
def test_bad_arguments(kwargs, message):
    args = {"namespace": NS, "cluster_name": "ray", "region": "eu-west-1", "extra_fqdns": (), **kwargs}
    with pytest.raises(ValueError, match=message):
        ray_egress_policies(args.pop("namespace"), args.pop("cluster_name"), **args)


def test_a_deploy_time_region_is_accepted():
    import aws_cdk as cdk

    stack = cdk.Stack(cdk.App(), "S")
    (s3,) = [p for p in ray_egress_policies(NS, "ray", region=stack.region) if p["metadata"]["name"] == "ray-egress-s3"]
    names = [s.get("matchName") or s.get("matchPattern") for s in s3["spec"]["egress"][0]["toFQDNs"]]
    assert any(cdk.Token.is_unresolved(n) for n in names)
