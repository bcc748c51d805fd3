"""The Karpenter EC2NodeClass / NodePool chart: strict CRD validity and the platform's node guarantees."""

from __future__ import annotations

import dataclasses
import pathlib

import cdk8s
import pytest

from charts.karpenter_nodes import (
    CILIUM_STARTUP_TAINT,
    DEFAULT_AMI_ALIAS,
    DEFAULT_GPU_POOL,
    DEFAULT_ON_DEMAND_POOL,
    DEFAULT_SPOT_POOL,
    INSTANCE_TYPES,
    KUBERNETES_MAX_PODS,
    POOL_LABEL_KEY,
    DisruptionBudget,
    KarpenterNodesChart,
    NodePoolSettings,
    Taint,
    default_node_pools,
    eni_max_pods,
    max_pods_for_pools,
    pool_placement,
    reachable_instance_types,
)
from tests.support.k8s_schema import CrdValidator

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "schemas" / "karpenter"
CLUSTER = "df-unit"
NODE_ROLE = "df-unit-karpenter-node"
CLUSTER_SG = "sg-0123456789abcdef0"


def _synth(**kwargs) -> list[dict]:
    app = cdk8s.Testing.app()
    chart = KarpenterNodesChart(app, "karpenter-nodes", cluster_name=CLUSTER, node_role_name=NODE_ROLE,
                                security_group_ids=[CLUSTER_SG], **kwargs)
    return cdk8s.Testing.synth(chart)


@pytest.fixture(scope="module")
def default_manifests() -> list[dict]:
    return _synth()


@pytest.fixture(scope="module")
def gpu_manifests() -> list[dict]:
    return _synth(node_pools=default_node_pools(gpu_enabled=True))


@pytest.fixture(scope="module")
def validator() -> CrdValidator:
    return CrdValidator.from_files(
        [SCHEMAS / "karpenter.sh_nodepools.yaml", SCHEMAS / "karpenter.k8s.aws_ec2nodeclasses.yaml"]
    )


def _node_class(manifests):
    (nc,) = [m for m in manifests if m["kind"] == "EC2NodeClass"]
    return nc


def _pools(manifests) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == "NodePool"}


def _requirement(pool: dict, key: str) -> dict:
    (req,) = [r for r in pool["spec"]["template"]["spec"]["requirements"] if r["key"] == key]
    return req


def _types_reached_by_manifest(pool: dict) -> set[str]:
    """Evaluate the NodePool's synthesized requirements against the instance-type table (independent of the
    chart's own helper): In / NotIn / Gt / Lt on family, size, generation, arch."""
    attrs = {
        "karpenter.k8s.aws/instance-family": lambda t: t.family,
        "karpenter.k8s.aws/instance-size": lambda t: t.size,
        "karpenter.k8s.aws/instance-generation": lambda t: str(t.generation),
        "kubernetes.io/arch": lambda t: t.arch,
        "kubernetes.io/os": lambda t: "linux",
    }
    reached = set()
    for name, t in INSTANCE_TYPES.items():
        ok = True
        for req in pool["spec"]["template"]["spec"]["requirements"]:
            if req["key"] not in attrs:
                continue
            value, op, values = attrs[req["key"]](t), req["operator"], req.get("values", [])
            ok &= {
                "In": lambda: value in values,
                "NotIn": lambda: value not in values,
                "Gt": lambda: int(value) > int(values[0]),
                "Lt": lambda: int(value) < int(values[0]),
            }[op]()
        if ok:
            reached.add(name)
    return reached


# ------------------------------------------------------------------ schema validity


@pytest.mark.parametrize("fixture", ["default_manifests", "gpu_manifests"])
def test_every_object_is_valid_against_the_vendored_crds_strictly(request, validator, fixture):
    manifests = request.getfixturevalue(fixture)
    assert manifests
    for manifest in manifests:
        assert validator.knows(manifest), manifest["kind"]
        errors = validator.errors(manifest)
        assert not errors, f"{manifest['kind']}/{manifest['metadata']['name']}:\n" + "\n".join(errors)


