"""The VPC the cluster lives in."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk_constructs.kms_logs import allow_cloudwatch_logs

# Karpenter finds the subnets (and security groups) it may launch into by this tag.
DISCOVERY_TAG = "karpenter.sh/discovery"


class NetworkStack(cdk.Stack):
    """VPC with public and private subnets, flow logs and an S3 gateway endpoint.

    Nodes and pods live in the private subnets; the public subnets hold only the NAT
    gateways (and load balancers, when something is deliberately exposed).
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
