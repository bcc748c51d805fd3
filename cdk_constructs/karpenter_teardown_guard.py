"""A custom resource that holds the Karpenter controller back on teardown until Karpenter's instances are gone.

CDK's kubectl handler swallows delete errors (aws-cdk-lib 2.273.0, ``apply/__init__.py``: Delete runs
``kubectl delete -f`` and only logs an exception), so a failed NodePools delete looks like a success, and
CloudFormation goes on to uninstall the controller that should have drained and terminated their nodes. The
instances would keep running, unmanaged, and hold on to the subnets. This resource sits between the two: it
DependsOn what Karpenter needs to terminate nodes (``after``: the controller release, its Pod Identity
association, the nodes' access entry), and the NodePools manifests DependOn it (``before``). So CloudFormation
deletes it after the NodePools and before the controller, and its Delete waits (bounded) until no instance
Karpenter launched for the cluster is left (cdk_constructs/karpenter_teardown_guard_handler/index.py), failing
the stack delete, with the controller still running, if some are. Create and Update do nothing.

It never terminates instances itself: that is Karpenter's job, through its finalizers, which drain each node
first. The function runs outside the VPC (it only calls the EC2 and CloudFormation APIs; inside it would leave
Lambda ENIs in the subnets the network stack must delete). Its role may describe instances (DescribeInstances
supports no resource scoping; limited to this region) and read its own stack's status (to tell a teardown from
an update rollback), and write its own encrypted log group. The policy is inline in the role, so it lives
exactly as long as the function: a separate policy could be deleted before the Delete event runs.
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
RESOURCE_TYPE = "Custom::KarpenterTeardownGuard"
# The handler waits for at most 10 minutes (WAIT_SECONDS in the handler) and stops a minute before this.
TIMEOUT = cdk.Duration.minutes(12)
# If the handler never answers, CloudFormation gives up after this instead of its default hour.
SERVICE_TIMEOUT = cdk.Duration.minutes(15)
DESCRIBE_SID = "DescribeInstances"
STACK_STATUS_SID = "ReadOwnStackStatus"


class KarpenterTeardownGuard(Construct):
    """On stack delete, after everything in ``before`` and before everything in ``after``, waits until
    Karpenter has terminated every instance it launched for ``cluster_name``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        after: Sequence[IConstruct],
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
            description=f"{cluster_name}: waits on stack delete until Karpenter has terminated its instances",
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
            description="Waits for Karpenter to terminate its instances before its controller goes (stack delete only)",
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
        # Created after, and so deleted before, what Karpenter needs to drain and terminate its nodes.
        for construct in after:
            self.resource.node.add_dependency(construct)
        # Created before, and so deleted after, the NodePools whose nodes it waits for.
        for construct in before:
            construct.node.add_dependency(self.resource)