def test_objects_have_fixed_names_and_node_class_comes_first(default_manifests):
    assert [(m["kind"], m["metadata"]["name"]) for m in default_manifests] == [
        ("EC2NodeClass", "default"),
        ("NodePool", "spot"),
        ("NodePool", "on-demand"),
    ]


def test_node_pools_reference_the_node_class(gpu_manifests):
    nc = _node_class(gpu_manifests)
    for pool in _pools(gpu_manifests).values():
        assert pool["spec"]["template"]["spec"]["nodeClassRef"] == {
            "group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": nc["metadata"]["name"]}


# ------------------------------------------------------------------ EC2NodeClass


def test_node_class_ami_role_and_discovery(default_manifests):
    spec = _node_class(default_manifests)["spec"]
    assert spec["amiSelectorTerms"] == [{"alias": DEFAULT_AMI_ALIAS}]
    assert DEFAULT_AMI_ALIAS.startswith("al2023@v") and "latest" not in DEFAULT_AMI_ALIAS
    assert spec["role"] == NODE_ROLE
    assert spec["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": CLUSTER}}]
    # By id: the cluster security group carries no discovery tag (EKS creates it; CDK only imports it).
    assert spec["securityGroupSelectorTerms"] == [{"id": CLUSTER_SG}]


def test_node_class_requires_imdsv2_with_hop_limit_1(default_manifests):
    md = _node_class(default_manifests)["spec"]["metadataOptions"]
    assert md["httpTokens"] == "required"
    assert md["httpPutResponseHopLimit"] == 1
    assert md["httpEndpoint"] == "enabled"


def test_node_class_root_volume_is_encrypted_gp3(default_manifests):
    (bdm,) = _node_class(default_manifests)["spec"]["blockDeviceMappings"]
    assert bdm["deviceName"] == "/dev/xvda"
    assert bdm["rootVolume"] is True
    assert bdm["ebs"]["volumeType"] == "gp3"
    assert bdm["ebs"]["encrypted"] is True
    assert bdm["ebs"]["deleteOnTermination"] is True


def test_node_class_tags_avoid_keys_karpenter_reserves(default_manifests):
    tags = _node_class(default_manifests)["spec"]["tags"]
    assert tags["dynamic-factory/cluster"] == CLUSTER
    for key in tags:
        assert key not in {"eks:eks-cluster-name", "karpenter.sh/nodepool", "karpenter.sh/nodeclaim",
                           "karpenter.k8s.aws/ec2nodeclass"}
        assert not key.startswith("kubernetes.io/cluster")


# ------------------------------------------------------------------ maxPods vs Cilium ENI IPAM


def test_eni_formula():
    # enis * (ips_per_eni - 1) + 2
    assert eni_max_pods("c6i.large") == 3 * 9 + 2 == 29
    assert eni_max_pods("m6i.xlarge") == 4 * 14 + 2 == 58
    assert eni_max_pods("r6i.4xlarge") == 8 * 29 + 2 == 234
    assert eni_max_pods("m6i.xlarge", first_interface_index=1) == 3 * 14 + 2


@pytest.mark.parametrize("fixture", ["default_manifests", "gpu_manifests"])
def test_max_pods_fits_the_smallest_reachable_instance_type(request, fixture):
    manifests = request.getfixturevalue(fixture)
    max_pods = _node_class(manifests)["spec"]["kubelet"]["maxPods"]
    reached = set().union(*(_types_reached_by_manifest(p) for p in _pools(manifests).values()))
    assert reached
    assert max_pods == min(KUBERNETES_MAX_PODS, *(eni_max_pods(t) for t in reached))
    assert max_pods == 58  # smallest default size is xlarge (4 ENIs x 15 IPv4)


def test_max_pods_argument_is_used_and_over_limit_is_refused():
    assert _node_class(_synth(max_pods=40))["spec"]["kubelet"]["maxPods"] == 40
    with pytest.raises(ValueError, match="max_pods"):
        _synth(max_pods=110)


def test_allowing_large_types_lowers_max_pods_for_everyone():
    with_large = dataclasses.replace(DEFAULT_SPOT_POOL, instance_sizes=("large", "xlarge"))
    assert max_pods_for_pools([with_large, DEFAULT_ON_DEMAND_POOL]) == 29


