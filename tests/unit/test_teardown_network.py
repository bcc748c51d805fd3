"""Teardown of the network: the kubectl handler Lambdas' ENIs no longer block deleting the cluster or the VPC.

CDK's kubectl handler and its provider framework Lambda run in the private subnets. Lambda releases their ENIs
long after the functions are deleted, so (1) they must not hold the cluster security group (EKS deletes it with
the cluster): they get their own group from the network stack, which the cluster group admits on 443; and
(2) the network stack's LambdaEniCleanup custom resource, which DependsOn every subnet and that group, is deleted
first and clears the ENIs (tests/behaviour/test_lambda_eni_cleanup.py runs its handler). Only the Lambda ENIs that
hold that group: the resource is given its id, so other teams' Lambda ENIs in a shared VPC are never touched. It
reads its own stack's status, so that the Delete of an update rollback (subnets and handlers stay) does not wait
for in-use ENIs.
"""

from __future__ import annotations

import json

import pytest

from cdk_constructs import lambda_eni_cleanup as cleanup
from tools.boot.deploy import DeployGraph
from tools.render import Assembly

KUBECTL_FUNCTIONS = ("ClusterKubectlProviderHandler", "ClusterKubectlProviderframeworkonEvent")


@pytest.fixture(scope="module", params=["default", "variant"])
def synth(request):
    return request.getfixturevalue("platform" if request.param == "default" else "variant")


def _of_type(template, type_) -> dict:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def _one(template, type_, prefix=""):
    found = {k: v for k, v in _of_type(template, type_).items() if k.startswith(prefix)}
    assert len(found) == 1, (type_, prefix, sorted(found))
    return next(iter(found.items()))


def _depends_on(resource) -> set[str]:
    deps = resource.get("DependsOn", [])
    return {deps} if isinstance(deps, str) else set(deps)


def _handler_group(synth) -> str:
    logical_id, _ = _one(synth.template_json("Network"), "AWS::EC2::SecurityGroup", "KubectlHandlerSecurityGroup")
    return logical_id


def _network_source(synth, value):
    """What a cross-stack reference from another stack (Fn::GetStackOutput) points at in the network stack."""
    output = value["Fn::GetStackOutput"]
    assert output["StackName"] == f"{synth.config.cluster.name}-network"
    return synth.template_json("Network")["Outputs"][output["OutputName"]]["Value"]


def _kubectl_functions(synth) -> dict:
    functions = {k: v for k, v in _of_type(synth.template_json("Cluster"), "AWS::Lambda::Function").items()
                 if k.startswith(KUBECTL_FUNCTIONS)}
    assert len(functions) == 2, sorted(functions)
    return functions


# ----------------------------------------------------------------- the handlers' own security group


def test_kubectl_handlers_use_the_network_stacks_group_not_the_clusters(synth):
    group = _handler_group(synth)
    for logical_id, function in _kubectl_functions(synth).items():
        vpc_config = function["Properties"]["VpcConfig"]
        assert "ClusterSecurityGroupId" not in json.dumps(vpc_config), logical_id
        groups = [_network_source(synth, g) for g in vpc_config["SecurityGroupIds"]]
        assert groups == [{"Fn::GetAtt": [group, "GroupId"]}], logical_id
        subnets = [_network_source(synth, s) for s in vpc_config["SubnetIds"]]
        assert subnets and all(s["Ref"].startswith("VpcprivateSubnet") for s in subnets), logical_id


def test_every_lambda_in_the_vpc_uses_that_group(synth):
    """The cleanup's premise: the only Lambda ENIs in the VPC hold the group it is deleted before."""
    group = _handler_group(synth)
    for stack, template in synth.assembly.templates.items():
        for logical_id, function in _of_type(template, "AWS::Lambda::Function").items():
            vpc_config = function["Properties"].get("VpcConfig")
            if vpc_config:
                groups = [_network_source(synth, g) for g in vpc_config["SecurityGroupIds"]]
                assert groups == [{"Fn::GetAtt": [group, "GroupId"]}], (stack, logical_id)


