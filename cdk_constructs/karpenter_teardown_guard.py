"""Custom resources that hold the Karpenter controller back on teardown until Karpenter has cleaned up.

CDK's kubectl handler swallows delete errors (aws-cdk-lib 2.273.0, ``apply/__init__.py``: Delete runs
``kubectl delete -f`` and only logs an exception), so a failed NodePools or EC2NodeClass delete looks like a
success, and CloudFormation goes on to uninstall the controller that should have drained and terminated their
nodes and removed its instance profiles and launch templates. Instances would keep running, unmanaged, and
hold on to the subnets; an instance profile left on the node role makes the role's delete fail with
DeleteConflict. Two resources of one function sit in the delete order (each deleted after what DependsOn it):

    NodePools (+ GpuNodePool) -> guard (instances) -> NodeClass -> profile guard -> controller, its Pod Identity
    association, the nodes' access entry (``after``)

* ``resource`` (``Custom::KarpenterTeardownGuard``): the NodePools manifests (``before``) DependOn it, it
  DependsOn the EC2NodeClass manifest (``node_class``) and what Karpenter needs to terminate nodes. Its Delete
  waits (bounded) until no instance Karpenter launched for the cluster is left. Only then does the
  EC2NodeClass go, whose finalizer then finds no NodeClaim to wait for.
* ``profile_guard`` (``Custom::KarpenterInstanceProfileGuard``): the EC2NodeClass manifest DependsOn it, it
  DependsOn ``after``. Its Delete waits (bounded) until the node role is in no instance profile, i.e. until
  the EC2NodeClass finalizer has run (it deletes the profiles, then the launch templates).

Each fails the stack delete, naming what is left, with the controller still running
(cdk_constructs/karpenter_teardown_guard_handler/index.py). Create and Update do nothing.

They never delete anything themselves: that is Karpenter's job, through its finalizers, which drain each node
first. The function runs outside the VPC (it only calls the EC2, IAM and CloudFormation APIs; inside it would
leave Lambda ENIs in the subnets the network stack must delete). Its role may describe instances
(DescribeInstances supports no resource scoping; limited to this region), list the instance profiles of the
node role (that role only) and read its own stack's status (to tell a teardown from an update rollback), and
write its own encrypted log group. The policy is inline in the role, so it lives exactly as long as the
function: a separate policy could be deleted before the Delete event runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct, IConstruct

HANDLER_DIR = Path(__file__).resolve().parent / "karpenter_teardown_guard_handler"
RESOURCE_TYPE = "Custom::KarpenterTeardownGuard"  # waits for the instances
PROFILE_GUARD_TYPE = "Custom::KarpenterInstanceProfileGuard"  # waits for the node role's instance profiles
WAIT_FOR_INSTANCE_PROFILES = "InstanceProfiles"  # the profile guard's WaitFor (the handler's constant of that name)
# The handler waits for at most 10 minutes (WAIT_SECONDS in the handler) and stops a minute before this.
TIMEOUT = cdk.Duration.minutes(12)
# If the handler never answers, CloudFormation gives up after this instead of its default hour.
SERVICE_TIMEOUT = cdk.Duration.minutes(15)
DESCRIBE_SID = "DescribeInstances"
STACK_STATUS_SID = "ReadOwnStackStatus"
LIST_PROFILES_SID = "ListNodeRoleInstanceProfiles"


class KarpenterTeardownGuard(Construct):
    """On stack delete, after everything in ``before`` and before ``node_class``, waits until Karpenter has
    terminated every instance it launched for ``cluster_name``; after ``node_class`` and before everything in
    ``after``, waits until ``node_role`` is in no instance profile."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        node_role: iam.IRole,
        after: Sequence[IConstruct],
        node_class: IConstruct,
        before: Sequence[IConstruct],
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)

        log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            encryption_key=log_key,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{cluster_name}: waits on stack delete until Karpenter has removed its instances and "
            "instance profiles",
            inline_policies={
                "KarpenterTeardownGuard": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            sid=DESCRIBE_SID,
                            actions=["ec2:DescribeInstances"],
                            resources=["*"],  # Describe* supports no resource-level permissions
                            conditions={"StringEquals": {"aws:RequestedRegion": stack.region}},
                        ),
                        iam.PolicyStatement(
                            sid=LIST_PROFILES_SID,
                            actions=["iam:ListInstanceProfilesForRole"],
                            resources=[node_role.role_arn],
                        ),
                        iam.PolicyStatement(
                            sid=STACK_STATUS_SID,
                            actions=["cloudformation:DescribeStacks"],
                            resources=[stack.stack_id],
                        ),
                        iam.PolicyStatement(
                            sid="WriteOwnLogs",
                            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                            resources=[log_group.log_group_arn],
                        ),
                    ]
                )
            },
        )
        self.function = lambda_.Function(
            self,
            "Handler",
            description="Waits for Karpenter to remove its instances and instance profiles before its controller goes "
            "(stack delete only)",
            runtime=lambda_.Runtime.PYTHON_3_14,  # the latest CDK knows (cdk-nag AwsSolutions-L1)
            handler="index.handler",
            code=lambda_.Code.from_asset(str(HANDLER_DIR), exclude=["__pycache__", "*.pyc"]),
            timeout=TIMEOUT,
            memory_size=128,
            role=role,
            log_group=log_group,
        )
        self.resource = cdk.CustomResource(
            self,
            "Resource",
            service_token=self.function.function_arn,
            resource_type=RESOURCE_TYPE,
            properties={"ClusterName": cluster_name},
            service_timeout=SERVICE_TIMEOUT,
        )
        self.profile_guard = cdk.CustomResource(
            self,
            "InstanceProfiles",
            service_token=self.function.function_arn,
            resource_type=PROFILE_GUARD_TYPE,
            properties={
                "ClusterName": cluster_name,
                "NodeRoleName": node_role.role_name,
                "WaitFor": WAIT_FOR_INSTANCE_PROFILES,
            },
            service_timeout=SERVICE_TIMEOUT,
        )
        # Both are created after, and so deleted before, what Karpenter needs to drain and terminate its nodes
        # and to run the EC2NodeClass finalizer.
        for construct in after:
            self.resource.node.add_dependency(construct)
            self.profile_guard.node.add_dependency(construct)
        # The profile guard is deleted after the EC2NodeClass (whose finalizer removes the profiles), and the
        # instance guard before it (so that the finalizer finds no NodeClaim left to wait for).
        node_class.node.add_dependency(self.profile_guard)
        self.resource.node.add_dependency(node_class)
        # Created before, and so deleted after, the NodePools whose nodes it waits for.
        for construct in before:
            construct.node.add_dependency(self.resource)
