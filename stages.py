"""PlatformStage: the unit that `cdk deploy` and the pipeline both deploy."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from charts.ray_teams import ray_teams
from charts.raycluster import RayClusterSettings
from compliance import nag
from charts import metrics as mx
from charts.dashboards import dashboard_config_maps
from charts.factory_dashboard import factory_dashboard
from charts.jupyterhub_values import ProxiedService
from charts.network_policies import JUPYTERHUB_NAMESPACE
from charts.storage import DEFAULT_STORAGE_CLASS
from config import LEAN_SYSTEM_NODES, METRICS_SYSTEM_NODE_SIZES, PlatformConfig
from stacks.cluster_stack import SYSTEM_NODE_LABEL, SYSTEM_TOLERATION, ClusterStack, system_pool
from stacks.jupyterhub_stack import JupyterHubStack
from stacks.karpenter_stack import KarpenterStack
from stacks.network_stack import NetworkStack
from stacks.observability_stack import AlarmTargets, MetricsDeployment, ObservabilityStack
from stacks.ray_stack import RayStack


# z2jh's proxy pods (chart labels component=proxy): with grafana_behind_hub they forward /services/grafana/ to Grafana.
HUB_PROXY_POD_LABELS = {"app": "jupyterhub", "component": "proxy"}


def platform_dashboards(config: PlatformConfig, teams) -> list[dict]:
    """The dashboards' ConfigMaps (charts/dashboards.py); the factory's cost panel is priced from cost/prices.yaml
    (the price region's on-demand prices of every type a node of the platform can be, its assumed Spot discount, and
    the hourly parts that do not depend on nodes: control plane, NAT gateways, the hub's load balancer)."""
    from cost.estimate import PriceTable

    prices = PriceTable(region=config.cost.price_region)
    types = {f"{family}.{size}" for pool in config.karpenter.node_pools()
             for family in pool.instance_families for size in pool.instance_sizes}
    types.add(config.cluster.system_nodes.instance_type)
    fixed = prices.service("eks_cluster_hour") + config.network.nat_gateways * prices.service("nat_gateway_hour")
    if config.jupyterhub.domain:
        fixed += prices.service("nlb_hour")
    factory = factory_dashboard(
        node_prices={t: prices.instance(t) for t in sorted(types) if prices.has(t)},
        spot_discount=prices.spot_discount,
        fixed_usd_per_hour=round(fixed, 4),
        ray_namespaces=[t.namespace for t in teams],
    )
    return dashboard_config_maps(mx.NAMESPACE, factory=factory)


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
            metrics=config.observability.enabled,
            # The third node observability's default sizes add (config.py METRICS_SYSTEM_NODE_SIZES), for `make cost`.
            metrics_nodes=(METRICS_SYSTEM_NODE_SIZES["desired_size"] - LEAN_SYSTEM_NODES
                           if config.observability.enabled and cluster_cfg.system_nodes.desired_size
                           == METRICS_SYSTEM_NODE_SIZES["desired_size"] else 0),
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

        obs = config.observability
        teams = ray_teams(config.ray.teams)
        # Port-forward by default; behind the hub's HTTPS only when asked for (observability.grafana_behind_hub).
        grafana_access = mx.GrafanaAccess(domain=config.jupyterhub.domain if obs.grafana_behind_hub else None)
        self.observability = ObservabilityStack(
            self,
            "Observability",
            stack_name=f"{name}-observability",
            description=(f"Dynamic Factory {name}: logs in CloudWatch Logs (Fluent Bit)"
                         + (", Prometheus and Grafana, alarms" if obs.enabled else "")),
            cluster=self.cluster.cluster,
            cluster_name=name,
            encryption_key=self.cluster.logs_key,
            retention_days=config.logs.retention_days,
            team_ray_namespaces=[t.namespace for t in teams if not t.shared],
            metrics=MetricsDeployment(
                values=mx.MetricsValues(
                    node_selector=dict([SYSTEM_NODE_LABEL]),
                    tolerations=(SYSTEM_TOLERATION,),
                    storage_class=DEFAULT_STORAGE_CLASS,
                    retention=obs.retention,
                    volume_gib=obs.volume_gib,
                    access=grafana_access,
                ),
                ray_namespaces=tuple(t.namespace for t in teams),
                dashboards=tuple(platform_dashboards(config, teams)),
                # Behind the hub (grafana_behind_hub): its proxy serves Grafana under /services/grafana/.
                grafana_clients=((JUPYTERHUB_NAMESPACE, HUB_PROXY_POD_LABELS),) if grafana_access.domain else (),
            ) if obs.enabled else None,
            alarms=AlarmTargets(
                emails=obs.alarm_emails,
                interruption_queue=self.karpenter.interruption.queue,
                system_nodegroup=self.cluster.system_nodes,
            ) if obs.enabled else None,
        )
        # Fluent Bit runs on the cluster's nodes, with the cluster's key and Pod Identity agent.
        self.observability.add_stack_dependency(self.cluster)
        if obs.enabled:
            # The alarms watch Karpenter's interruption queue; Prometheus scrapes its controller.
            self.observability.add_stack_dependency(self.karpenter)

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
            metrics=mx.RayMetricsWiring(access=grafana_access) if obs.enabled else None,
            # The validation run failing is an alarm (the observability stack's topic).
            alarm_action=self.observability.alarm_topic.action if self.observability.alarm_topic else None,
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
            # grafana_behind_hub: Grafana at https://<domain>/services/grafana/ (its own login).
            proxied_services=(ProxiedService(
                name=mx.GRAFANA_PROXY_NAME, url=mx.GRAFANA_URL, namespace=mx.NAMESPACE, pod_labels=mx.GRAFANA_POD_LABELS,
                port=mx.GRAFANA_PORT),) if obs.enabled and grafana_access.domain else (),
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
