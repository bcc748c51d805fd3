"""Template assertions for the Karpenter constructs (interruption queue + rules, controller and node roles).

One small env-agnostic stack, synthesized once for the module.
"""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from cdk_constructs.karpenter_iam import (
    CONTROLLER_POLICY_NAMES,
    PRICING_API_REGIONS,
    KarpenterControllerRole,
    KarpenterNodeRole,
)
from cdk_constructs.karpenter_interruption import INTERRUPTION_EVENT_KINDS, KarpenterInterruptionQueue
from tests.platform_synth import feature_flags

CLUSTER = "df-unit"
CLUSTER_TAG = f"kubernetes.io/cluster/{CLUSTER}"

# Written out independently of the code: the five rules of Karpenter v1.14.1's reference template
# (aws/karpenter-provider-aws @ c88abbbad455186e69e30296c595e474123e9bc1, getting-started cloudformation.yaml).
UPSTREAM_EVENT_KINDS = {
    ("aws.health", "AWS Health Event"),
    ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
    ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
    ("aws.ec2", "EC2 Instance State-change Notification"),
    ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
}

# EC2 resource types a launch *references* (upstream grants RunInstances/CreateFleet on them unconditioned);
# everything else a mutating EC2 statement touches is created or owned by Karpenter and must be tag-scoped.
REFERENCED_EC2_RESOURCES = ("image/", "snapshot/", "security-group/", "subnet/", "capacity-reservation/",
                            "placement-group/")
MUTATING_EC2_ACTIONS = {"ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate", "ec2:CreateTags",
                        "ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"}
# The only Resource "*" statement allowed without a condition (same as upstream; see karpenter_iam.py, deviation 4).
UNSCOPABLE_ACTIONS = {"iam:ListInstanceProfiles"}


class Synth:
    def __init__(self) -> None:
        app = cdk.App(context=feature_flags())
        self.stack = cdk.Stack(app, "KarpenterUnit")
        self.interruption = KarpenterInterruptionQueue(self.stack, "Interruption", queue_name=CLUSTER)
        self.node = KarpenterNodeRole(self.stack, "NodeRole")
        self.cluster_arn = self.stack.format_arn(service="eks", resource="cluster", resource_name=CLUSTER)
        self.controller = KarpenterControllerRole(
            self.stack,
            "Controller",
            cluster_name=CLUSTER,
            cluster_arn=self.cluster_arn,
            node_role=self.node.role,
            interruption_queue=self.interruption.queue,
        )
        self.template = Template.from_stack(self.stack)
        self.json = self.template.to_json()

    def resolve(self, value):
        return self.stack.resolve(value)

    def resources(self, type_: str) -> dict[str, dict]:
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == type_}

    def logical_id(self, construct) -> str:
        return self.stack.get_logical_id(construct.node.default_child)

    def controller_statements(self) -> list[dict]:
        """Every statement of every policy attached to the controller role."""
        role_ref = {"Ref": self.logical_id(self.controller.role)}
        out = []
        for res in self.resources("AWS::IAM::ManagedPolicy").values():
            if role_ref in res["Properties"].get("Roles", []):
                out.extend(res["Properties"]["PolicyDocument"]["Statement"])
        for res in self.resources("AWS::IAM::Policy").values():
            if role_ref in res["Properties"].get("Roles", []):
                out.extend(res["Properties"]["PolicyDocument"]["Statement"])
        return out


@pytest.fixture(scope="module")
def synth() -> Synth:
    return Synth()


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _actions(statement) -> set[str]:
    return set(_as_list(statement["Action"]))


