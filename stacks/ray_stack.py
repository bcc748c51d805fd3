"""Ray on the cluster: the KubeRay operator, one autoscaling RayCluster per team (or one shared), their storage
and the validation runner.

Deploy order in this stack (each edge an explicit CloudFormation dependency):
the Ray namespaces (``ray``, or ``ray-<team>`` per team: charts/ray_teams.py) -> the KubeRay operator release,
namespaced (it creates its Roles in them) + the admission policy on the autoscaler's identity + the checkpoint
bucket and Pod Identity associations + the `jupyterhub` namespace (the token bootstrap copies the Ray token there)
+ each namespace's ingress and egress policies -> each RayCluster chart -> the validation runner's RBAC (first
cluster). On delete the reverse: the RayClusters, then the operator, then the namespaces.
The stack comes after the Karpenter stack: the heads and the workers need its node pools.
"""

from __future__ import annotations

from typing import Any, Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_kms as kms
from constructs import Construct

import versions
from cdk_constructs.helm import pinned_chart
from cdk_constructs.image_asset import repo_image_asset
from cdk_constructs.ray_storage import RayStorage
from cdk_constructs.alarms import build_failure_alarm
from cdk_constructs.validation_runner import ValidationRunner
from charts import karpenter_nodes as kn
from charts import raycluster as rc
from charts.k8s import cdk8s_app
from charts.jupyterhub_values import namespace_manifest as jh_namespace_manifest
from charts.network_policies import KUBERAY_OPERATOR_NAMESPACE as OPERATOR_NAMESPACE
from charts.network_policies import NOTEBOOK_POD_LABELS, RayNetworkPoliciesChart
from charts.ray_admission import ray_admission_objects
from charts.ray_egress import ray_egress_policies
from charts.metrics import RayMetricsWiring
from charts.ray_teams import RayTeam, ray_teams
from stacks.cluster_stack import SYSTEM_NODE_LABEL, SYSTEM_TOLERATION


def kuberay_operator_values(watch_namespaces: Sequence[str]) -> dict[str, Any]:
    """Helm values of the kuberay-operator chart (keys exist in its values.yaml; tests check).

    The operator is namespaced (issue #16): it watches only ``watch_namespaces`` (the Ray namespaces) and holds
    Roles there instead of a ClusterRole over every namespace. In the 1.7.0 chart (ray-project/kuberay
    helm-chart/kuberay-operator: values.yaml; templates/deployment.yaml, role.yaml, multiple_namespaces_role.yaml
    and multiple_namespaces_rolebinding.yaml), ``singleNamespaceInstall: true`` drops the ClusterRole and its
    binding, and with ``crNamespacedRbacEnable`` (default true) renders a Role + RoleBinding for the operator in
    each namespace of ``watchNamespace``; the Deployment gets ``--watch-namespace <comma-separated list>``
    (without ``watchNamespace`` it would watch only its own namespace). ``watchNamespace`` is a documented but
    commented-out key of values.yaml.

    Ordering: those Roles are namespaced objects of the operator's release, so every watched namespace must
    exist before the release is installed or upgraded (Helm fails on a missing namespace), and a namespace may
    be deleted only after the release stops listing it.
    """
    namespaces = list(watch_namespaces)
    if isinstance(watch_namespaces, (str, bytes)) or not namespaces or len(set(namespaces)) != len(namespaces) \
            or not all(isinstance(ns, str) and ns for ns in namespaces):
        raise ValueError(f"kuberay_operator_values: watch_namespaces {watch_namespaces!r} must be a non-empty list "
                         "of distinct namespace names")
    return {
        "nodeSelector": dict([SYSTEM_NODE_LABEL]),
        "tolerations": [SYSTEM_TOLERATION],
        # The limits are the chart's own defaults, written out: Helm merges maps, so leaving `cpu` out would
        # keep upstream's 100m CPU limit anyway, and the values should say what runs.
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "100m", "memory": "512Mi"}},
        "singleNamespaceInstall": True,
        "crNamespacedRbacEnable": True,
        "watchNamespace": namespaces,
    }


def ray_image_asset(scope: Construct, construct_id: str, *, xgboost_package: str) -> ecr_assets.DockerImageAsset:
    """The platform's Ray image (images/ray/Dockerfile) with the pins of versions.py and jobs/requirements.txt;
    ``xgboost_package``: ``xgboost-cpu``, or ``xgboost`` (the CUDA build) for the GPU group."""
    return repo_image_asset(
        scope,
        construct_id,
        dockerfile="images/ray/Dockerfile",
        context_dirs=["images/ray", "jobs"],
        build_args={
            "BASE_IMAGE": versions.RAY_IMAGE_BASE,
            "PYTHON_VERSION": versions.RAY_PYTHON_VERSION,
            "RAY_VERSION": versions.RAY_VERSION,
            "XGBOOST_VERSION": versions.XGBOOST_VERSION,
            "XGBOOST_PACKAGE": xgboost_package,
        },
    )


class RayStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        cluster_name: str,
        vpc: ec2.IVpc,
        kubernetes_version: str,
        ray_cluster: rc.RayClusterSettings,
        checkpoint_retention_days: int,
        validation_args: Sequence[str],
        logs_key: kms.IKey,
        pipeline_account: str | None = None,
        teams: Sequence[RayTeam] = ray_teams(),
        extra_egress_fqdns: Sequence[str] = (),
        metrics: RayMetricsWiring | None = None,
        alarm_action: cloudwatch.IAlarmAction | None = None,
        **kwargs,
    ) -> None:
        """``teams``: the RayClusters to run (charts/ray_teams.py); the validation runner targets the first.
        ``extra_egress_fqdns``: DNS names (patterns allowed) Ray pods may reach on 443 besides S3 and PyPI.
        ``metrics``: with metrics on, Prometheus scrapes the Ray pods and Ray's dashboard embeds Grafana's panels.
        ``alarm_action``: where the alarm on a failed validation run notifies (None: no alarm)."""
        super().__init__(scope, construct_id, **kwargs)
        teams = tuple(teams)
        if not teams or not all(isinstance(t, RayTeam) for t in teams):
            raise ValueError(f"RayStack: teams must be a non-empty sequence of RayTeam, got {teams!r}")
        self.teams = teams

        # The Ray namespaces first, on their own: the KubeRay operator is namespaced (it watches these and holds
        # Roles in them, which its release creates), so they exist before it and go after it.
        self.namespaces: dict[str, eks.KubernetesManifest] = {}
        for team in teams:
            # `overwrite`: apply, not create. On an existing platform the RayCluster chart created `ray` before; the
            # apply takes it over (and drops that manifest's prune label, so the chart's next prune spares it).
            self.namespaces[team.namespace] = eks.KubernetesManifest(
                self, "RayNamespace" + self._suffix(team), cluster=cluster,
                manifest=[rc.namespace_manifest(team.namespace)], overwrite=True)

        self.operator = pinned_chart(
            self,
            "KubeRayOperator",
            cluster=cluster,
            chart="kuberay-operator",
            namespace=OPERATOR_NAMESPACE,
            create_namespace=True,
            values=kuberay_operator_values([t.namespace for t in teams]),
            wait=True,
        )
        for namespace in self.namespaces.values():
            self.operator.node.add_dependency(namespace)

        # What the head's service account (the autoscaler's identity) may change: worker replicas and the scale
        # strategy of its own RayCluster, nothing else (charts/ray_admission.py).
        self.admission = eks.KubernetesManifest(
            self, "RayAdmission", cluster=cluster,
            manifest=ray_admission_objects([t.namespace for t in teams], rc.SERVICE_ACCOUNT))
        self._extra_egress_fqdns = tuple(extra_egress_fqdns)
        self._metrics = metrics

        self.storage = RayStorage(
            self,
            "Storage",
            cluster=cluster,
            namespaces=[t.namespace for t in teams],
            service_account=rc.SERVICE_ACCOUNT,
            expire_after_days=checkpoint_retention_days,
        )

        # The token bootstrap Job writes a copy of the Ray token into the notebook namespace,
        # so that namespace must exist before the Ray chart (JupyterHub installs into it later).
        # The JupyterHub stack owns it: deleting this stack (to rebuild Ray) must never delete the notebook
        # namespace with every user's home claim, so CloudFormation keeps it on delete and update (no delete
        # call is made), but not when this stack's first create rolls back. `overwrite`: the kubectl handler
        # applies instead of `kubectl create`, so a rebuilt Ray stack finds the namespace and goes on.
        notebook_namespace = eks.KubernetesManifest(
            self, "NotebookNamespace", cluster=cluster, manifest=[jh_namespace_manifest()], overwrite=True
        )
        notebook_namespace.node.find_child("Resource").apply_removal_policy(cdk.RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE)

        # The Ray image, built at deploy time; the GPU variant (CUDA XGBoost) only when there is a GPU group.
        self.image = ray_image_asset(self, "RayImage", xgboost_package="xgboost-cpu")
        self.gpu_image = (ray_image_asset(self, "RayGpuImage", xgboost_package="xgboost")
                          if ray_cluster.has_gpu_group else None)
        self.ray_clusters: dict[str, eks.KubernetesManifest] = {}
        for team in teams:
            self.ray_clusters[team.namespace] = self._ray_cluster(
                team, cluster=cluster, settings=ray_cluster, notebook_namespace=notebook_namespace)
        # The shared cluster (or the first team's) is the one the validation run exercises.
        first = teams[0]
        self.ray_cluster = self.ray_clusters[first.namespace]

        self.runner = ValidationRunner(
            self,
            "ValidationRunner",
            cluster=cluster,
            cluster_name=cluster_name,
            vpc=vpc,
            kubectl_version=versions.KUBECTL_VERSIONS[kubernetes_version],
            ray_version=versions.RAY_VERSION,
            namespace=first.namespace,
            head_service=first.head_service,
            dashboard_port=rc.DASHBOARD_PORT,
            token_secret=rc.TOKEN_SECRET,
            token_key=rc.TOKEN_KEY,
            job_args=validation_args,
            # The job boosts on the GPU workers when the cluster has them (the same code path as on CPUs).
            gpu_workers=ray_cluster.has_gpu_group,
            invoker_account=pipeline_account,
            # The platform's logs key (CodeBuild's artifacts and logs), not the Kubernetes secrets key.
            encryption_key=logs_key,
        )
        # Its Role is namespaced in ray.
        self.runner.rbac.node.add_dependency(self.ray_cluster)
        if alarm_action is not None:
            self.validation_alarm = build_failure_alarm(self, "ValidationFailed", project=self.runner.project,
                                                        action=alarm_action)

        cdk.CfnOutput(self, "CheckpointBucket", value=self.storage.bucket.bucket_name)
        for team in teams:
            cdk.CfnOutput(self, "RayJobsApi" if team.shared else f"RayJobsApi-{team.name}", value=team.dashboard_url)

    def _ray_cluster(self, team: RayTeam, *, cluster: eks.ICluster, settings: rc.RayClusterSettings,
                     notebook_namespace: eks.KubernetesManifest) -> eks.KubernetesManifest:
        """One team's RayCluster chart (token bootstrap, RayCluster) with its ingress and egress policies, all
        applied before the cluster's pods start."""
        suffix = self._suffix(team)
        namespace = self.namespaces[team.namespace]
        chart = rc.RayClusterChart(
            cdk8s_app(),
            f"ray{suffix}",
            settings=settings,
            checkpoint_bucket=self.storage.bucket.bucket_name,
            image=self.image.image_uri,
            gpu_image=self.gpu_image.image_uri if self.gpu_image else None,
            namespace=team.namespace,
            token_copies={rc.NOTEBOOK_NAMESPACE: team.notebook_token_secret},
            create_namespace=False,
            metrics=self._metrics,
        )
        ray_cluster = eks.KubernetesManifest(
            self, f"RayCluster{suffix}", cluster=cluster, manifest=chart.to_json(), prune=True
        )
        # RayCluster is a KubeRay CRD; the Ray pods need their AWS credentials (Pod Identity)
        # at creation; the token bootstrap needs the notebook namespace.
        for dependency in (self.operator, self.storage, notebook_namespace, namespace, self.admission):
            ray_cluster.node.add_dependency(dependency)

        policies = eks.KubernetesManifest(
            self,
            f"RayNetworkPolicies{suffix}",
            cluster=cluster,
            manifest=RayNetworkPoliciesChart(
                cdk8s_app(), f"ray-network-policies{suffix}", ray_namespace=team.namespace,
                # With teams, a team's head admits only the notebooks the hub labelled with that team.
                notebook_pod_labels={**NOTEBOOK_POD_LABELS, **team.notebook_label},
                scraper=self._metrics.scraper if self._metrics else None,
                scrape_ports=self._metrics.scrape_ports if self._metrics else (),
            ).to_json(),
        )
        egress = eks.KubernetesManifest(
            self,
            f"RayEgressPolicies{suffix}",
            cluster=cluster,
            manifest=ray_egress_policies(team.namespace, rc.CLUSTER_NAME, region=self.region,
                                         extra_fqdns=self._extra_egress_fqdns,
                                         metrics_backends=self._metrics.backends if self._metrics else ()),
        )
        # In the team's namespace, before its pods: a Ray pod is never without its limits.
        for manifest in (policies, egress):
            manifest.node.add_dependency(namespace)
            ray_cluster.node.add_dependency(manifest)
        return ray_cluster

    @staticmethod
    def _suffix(team: RayTeam) -> str:
        """Construct ids of a team's objects: the shared cluster keeps the ids it always had."""
        return "" if team.shared else f"-{team.name}"
