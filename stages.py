"""PlatformStage: the unit that `cdk deploy` and the pipeline both deploy."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from charts.ray_teams import ray_teams
from charts.raycluster import RayClusterSettings
from compliance import nag
from config import PlatformConfig
from stacks.cluster_stack import ClusterStack, system_pool
from stacks.jupyterhub_stack import JupyterHubStack
from stacks.karpenter_stack import KarpenterStack
from stacks.network_stack import NetworkStack
from stacks.observability_stack import ObservabilityStack
from stacks.ray_stack import RayStack


class PlatformStage(cdk.Stage):
    """All stacks of one platform instance, wired from one validated config.

    Stacks take explicit arguments taken from the config here; nothing below this
    level sees the whole config object.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PlatformConfig,
        pipeline_account: str | None = None,
        **kwargs,
    ) -> None:
        """``pipeline_account``: the account whose delivery pipeline may start this stage's validation run."""
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.pipeline_account = pipeline_account
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
            public_subnet_mask=net_cfg.PUBLIC_SUBNET_MASK,
            private_subnet_mask=net_cfg.PRIVATE_SUBNET_MASK,
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
            system_ami_release_version=cluster_cfg.system_nodes.ami_release_version,
            kubectl_security_group=self.network.kubectl_handler_security_group,
        )
        self.cluster.add_stack_dependency(self.network)

        self.karpenter = KarpenterStack(
            self,
            "Karpenter",
            stack_name=f"{name}-karpenter",
            description=f"Dynamic Factory {name}: Karpenter, interruption queue, node pools",
            cluster=self.cluster.cluster,
            cluster_name=name,
            cluster_security_group_id=self.cluster.cluster_security_group_id,
            node_pools=config.karpenter.node_pools(),
            ami_alias=config.karpenter.ami_alias,
            log_key=self.cluster.logs_key,
        )
        # Karpenter runs on the system nodes and needs the Pod Identity agent and CoreDNS.
        self.karpenter.add_stack_dependency(self.cluster)

        self.observability = ObservabilityStack(
            self,
            "Observability",
            stack_name=f"{name}-observability",
            description=f"Dynamic Factory {name}: Ray and JupyterHub logs kept in CloudWatch Logs (Fluent Bit)",
            cluster=self.cluster.cluster,
            cluster_name=name,
            encryption_key=self.cluster.logs_key,
            retention_days=config.logs.retention_days,
            team_ray_namespaces=[t.namespace for t in ray_teams(config.ray.teams) if not t.shared],
        )
        # Fluent Bit runs on the cluster's nodes, with the cluster's key and Pod Identity agent.
        self.observability.add_stack_dependency(self.cluster)

        ray_cfg, pools = config.ray, {p.name: p for p in config.karpenter.node_pools()}
        # The system node group, usable as a placement for long-lived singletons (Ray head, hub).
        pools["system"] = system_pool(cluster_cfg.system_nodes.instance_type, cluster_cfg.system_nodes.min_size)
        validation = ray_cfg.validation
        self.ray = RayStack(
            self,
            "Ray",
            stack_name=f"{name}-ray",
            description=f"Dynamic Factory {name}: KubeRay, RayCluster, checkpoints, validation runner",
            cluster=self.cluster.cluster,
            cluster_name=name,
            vpc=self.network.vpc,
            kubernetes_version=cluster_cfg.kubernetes_version,
            ray_cluster=RayClusterSettings(
                head_pool=pools[ray_cfg.head_placement],
                worker_pool=pools["spot"],
                # No GPU worker group without GPU workers to run in it.
                gpu_pool=pools.get("gpu") if ray_cfg.gpu_workers.max_workers > 0 else None,
                head_cpu=ray_cfg.head_cpu,
                head_memory_gib=ray_cfg.head_memory_gib,
                max_workers=ray_cfg.workers.max_workers,
                worker_cpu=ray_cfg.workers.cpu,
                worker_memory_gib=ray_cfg.workers.memory_gib,
                gpu_max_workers=max(ray_cfg.gpu_workers.max_workers, 1),
                gpu_worker_cpu=ray_cfg.gpu_workers.cpu,
                gpu_worker_memory_gib=ray_cfg.gpu_workers.memory_gib,
                gpus_per_worker=ray_cfg.gpu_workers.gpus,
                idle_timeout_seconds=ray_cfg.idle_timeout_seconds,
            ),
            checkpoint_retention_days=ray_cfg.checkpoint_retention_days,
            validation_args=[
                "--workers", str(validation.workers),
                "--rows", str(validation.rows),
                "--rounds", str(validation.rounds),
                "--min-auc", str(validation.min_auc),
            ],
            logs_key=self.cluster.logs_key,
            pipeline_account=pipeline_account,
            teams=ray_teams(ray_cfg.teams),
            extra_egress_fqdns=ray_cfg.extra_egress_fqdns,
        )
        # The head and the workers are scheduled onto Karpenter's node pools.
        self.ray.add_stack_dependency(self.karpenter)
        # The Ray pods' logs are shipped from their first line (and, on destroy, to their last).
        self.ray.add_stack_dependency(self.observability)

        hub = config.jupyterhub
        self.jupyterhub = JupyterHubStack(
            self,
            "JupyterHub",
            stack_name=f"{name}-jupyterhub",
            description=f"Dynamic Factory {name}: JupyterHub wired to Ray",
            cluster=self.cluster.cluster,
            cluster_name=name,
            core_pool=pools[hub.core_placement],
            user_pool=pools[hub.user_pool],
            gpu_pool=pools.get("gpu"),
            admin_user=hub.admin_user,
            home_capacity_gib=hub.home_capacity_gib,
            keep_homes_on_destroy=hub.keep_homes_on_destroy,
            ray_gpu_workers=self.ray.gpu_image is not None,
            cull_timeout_seconds=hub.cull_timeout_seconds,
            notebook_image=hub.notebook_image,
            domain=hub.domain,
            certificate_arn=hub.certificate_arn,
            cognito_domain_prefix=hub.cognito_domain_prefix,
            internal_load_balancer=hub.internal_load_balancer,
            allowed_cidrs=hub.allowed_cidrs,
            ray_teams=ray_teams(ray_cfg.teams),
        )
        # Notebooks need the Ray head, its token copy and the jupyterhub namespace.
        self.jupyterhub.add_stack_dependency(self.ray)
        # The hub's and the notebooks' logs are shipped from their first line (and, on destroy, to their last).
        self.jupyterhub.add_stack_dependency(self.observability)

        for key, value in config.tags.items():
            cdk.Tags.of(self).add(key, value)
        cdk.Tags.of(self).add("dynamic-factory/cluster", name)

        # Security gate: synth fails on any cdk-nag finding not acknowledged with a reason.
        nag.enable(self)

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [self.network, self.cluster, self.karpenter, self.observability, self.ray, self.jupyterhub]
