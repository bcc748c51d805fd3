"""The EKS cluster: control plane, Cilium as the CNI, the system node group and EKS add-ons."""

from __future__ import annotations

import hashlib

import importlib
from typing import Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

import versions
from cdk_constructs.cilium_iam import cilium_operator_statements
from cdk_constructs.helm import pinned_chart
from cdk_constructs.kms_logs import allow_cloudwatch_logs, allow_cloudwatch_logs_to_read_back
from cdk_constructs.pod_identity import PodIdentityRole
from charts import cilium_values
from charts import karpenter_nodes as kn
from charts.k8s import cdk8s_app
from charts.storage import StorageChart
from stacks.network_stack import DISCOVERY_TAG

SYSTEM_TAINT_KEY = "CriticalAddonsOnly"
# Template metadata on the system node group: how many of its nodes the metrics stack needs (cost/estimate.py).
METRICS_NODES_METADATA = "dynamic-factory:nodes-for-metrics"
SYSTEM_NODE_LABEL = ("dynamic-factory/node-role", "system")
# The system nodes also carry the pool label, so that charts can place pods on them like on a
# Karpenter pool (charts.karpenter_nodes.node_group_pool).
SYSTEM_POOL_NAME = "system"
# Pods that must run on the system nodes tolerate their taint with this.
SYSTEM_TOLERATION = {"key": SYSTEM_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}


def kubectl_layer(scope: Construct, kubernetes_version: str):
    """The kubectl Lambda layer matching ``kubernetes_version`` (versions.KUBERNETES_VERSIONS)."""
    module_name, class_name = versions.KUBERNETES_VERSIONS[kubernetes_version]
    layer_cls = getattr(importlib.import_module(module_name), class_name)
    return layer_cls(scope, "KubectlLayer")