# ------------------------------------------------------------------ NodePools


@pytest.mark.parametrize("fixture", ["default_manifests", "gpu_manifests"])
def test_every_node_pool_has_the_cilium_startup_taint(request, fixture):
    for name, pool in _pools(request.getfixturevalue(fixture)).items():
        startup = pool["spec"]["template"]["spec"]["startupTaints"]
        assert {"key": "node.cilium.io/agent-not-ready", "value": "true", "effect": "NoExecute"} in startup, name
        taints = pool["spec"]["template"]["spec"].get("taints", [])
        assert all(t["key"] != CILIUM_STARTUP_TAINT.key for t in taints), "must be a startup taint, not a taint"


@pytest.mark.parametrize("fixture", ["default_manifests", "gpu_manifests"])
def test_every_node_pool_consolidates_expires_and_has_budgets(request, fixture):
    for name, pool in _pools(request.getfixturevalue(fixture)).items():
        disruption = pool["spec"]["disruption"]
        assert disruption["consolidationPolicy"] == "WhenEmptyOrUnderutilized", name
        assert disruption["consolidateAfter"], name
        assert disruption["budgets"] and all("nodes" in b for b in disruption["budgets"]), name
        assert pool["spec"]["template"]["spec"]["expireAfter"], name
        assert {"cpu", "memory"} <= set(pool["spec"]["limits"]), name
        assert pool["spec"]["template"]["metadata"]["labels"][POOL_LABEL_KEY] == name


def test_spot_pool_is_spot_first_with_on_demand_fallback_and_broad(default_manifests):
    spot = _pools(default_manifests)["spot"]
    assert _requirement(spot, "karpenter.sh/capacity-type")["values"] == ["spot", "on-demand"]
    assert _requirement(spot, "karpenter.k8s.aws/instance-generation") == {
        "key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": ["4"]}
    reached = _types_reached_by_manifest(spot)
    assert len(reached) >= 15, sorted(reached)
    assert {t[0] for t in reached} >= {"c", "m", "r"}, "several instance categories"
    assert len({INSTANCE_TYPES[t].size for t in reached}) >= 3, "several sizes"
    assert all(INSTANCE_TYPES[t].generation >= 5 for t in reached)
    assert reached == set(reachable_instance_types(DEFAULT_SPOT_POOL))
    assert "taints" not in spot["spec"]["template"]["spec"], "spot is the untainted default pool"


def test_on_demand_pool_is_on_demand_only_and_targetable(default_manifests):
    od = _pools(default_manifests)["on-demand"]
    assert _requirement(od, "karpenter.sh/capacity-type")["values"] == ["on-demand"]
    assert od["spec"]["template"]["metadata"]["labels"] == {POOL_LABEL_KEY: "on-demand"}
    assert od["spec"]["template"]["spec"]["taints"] == [
        {"key": POOL_LABEL_KEY, "value": "on-demand", "effect": "NoSchedule"}]
    placement = pool_placement(DEFAULT_ON_DEMAND_POOL)
    assert placement == {
        "nodeSelector": {POOL_LABEL_KEY: "on-demand"},
        "tolerations": [{"key": POOL_LABEL_KEY, "operator": "Equal", "value": "on-demand", "effect": "NoSchedule"}],
    }


def test_gpu_pool_absent_by_default(default_manifests):
    assert "gpu" not in _pools(default_manifests)
    for pool in _pools(default_manifests).values():
        assert not any(INSTANCE_TYPES[t].gpus for t in _types_reached_by_manifest(pool))


def test_only_gpu_nodes_carry_the_label_the_nvidia_device_plugin_selects(gpu_manifests):
    """The plugin's default node affinity needs NFD labels or nvidia.com/gpu.present=true."""
    labels = {name: p["spec"]["template"]["metadata"]["labels"] for name, p in _pools(gpu_manifests).items()}
    assert labels["gpu"]["nvidia.com/gpu.present"] == "true"
    assert all("nvidia.com/gpu.present" not in v for name, v in labels.items() if name != "gpu")


