"""PlatformStage: the unit that `cdk deploy` and the pipeline both deploy."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from compliance import nag
from config import PlatformConfig
from stacks.cluster_stack import ClusterStack
from stacks.karpenter_stack import KarpenterStack
from stacks.network_stack import NetworkStack


class PlatformStage(cdk.Stage):
    """All stacks of one platform instance, wired from one validated config.

    Stacks take explicit arguments taken from the config here; nothing below this
    level sees the whole config object.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: PlatformConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        cluster_cfg, net_cfg = config.cluster, config.network
        name = cluster_cfg.name

        self.network = NetworkStack(
            self,
            "Network",
            stack_name=f"{name}-network",
            description=f"Dynamic Factory {name}: VPC, subnets, NAT, flow logs",
            cluster_name=name,
            vpc_cidr=net_cfg.vpc_cidr,
            az_count=net_cfg.az_count,
            availability_zones=net_cfg.availability_zones,
            nat_gateways=net_cfg.nat_gateways,
        )
        self.cluster = ClusterStack(
            self,
            "Cluster",
            stack_name=f"{name}-cluster",
            description=f"Dynamic Factory {name}: EKS, Cilium, system nodes, add-ons",
            vpc=self.network.vpc,
            cluster_name=name,
            kubernetes_version=cluster_cfg.kubernetes_version,
            endpoint_access=cluster_cfg.endpoint.access,
            public_cidrs=cluster_cfg.endpoint.public_cidrs,
            admin_principal_arns=cluster_cfg.admin_principal_arns,
            system_instance_type=cluster_cfg.system_nodes.instance_type,
            system_desired_size=cluster_cfg.system_nodes.desired_size,
            system_min_size=cluster_cfg.system_nodes.min_size,
            system_max_size=cluster_cfg.system_nodes.max_size,
        )
        self.cluster.add_stack_dependency(self.network)

        self.karpenter = KarpenterStack(
            self,
            "Karpenter",
            stack_name=f"{name}-karpenter",
            description=f"Dynamic Factory {name}: Karpenter, interruption queue, node pools",
            cluster=self.cluster.cluster,
            cluster_name=name,
            node_pools=config.karpenter.node_pools(),
            ami_alias=config.karpenter.ami_alias,
        )
        # Karpenter runs on the system nodes and needs the Pod Identity agent and CoreDNS.
        self.karpenter.add_stack_dependency(self.cluster)

        for key, value in config.tags.items():
            cdk.Tags.of(self).add(key, value)
        cdk.Tags.of(self).add("dynamic-factory/cluster", name)

        # Security gate: synth fails on any cdk-nag finding not acknowledged with a reason.
        nag.enable(self)

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [self.network, self.cluster, self.karpenter]
