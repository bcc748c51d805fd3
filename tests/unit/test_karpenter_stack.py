"""Karpenter wired into the platform: Helm releases, values, node pools, identities and deploy order."""

from __future__ import annotations

import json
import yaml

import versions
from cdk_constructs.karpenter_teardown_guard import PROFILE_GUARD_TYPE
from cdk_constructs.karpenter_teardown_guard import RESOURCE_TYPE as TEARDOWN_GUARD_TYPE
from charts import karpenter_nodes as kn
from tests.platform_synth import ROOT
from tests.support.helm_values import unknown_paths
from tests.support.k8s_schema import CrdValidator

KARPENTER_SCHEMAS = ROOT / "schemas" / "karpenter"


def _resources(synth, type_):
    return {k: v for k, v in synth.template_json("Karpenter")["Resources"].items() if v["Type"] == type_}


def _depends(synth, logical_id) -> set[str]:
    deps = synth.template_json("Karpenter")["Resources"][logical_id].get("DependsOn", [])
    return {deps} if isinstance(deps, str) else set(deps)


def _karpenter_manifests(synth):
    """The manifest resources that carry Karpenter's objects (EC2NodeClass, NodePools)."""
    found = [r for r in synth.assembly.manifests()
             if any(o["kind"] in ("NodePool", "EC2NodeClass") for o in r.objects)]
    assert found and all("Karpenter" in r.stack for r in found)
    return found


def _pool_resources(synth):
    """The manifest resources that carry NodePools: ``NodePools`` (the CPU pools) and, with the GPU pool on,
    ``GpuNodePool``."""
    return [r for r in _karpenter_manifests(synth) if any(o["kind"] == "NodePool" for o in r.objects)]


def _node_pool_resource(synth):
    """``NodePools``: the CPU pools."""
    (res,) = [r for r in _pool_resources(synth) if r.logical_id.startswith("NodePools")]
    return res


def _node_class_resource(synth):
    """``NodeClass``: the resource with the EC2NodeClass."""
    (res,) = [r for r in _karpenter_manifests(synth) if any(o["kind"] == "EC2NodeClass" for o in r.objects)]
    return res


def _objects(synth, kind):
    return [o for r in _karpenter_manifests(synth) for o in r.objects if o["kind"] == kind]


# ------------------------------------------------------------------ Helm


def test_crd_and_controller_charts_are_pinned(platform):
    releases = platform.assembly.helm_releases()
    for name, chart in (("karpenter-crd", "karpenter-crd"), ("karpenter", "karpenter")):
        props = releases[name].properties
        assert props["Chart"] == chart
        assert props["Version"] == versions.KARPENTER_CHART_VERSION
        # The kubectl handler pulls `Repository` as is for OCI sources: it must name the chart.
        assert props["Repository"] == f"oci://public.ecr.aws/karpenter/{chart}"
        assert props["Namespace"] == "kube-system"
    assert releases["karpenter"].properties["SkipCrds"] is True


