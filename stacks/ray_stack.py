"""Ray on the cluster: the KubeRay operator, an autoscaling RayCluster, its storage and the validation runner.

Deploy order in this stack (each edge an explicit CloudFormation dependency):
KubeRay operator release (CRDs) + checkpoint bucket and Pod Identity association + the
`jupyterhub` namespace (the token bootstrap copies the Ray token there) -> RayCluster chart
-> the ray namespace's network policies and the validation runner's RBAC.
The stack comes after the Karpenter stack: the head and the workers need its node pools.
"""

from __future__ import annotations

from typing import Any, Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_kms as kms
from constructs import Construct

import versions
from cdk_constructs.helm import pinned_chart
from cdk_constructs.image_asset import repo_image_asset
from cdk_constructs.ray_storage import RayStorage
from cdk_constructs.validation_runner import ValidationRunner
from charts import karpenter_nodes as kn
from charts import raycluster as rc
from charts.k8s import cdk8s_app
from charts.jupyterhub_values import namespace_manifest as jh_namespace_manifest
from charts.network_policies import KUBERAY_OPERATOR_NAMESPACE as OPERATOR_NAMESPACE
from charts.network_policies import RayNetworkPoliciesChart
from stacks.cluster_stack import SYSTEM_NODE_LABEL, SYSTEM_TOLERATION


def kuberay_operator_values() -> dict[str, Any]:
    """Helm values of the kuberay-operator chart (keys exist in its values.yaml; tests check)."""
    return {
        "nodeSelector": dict([SYSTEM_NODE_LABEL]),
        "tolerations": [SYSTEM_TOLERATION],
        # The limits are the chart's own defaults, written out: Helm merges maps, so leaving `cpu` out would
        # keep upstream's 100m CPU limit anyway, and the values should say what runs.
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "100m", "memory": "512Mi"}},
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
        encryption_key: kms.IKey,
        pipeline_account: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        self.operator = pinned_chart(
            self,
            "KubeRayOperator",
            cluster=cluster,
            chart="kuberay-operator",
            namespace=OPERATOR_NAMESPACE,
            create_namespace=True,
            values=kuberay_operator_values(),
            wait=True,
        )

        self.storage = RayStorage(
            self,
            "Storage",
            cluster=cluster,
            namespace=rc.NAMESPACE,
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
        chart = rc.RayClusterChart(
            cdk8s_app(),
            "ray",
            settings=ray_cluster,
            checkpoint_bucket=self.storage.bucket.bucket_name,
            image=self.image.image_uri,
            gpu_image=self.gpu_image.image_uri if self.gpu_image else None,
        )
        self.ray_cluster = eks.KubernetesManifest(
            self, "RayCluster", cluster=cluster, manifest=chart.to_json(), prune=True
        )
        # RayCluster is a KubeRay CRD; the Ray pods need their AWS credentials (Pod Identity)
        # at creation; the token bootstrap needs the notebook namespace.
        self.ray_cluster.node.add_dependency(self.operator)
        self.ray_cluster.node.add_dependency(self.storage)
        self.ray_cluster.node.add_dependency(notebook_namespace)

        policies = eks.KubernetesManifest(
            self,
            "RayNetworkPolicies",
            cluster=cluster,
            manifest=RayNetworkPoliciesChart(cdk8s_app(), "ray-network-policies").to_json(),
        )
        # Policies live in the ray namespace, which the Ray chart creates.
        policies.node.add_dependency(self.ray_cluster)

        self.runner = ValidationRunner(
            self,
            "ValidationRunner",
            cluster=cluster,
            cluster_name=cluster_name,
            vpc=vpc,
            kubectl_version=versions.KUBECTL_VERSIONS[kubernetes_version],
            ray_version=versions.RAY_VERSION,
            namespace=rc.NAMESPACE,
            head_service=rc.HEAD_SERVICE,
            dashboard_port=rc.DASHBOARD_PORT,
            token_secret=rc.TOKEN_SECRET,
            token_key=rc.TOKEN_KEY,
            job_args=validation_args,
            # The job boosts on the GPU workers when the cluster has them (the same code path as on CPUs).
            gpu_workers=ray_cluster.has_gpu_group,
            invoker_account=pipeline_account,
            # The cluster's key (it already admits CloudWatch Logs): one key less to pay for.
            encryption_key=encryption_key,
        )
        # Its Role is namespaced in ray.
        self.runner.rbac.node.add_dependency(self.ray_cluster)

        cdk.CfnOutput(self, "CheckpointBucket", value=self.storage.bucket.bucket_name)
        cdk.CfnOutput(self, "RayJobsApi", value=rc.DASHBOARD_URL)