def test_the_handler_group_sends_https_only(platform):
    _, group = _one(platform.template_json("Network"), "AWS::EC2::SecurityGroup", "KubectlHandlerSecurityGroup")
    egress = group["Properties"]["SecurityGroupEgress"]
    # To anywhere: the handler also calls eks:DescribeCluster, ECR and the Helm repositories, and the framework
    # calls Lambda and CloudFormation's response URL, all public HTTPS endpoints reached through NAT.
    rules = [(e["IpProtocol"], e["FromPort"], e["ToPort"], e["CidrIp"]) for e in egress]
    assert rules == [("tcp", 443, 443, "0.0.0.0/0")]
    assert "SecurityGroupIngress" not in group["Properties"]
    # Not a Karpenter node group by accident: node classes select groups by id, never by this tag.
    assert "karpenter.sh/discovery" not in {t["Key"] for t in group["Properties"].get("Tags", [])}


def test_the_cluster_group_admits_the_handlers_on_443_before_they_run(synth):
    tpl = synth.template_json("Cluster")
    ingress_id, ingress = _one(tpl, "AWS::EC2::SecurityGroupIngress", "KubectlHandlerApiIngress")
    props = ingress["Properties"]
    cluster_id, _ = _one(tpl, "AWS::EKS::Cluster")
    assert props["GroupId"] == {"Fn::GetAtt": [cluster_id, "ClusterSecurityGroupId"]}
    assert _network_source(synth, props["SourceSecurityGroupId"]) == {"Fn::GetAtt": [_handler_group(synth), "GroupId"]}
    assert (props["IpProtocol"], props["FromPort"], props["ToPort"]) == ("tcp", 443, 443)
    # Every kubectl resource calls the handlers through the framework function, on create and on delete.
    for logical_id, function in _kubectl_functions(synth).items():
        assert ingress_id in _depends_on(function), logical_id


# ----------------------------------------------------------------- the cleanup resource


def test_the_cleanup_depends_on_every_subnet_and_the_handler_group(synth):
    tpl = synth.template_json("Network")
    _, resource = _one(tpl, cleanup.RESOURCE_TYPE)
    subnets = set(_of_type(tpl, "AWS::EC2::Subnet"))
    assert len(subnets) == 2 * synth.config.network.az_count
    assert subnets | {_handler_group(synth)} <= _depends_on(resource)
    (vpc_id,) = _of_type(tpl, "AWS::EC2::VPC")
    assert resource["Properties"]["VpcId"] == {"Ref": vpc_id}
    assert resource.get("DeletionPolicy", "Delete") == "Delete"


def test_the_cleanup_is_given_the_handler_group_to_match_enis_by(synth):
    """The handler lists only the ENIs of the VPC that hold this group (group-id and vpc-id filters)."""
    _, resource = _one(synth.template_json("Network"), cleanup.RESOURCE_TYPE)
    props = resource["Properties"]
    assert props["SecurityGroupId"] == {"Fn::GetAtt": [_handler_group(synth), "GroupId"]}
    assert set(props) == {"ServiceToken", "ServiceTimeout", "VpcId", "SecurityGroupId"}


def test_on_destroy_the_cleanup_runs_after_the_kubectl_handlers_and_before_the_subnets(synth):
    """CloudFormation deletes in the reverse of the deploy graph (tests/day2/test_teardown.py): A goes before B
    exactly when B is an ancestor of A, across stacks too (the network stack is deleted last)."""
    g = DeployGraph(Assembly(synth.outdir / "assembly-DynamicFactory"))
    (resource,) = g.find(cleanup.RESOURCE_TYPE)
    for function in g.find("AWS::Lambda::Function", lambda r: r.logical_id.startswith(KUBECTL_FUNCTIONS)):
        assert resource.key in g.ancestors(function.key), function.key
    after = g.find("AWS::EC2::Subnet") + g.find("AWS::EC2::SecurityGroup",
                                                  lambda r: r.logical_id.startswith("KubectlHandlerSecurityGroup"))
    assert after and all(r.key in g.ancestors(resource.key) for r in after)
    # Its function, role (with the policy inline) and log group still exist when its Delete runs.
    service = g.ancestors(resource.key)
    for type_ in ("AWS::Lambda::Function", "AWS::IAM::Role", "AWS::Logs::LogGroup"):
        assert any(k[1].startswith("LambdaEniCleanup") and g.resources[k].type == type_ for k in service), type_


