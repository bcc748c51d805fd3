"""Observability: logs that outlive their pods (a later issue adds metrics here).

Deploy order in this stack (each edge an explicit CloudFormation dependency):
log groups (KMS, retention) + Fluent Bit's Pod Identity association (write to exactly those groups) + the
`logging` namespace with its network policies -> the `fluent-bit` release (a DaemonSet, `wait`).
The stack comes after the cluster stack (its key, its nodes, the Pod Identity agent) and before the Ray and
JupyterHub stacks, so their pods' first lines are shipped. On `make destroy` it goes after them, so their last
lines are shipped too, and before the cluster stack, whose key encrypts the groups: the groups are deleted with
this stack (retained groups would outlive their key and turn unreadable).
"""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk_constructs.helm import pinned_chart
from cdk_constructs.pod_identity import PodIdentityRole
from charts import log_shipping as ls
from charts.k8s import cdk8s_app

LOG_WRITER_SID = "ShipToPlatformLogGroups"


class ObservabilityStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        cluster_name: str,
        encryption_key: kms.IKey,
        retention_days: int,
        team_ray_namespaces: Sequence[str] = (),
        **kwargs,
    ) -> None:
        """``team_ray_namespaces``: the teams' Ray namespaces (charts/ray_teams.py), shipped into the Ray group.
        ``encryption_key``: the cluster stack's logs key (its policy admits CloudWatch Logs for this
        account's log groups). ``retention_days``: one of CloudWatch Logs' retention periods (config.py checks)."""
        super().__init__(scope, construct_id, **kwargs)

        if retention_days not in ls.RETENTION_DAYS_ALLOWED:
            raise ValueError(f"retention_days {retention_days!r} is not one of CloudWatch Logs' periods "
                             f"{list(ls.RETENTION_DAYS_ALLOWED)}")
        self.log_groups: dict[str, logs.LogGroup] = {}
        for namespace, name in ls.log_group_names(cluster_name).items():
            group = logs.LogGroup(
                self,
                f"{namespace.capitalize().replace('hub', 'Hub')}Logs",
                log_group_name=name,
                encryption_key=encryption_key,
                # Deleted with the stack: the key is deleted with the cluster stack right after, and a retained group
                # would be left unreadable (README, Tearing down).
                removal_policy=cdk.RemovalPolicy.DESTROY,
            )
            # The configured days as such (the L2's RetentionDays enum is by name, not by number of days).
            cfn_group: logs.CfnLogGroup = group.node.default_child  # type: ignore[assignment]
            cfn_group.retention_in_days = retention_days
            self.log_groups[namespace] = group

        self.identity = PodIdentityRole(
            self,
            "FluentBitIdentity",
            cluster=cluster,
            namespace=ls.NAMESPACE,
            service_account=ls.SERVICE_ACCOUNT,
            statements=[
                iam.PolicyStatement(
                    sid=LOG_WRITER_SID,
                    # All that the cloudwatch_logs output calls with auto_create_group off (charts/log_shipping.py).
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    # The groups' ARNs (arn:...:log-group:<name>:*), which cover their log streams.
                    resources=[group.log_group_arn for group in self.log_groups.values()],
                )
            ],
            description="Fluent Bit: write the Ray and JupyterHub logs into the platform's log groups",
        )

        self.namespace = eks.KubernetesManifest(
            self, "LogShipping", cluster=cluster, manifest=ls.LogShippingChart(cdk8s_app(), "log-shipping").to_json()
        )

        values = ls.FluentBitValues(
            region=self.region,
            # The names as written (not Refs): readable in dist/, and the dependencies below order the release.
            log_groups=ls.log_group_names(cluster_name),
            team_ray_namespaces=tuple(team_ray_namespaces),
        )
        self.release = pinned_chart(
            self,
            "FluentBit",
            cluster=cluster,
            chart="fluent-bit",
            namespace=ls.NAMESPACE,
            values=values.to_values(),
            # Complete only once a shipper runs on every node: the Ray and JupyterHub stacks come after this one.
            wait=True,
            timeout=cdk.Duration.minutes(10),
        )
        # The namespace (and its Pod Security level and policies) before the pods.
        self.release.node.add_dependency(self.namespace)
        # EKS injects Pod Identity credentials only into pods created after the association.
        self.release.node.add_dependency(self.identity)
        # The groups exist before the first line is sent (Fluent Bit never creates them) and go after it stops.
        for group in self.log_groups.values():
            self.release.node.add_dependency(group)

        for namespace, group in self.log_groups.items():
            cdk.CfnOutput(self, f"{namespace.capitalize()}LogGroup", value=group.log_group_name)