def _flatten(value) -> str:
    """A resource as text: literal strings as is, Fn::Join flattened, other intrinsics as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_flatten(p) for p in parts)
    return json.dumps(value, sort_keys=True)


# ------------------------------------------------------------------ interruption queue


def test_queue_is_named_retains_300s_and_uses_sse_sqs(synth):
    synth.template.resource_count_is("AWS::SQS::Queue", 1)
    synth.template.has_resource_properties(
        "AWS::SQS::Queue",
        {"QueueName": CLUSTER, "MessageRetentionPeriod": 300, "SqsManagedSseEnabled": True,
         "KmsMasterKeyId": Match.absent()},
    )


def test_queue_policy_denies_non_tls_access(synth):
    (policy,) = synth.resources("AWS::SQS::QueuePolicy").values()
    queue_arn = synth.resolve(synth.interruption.queue.queue_arn)
    deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny == [
        {
            "Action": "sqs:*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Resource": queue_arn,
        }
    ]


def test_queue_policy_lets_only_the_platforms_rules_send(synth):
    """One Allow: EventBridge may SendMessage for this account's interruption rules only (confused deputy:
    aws:SourceAccount and aws:SourceArn); tests/policy/test_low_findings.py checks the platform's stack too."""
    (policy,) = synth.resources("AWS::SQS::QueuePolicy").values()
    queue_arn = synth.resolve(synth.interruption.queue.queue_arn)
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert len(allows) == 1
    (allow,) = allows
    assert allow["Principal"] == {"Service": "events.amazonaws.com"} and _actions(allow) == {"sqs:SendMessage"}
    assert allow["Resource"] == queue_arn
    conditions = allow["Condition"]
    assert "aws:SourceAccount" in json.dumps(conditions) and "aws:SourceArn" in json.dumps(conditions)
    rule_ids = set(synth.resources("AWS::Events::Rule"))
    assert rule_ids and all(rule_id in json.dumps(conditions) for rule_id in rule_ids)


def test_routed_event_kinds_are_exactly_upstreams(synth):
    rules = synth.resources("AWS::Events::Rule")
    patterns = [r["Properties"]["EventPattern"] for r in rules.values()]
    assert len(patterns) == len(UPSTREAM_EVENT_KINDS)
    routed = set()
    for pattern in patterns:
        # Like upstream: filter on source and detail-type only, one value each.
        assert set(pattern) == {"source", "detail-type"}, pattern
        assert len(pattern["source"]) == 1 and len(pattern["detail-type"]) == 1, pattern
        routed.add((pattern["source"][0], pattern["detail-type"][0]))
    assert routed == UPSTREAM_EVENT_KINDS
    assert {(k.source, k.detail_type) for k in INTERRUPTION_EVENT_KINDS} == UPSTREAM_EVENT_KINDS
    assert set(synth.interruption.rules) == {d for _, d in UPSTREAM_EVENT_KINDS}


def test_every_rule_is_enabled_and_targets_only_this_queue(synth):
    queue_arn = synth.resolve(synth.interruption.queue.queue_arn)
    for logical_id, rule in synth.resources("AWS::Events::Rule").items():
        props = rule["Properties"]
        assert props.get("State", "ENABLED") == "ENABLED", logical_id
        assert "EventBusName" not in props, "rules must be on the default bus (where AWS events arrive)"
        assert [t["Arn"] for t in props["Targets"]] == [queue_arn], logical_id


def test_bad_queue_name_is_rejected():
    stack = cdk.Stack(cdk.App(), "S")
    with pytest.raises(ValueError, match="queue_name"):
        KarpenterInterruptionQueue(stack, "Q", queue_name="bad name!")


# ------------------------------------------------------------------ controller role


def test_controller_role_trusts_only_eks_pod_identity_for_this_cluster(synth):
    role = synth.resources("AWS::IAM::Role")[synth.logical_id(synth.controller.role)]
    statements = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statements == [
        {
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {
                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                "ArnEquals": {"aws:SourceArn": synth.resolve(synth.cluster_arn)},
            },
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
        }
    ]


def test_controller_has_upstreams_policy_split_and_nothing_else(synth):
    role_ref = {"Ref": synth.logical_id(synth.controller.role)}
    attached = [p for p in synth.resources("AWS::IAM::ManagedPolicy").values()
                if role_ref in p["Properties"].get("Roles", [])]
    assert len(attached) == len(CONTROLLER_POLICY_NAMES) == 6
    assert set(synth.controller.policies) == set(CONTROLLER_POLICY_NAMES)
    role = synth.resources("AWS::IAM::Role")[synth.logical_id(synth.controller.role)]
    assert "ManagedPolicyArns" not in role["Properties"], "no AWS-managed policies on the controller"
    assert "Policies" not in role["Properties"]
    for policy in synth.resources("AWS::IAM::Policy").values():
        assert role_ref not in policy["Properties"].get("Roles", []), "no extra inline policies"


def test_every_statement_allows_and_has_a_sid(synth):
    statements = synth.controller_statements()
    assert statements
    sids = [s.get("Sid") for s in statements]
    assert all(s["Effect"] == "Allow" for s in statements)
    assert None not in sids and len(set(sids)) == len(sids), sids


