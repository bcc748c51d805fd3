"""Teardown of Karpenter: the controller is not uninstalled while instances it launched still run, nor before
the EC2NodeClass finalizer has removed the node role's instance profiles.

CDK's kubectl handler only logs a failed ``kubectl delete`` (aws-cdk-lib 2.273.0, apply/__init__.py), so the
NodePools and NodeClass resources can be gone from the stack while their nodes, or the instance profiles the
EC2NodeClass finalizer deletes, are still there. The delete order:

    NodePools (+ GpuNodePool) -> TeardownGuard -> NodeClass -> instance-profile guard -> controller release,
    its Pod Identity association, the nodes' access entry (-> CRDs, queue, node role)

The KarpenterTeardownGuard waits until no Karpenter instance of the cluster is left, the instance-profile guard
until the node role is in no instance profile (tests/behaviour/test_karpenter_teardown_guard.py runs the
handler).

"A is deleted before B" holds exactly when B is an ancestor of A in the deploy graph (tools/boot/deploy.py,
tests/day2/test_teardown.py), across stacks too.
"""

from __future__ import annotations

import json

import importlib.util
import sys

import pytest

from cdk_constructs import karpenter_teardown_guard as guard
from tools.boot.deploy import DeployGraph
from tools.boot.workloads import iter_kube_objects
from tools.render import Assembly

STAGE = "assembly-DynamicFactory"


@pytest.fixture(scope="module", params=["default", "variant"])
def synth(request):
    return request.getfixturevalue("platform" if request.param == "default" else "variant")


def _graph(synth) -> DeployGraph:
    return DeployGraph(Assembly(synth.outdir / STAGE))


def _one(g: DeployGraph, type_: str, predicate=lambda r: True):
    found = g.find(type_, predicate)
    assert len(found) == 1, [r.key for r in found]
    return found[0].key


def _release(g: DeployGraph, chart: str):
    return _one(g, "Custom::AWSCDK-EKS-HelmChart", lambda r: r.properties.get("Chart") == chart)


def _pool_manifests(g: DeployGraph) -> set:
    """Every manifest resource that carries a NodePool."""
    return {key for key, _ in iter_kube_objects(g, ["NodePool"])}


def _node_class_manifest(g: DeployGraph):
    (key,) = {key for key, _ in iter_kube_objects(g, ["EC2NodeClass"])}
    return key


def _needed_by_karpenter(g: DeployGraph) -> dict:
    """What Karpenter needs to drain and terminate nodes and to run the EC2NodeClass finalizer."""
    return {
        "karpenter controller": _release(g, "karpenter"),
        "karpenter CRDs": _release(g, "karpenter-crd"),
        "controller Pod Identity": _one(g, "AWS::EKS::PodIdentityAssociation",
                                        lambda r: r.properties.get("ServiceAccount") == "karpenter"),
        "node access entry": _one(g, "AWS::EKS::AccessEntry", lambda r: r.properties.get("Type") == "EC2_LINUX"),
        "interruption queue": _one(g, "AWS::SQS::Queue"),
    }


def _template(synth) -> dict:
    return synth.template_json("Karpenter")


def _guard(synth) -> tuple[str, dict]:
    found = {k: v for k, v in _template(synth)["Resources"].items() if v["Type"] == guard.RESOURCE_TYPE}
    assert len(found) == 1, sorted(found)
    return next(iter(found.items()))


def _profile_guard(synth) -> tuple[str, dict]:
    found = {k: v for k, v in _template(synth)["Resources"].items() if v["Type"] == guard.PROFILE_GUARD_TYPE}
    assert len(found) == 1, sorted(found)
    return next(iter(found.items()))


def _node_role_id(synth) -> str:
    (role_id,) = [k for k, v in _template(synth)["Resources"].items() if v["Type"] == "AWS::IAM::Role"
                  and "ec2.amazonaws.com" in str(v["Properties"]["AssumeRolePolicyDocument"])]
    return role_id