class ClusterStack(cdk.Stack):
    """EKS control plane with Cilium (ENI mode, kube-proxy replacement) and the system nodes.

    Deploy order inside this stack (each edge is an explicit CloudFormation dependency):
    Pod Identity association for the Cilium operator -> Cilium release -> system node
    group -> EKS add-ons -> gp3 StorageClass.

    Upgrades in place: the node group's Version is the cluster's Kubernetes version and every add-on
    pins the build of that version (versions.EKS_ADDONS), so a change of ``kubernetes_version`` updates
    the control plane, then the node group (rolling its nodes onto the new version's AMI), then the
    add-ons. CloudFormation updates resources in dependency order, as it creates them.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        cluster_name: str,
        kubernetes_version: str,
        endpoint_access: str,
        public_cidrs: Sequence[str],
        admin_principal_arns: Sequence[str],
        system_instance_type: str,
        system_desired_size: int,
        system_min_size: int,
        system_max_size: int,
        system_ami_release_version: str | None = None,
        kubectl_security_group: ec2.ISecurityGroup | None = None,
        metrics: bool = False,
        metrics_nodes: int = 0,
        **kwargs,
    ) -> None:
        """``system_ami_release_version``: EKS-optimized AMI release of the system nodes (``1.35.x-YYYYMMDD``,
        of ``kubernetes_version``); None takes the latest release of that version when the node group is
        created or moves to a new version, and nothing afterwards.
        ``kubectl_security_group``: the group of CDK's kubectl handler Lambdas, owned by the network stack so that
        it outlives the Lambda ENIs (NetworkStack); None leaves aws_eks_v2's default, the cluster security group,
        whose Lambda ENIs can block the cluster's deletion (PlatformStage always passes one)."""
        super().__init__(scope, construct_id, **kwargs)
        self.cluster_name = cluster_name
        self._metrics = metrics  # Cilium and Hubble expose metrics for Prometheus (charts/metrics.py)
        self.kubernetes_version = kubernetes_version

        self.secrets_key, self.logs_key = self._keys(cluster_name)
        # EKS writes control-plane logs to this exact log group name; creating it first
        # gives it encryption and a retention instead of "never expire".
        control_plane_logs = logs.LogGroup(
            self,
            "ControlPlaneLogs",
            log_group_name=f"/aws/eks/{cluster_name}/cluster",
            retention=logs.RetentionDays.ONE_MONTH,
            encryption_key=self.logs_key,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )

        if endpoint_access == "private":
            access = eks.EndpointAccess.PRIVATE
        else:
            access = eks.EndpointAccess.PUBLIC_AND_PRIVATE.only_from(*public_cidrs)

        private_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.cluster = eks.Cluster(
            self,
            "Cluster",
            cluster_name=cluster_name,
            version=eks.KubernetesVersion.of(kubernetes_version),
            vpc=vpc,
            vpc_subnets=[private_subnets],
            endpoint_access=access,
            secrets_encryption_key=self.secrets_key,
            cluster_logging=[
                eks.ClusterLoggingTypes.API,
                eks.ClusterLoggingTypes.AUDIT,
                eks.ClusterLoggingTypes.AUTHENTICATOR,
                eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
                eks.ClusterLoggingTypes.SCHEDULER,
            ],
            # Cilium is the CNI and replaces kube-proxy: EKS must not install aws-node,
            # kube-proxy or its own CoreDNS (CoreDNS comes back below as a managed add-on).
            bootstrap_self_managed_addons=False,
            # The default is EKS Auto Mode, which forbids a custom CNI.
            default_capacity_type=eks.DefaultCapacityType.NODEGROUP,
            default_capacity=0,
            # Nobody is cluster admin by accident: admins are listed in the config.
            bootstrap_cluster_creator_admin_permissions=False,
            kubectl_provider_options=eks.KubectlProviderOptions(
                kubectl_layer=kubectl_layer(self, kubernetes_version),
                # The handler runs inside the VPC so it works with a private-only endpoint.
                private_subnets=vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnets,
                # Its own group, not the cluster's (aws_eks_v2 KubectlProvider's default when none is given,
                # aws-cdk-lib 2.273.0 kubectl-provider.ts): Lambda releases the ENIs long after the functions are
                # deleted, which would block deleting the cluster group. (`security_group` is the deprecated form.)
                security_groups=[kubectl_security_group] if kubectl_security_group else None,
            ),
            tags={DISCOVERY_TAG: cluster_name},
        )
        # The log group must exist before EKS starts logging into it.
        self.cluster.node.add_dependency(control_plane_logs)
        # The security group EKS creates for the cluster: Karpenter's nodes join it (selected by id,
        # see KarpenterStack). aws_eks_v2 only imports it by id, so a CDK tag on it would never reach
        # AWS, and EKS does not copy the cluster's tags onto it.
        self.cluster_security_group_id = self.cluster.cluster_security_group_id
        if kubectl_security_group is not None:
            self._admit_kubectl_handler(kubectl_security_group)

        # Keyed by the principal, not its place in the list: an access entry's PrincipalArn is create-only,
        # so a positional id would replace entries when the list changes, and the replacement for a
        # principal would be created while its old entry still exists, which EKS refuses.
        for arn in admin_principal_arns:
            self.cluster.grant_access(
                "Admin" + hashlib.sha256(arn.encode()).hexdigest()[:12],
                arn,
                [
                    eks.AccessPolicy.from_access_policy_name(
                        "AmazonEKSClusterAdminPolicy", access_scope_type=eks.AccessScopeType.CLUSTER
                    )
                ],
            )

        # The Pod Identity agent comes before Cilium, not after the nodes: in ENI mode the Cilium
        # operator is the only caller of EC2 for pod addresses and gets its credentials through
        # Pod Identity. Without the agent no node turns Ready and the node group (which waits for
        # Cilium) fails with NodeCreationFailure. A DaemonSet add-on turns ACTIVE with no nodes,
        # and its host-network pods tolerate every taint, so it starts with the first node.
        pod_identity_agent = self._addon("eks-pod-identity-agent", after_nodes=False)
        self.cilium = self._add_cilium(vpc)
        self.cilium.node.add_dependency(pod_identity_agent)
        self.system_nodes = self._add_system_nodes(
            system_instance_type, system_desired_size, system_min_size, system_max_size,
            ami_release_version=system_ami_release_version,
        )
        # Nodes turn Ready only once the Cilium agent runs on them: without the release
        # the node group never becomes healthy and CloudFormation waits for an hour.
        self.system_nodes.node.add_dependency(self.cilium)
        if metrics_nodes:
            # Read by the cost estimate (cost/estimate.py), which prices only what the templates say: how many of
            # these nodes are there for the metrics stack, i.e. what turning observability off would save.
            self.system_nodes.node.default_child.add_metadata(METRICS_NODES_METADATA, metrics_nodes)
        self.addons = {"eks-pod-identity-agent": pod_identity_agent, **self._add_addons()}

        # The kubectl handler's log groups are created by CDK without encryption: give every
        # log group in this stack the logs key (its policy admits CloudWatch Logs).
        # They are RETAIN by CDK's default, and the key is deleted with this stack: a retained group would be
        # left unreadable, so they go with the stack like the control-plane logs.
        handler_logs = []
        for child in self.node.find_all():
            if isinstance(child, logs.CfnLogGroup) and child.kms_key_id is None:
                child.kms_key_id = self.logs_key.key_arn
                child.apply_removal_policy(cdk.RemovalPolicy.DESTROY)
                handler_logs.append(child)
        # On delete, this stack's Helm releases and manifests (Cilium, storage classes) are removed through the
        # handlers, which log as they go: their log groups must outlive them, or the Lambdas recreate the groups
        # unencrypted and without retention, and they stay after the stack is gone.
        for child in self.node.find_all():
            if isinstance(child, cdk.CfnResource) and child.cfn_resource_type.startswith("Custom::AWSCDK-EKS-"):
                for group in handler_logs:
                    child.add_resource_dependency(group)

        cdk.CfnOutput(self, "ClusterName", value=self.cluster.cluster_name)
        cdk.CfnOutput(
            self,
            "UpdateKubeconfig",
            value=f"aws eks update-kubeconfig --name {cluster_name} --region {self.region}",
        )

    def _keys(self, cluster_name: str) -> tuple[kms.Key, kms.Key]:
        """One key per purpose, so that a grant or a policy statement for one never reaches the other's data.

        The secrets key does envelope encryption of Kubernetes secrets only (the EKS cluster role's grant, which
        aws_eks_v2 adds). It keeps the construct id of the platform's first, shared key: EncryptionConfig is
        create-only (AWS::EKS::Cluster resource schema), so a new key there would replace the cluster. CloudWatch
        Logs may still decrypt with it, and only decrypt (kms_logs.allow_cloudwatch_logs_to_read_back): on a
        platform deployed before the split, the log groups move to the logs key in place (AssociateKmsKey), and
        their earlier events stay encrypted with this key (CloudWatch Logs API reference, DisassociateKmsKey).
        The logs key serves every log group of the platform (CloudWatch Logs service principal, this account's
        log groups only: kms_logs.allow_cloudwatch_logs); the observability stack's too (its ``encryption_key``).
        """
        secrets_key = kms.Key(
            self,
            "ClusterKey",
            description=f"{cluster_name}: Kubernetes secrets (EKS envelope encryption)",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        allow_cloudwatch_logs_to_read_back(secrets_key)
        logs_key = kms.Key(
            self,
            "LogsKey",
            description=f"{cluster_name}: CloudWatch Logs (control plane, kubectl handlers, platform log groups)",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        allow_cloudwatch_logs(logs_key)
        return secrets_key, logs_key

    def _admit_kubectl_handler(self, handler_group: ec2.ISecurityGroup) -> None:
        """The cluster security group (on the endpoint's ENIs) admits the kubectl handlers on 443.

        A rule in this stack on EKS's group (by the cluster's attribute): ``connections.allow_from`` would put it
        in the network stack, a cycle. Both handler functions depend on it, so it exists before any kubectl
        resource runs and is deleted only after all of them (their deletes run helm/kubectl too) and the functions:
        without that edge the rule can go first on destroy and every uninstall times out (aws/aws-cdk#9970).
        """
        ingress = ec2.CfnSecurityGroupIngress(
            self,
            "KubectlHandlerApiIngress",
            group_id=self.cluster.cluster_security_group_id,
            source_security_group_id=handler_group.security_group_id,
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            description="CDK kubectl handler Lambdas to the EKS API",
        )
        provider = self.cluster.kubectl_provider
        functions = [c for c in provider.node.find_all() if isinstance(c, lambda_.CfnFunction)] if provider else []
        if len(functions) != 2:  # Handler and Provider/framework-onEvent (aws-cdk-lib 2.273.0)
            raise RuntimeError(f"expected the two kubectl provider functions, found {[f.node.path for f in functions]}")
        for function in functions:
            function.node.add_dependency(ingress)

    # ------------------------------------------------------------------ Cilium

    def _add_cilium(self, vpc: ec2.IVpc) -> eks.HelmChart:
        operator_identity = PodIdentityRole(
            self,
            "CiliumOperatorIdentity",
            cluster=self.cluster,
            namespace=cilium_values.NAMESPACE,
            service_account=cilium_values.OPERATOR_SERVICE_ACCOUNT,
            statements=cilium_operator_statements(vpc.vpc_arn, cluster_name=self.cluster_name),
            description="Cilium operator: ENI IPAM in this VPC",
        )
        values = cilium_values.CiliumValues(
            cluster_name=self.cluster_name,
            api_server_host=cilium_values.endpoint_hostname(self.cluster.cluster_endpoint),
            subnet_tag=(DISCOVERY_TAG, self.cluster_name),
            system_node_selector=dict([SYSTEM_NODE_LABEL]),
            system_tolerations=(SYSTEM_TOLERATION,),
            metrics=self._metrics,
        )
        chart = pinned_chart(
            self.cluster,
            "chart-Cilium",
            cluster=self.cluster,
            chart="cilium",
            namespace=cilium_values.NAMESPACE,
            values=values.to_values(),
            # No wait: the agents can only start once the node group (which waits for
            # this release) has nodes.
            wait=False,
        )
        # EKS injects Pod Identity credentials only into pods created after the association.
        chart.node.add_dependency(operator_identity)
        return chart

    # ------------------------------------------------------------------ system nodes

    def _add_system_nodes(
        self, instance_type: str, desired: int, minimum: int, maximum: int, *, ami_release_version: str | None
    ) -> eks.Nodegroup:
        node_role = iam.Role(
            self,
            "SystemNodeRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="System managed node group (no CNI policy: Cilium's operator has its own role)",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("AmazonEKSWorkerNodePolicy"),
                iam.ManagedPolicy.from_aws_managed_policy_name("AmazonEC2ContainerRegistryPullOnly"),
                iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore"),
            ],
        )
        # IMDSv2 only, one hop: pods (which are not on the host network) cannot reach the
        # node's credentials; encrypted gp3 root volume.
        launch_template = ec2.LaunchTemplate(
            self,
            "SystemNodeTemplate",
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        30, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3, delete_on_termination=True
                    ),
                )
            ],
        )
        nodegroup = self.cluster.add_nodegroup_capacity(
            "SystemNodes",
            # No fixed name: InstanceTypes, Subnets, AmiType and CapacityType are create-only, so changing the
            # system instance type replaces the node group, and a replacement under the same name collides and
            # rolls back. CloudFormation generates a unique name instead.
            ami_type=eks.NodegroupAmiType.AL2023_X86_64_STANDARD,
            capacity_type=eks.CapacityType.ON_DEMAND,
            instance_types=[ec2.InstanceType(instance_type)],
            desired_size=desired,
            min_size=minimum,
            max_size=maximum,
            node_role=node_role,
            subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            launch_template_spec=eks.LaunchTemplateSpec(
                id=launch_template.launch_template_id or "",
                version=launch_template.latest_version_number,
            ),
            labels={**dict([SYSTEM_NODE_LABEL]), kn.POOL_LABEL_KEY: SYSTEM_POOL_NAME},
            taints=[
                eks.TaintSpec(key=SYSTEM_TAINT_KEY, value="true", effect=eks.TaintEffect.NO_SCHEDULE),
            ],
            # Unset: EKS takes the latest AMI release of the node group's Kubernetes version when it creates
            # the group or moves it to a new version, and never patches it on its own. Set (from
            # cluster.system_nodes.ami_release_version): a newer release rolls the nodes onto it.
            release_version=ami_release_version,
        )
        # The nodes follow the control plane: without Version a managed node group stays on the version it
        # was created with, and EKS refuses the next control-plane upgrade until the groups match. Version
        # and ReleaseVersion are not create-only (AWS::EKS::Nodegroup schema, cfn-lint), so a change is an
        # in-place UpdateNodegroupVersion: a rolling replacement of the nodes, which EKS cannot roll back.
        # CloudFormation refuses to combine it with other node group changes in one update
        # ("Version and ReleaseVersion updates cannot be combined with other updates").
        # It is updated after the control plane (EKS rejects nodes newer than it): ClusterName is a Ref to
        # the AWS::EKS::Cluster, and CloudFormation updates a resource after those it references.
        cfn_nodegroup: eks.CfnNodegroup = nodegroup.node.default_child  # type: ignore[assignment]
        cfn_nodegroup.version = self.kubernetes_version
        return nodegroup

    # ------------------------------------------------------------------ add-ons

    def _addon(self, name: str, configuration: Mapping | None = None, *, after_nodes: bool = True) -> eks.Addon:
        addon = eks.Addon(
            self,
            "".join(part.capitalize() for part in name.split("-")),
            cluster=self.cluster,
            addon_name=name,
            # The build of the cluster's Kubernetes version: an upgrade updates the add-on too.
            addon_version=versions.eks_addon_version(name, self.kubernetes_version),
            configuration_values=dict(configuration) if configuration else None,
            preserve_on_delete=False,
        )
        # Everything here is code: on a version update, fields someone changed by hand (kubectl edit)
        # take EKS's values instead of failing the update (the default, NONE, fails on any conflict).
        cfn_addon: eks.CfnAddon = addon.node.default_child  # type: ignore[assignment]
        cfn_addon.resolve_conflicts = "OVERWRITE"
        # An add-on build belongs to a Kubernetes version: it is updated after the control plane, which
        # its ClusterName references (a Ref is a CloudFormation dependency, for updates as for creation).
        if after_nodes:
            # Add-ons with Deployments report ACTIVE only once their pods run, which needs nodes
            # (and a CNI).
            addon.node.add_dependency(self.system_nodes)
        return addon

    def _add_addons(self) -> dict[str, eks.Addon]:
        addons = {
            "coredns": self._addon(
                "coredns",
                {"tolerations": [SYSTEM_TOLERATION], "nodeSelector": dict([SYSTEM_NODE_LABEL])},
            ),
        }
        ebs_identity = PodIdentityRole(
            self,
            "EbsCsiIdentity",
            cluster=self.cluster,
            namespace="kube-system",
            service_account="ebs-csi-controller-sa",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AmazonEBSCSIDriverPolicy")
            ],
            description="EBS CSI driver controller",
        )
        ebs = self._addon(
            "aws-ebs-csi-driver",
            {"controller": {"tolerations": [SYSTEM_TOLERATION], "nodeSelector": dict([SYSTEM_NODE_LABEL])}},
        )
        # The controller needs its credentials when its pods are first created.
        ebs.node.add_dependency(ebs_identity)
        addons["aws-ebs-csi-driver"] = ebs

        storage_chart = StorageChart(cdk8s_app(), "storage", cluster_name=self.cluster_name)
        storage = self.cluster.add_cdk8s_chart("Storage", storage_chart)
        # The StorageClass names the EBS CSI provisioner.
        storage.node.add_dependency(ebs)
        return addons



def system_pool(instance_type: str, nodes: int) -> kn.NodePoolSettings:
    """The system node group as a placement pool (label and taint of the node group above)."""
    return kn.node_group_pool(
        SYSTEM_POOL_NAME,
        instance_type,
        nodes=nodes,
        taints=[kn.Taint(key=SYSTEM_TAINT_KEY, value="true", effect="NoSchedule")],
    )