def test_no_wildcard_actions(synth):
    for statement in synth.controller_statements():
        for action in _actions(statement):
            assert "*" not in action, f"wildcard action {action!r} in {statement}"


def test_passrole_only_for_the_node_role_and_only_to_ec2(synth):
    statements = [s for s in synth.controller_statements() if any(a.startswith("iam:PassRole") for a in _actions(s))]
    assert len(statements) == 1
    (statement,) = statements
    assert _actions(statement) == {"iam:PassRole"}
    assert statement["Resource"] == synth.resolve(synth.node.role.role_arn)
    assert statement["Condition"] == {
        "StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}
    }


def test_sqs_actions_only_on_this_queue(synth):
    queue_arn = synth.resolve(synth.interruption.queue.queue_arn)
    sqs_statements = [s for s in synth.controller_statements() if any(a.startswith("sqs:") for a in _actions(s))]
    assert sqs_statements
    actions = set()
    for statement in sqs_statements:
        assert statement["Resource"] == queue_arn, statement
        assert all(a.startswith("sqs:") for a in _actions(statement)), "SQS statement mixes services"
        actions |= _actions(statement)
    assert actions == {"sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"}


def test_describe_cluster_only_on_this_cluster(synth):
    statements = [s for s in synth.controller_statements() if any(a.startswith("eks:") for a in _actions(s))]
    assert len(statements) == 1
    assert _actions(statements[0]) == {"eks:DescribeCluster"}
    assert statements[0]["Resource"] == synth.resolve(synth.cluster_arn)
    assert "Condition" not in statements[0]


def test_zonal_shift_read_only_for_this_cluster(synth):
    (statement,) = [s for s in synth.controller_statements() if any(a.startswith("arc-zonal-shift:") for a in _actions(s))]
    assert _actions(statement) == {"arc-zonal-shift:GetManagedResource"}
    assert statement["Condition"] == {
        "StringEquals": {"arc-zonal-shift:ResourceIdentifier": synth.resolve(synth.cluster_arn)}
    }


def test_mutating_ec2_actions_on_owned_resources_are_tag_scoped(synth):
    mutating = [s for s in synth.controller_statements() if _actions(s) & MUTATING_EC2_ACTIONS]
    assert {a for s in mutating for a in _actions(s)} >= MUTATING_EC2_ACTIONS
    for statement in mutating:
        resources = [_flatten(r) for r in _as_list(statement["Resource"])]
        owned = [r for r in resources if not any(f":{kind}" in r for kind in REFERENCED_EC2_RESOURCES)]
        if not owned:
            # Launch inputs (AMI, subnet, SG ...) exactly like upstream's AllowScopedEC2InstanceAccessActions.
            assert _actions(statement) == {"ec2:RunInstances", "ec2:CreateFleet"}, statement
            continue
        assert len(owned) == len(resources), f"statement mixes referenced and owned resources: {statement}"
        condition = statement["Condition"]
        equals = condition["StringEquals"]
        like = condition["StringLike"]
        cluster_keys = {f"aws:RequestTag/{CLUSTER_TAG}", f"aws:ResourceTag/{CLUSTER_TAG}"} & set(equals)
        assert cluster_keys and all(equals[k] == "owned" for k in cluster_keys), statement
        assert {"aws:RequestTag/karpenter.sh/nodepool", "aws:ResourceTag/karpenter.sh/nodepool"} & set(like), statement
        if f"aws:RequestTag/{CLUSTER_TAG}" in equals:  # creating: must also stamp the EKS cluster name tag
            assert equals["aws:RequestTag/eks:eks-cluster-name"] == CLUSTER, statement


