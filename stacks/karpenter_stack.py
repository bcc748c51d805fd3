"""Karpenter: the part of the factory that grows and shrinks the machines.

Deploy order in this stack (each edge an explicit CloudFormation dependency):
interruption queue + controller role + Pod Identity association -> karpenter-crd chart ->
karpenter chart -> instance-profile guard -> EC2NodeClass -> teardown guard -> NodePools (-> GPU NodePool ->
NVIDIA device plugin when the GPU pool is on). The whole stack comes after the cluster stack, so the system
nodes, the Pod Identity agent and CoreDNS already run when the controller starts. Teardown runs it backwards:
the NodePools go; the teardown guard holds everything after it back until Karpenter has terminated its
instances; the EC2NodeClass goes (its finalizer deletes Karpenter's instance profiles and launch templates);
the instance-profile guard holds the controller back until the node role is in no instance profile.
"""

from __future__ import annotations

from typing import Any, Sequence

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk_constructs.helm import pinned_chart
from cdk_constructs.karpenter_iam import KarpenterControllerRole, KarpenterNodeRole
from cdk_constructs.karpenter_interruption import KarpenterInterruptionQueue
from cdk_constructs.karpenter_teardown_guard import KarpenterTeardownGuard
from cdk_constructs.pod_identity import PodIdentityRole
from charts import karpenter_nodes as kn
from charts.k8s import cdk8s_app
from stacks.cluster_stack import SYSTEM_NODE_LABEL, SYSTEM_TOLERATION

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "karpenter"


def karpenter_values(*, cluster_name: str, queue_name: str, replicas: int = 2) -> dict[str, Any]:
    """Helm values of the karpenter chart (keys exist in the chart's values.yaml; tests check)."""
    return {
        "settings": {"clusterName": cluster_name, "interruptionQueue": queue_name},
        "replicas": replicas,
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
        # The controller runs on the system node group, never on nodes it manages.
        "nodeSelector": {"kubernetes.io/os": "linux", **dict([SYSTEM_NODE_LABEL])},
        "tolerations": [SYSTEM_TOLERATION],
        "controller": {
            "resources": {
                "requests": {"cpu": "200m", "memory": "512Mi"},
                "limits": {"memory": "512Mi"},
            }
        },
    }


def device_plugin_values(gpu_pool: kn.NodePoolSettings) -> dict[str, Any]:
    """NVIDIA device plugin: only on GPU pool nodes, tolerating their taint."""
    placement = kn.pool_placement(gpu_pool)
    return {"nodeSelector": placement["nodeSelector"], "tolerations": placement["tolerations"]}


class KarpenterStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        cluster_name: str,
        cluster_security_group_id: str,
        node_pools: Sequence[kn.NodePoolSettings],
        ami_alias: str,
        log_key: kms.IKey,
        **kwargs,
    ) -> None:
        """``log_key``: the key of the platform's log groups (ClusterStack.logs_key), for the teardown guard's log
        group."""
        super().__init__(scope, construct_id, **kwargs)

        self.node_role = KarpenterNodeRole(self, "NodeRole", description=f"{cluster_name}: Karpenter nodes").role
        # Nodes launched by Karpenter join the cluster through this access entry.
        node_access = eks.AccessEntry(
            self,
            "NodeAccess",
            cluster=cluster,
            principal=self.node_role.role_arn,
            access_entry_type=eks.AccessEntryType.EC2_LINUX,
            access_policies=[],
        )

        self.interruption = KarpenterInterruptionQueue(self, "Interruption", queue_name=cluster_name)
        self.controller = KarpenterControllerRole(
            self,
            "Controller",
            cluster_name=cluster_name,
            cluster_arn=cluster.cluster_arn,
            node_role=self.node_role,
            interruption_queue=self.interruption.queue,
        )
        identity = PodIdentityRole(
            self,
            "ControllerIdentity",
            cluster=cluster,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            role=self.controller.role,
        )
        # The role is useless to the controller until its policies are attached.
        identity.association.node.add_dependency(self.controller)

        self.crd_chart = pinned_chart(self, "KarpenterCrd", cluster=cluster, chart="karpenter-crd", namespace=NAMESPACE)
        self.controller_chart = pinned_chart(
            self,
            "Karpenter",
            cluster=cluster,
            chart="karpenter",
            namespace=NAMESPACE,
            # The CRDs belong to the karpenter-crd release, so upgrades update them. (The kubectl handler of
            # aws-cdk-lib 2.273.0 does not pass --skip-crds on; Helm leaves existing CRDs alone anyway.)
            skip_crds=True,
            values=karpenter_values(cluster_name=cluster_name, queue_name=self.interruption.queue_name),
            wait=True,
        )
        # CRDs first; the controller reads the queue named in its settings and needs
        # Pod Identity credentials when its pods are created. The same DependsOn orders upgrades:
        # CloudFormation updates a resource only after the resources it depends on, so a bump of
        # KARPENTER_CHART_VERSION upgrades the karpenter-crd release (whose templates are the CRDs;
        # Helm never upgrades a chart's crds/ directory) before the controller that needs the new schema.
        self.controller_chart.node.add_dependency(self.crd_chart)
        self.controller_chart.node.add_dependency(self.interruption)
        self.controller_chart.node.add_dependency(identity)

        nodes_chart = kn.KarpenterNodesChart(
            cdk8s_app(),
            "karpenter-nodes",
            cluster_name=cluster_name,
            node_role_name=self.node_role.role_name,
            # Nodes join the cluster security group EKS created (by id: it carries no discovery tag).
            security_group_ids=[cluster_security_group_id],
            node_pools=node_pools,
            ami_alias=ami_alias,
        )
        gpu_pools = [p for p in node_pools if p.gpu]
        gpu_names = {p.name for p in gpu_pools}
        objects = nodes_chart.to_json()
        is_gpu = [o.get("kind") == "NodePool" and o["metadata"]["name"] in gpu_names for o in objects]
        is_class = [o.get("kind") == "EC2NodeClass" for o in objects]
        # The EC2NodeClass is a resource of its own, deleted after the NodePools and the teardown guard and before
        # the controller: `kubectl delete` of a manifest with both would wait on the class's finalizer (which
        # waits for every NodeClaim) inside the kubectl handler's 15 minutes, and a delete that failed or ran
        # out of time would let the controller go before the finalizer removed the instance profiles (the node
        # role's delete then fails) and launch templates. Reconciled by the controller: applied once it runs.
        # overwrite: created with `kubectl apply`, not `kubectl create`, since the object already exists where
        # the platform was deployed when the EC2NodeClass shared the NodePools manifest.
        self.node_class = eks.KubernetesManifest(
            self, "NodeClass", cluster=cluster, manifest=[o for o, c in zip(objects, is_class) if c], overwrite=True
        )
        self.node_class.node.add_dependency(self.controller_chart)
        self.node_pools = eks.KubernetesManifest(
            self,
            "NodePools",
            cluster=cluster,
            manifest=[o for o, g, c in zip(objects, is_gpu, is_class) if not (g or c)],
            prune=True,
        )
        # NodePools are custom resources of the Karpenter CRDs and are reconciled by the controller: apply them
        # only once it runs, and after the EC2NodeClass they name.
        self.node_pools.node.add_dependency(self.controller_chart)
        self.node_pools.node.add_dependency(self.node_class)
        # A node launched for a pool joins through the access entry; on teardown the pools go first, so their
        # nodes are drained and terminated by a running Karpenter while they can still reach the API server.
        self.node_pools.node.add_dependency(node_access)

        pool_manifests = [self.node_pools]
        if gpu_pools:
            # The GPU pool is a resource of its own: `prune` only removes built-in kinds (the kubectl handler
            # passes no allow-list for custom resources), so turning the GPU pool off would leave the NodePool
            # behind in a shared manifest. As its own resource, CloudFormation deletes it, and Karpenter drains
            # its nodes, before the device plugin goes.
            # overwrite: the kubectl handler creates with `kubectl create` otherwise, which fails where the pool
            # already exists (a platform deployed when every pool shared one manifest).
            gpu_node_pools = eks.KubernetesManifest(
                self, "GpuNodePool", cluster=cluster, manifest=[o for o, g in zip(objects, is_gpu) if g],
                overwrite=True,
            )
            gpu_node_pools.node.add_dependency(self.node_pools)  # its EC2NodeClass, the controller, the access
            pool_manifests.append(gpu_node_pools)
            plugin = pinned_chart(
                self,
                "NvidiaDevicePlugin",
                cluster=cluster,
                chart="nvidia-device-plugin",
                namespace=NAMESPACE,
                values=device_plugin_values(gpu_pools[0]),
            )
            # GPU pods are only schedulable once the plugin advertises nvidia.com/gpu.
            plugin.node.add_dependency(gpu_node_pools)

        # The kubectl handler only logs a failed `kubectl delete`, so on teardown a NodePools resource may be gone
        # while its nodes still run, and the NodeClass resource while its finalizer has not yet removed Karpenter's
        # instance profiles. The teardown guard is deleted after every pool manifest and before the NodeClass and
        # waits until no instance Karpenter launched is left; its second resource is deleted after the NodeClass
        # and before the controller, its Pod Identity and the nodes' access entry (what Karpenter needs to drain
        # nodes and run the finalizers), and waits until the node role is in no instance profile. If something is
        # left, the stack delete stops with the controller still running. Its log group takes the platform's logs key
        # (never the Kubernetes secrets key), which the cluster stack keeps until after this stack is gone.
        self.teardown_guard = KarpenterTeardownGuard(
            self,
            "TeardownGuard",
            cluster_name=cluster_name,
            node_role=self.node_role,
            after=[self.controller_chart, identity, node_access],
            node_class=self.node_class,
            before=pool_manifests,
            log_key=log_key,
        )

        cdk.CfnOutput(self, "InterruptionQueueName", value=self.interruption.queue.queue_name)
