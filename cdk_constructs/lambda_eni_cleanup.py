"""A custom resource that removes Lambda's leftover network interfaces before a VPC's subnets are deleted.

Functions in a VPC leave "Hyperplane" ENIs behind that Lambda releases long after the functions are gone
(~35 minutes at P99, see the handler's docstring); meanwhile their subnets and security groups cannot be
deleted and the stack ends in DELETE_FAILED. This resource DependsOn the subnets and security groups given in
``before``, so CloudFormation deletes it first: its Delete waits (bounded) for Lambda to release the ENIs and
deletes them (cdk_constructs/lambda_eni_cleanup_handler/index.py). Create and Update do nothing.

Only the ENIs of our own functions: Lambda ENIs (interface type ``lambda`` or Lambda's description) in ``vpc``
that carry ``security_group``, a group only this platform's VPC functions use. In a shared VPC other teams'
Lambda ENIs hold their own groups and are never touched, not even ``available`` ones.

Only a stack teardown cleans: CloudFormation also sends Delete when an update that added this resource rolls
back, and then the subnets and the kubectl handlers stay (the handler reads its stack's status to tell).

The handler runs outside the VPC on purpose (it only calls the EC2 and CloudFormation APIs, and inside it would
leave ENIs of its own in the subnets it clears). It may describe every ENI of the region
(DescribeNetworkInterfaces supports no resource scoping) and delete only network interfaces of this VPC
(``ec2:Vpc``, which exists for DeleteNetworkInterface on network-interface in the Service Authorization
Reference); its only other rights are reading its own stack's status (to tell a teardown from an update
rollback) and writing its own encrypted log group. The policy is inline in the role, so it lives exactly as
long as the function: a separate policy could be deleted before the Delete event runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

HANDLER_DIR = Path(__file__).resolve().parent / "lambda_eni_cleanup_handler"
RESOURCE_TYPE = "Custom::LambdaEniCleanup"
# The handler polls for at most 10 minutes (WAIT_SECONDS in the handler) and stops a minute before this.
TIMEOUT = cdk.Duration.minutes(12)
# If the handler never answers, CloudFormation gives up after this instead of its default hour.
SERVICE_TIMEOUT = cdk.Duration.minutes(15)
DESCRIBE_SID = "DescribeNetworkInterfaces"
DELETE_SID = "DeleteLambdaEnisOfThisVpc"
STACK_STATUS_SID = "ReadOwnStackStatus"


class LambdaEniCleanup(Construct):
    """Deletes the Lambda ENIs in ``vpc`` holding ``security_group`` on stack delete, before anything in ``before``
    is deleted."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        security_group: ec2.ISecurityGroup,
        before: Sequence[cdk.CfnResource],
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
            description="Deletes Lambda's leftover ENIs in the platform VPC when the network stack is deleted",
            inline_policies={
                "LambdaEniCleanup": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            sid=DESCRIBE_SID,
                            actions=["ec2:DescribeNetworkInterfaces"],
                            resources=["*"],  # Describe* supports no resource-level permissions
                            conditions={"StringEquals": {"aws:RequestedRegion": stack.region}},
                        ),
                        iam.PolicyStatement(
                            sid=DELETE_SID,
                            actions=["ec2:DeleteNetworkInterface"],
                            resources=[
                                stack.format_arn(
                                    service="ec2",
                                    resource="network-interface",
                                    resource_name="*",
                                )
                            ],
                            conditions={"ArnEquals": {"ec2:Vpc": vpc.vpc_arn}},
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
            description="Deletes Lambda ENIs left in the VPC before its subnets are deleted (stack delete only)",
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
            properties={"VpcId": vpc.vpc_id, "SecurityGroupId": security_group.security_group_id},
            service_timeout=SERVICE_TIMEOUT,
        )
        # Created after, and so deleted before, the subnets and security groups Lambda's ENIs hold on to.
        for resource in before:
            self.resource.node.add_dependency(resource)