def _function(synth) -> tuple[str, dict]:
    _, resource = _guard(synth)
    function_id = resource["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
    return function_id, _template(synth)["Resources"][function_id]


def _load_index():
    spec = importlib.util.spec_from_file_location("karpenter_teardown_guard_index", guard.HANDLER_DIR / "index.py")
    module = importlib.util.module_from_spec(spec)
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


# ----------------------------------------------------------------- deletion order


def test_every_node_pool_manifest_is_deleted_before_the_guard(synth):
    g = _graph(synth)
    resource = _one(g, guard.RESOURCE_TYPE)
    pools = _pool_manifests(g)
    assert len(pools) == (2 if synth.config.karpenter.gpu.enabled else 1)
    late = [g.label(p) for p in pools if resource not in g.ancestors(p)]
    assert late == [], f"deleted after (or with) the teardown guard: {late}"


def test_the_gpu_pool_is_deleted_before_the_guard(variant):
    g = _graph(variant)
    (gpu,) = {key for key, obj in iter_kube_objects(g, ["NodePool"]) if obj["metadata"]["name"] == "gpu"}
    assert gpu[1].startswith("GpuNodePool")
    assert _one(g, guard.RESOURCE_TYPE) in g.ancestors(gpu)


def test_the_guard_is_deleted_before_what_karpenter_needs_to_terminate_nodes(synth):
    g = _graph(synth)
    resource = _one(g, guard.RESOURCE_TYPE)
    late = [name for name, key in _needed_by_karpenter(g).items() if key not in g.ancestors(resource)]
    assert late == [], f"deleted before (or with) the teardown guard: {late}"
    # Its function, role (with the policy inline) and log group still exist when its Delete runs.
    for type_ in ("AWS::Lambda::Function", "AWS::IAM::Role", "AWS::Logs::LogGroup"):
        assert any(k[1].startswith("TeardownGuard") and g.resources[k].type == type_
                   for k in g.ancestors(resource)), type_


def test_delete_order_pools_guard_node_class_profile_guard_controller(synth):
    """Each step is deleted only after the one before it is gone: the EC2NodeClass after the instance guard (so
    its finalizer finds no NodeClaim to wait for), the profile guard after the EC2NodeClass (whose finalizer
    deletes the profiles) and before everything the finalizer needs."""
    g = _graph(synth)
    instances, profiles = _one(g, guard.RESOURCE_TYPE), _one(g, guard.PROFILE_GUARD_TYPE)
    node_class = _node_class_manifest(g)
    assert node_class[1].startswith("NodeClass") and node_class not in _pool_manifests(g)
    for pools in _pool_manifests(g):
        assert instances in g.ancestors(pools), g.label(pools)
    assert node_class in g.ancestors(instances)
    assert profiles in g.ancestors(node_class)
    late = [name for name, key in _needed_by_karpenter(g).items() if key not in g.ancestors(profiles)]
    assert late == [], f"deleted before (or with) the instance-profile guard: {late}"
    # The node role (what an instance profile left on it would keep from being deleted) goes after the check,
    # and so do the function, its role and its log group.
    assert _one(g, "AWS::IAM::Role", lambda r: r.key[1] == _node_role_id(synth)) in g.ancestors(profiles)
    for type_ in ("AWS::Lambda::Function", "AWS::IAM::Role", "AWS::Logs::LogGroup"):
        assert any(k[1].startswith("TeardownGuard") and g.resources[k].type == type_
                   for k in g.ancestors(profiles)), type_


def test_the_guard_holds_the_controller_through_direct_dependencies(platform):
    """The edges themselves, so that no refactoring of the charts' own dependencies can drop them."""
    tpl = _template(platform)
    guard_id, resource = _guard(platform)
    depends = set(resource["DependsOn"])
    by_type = {}
    for logical_id, res in tpl["Resources"].items():
        by_type.setdefault(res["Type"], []).append(logical_id)
    (association,) = by_type["AWS::EKS::PodIdentityAssociation"]
    (access,) = by_type["AWS::EKS::AccessEntry"]
    controller = platform.assembly.helm_releases()["karpenter"].logical_id
    assert {controller, association, access} <= depends
    (pools,) = [k for k in by_type["Custom::AWSCDK-EKS-KubernetesResource"] if k.startswith("NodePools")]
    assert guard_id in tpl["Resources"][pools]["DependsOn"]
    # The EC2NodeClass between the two guards, the profile guard on the controller directly too.
    (node_class,) = [k for k in by_type["Custom::AWSCDK-EKS-KubernetesResource"] if k.startswith("NodeClass")]
    assert node_class in depends
    profile_guard_id, profile_guard = _profile_guard(platform)
    assert profile_guard_id in tpl["Resources"][node_class]["DependsOn"]
    assert {controller, association, access} <= set(profile_guard["DependsOn"])


def test_the_guard_is_kept_and_watches_this_cluster(synth):
    _, resource = _guard(synth)
    assert resource["Properties"]["ClusterName"] == synth.config.cluster.name  # a literal, like Karpenter's tag
    assert resource.get("DeletionPolicy", "Delete") == "Delete"


def test_the_profile_guard_watches_the_node_role_with_the_same_function(synth):
    _, resource = _profile_guard(synth)
    props = resource["Properties"]
    assert props["WaitFor"] == _load_index().WAIT_FOR_INSTANCE_PROFILES == guard.WAIT_FOR_INSTANCE_PROFILES
    assert props["NodeRoleName"] == {"Ref": _node_role_id(synth)}
    assert props["ClusterName"] == synth.config.cluster.name
    assert props["ServiceToken"] == _guard(synth)[1]["Properties"]["ServiceToken"]
    assert props["ServiceTimeout"] == _guard(synth)[1]["Properties"]["ServiceTimeout"]
    assert resource.get("DeletionPolicy", "Delete") == "Delete"
    # The EC2NodeClass names the same role: its finalizer removes the profiles Karpenter made for it.
    (node_class,) = [o for _, o in iter_kube_objects(_graph(synth), ["EC2NodeClass"])]
    assert node_class["spec"]["role"] == "${" + _node_role_id(synth)[:-8] + "}"


# ----------------------------------------------------------------- the function


def test_the_guard_function_runs_outside_the_vpc_on_a_bounded_budget(platform):
    _, function = _function(platform)
    props = function["Properties"]
    assert "VpcConfig" not in props  # its ENIs would be left in the subnets the network stack deletes
    assert "Environment" not in props
    index = _load_index()
    # The handler's wait and its safety margin fit in the function's timeout, and that in CloudFormation's.
    assert index.WAIT_SECONDS + index.SAFETY_SECONDS <= props["Timeout"] < 15 * 60
    _, resource = _guard(platform)
    assert props["Timeout"] < int(resource["Properties"]["ServiceTimeout"])


def test_the_guard_ships_the_tested_handler(platform):
    _, function = _function(platform)
    asset_hash = function["Properties"]["Code"]["S3Key"].removesuffix(".zip")
    shipped = sorted(p.name for p in (platform.outdir / f"asset.{asset_hash}").iterdir())
    assert shipped == ["index.py"] and function["Properties"]["Handler"] == "index.handler"
    shipped_index = (platform.outdir / f"asset.{asset_hash}" / "index.py").read_bytes()
    assert shipped_index == (guard.HANDLER_DIR / "index.py").read_bytes()


def test_the_guard_may_only_read_instances_the_node_roles_profiles_and_its_own_stack(platform):
    tpl = _template(platform)
    _, function = _function(platform)
    role = tpl["Resources"][function["Properties"]["Role"]["Fn::GetAtt"][0]]
    assert "ManagedPolicyArns" not in role["Properties"]
    (policy,) = role["Properties"]["Policies"]  # inline: it cannot be deleted before the Delete event runs
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert set(statements) == {guard.DESCRIBE_SID, guard.LIST_PROFILES_SID, guard.STACK_STATUS_SID, "WriteOwnLogs"}
    assert all(s["Effect"] == "Allow" for s in statements.values())
    assert all("NotAction" not in s and "NotResource" not in s for s in statements.values())

    profiles = statements[guard.LIST_PROFILES_SID]
    assert profiles["Action"] == "iam:ListInstanceProfilesForRole"
    assert profiles["Resource"] == {"Fn::GetAtt": [_node_role_id(platform), "Arn"]}  # that role only
    assert "Condition" not in profiles

    describe = statements[guard.DESCRIBE_SID]
    assert (describe["Action"], describe["Resource"]) == ("ec2:DescribeInstances", "*")
    assert describe["Condition"] == {"StringEquals": {"aws:RequestedRegion": {"Ref": "AWS::Region"}}}

    stack = statements[guard.STACK_STATUS_SID]
    assert (stack["Action"], stack["Resource"]) == ("cloudformation:DescribeStacks", {"Ref": "AWS::StackId"})

    logs = statements["WriteOwnLogs"]
    log_group_id = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    assert logs["Resource"] == {"Fn::GetAtt": [log_group_id, "Arn"]}
    assert logs["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    # It watches; terminating and deleting profiles is Karpenter's job (its finalizers drain the nodes first).
    granted = {a for s in statements.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert granted == {"ec2:DescribeInstances", "iam:ListInstanceProfilesForRole", "cloudformation:DescribeStacks",
                       "logs:CreateLogStream", "logs:PutLogEvents"}


def test_the_instances_it_waits_for_carry_what_the_controller_must_tag_them_with(platform):
    """The guard's tags are ones the controller's policy requires on every instance it launches: no instance
    this Karpenter could start escapes the guard."""
    index = _load_index()
    tpl = _template(platform)
    launch = [s for res in tpl["Resources"].values() if res["Type"] == "AWS::IAM::ManagedPolicy"
              for s in res["Properties"]["PolicyDocument"]["Statement"]
              if s.get("Sid") == "AllowScopedEC2InstanceActionsWithTags"]
    assert len(launch) == 1 and "ec2:RunInstances" in launch[0]["Action"]
    conditions = launch[0]["Condition"]
    assert conditions["StringEquals"][f"aws:RequestTag/{index.CLUSTER_NAME_TAG}"] == platform.config.cluster.name
    assert conditions["StringLike"][f"aws:RequestTag/{index.NODEPOOL_TAG}"] == "*"


def test_the_guard_logs_are_encrypted_with_the_logs_key_and_go_with_the_stack(synth):
    tpl = _template(synth)
    _, function = _function(synth)
    group = tpl["Resources"][function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]]
    assert group["Properties"]["RetentionInDays"] == 30
    assert group.get("DeletionPolicy") == "Delete"
    # The key: the cluster stack's logs key (whose policy admits Logs), never the EKS cluster's secrets key.
    g = _graph(synth)
    output = group["Properties"]["KmsKeyId"]["Fn::GetStackOutput"]
    assert output["StackName"] == f"{synth.config.cluster.name}-cluster"
    key_id, attribute = g.output_source(output["StackName"], output["OutputName"])["Fn::GetAtt"]
    cluster_tpl = synth.template_json("Cluster")
    key = cluster_tpl["Resources"][key_id]
    assert key["Type"] == "AWS::KMS::Key" and attribute == "Arn"
    (eks_cluster,) = [r for r in cluster_tpl["Resources"].values() if r["Type"] == "AWS::EKS::Cluster"]
    assert key_id not in json.dumps(eks_cluster["Properties"]["EncryptionConfig"])
    sids = {s.get("Sid") for s in key["Properties"]["KeyPolicy"]["Statement"]}
    assert "CloudWatchLogsOfThisAccount" in sids
    # The key outlives the log group (the cluster stack is deleted after the Karpenter stack).
    log_group = next(k for k in g.resources if k[1].startswith("TeardownGuardLogs"))
    key_key = next(k for k in g.resources if k[1] == key_id)
    assert key_key in g.ancestors(log_group)