def _cleanup_function(platform):
    tpl = platform.template_json("Network")
    _, resource = _one(tpl, cleanup.RESOURCE_TYPE)
    function_id = resource["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
    return tpl, function_id, tpl["Resources"][function_id]


def test_the_cleanup_function_runs_outside_the_vpc_on_a_bounded_budget(platform):
    _, _, function = _cleanup_function(platform)
    props = function["Properties"]
    assert "VpcConfig" not in props  # its own ENIs would hold on to the subnets it clears
    assert "Environment" not in props
    index = _load_index()
    # The handler's wait and its safety margin fit in the function's timeout, and that in CloudFormation's.
    assert index.WAIT_SECONDS + index.SAFETY_SECONDS <= props["Timeout"] < 15 * 60
    _, resource = _one(platform.template_json("Network"), cleanup.RESOURCE_TYPE)
    assert props["Timeout"] < int(resource["Properties"]["ServiceTimeout"])


def test_the_cleanup_ships_the_tested_handler(platform):
    _, _, function = _cleanup_function(platform)
    asset_hash = function["Properties"]["Code"]["S3Key"].removesuffix(".zip")
    shipped = sorted(p.name for p in (platform.outdir / f"asset.{asset_hash}").iterdir())
    assert shipped == ["index.py"] and function["Properties"]["Handler"] == "index.handler"
    shipped_index = (platform.outdir / f"asset.{asset_hash}" / "index.py").read_bytes()
    assert shipped_index == (cleanup.HANDLER_DIR / "index.py").read_bytes()


def test_the_cleanup_may_delete_only_this_vpcs_network_interfaces(platform):
    tpl, _, function = _cleanup_function(platform)
    role = tpl["Resources"][function["Properties"]["Role"]["Fn::GetAtt"][0]]
    assert "ManagedPolicyArns" not in role["Properties"]
    (policy,) = role["Properties"]["Policies"]  # inline: it cannot be deleted before the Delete event runs
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert set(statements) == {cleanup.DESCRIBE_SID, cleanup.DELETE_SID, cleanup.STACK_STATUS_SID, "WriteOwnLogs"}
    assert all(s["Effect"] == "Allow" for s in statements.values())

    delete = statements[cleanup.DELETE_SID]
    assert delete["Action"] == "ec2:DeleteNetworkInterface"
    assert delete["Resource"]["Fn::Join"][1][-1] == ":network-interface/*"
    (vpc_id,) = _of_type(tpl, "AWS::EC2::VPC")
    vpc_arn = delete["Condition"]["ArnEquals"]["ec2:Vpc"]
    assert vpc_arn["Fn::Join"][1][-2:] == [":vpc/", {"Ref": vpc_id}]
    assert list(delete["Condition"]) == ["ArnEquals"]

    describe = statements[cleanup.DESCRIBE_SID]
    assert (describe["Action"], describe["Resource"]) == ("ec2:DescribeNetworkInterfaces", "*")
    assert describe["Condition"] == {"StringEquals": {"aws:RequestedRegion": {"Ref": "AWS::Region"}}}

    logs = statements["WriteOwnLogs"]
    log_group_id = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    assert logs["Resource"] == {"Fn::GetAtt": [log_group_id, "Arn"]}
    assert logs["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]


def test_the_cleanup_may_read_only_its_own_stacks_status(platform):
    """To tell a stack teardown from an update rollback (tests/behaviour/test_lambda_eni_cleanup.py)."""
    tpl, _, function = _cleanup_function(platform)
    role = tpl["Resources"][function["Properties"]["Role"]["Fn::GetAtt"][0]]
    (policy,) = role["Properties"]["Policies"]
    statements = [s for s in policy["PolicyDocument"]["Statement"] if s["Action"] == "cloudformation:DescribeStacks"]
    assert statements == [{"Sid": cleanup.STACK_STATUS_SID, "Effect": "Allow",
                           "Action": "cloudformation:DescribeStacks", "Resource": {"Ref": "AWS::StackId"}}]
    # Nothing else of CloudFormation, and nothing beyond EC2's two ENI calls and its own logs.
    granted = {a for s in policy["PolicyDocument"]["Statement"]
               for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert granted == {"ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
                       "cloudformation:DescribeStacks", "logs:CreateLogStream", "logs:PutLogEvents"}


def test_the_cleanup_logs_are_encrypted_and_expire_like_the_flow_logs(platform):
    tpl, _, function = _cleanup_function(platform)
    group = tpl["Resources"][function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]]
    (key_id,) = _of_type(tpl, "AWS::KMS::Key")
    assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert group["Properties"]["RetentionInDays"] == 30
    assert group.get("DeletionPolicy") == "Delete"  # the key goes with the stack


def _load_index():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("lambda_eni_cleanup_index", cleanup.HANDLER_DIR / "index.py")
    module = importlib.util.module_from_spec(spec)
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module