def test_gpu_pool_when_enabled_is_tainted_and_limited(gpu_manifests):
    gpu = _pools(gpu_manifests)["gpu"]
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in gpu["spec"]["template"]["spec"]["taints"]
    reached = _types_reached_by_manifest(gpu)
    assert reached and all(INSTANCE_TYPES[t].gpus >= 1 for t in reached)
    assert {INSTANCE_TYPES[t].family for t in reached} <= {"g5", "g6"}
    assert gpu["spec"]["limits"]["nvidia.com/gpu"] == str(DEFAULT_GPU_POOL.gpu_limit)
    assert pool_placement(DEFAULT_GPU_POOL)["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]


# ------------------------------------------------------------------ argument validation


def _pool(**overrides) -> NodePoolSettings:
    return dataclasses.replace(DEFAULT_SPOT_POOL, **overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"name": "Spot_Pool"}, "name"),
        ({"capacity_types": ()}, "capacity_types must not be empty"),
        ({"capacity_types": ("spot", "preemptible")}, "capacity_types"),
        ({"instance_families": ("c6i", "x9z")}, "x9z"),
        ({"instance_families": ()}, "instance_families must not be empty"),
        ({"instance_sizes": ("metal",)}, "metal"),
        ({"instance_families": ("c5",), "min_generation": 6}, "older than min_generation"),
        ({"cpu_limit": 0}, "cpu_limit"),
        ({"memory_limit_gib": -1}, "memory_limit_gib"),
        ({"consolidate_after": "1 minute"}, "consolidate_after"),
        ({"expire_after": "30d"}, "expire_after"),
        ({"termination_grace_period": "Never"}, "termination_grace_period"),
        ({"weight": 101}, "weight"),
        ({"budgets": ()}, "budgets"),
        ({"labels": {"karpenter.sh/nodepool": "x"}}, "reserved"),
        ({"labels": {POOL_LABEL_KEY: "x"}}, POOL_LABEL_KEY),
        ({"labels": {"team": "not valid!"}}, "label"),
        ({"taints": (CILIUM_STARTUP_TAINT,)}, "startup taint"),
        ({"instance_families": ("g5",), "instance_sizes": ("xlarge",)}, "gpu_limit is required"),
        ({"capacity_types": "spot"}, "must be a sequence"),
    ],
)
def test_bad_pool_arguments_raise_a_clear_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        _pool(**overrides)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"key": "bad key", "effect": "NoSchedule"}, "taint key"),
        ({"key": "a/b", "effect": "NoRun"}, "effect"),
        ({"key": "a/b", "effect": "NoSchedule", "value": ""}, "value"),
    ],
)
def test_bad_taints_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Taint(**kwargs)


def test_bad_budgets_raise():
    with pytest.raises(ValueError, match="nodes"):
        DisruptionBudget(nodes="ten")
    with pytest.raises(ValueError, match="together"):
        DisruptionBudget(nodes="0", schedule="@daily")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cluster_name": "${Token[TOKEN.123]}"}, "literal"),
        ({"ami_alias": "al2023@latest"}, "pinned"),
        ({"ami_alias": "bottlerocket@v1.30.0"}, "ami_alias"),
        ({"node_pools": []}, "must not be empty"),
        ({"node_pools": [DEFAULT_SPOT_POOL, DEFAULT_SPOT_POOL]}, "unique"),
        ({"tags": {"kubernetes.io/cluster/x": "owned"}}, "reserved"),
        ({"root_volume_gib": 8}, "root_volume_gib"),
        ({"security_group_ids": []}, "security_group_ids"),
        ({"security_group_ids": "sg-1"}, "security_group_ids"),
    ],
)
def test_bad_chart_arguments_raise_a_clear_value_error(kwargs, message):
    args = {"cluster_name": CLUSTER, "node_role_name": NODE_ROLE, "security_group_ids": [CLUSTER_SG], **kwargs}
    with pytest.raises(ValueError, match=message):
        KarpenterNodesChart(cdk8s.Testing.app(), "bad", **args)