def test_chart_version_matches_vendored_chart():
    chart = yaml.safe_load((KARPENTER_SCHEMAS / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == versions.KARPENTER_CHART_VERSION


def test_controller_values(platform):
    values = platform.assembly.helm_releases()["karpenter"].values
    assert values["settings"]["clusterName"] == "dynamic-factory"
    assert values["replicas"] == 2
    assert values["nodeSelector"]["dynamic-factory/node-role"] == "system"
    assert {"key": "CriticalAddonsOnly", "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]


def test_interruption_queue_setting_is_the_queue_name_not_url_or_arn(platform):
    values = platform.assembly.helm_releases()["karpenter"].values
    (queue,) = _resources(platform, "AWS::SQS::Queue").values()
    assert values["settings"]["interruptionQueue"] == queue["Properties"]["QueueName"] == "dynamic-factory"


# Free-form maps/lists of the karpenter chart's values (not the chart's own keys).
_FREE_FORM = frozenset({"nodeSelector", "tolerations", "resources", "podAnnotations", "podLabels"})


def test_every_value_we_set_exists_in_the_upstream_values_file(platform):
    upstream = yaml.safe_load((KARPENTER_SCHEMAS / "values.yaml").read_text())
    ours = platform.assembly.helm_releases()["karpenter"].values
    assert unknown_paths(ours, upstream, _FREE_FORM) == []


# ------------------------------------------------------------------ node pools


def test_node_class_and_pools_validate_strictly_against_the_crds(any_platform):
    validator = CrdValidator.from_files(sorted(KARPENTER_SCHEMAS.glob("*_*.yaml")))
    objects = [o for r in _karpenter_manifests(any_platform) for o in r.objects]
    assert {o["kind"] for o in objects} == {"EC2NodeClass", "NodePool"}
    for obj in objects:
        if obj["kind"] == "EC2NodeClass":
            # The security group id is a deploy-time value (the cluster stack's output); the CRD's `sg-...`
            # pattern applies to what CloudFormation puts there, so validate with a well-formed id.
            for term in obj["spec"]["securityGroupSelectorTerms"]:
                assert term["id"].startswith("${output:") and "ClusterSecurityGroupId" in term["id"]
                term["id"] = "sg-0123456789abcdef0"
        assert validator.errors(obj) == [], obj["metadata"]["name"]


def test_the_node_class_is_a_manifest_of_its_own_applied_not_created(any_platform):
    """On teardown the EC2NodeClass goes after the pools and the teardown guard, on its own (its finalizer waits
    for every NodeClaim, then deletes Karpenter's instance profiles and launch templates). Overwrite: the
    kubectl handler applies it where it already exists (deployed when it shared the NodePools manifest) instead
    of `kubectl create`, which would fail with AlreadyExists."""
    node_class = _node_class_resource(any_platform)
    assert node_class.logical_id.startswith("NodeClass")
    assert [(o["kind"], o["metadata"]["name"]) for o in node_class.objects] == [("EC2NodeClass", "default")]
    assert str(node_class.properties.get("Overwrite")).lower() == "true"
    for res in _pool_resources(any_platform):
        assert {o["kind"] for o in res.objects} == {"NodePool"}, res.logical_id
    # Every pool names it.
    for pool in _objects(any_platform, "NodePool"):
        assert pool["spec"]["template"]["spec"]["nodeClassRef"]["name"] == "default"


def test_default_pools_and_gpu_only_when_enabled(platform, variant):
    assert {p["metadata"]["name"] for p in _objects(platform, "NodePool")} == {"spot", "on-demand"}
    assert {p["metadata"]["name"] for p in _objects(variant, "NodePool")} == {"spot", "on-demand", "gpu"}


def test_every_pool_has_the_cilium_startup_taint(any_platform):
    for pool in _objects(any_platform, "NodePool"):
        taints = pool["spec"]["template"]["spec"]["startupTaints"]
        assert any(t["key"] == "node.cilium.io/agent-not-ready" for t in taints), pool["metadata"]["name"]


def test_pools_consolidate_expire_and_have_budgets(platform):
    for pool in _objects(platform, "NodePool"):
        disruption = pool["spec"]["disruption"]
        assert disruption["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
        assert disruption["consolidateAfter"] and disruption["budgets"]
        assert pool["spec"]["template"]["spec"]["expireAfter"]


def test_spot_pool_is_spot_first_and_broad(platform):
    (spot,) = [p for p in _objects(platform, "NodePool") if p["metadata"]["name"] == "spot"]
    reqs = {r["key"]: r for r in spot["spec"]["template"]["spec"]["requirements"]}
    assert set(reqs["karpenter.sh/capacity-type"]["values"]) == {"spot", "on-demand"}
    assert len(kn.reachable_instance_types(platform.config.karpenter.spot.settings())) >= 15


def test_node_class_uses_the_node_role_imdsv2_and_encrypted_root(platform):
    (node_class,) = _objects(platform, "EC2NodeClass")
    spec = node_class["spec"]
    (role_id,) = [k for k, v in _resources(platform, "AWS::IAM::Role").items()
                  if "ec2.amazonaws.com" in json.dumps(v["Properties"]["AssumeRolePolicyDocument"])]
    assert spec["role"] == "${" + role_id[:-8] + "}"
    assert spec["metadataOptions"]["httpTokens"] == "required"
    assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
    assert spec["blockDeviceMappings"][0]["ebs"]["encrypted"] is True
    assert spec["amiSelectorTerms"] == [{"alias": platform.config.karpenter.ami_alias}]
    for term in spec["subnetSelectorTerms"]:
        assert term["tags"] == {"karpenter.sh/discovery": "dynamic-factory"}
    # The security group EKS created for the cluster, by id (it carries no discovery tag).
    (term,) = spec["securityGroupSelectorTerms"]
    assert set(term) == {"id"} and "ClusterSecurityGroupId" in term["id"]


def test_pool_limits_follow_config(variant):
    (gpu,) = [p for p in _objects(variant, "NodePool") if p["metadata"]["name"] == "gpu"]
    assert str(gpu["spec"]["limits"]["nvidia.com/gpu"]) == str(variant.config.karpenter.gpu.gpu_limit)
    (spot,) = [p for p in _objects(variant, "NodePool") if p["metadata"]["name"] == "spot"]
    assert str(spot["spec"]["limits"]["cpu"]) == "512"
    taints = gpu["spec"]["template"]["spec"]["taints"]
    assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in taints


def test_nvidia_device_plugin_comes_with_the_gpu_pool(platform, variant):
    assert "nvidia-device-plugin" not in platform.assembly.helm_releases()
    plugin = variant.assembly.helm_releases()["nvidia-device-plugin"]
    assert plugin.properties["Version"] == versions.NVIDIA_DEVICE_PLUGIN_VERSION
    assert plugin.values["nodeSelector"] == {"dynamic-factory/pool": "gpu"}
    (gpu,) = [r for r in _pool_resources(variant) if r.logical_id.startswith("GpuNodePool")]
    assert [o["metadata"]["name"] for o in gpu.objects] == ["gpu"]
    assert gpu.logical_id in plugin.depends_on


# ------------------------------------------------------------------ identities


def test_node_role_has_an_ec2_linux_access_entry(platform):
    entries = [r["Properties"] for r in _resources(platform, "AWS::EKS::AccessEntry").values()]
    assert [e["Type"] for e in entries] == ["EC2_LINUX"]


def test_controller_role_is_bound_to_the_karpenter_service_account(platform):
    (assoc,) = _resources(platform, "AWS::EKS::PodIdentityAssociation").values()
    props = assoc["Properties"]
    assert (props["Namespace"], props["ServiceAccount"]) == ("kube-system", "karpenter")
    role = platform.template_json("Karpenter")["Resources"][props["RoleArn"]["Fn::GetAtt"][0]]
    trust = json.dumps(role["Properties"]["AssumeRolePolicyDocument"])
    assert "pods.eks.amazonaws.com" in trust and "ec2.amazonaws.com" not in trust


# ------------------------------------------------------------------ deploy order


def _id_of_release(synth, release):
    return synth.assembly.helm_releases()[release].logical_id


def test_crd_chart_then_controller_then_node_class_then_pools(any_platform):
    crd = _id_of_release(any_platform, "karpenter-crd")
    controller = _id_of_release(any_platform, "karpenter")
    assert crd in _depends(any_platform, controller)
    node_class = _node_class_resource(any_platform)
    assert controller in node_class.depends_on
    node_pools = _node_pool_resource(any_platform)
    assert {controller, node_class.logical_id} <= set(node_pools.depends_on)
    # The GPU pool after the CPU pools' resource (and so after the EC2NodeClass and the controller).
    for res in _pool_resources(any_platform):
        assert res.logical_id == node_pools.logical_id or node_pools.logical_id in res.depends_on, res.logical_id


def test_controller_then_profile_guard_then_node_class_then_teardown_guard_then_pools(any_platform):
    """Deleted in reverse: every pool manifest, then the teardown guard (waits for Karpenter's instances), then
    the EC2NodeClass, then the profile guard (waits until the node role is in no instance profile), then the
    controller, its Pod Identity association and the nodes' access entry (tests/unit/test_teardown_karpenter.py)."""
    (guard,) = _resources(any_platform, TEARDOWN_GUARD_TYPE)
    (profile_guard,) = _resources(any_platform, PROFILE_GUARD_TYPE)
    (assoc,) = _resources(any_platform, "AWS::EKS::PodIdentityAssociation")
    (access,) = _resources(any_platform, "AWS::EKS::AccessEntry")
    needed = {_id_of_release(any_platform, "karpenter"), assoc, access}
    assert needed <= _depends(any_platform, profile_guard)
    node_class = _node_class_resource(any_platform)
    assert profile_guard in node_class.depends_on
    assert needed | {node_class.logical_id} <= _depends(any_platform, guard)
    for res in _pool_resources(any_platform):
        assert guard in res.depends_on, res.logical_id


def test_queue_rules_and_identity_exist_before_the_controller(platform):
    controller = _depends(platform, _id_of_release(platform, "karpenter"))
    (queue_id,) = _resources(platform, "AWS::SQS::Queue")
    (assoc_id,) = _resources(platform, "AWS::EKS::PodIdentityAssociation")
    assert queue_id in controller and assoc_id in controller
    assert set(_resources(platform, "AWS::Events::Rule")) <= controller


def test_karpenter_stack_deploys_after_the_cluster_stack(platform):
    deps = {s.node.id for s in platform.stage.karpenter.dependencies}
    assert "Cluster" in deps


def test_cilium_taint_key_is_one_constant():
    from charts.cilium_values import AGENT_NOT_READY_TAINT_KEY

    assert kn.CILIUM_STARTUP_TAINT.key == AGENT_NOT_READY_TAINT_KEY == "node.cilium.io/agent-not-ready"
