"""The VPC the cluster lives in."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk_constructs.kms_logs import allow_cloudwatch_logs
from cdk_constructs.lambda_eni_cleanup import LambdaEniCleanup

# Karpenter finds the subnets (and security groups) it may launch into by this tag.
DISCOVERY_TAG = "karpenter.sh/discovery"


class NetworkStack(cdk.Stack):
    """VPC with public and private subnets, flow logs and an S3 gateway endpoint.

    Nodes and pods live in the private subnets; the public subnets hold only the NAT
    gateways (and load balancers, when something is deliberately exposed).

    Teardown: this stack is deleted last (every other stack depends on it). The security group of
    CDK's kubectl handler Lambdas lives here, not in the cluster stack, because Lambda keeps their
    ENIs long after the functions are deleted; the LambdaEniCleanup resource DependsOn that group
    and every subnet, so CloudFormation deletes it first and its Delete clears those ENIs (waiting
    for Lambda to release them) before the group and the subnets go.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        vpc_cidr: str,
        az_count: int,
        availability_zones: Sequence[str] = (),
        nat_gateways: int,
        public_subnet_mask: int,
        private_subnet_mask: int,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(vpc_cidr),
            max_azs=None if availability_zones else az_count,
            availability_zones=list(availability_zones) or None,
            nat_gateways=nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=public_subnet_mask),
                # Large private subnets: under Cilium ENI mode every pod takes a VPC address.
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=private_subnet_mask
                ),
            ],
            restrict_default_security_group=True,
        )

        # Karpenter's EC2NodeClass selects subnets by this tag. The literal cluster name is
        # used on purpose: the cluster-name token from the cluster stack would create a
        # dependency cycle (the cluster needs the VPC first).
        for subnet in self.vpc.private_subnets:
            cdk.Tags.of(subnet).add(DISCOVERY_TAG, cluster_name)
            cdk.Tags.of(subnet).add("kubernetes.io/role/internal-elb", "1")
        for subnet in self.vpc.public_subnets:
            cdk.Tags.of(subnet).add("kubernetes.io/role/elb", "1")

        # S3 traffic (images layers from ECR, checkpoints) stays off the NAT gateways.
        self.vpc.add_gateway_endpoint("S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3)

        # CDK's kubectl handler and its provider framework Lambda (ClusterStack) run in the private subnets
        # with this group (the cluster endpoint is private by default); the cluster security group admits it
        # on 443 (ClusterStack). Egress: HTTPS only, but to anywhere: besides the endpoint's in-VPC addresses the
        # handler calls eks:DescribeCluster (`aws eks update-kubeconfig`), ECR and the Helm repositories, and the
        # framework calls Lambda and CloudFormation's response URL, all public HTTPS endpoints reached through
        # NAT. DNS to the VPC resolver is not subject to security groups.
        self.kubectl_handler_security_group = ec2.SecurityGroup(
            self,
            "KubectlHandlerSecurityGroup",
            vpc=self.vpc,
            description=f"{cluster_name}: CDK kubectl handler Lambdas (HTTPS out only)",
            allow_all_outbound=False,
        )
        self.kubectl_handler_security_group.add_egress_rule(
            ec2.Peer.any_ipv4(),
            ec2.Port.tcp(443),
            "HTTPS: EKS private endpoint, AWS APIs, Helm chart repositories",
        )

        # Flow logs to an encrypted log group.
        self.log_key = kms.Key(
            self,
            "FlowLogKey",
            description=f"{cluster_name}: VPC flow logs",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        allow_cloudwatch_logs(self.log_key)
        flow_log_group = logs.LogGroup(
            self,
            "FlowLogGroup",
            retention=logs.RetentionDays.ONE_MONTH,
            encryption_key=self.log_key,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

        # First to go on stack delete: deletes the Lambda ENIs left in the subnets (the kubectl handlers') before
        # the subnets and the handlers' security group, which CloudFormation deletes only after it.
        self.lambda_eni_cleanup = LambdaEniCleanup(
            self,
            "LambdaEniCleanup",
            vpc=self.vpc,
            security_group=self.kubectl_handler_security_group,  # only the ENIs holding it
            before=[
                *(subnet.node.default_child for subnet in self.vpc.public_subnets + self.vpc.private_subnets),
                self.kubectl_handler_security_group.node.default_child,
            ],
            log_key=self.log_key,
        )
