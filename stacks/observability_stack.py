"""Observability: logs that outlive their pods, metrics with dashboards as code, and CloudWatch alarms.

Deploy order in this stack (each edge an explicit CloudFormation dependency):
log groups (KMS, retention) + Fluent Bit's Pod Identity association (write to exactly those groups) + the
`logging` namespace with its network policies -> the `fluent-bit` release (a DaemonSet, `wait`).
With metrics on: the `monitoring` namespace with its network policies -> the `kube-prometheus-stack` release
(its CRDs, `wait`) -> the PodMonitors and the dashboards' ConfigMaps (the monitors are objects of its CRDs).
Alarms (metrics on): an SNS topic (the logs key) <- alarms on the interruption queue, the system node group and
Karpenter's error lines (a metric filter on the Karpenter log group the shipper writes).
The stack comes after the cluster stack (its key, its nodes, the Pod Identity agent) and the Karpenter stack (the
queue its alarms watch), and before the Ray and JupyterHub stacks, so their pods' first lines are shipped and their
first metrics scraped. On `make destroy` it goes after them, so their last lines are shipped too, and before the
cluster stack, whose key encrypts the groups: the groups are deleted with this stack (retained groups would outlive
their key and turn unreadable).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sqs as sqs
from constructs import Construct


from cdk_constructs.helm import pinned_chart
from cdk_constructs.pod_identity import PodIdentityRole
from charts import dashboards
from charts import log_shipping as ls
from charts import metrics as mx
from charts.k8s import cdk8s_app

LOG_WRITER_SID = "ShipToPlatformLogGroups"
# Karpenter's error lines, counted by a metric filter (the alarm's metric).
ALARM_METRIC_NAMESPACE = "DynamicFactory"


@dataclass(frozen=True)
class MetricsDeployment:
    """What the metrics part deploys: the release's values, the Ray namespaces to scrape, the dashboards'
    ConfigMaps (charts/dashboards.py) and who besides the Ray heads may reach Grafana (the hub's proxy)."""

    values: mx.MetricsValues
    ray_namespaces: tuple[str, ...]
    dashboards: tuple[Mapping[str, Any], ...] = ()
    grafana_clients: tuple[tuple[str, Mapping[str, str]], ...] = ()


@dataclass(frozen=True)
class AlarmTargets:
    """The resources the alarms watch (from the cluster and Karpenter stacks) and who is told."""

    emails: tuple[str, ...]
    interruption_queue: sqs.IQueue
    system_nodegroup: eks.Nodegroup


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
        metrics: MetricsDeployment | None = None,
        alarms: AlarmTargets | None = None,
        **kwargs,
    ) -> None:
        """``team_ray_namespaces``: the teams' Ray namespaces (charts/ray_teams.py), shipped into the Ray group.
        ``encryption_key``: the cluster stack's logs key (its policy admits CloudWatch Logs for this
        account's log groups). ``retention_days``: one of CloudWatch Logs' retention periods (config.py checks)."""
        super().__init__(scope, construct_id, **kwargs)
        self._cluster_name = cluster_name

        if retention_days not in ls.RETENTION_DAYS_ALLOWED:
            raise ValueError(f"retention_days {retention_days!r} is not one of CloudWatch Logs' periods "
                             f"{list(ls.RETENTION_DAYS_ALLOWED)}")
        self.log_groups: dict[str, logs.LogGroup] = {}
        group_names = dict(ls.log_group_names(cluster_name))
        if alarms is not None:  # Karpenter's lines, for its error alarm
            group_names["karpenter"] = ls.karpenter_log_group_name(cluster_name)
        for namespace, name in group_names.items():
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
            description="Fluent Bit: write the Ray, JupyterHub (and Karpenter) logs into the platform's log groups",
        )

        self.namespace = eks.KubernetesManifest(
            self, "LogShipping", cluster=cluster, manifest=ls.LogShippingChart(cdk8s_app(), "log-shipping").to_json()
        )

        values = ls.FluentBitValues(
            region=self.region,
            # The names as written (not Refs): readable in dist/, and the dependencies below order the release.
            log_groups=ls.log_group_names(cluster_name),
            team_ray_namespaces=tuple(team_ray_namespaces),
            karpenter_log_group=group_names.get("karpenter"),
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

        self.metrics_release = self._metrics(cluster, metrics) if metrics is not None else None
        self.alarm_topic = self._alarms(cluster_name, encryption_key, alarms) if alarms is not None else None

    # ------------------------------------------------------------------ metrics

    def _metrics(self, cluster: eks.ICluster, metrics: MetricsDeployment) -> eks.HelmChart:
        namespace = eks.KubernetesManifest(
            self, "MonitoringNamespace", cluster=cluster,
            manifest=mx.MonitoringNamespaceChart(cdk8s_app(), "monitoring", ray_namespaces=metrics.ray_namespaces,
                                                 grafana_clients=metrics.grafana_clients).to_json(),
        )
        release = pinned_chart(
            self,
            "Metrics",
            cluster=cluster,
            chart=mx.RELEASE,
            namespace=mx.NAMESPACE,
            values=metrics.values.to_values(),
            # Complete once Prometheus, Grafana and the operator run: the monitors below need the CRDs, and the
            # Ray stack's first metrics are scraped.
            wait=True,
            # Under the kubectl handler's 15-minute Lambda limit, so Helm reports a timeout instead of being killed
            # mid-install (a release left pending-install blocks every later deploy).
            timeout=cdk.Duration.minutes(12),
        )
        # The namespace (its Pod Security level and default-deny policies) before any pod of the release.
        release.node.add_dependency(namespace)
        monitors = eks.KubernetesManifest(
            self, "Monitors", cluster=cluster,
            manifest=mx.MonitorsChart(cdk8s_app(), "monitors", ray_namespaces=metrics.ray_namespaces,
                                      cluster_name=self._cluster_name).to_json(),
        )
        # Objects of the release's CRDs (PodMonitor).
        monitors.node.add_dependency(release)
        if metrics.dashboards:
            # The dashboards' ConfigMaps as a chart asset (charts/dashboards.py says why not inline). The Grafana
            # sidecar picks them up whenever they appear; after the release, in its namespace.
            scratch = tempfile.mkdtemp(prefix="dynamic-factory-dashboards-")
            atexit.register(shutil.rmtree, scratch, ignore_errors=True)  # synthesis copies it into the assembly
            chart_dir = dashboards.write_dashboards_chart(list(metrics.dashboards), Path(scratch))
            self.dashboards = eks.HelmChart(
                self, "Dashboards", cluster=cluster,
                chart_asset=s3_assets.Asset(self, "DashboardsChart", path=str(chart_dir)),
                release=dashboards.DASHBOARDS_CHART, namespace=mx.NAMESPACE, wait=False,
            )
            self.dashboards.node.add_dependency(release)
        cdk.CfnOutput(self, "GrafanaPortForward",
                      value=f"kubectl -n {mx.NAMESPACE} port-forward svc/{mx.GRAFANA_SERVICE} 3000:{mx.GRAFANA_SERVICE_PORT}")
        return release

    # ------------------------------------------------------------------ alarms

    def _alarms(self, cluster_name: str, key: kms.IKey, targets: AlarmTargets):
        from cdk_constructs import alarms as cw

        topic = cw.AlarmTopic(self, "Alarms", emails=targets.emails, key=key, topic_name=f"{cluster_name}-alarms")
        self.alarms = [
            *cw.queue_alarms(self, queue=targets.interruption_queue, action=topic.action),
            cw.LogErrorAlarm(
                self, "KarpenterErrors",
                log_group=self.log_groups["karpenter"],
                filter_pattern=cw.json_level_pattern("ERROR"),
                metric_namespace=f"{ALARM_METRIC_NAMESPACE}/{cluster_name}",
                metric_name="KarpenterErrors",
                action=topic.action,
                description=("The Karpenter controller logged ERROR lines in three 5-minute periods in a row: it may "
                             "be failing to launch nodes (Spot capacity, limits, IAM). Read the log group "
                             f"{ls.karpenter_log_group_name(cluster_name)}."),
            ).alarm,
            cw.NodeGroupCapacityAlarm(
                self, "SystemNodes", cluster_name=cluster_name, nodegroup=targets.system_nodegroup, action=topic.action,
                # The custom resources' Lambda logs into a group encrypted like the others, deleted with the stack.
                log_group=logs.LogGroup(self, "AlarmsCustomResourceLogs", encryption_key=key,
                                        retention=logs.RetentionDays.ONE_MONTH,
                                        removal_policy=cdk.RemovalPolicy.DESTROY),
            ).alarm,
        ]
        cdk.CfnOutput(self, "AlarmTopicArn", value=topic.topic.topic_arn)
        return topic