def test_create_tags_only_at_creation_or_on_owned_instances(synth):
    statements = [s for s in synth.controller_statements() if "ec2:CreateTags" in _actions(s)]
    assert len(statements) == 2
    at_creation = [s for s in statements if "ec2:CreateAction" in s["Condition"].get("StringEquals", {})]
    assert len(at_creation) == 1
    assert at_creation[0]["Condition"]["StringEquals"]["ec2:CreateAction"] == [
        "RunInstances", "CreateFleet", "CreateLaunchTemplate"]
    (later,) = [s for s in statements if s is not at_creation[0]]
    assert _flatten(later["Resource"]).endswith(":instance/*")
    assert later["Condition"]["ForAllValues:StringEquals"] == {
        "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]}


def test_instance_profile_writes_are_tag_scoped_to_this_cluster_and_region(synth):
    writes = {"iam:CreateInstanceProfile", "iam:TagInstanceProfile", "iam:AddRoleToInstanceProfile",
              "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"}
    statements = [s for s in synth.controller_statements() if _actions(s) & writes]
    assert {a for s in statements for a in _actions(s)} == writes
    for statement in statements:
        assert _flatten(statement["Resource"]).endswith(":instance-profile/*")
        equals = statement["Condition"]["StringEquals"]
        like = statement["Condition"]["StringLike"]
        tag_kind = "RequestTag" if "iam:CreateInstanceProfile" in _actions(statement) else "ResourceTag"
        assert equals[f"aws:{tag_kind}/{CLUSTER_TAG}"] == "owned"
        assert equals[f"aws:{tag_kind}/topology.kubernetes.io/region"] == {"Ref": "AWS::Region"}
        assert like[f"aws:{tag_kind}/karpenter.k8s.aws/ec2nodeclass"] == "*"


def test_every_resource_star_statement_has_a_scoping_condition(synth):
    for statement in synth.controller_statements():
        if "*" not in _as_list(statement["Resource"]):
            continue
        if _actions(statement) <= UNSCOPABLE_ACTIONS:
            # Documented exception (upstream too): list API, no resource-level scoping possible.
            assert "Condition" not in statement
            continue
        assert statement.get("Condition"), f"Resource '*' without a condition: {statement}"


def test_discovery_reads_are_limited_to_the_region(synth):
    statements = [s for s in synth.controller_statements()
                  if any(a.startswith("ec2:Describe") for a in _actions(s))]
    assert len(statements) == 1
    assert statements[0]["Condition"] == {"StringEquals": {"aws:RequestedRegion": {"Ref": "AWS::Region"}}}
    (ssm,) = [s for s in synth.controller_statements() if "ssm:GetParameter" in _actions(s)]
    region, partition = json.dumps({"Ref": "AWS::Region"}), json.dumps({"Ref": "AWS::Partition"})
    assert _flatten(ssm["Resource"]) == f"arn:{partition}:ssm:{region}::parameter/aws/service/*"
    (pricing,) = [s for s in synth.controller_statements() if "pricing:GetProducts" in _actions(s)]
    assert pricing["Condition"] == {"StringEquals": {"aws:RequestedRegion": list(PRICING_API_REGIONS)}}


def test_arns_are_partition_and_region_agnostic(synth):
    for statement in synth.controller_statements():
        for resource in _as_list(statement["Resource"]):
            text = _flatten(resource)
            assert not text.startswith("arn:aws:"), f"hard-coded partition in {text}"
            assert "us-east-1" not in text and "123456789012" not in text, text


def test_controller_rejects_a_token_cluster_name():
    stack = cdk.Stack(cdk.App(), "S")
    from aws_cdk import aws_iam as iam
    from aws_cdk import aws_sqs as sqs

    role = iam.Role(stack, "R", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"))
    queue = sqs.Queue(stack, "Q")
    with pytest.raises(ValueError, match="literal"):
        KarpenterControllerRole(stack, "C", cluster_name=cdk.Aws.STACK_NAME, cluster_arn="arn",
                                node_role=role, interruption_queue=queue)


# ------------------------------------------------------------------ node role


def test_node_role_trusts_only_ec2(synth):
    role = synth.resources("AWS::IAM::Role")[synth.logical_id(synth.node.role)]
    assert role["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}}
    ]


def test_node_role_has_the_worker_policies_but_not_the_cni_policy(synth):
    role = synth.resources("AWS::IAM::Role")[synth.logical_id(synth.node.role)]
    names = sorted(_flatten(arn).rsplit("/", 1)[-1] for arn in role["Properties"]["ManagedPolicyArns"])
    assert names == sorted(["AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly",
                            "AmazonSSMManagedInstanceCore"])
    assert "Policies" not in role["Properties"]
    for policy in synth.resources("AWS::IAM::Policy").values():
        assert {"Ref": synth.logical_id(synth.node.role)} not in policy["Properties"].get("Roles", [])
