"""CloudWatch alarms for the platform, and the SNS topic that mails them to people.

No agent runs for any of this: every alarm watches a metric an AWS service already publishes (SQS, Auto Scaling,
CodeBuild) or one a CloudWatch Logs metric filter derives from the log groups Fluent Bit already ships to. Each
alarm notifies on ALARM and on OK, and its description says what it means and what to look at first.

Every AWS-published metric used here is in :data:`AWS_METRICS`, with the dimension names its documentation gives
and the page it comes from; :func:`_aws_metric` refuses any other, and ``tests/support/alarms.py`` checks the
synthesized alarms against the same list (metric, dimensions, a real resource behind each dimension value, an SNS
action).

The one piece that needs an API call at deploy time is :class:`NodeGroupCapacityAlarm`: an EKS managed node group's
Auto Scaling group is created by EKS (it is in no template), and it publishes group metrics only once metrics
collection is switched on for it. Two ``AwsCustomResource`` calls find the group's name and switch collection on;
their handler is the Node.js code aws-cdk-lib ships inside its own package (``custom-resource-handlers``), so synth
needs no Docker and no download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import custom_resources as cr
from constructs import Construct

from cdk_constructs.karpenter_interruption import INTERRUPTION_QUEUE_RETENTION

__all__ = [
    "AWS_METRICS",
    "AlarmTopic",
    "AwsMetric",
    "LogErrorAlarm",
    "NodeGroupCapacityAlarm",
    "build_failure_alarm",
    "json_level_pattern",
    "queue_alarms",
]

# --------------------------------------------------------------------------- the reviewed metric list

SQS_METRICS_DOC = (
    "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html"
)
ASG_METRICS_DOC = "https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-metrics.html"
CODEBUILD_METRICS_DOC = "https://docs.aws.amazon.com/codebuild/latest/userguide/cloudwatch_metrics-codebuild.html"
CODEBUILD_DIMENSIONS_DOC = "https://docs.aws.amazon.com/codebuild/latest/userguide/codebuild-cloudwatch-dimensions.html"


@dataclass(frozen=True)
class AwsMetric:
    """A metric an AWS service publishes: namespace, name, the exact dimension names of the series we alarm on,
    and the documentation page that lists them."""

    namespace: str
    metric_name: str
    dimensions: tuple[str, ...]
    doc: str


AWS_METRICS: tuple[AwsMetric, ...] = (
    # "Available CloudWatch metrics for Amazon SQS": AWS/SQS; "The only dimension that Amazon SQS sends to
    # CloudWatch is QueueName". The age is reported only while the queue holds at least one message.
    AwsMetric("AWS/SQS", "ApproximateAgeOfOldestMessage", ("QueueName",), SQS_METRICS_DOC),
    AwsMetric("AWS/SQS", "ApproximateNumberOfMessagesVisible", ("QueueName",), SQS_METRICS_DOC),
    # "Amazon CloudWatch metrics for Amazon EC2 Auto Scaling", Auto Scaling group metrics: reported only while
    # metrics collection is enabled for the group, one-minute granularity, no charge; dimension AutoScalingGroupName.
    AwsMetric("AWS/AutoScaling", "GroupDesiredCapacity", ("AutoScalingGroupName",), ASG_METRICS_DOC),
    AwsMetric("AWS/AutoScaling", "GroupInServiceInstances", ("AutoScalingGroupName",), ASG_METRICS_DOC),
    # "CodeBuild CloudWatch metrics": FailedBuilds, "builds that failed because of client error or a timeout",
    # statistic Sum; per project through the ProjectName dimension ("CodeBuild CloudWatch dimensions",
    # CODEBUILD_DIMENSIONS_DOC).
    AwsMetric("AWS/CodeBuild", "FailedBuilds", ("ProjectName",), CODEBUILD_METRICS_DOC),
)


def _aws_metric(
    namespace: str, metric_name: str, dimensions: dict[str, str], *, statistic: str, period: cdk.Duration
) -> cloudwatch.Metric:
    """A metric of :data:`AWS_METRICS` with exactly its documented dimensions (anything else is a bug here)."""
    spec = next((m for m in AWS_METRICS if (m.namespace, m.metric_name) == (namespace, metric_name)), None)
    if spec is None:
        raise ValueError(f"{namespace}/{metric_name} is not in AWS_METRICS: review it against the AWS docs first")
    if set(dimensions) != set(spec.dimensions):
        raise ValueError(
            f"{namespace}/{metric_name} takes dimensions {list(spec.dimensions)}, not {sorted(dimensions)}"
        )
    return cloudwatch.Metric(
        namespace=namespace, metric_name=metric_name, dimensions_map=dimensions, statistic=statistic, period=period
    )


def _notify(alarm: cloudwatch.Alarm, action: cloudwatch.IAlarmAction) -> cloudwatch.Alarm:
    """People hear when it breaks and when it is fixed."""
    alarm.add_alarm_action(action)
    alarm.add_ok_action(action)
    return alarm


# --------------------------------------------------------------------------- the topic

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CLOUDWATCH_PRINCIPAL = "cloudwatch.amazonaws.com"
KEY_SID = "CloudWatchAlarmsOfThisAccount"
PUBLISH_SID = "CloudWatchAlarmsOfThisAccountPublish"


class AlarmTopic(Construct):
    """The SNS topic every alarm notifies, encrypted with ``key``, with one e-mail subscription per address.

    Why a customer-managed key: CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed
    ``alias/aws/sns`` key (its policy cannot be edited to admit them); a customer-managed key whose policy lets
    ``cloudwatch.amazonaws.com`` call ``kms:GenerateDataKey*`` and ``kms:Decrypt`` is the documented fix (Amazon SNS
    developer guide, "Enable compatibility between event sources from AWS services and encrypted topics":
    https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services).
    ``key`` must be a key this app owns (``kms.Key``): the statement is added to its policy, and an imported key's
    policy cannot be changed from here (that raises, rather than leaving notifications to fail at the first alarm).

    The topic policy's grant to CloudWatch carries ``aws:SourceAccount`` = this account and ``aws:SourceArn`` like
    ``arn:<partition>:cloudwatch:<region>:<account>:alarm:*``: only alarms of this account and region may publish,
    the confused-deputy guard (https://docs.aws.amazon.com/IAM/latest/UserGuide/confused-deputy.html) in the form
    the SNS developer guide gives for CloudWatch alarms ("Example cases for Amazon SNS access control":
    https://docs.aws.amazon.com/sns/latest/dg/sns-access-policy-use-cases.html). The alarm names are not fixed
    (CloudFormation names them, in several stacks), so the ARN pattern ends in ``alarm:*``.
    The key statement has no condition, as on the SNS key-management page: no AWS page we found says which source
    keys CloudWatch passes to KMS, and a wrong guess fails every notification with only a line in the alarm's
    history ("CloudWatch Alarms does not have authorization to access the SNS topic encryption key", AWS re:Post
    knowledge center, https://repost.aws/knowledge-center/cloudwatch-configure-alarm-sns). Test the path once per
    account after the first deploy: ``aws cloudwatch set-alarm-state --alarm-name <any of these alarms>
    --state-value ALARM --state-reason test`` must bring a mail.
    The topic policy also denies every request made without TLS (``enforce_ssl``). Its only Allow is CloudWatch's
    publish: other principals of the account publish only if their own IAM policies say so.

    ``emails``: from the config; an empty list gives a topic with no subscription (alarms still change state and are
    visible in the console). Each address receives a confirmation mail from SNS and gets nothing until it confirms.
    Subscriptions are keyed by address, so adding or removing one address leaves the others (and their
    confirmations) alone.

    Attributes: ``topic`` (:class:`aws_sns.Topic`), ``action`` (:class:`aws_cloudwatch_actions.SnsAction`, what
    the alarm helpers of this module take).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        emails: Sequence[str],
        key: kms.IKey,
        topic_name: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        bad = [e for e in emails if not isinstance(e, str) or not _EMAIL.match(e)]
        if bad:
            raise ValueError(f"emails: {bad!r} are not e-mail addresses")
        lowered = [e.lower() for e in emails]
        duplicates = sorted({e for e in lowered if lowered.count(e) > 1})
        if duplicates:
            raise ValueError(f"emails: {duplicates!r} appear more than once")

        stack = cdk.Stack.of(self)
        alarms_of_this_account = {
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {"aws:SourceArn": f"arn:{stack.partition}:cloudwatch:{stack.region}:{stack.account}:alarm:*"},
        }
        added = key.add_to_resource_policy(
            iam.PolicyStatement(
                sid=KEY_SID,
                principals=[iam.ServicePrincipal(CLOUDWATCH_PRINCIPAL)],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
                # No condition: the SNS guide's statement has none, and no AWS page says which source keys
                # CloudWatch passes to KMS; a condition it does not satisfy would fail every notification silently.
                # The topic policy below limits who may publish; the key only encrypts what reaches the topic.
            )
        )
        if not added.statement_added:
            raise ValueError(
                "key: its policy cannot be changed from this app (an imported key?); CloudWatch alarms need "
                f"kms:Decrypt and kms:GenerateDataKey* on it ({KEY_SID})"
            )

        self.topic = sns.Topic(self, "Topic", topic_name=topic_name, master_key=key, enforce_ssl=True)
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid=PUBLISH_SID,
                principals=[iam.ServicePrincipal(CLOUDWATCH_PRINCIPAL)],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions=alarms_of_this_account,
            )
        )
        for address in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(address))
        self.action = cw_actions.SnsAction(self.topic)


# --------------------------------------------------------------------------- Karpenter's interruption queue

QUEUE_PERIOD = cdk.Duration.minutes(5)
QUEUE_EVALUATION_PERIODS = 3


def queue_alarms(
    scope: Construct,
    *,
    queue: sqs.IQueue,
    action: cloudwatch.IAlarmAction,
    max_age_seconds: int = 120,
    max_visible: int = 100,
) -> list[cloudwatch.Alarm]:
    """Two alarms on Karpenter's interruption queue: messages not drained (age) and piling up (depth).

    Karpenter long-polls this queue all the time and deletes each notice once it has acted on it, so a healthy
    queue holds messages for seconds. Both alarms look at the Maximum over 5-minute periods and fire after 3
    periods in a row (15 minutes), so a burst of Spot warnings during a reclaim wave does not page anyone.

    ``max_age_seconds`` must stay below the queue's retention (300 s, ``INTERRUPTION_QUEUE_RETENTION``): SQS drops
    a message at that age, so the oldest message can never be older and a threshold at or above it never fires.
    The default, 120 s, is the whole warning a Spot interruption gives: a notice that old was acted on too late.

    Missing data is not breaching: SQS publishes a queue's metrics while the queue is active, i.e. for up to six
    hours after it held a message or any API call touched it ("Monitoring Amazon SQS queues using CloudWatch"),
    and Karpenter's polling keeps it active. ApproximateAgeOfOldestMessage is reported only while the queue holds
    at least one message, so an empty queue (the normal case) has no age data, and that is good news.
    """
    retention = int(INTERRUPTION_QUEUE_RETENTION.to_seconds())
    if not 0 < max_age_seconds < retention:
        raise ValueError(
            f"max_age_seconds {max_age_seconds}: must be between 1 and {retention - 1} "
            f"(the interruption queue drops messages after {retention} s)"
        )
    if max_visible < 1:
        raise ValueError(f"max_visible {max_visible}: must be at least 1")

    # https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html
    age = _aws_metric(
        "AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": queue.queue_name},
        statistic="Maximum", period=QUEUE_PERIOD,
    )
    # https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html
    visible = _aws_metric(
        "AWS/SQS", "ApproximateNumberOfMessagesVisible", {"QueueName": queue.queue_name},
        statistic="Maximum", period=QUEUE_PERIOD,
    )
    age_alarm = cloudwatch.Alarm(
        scope,
        "InterruptionQueueOldestMessageAlarm",
        metric=age,
        threshold=max_age_seconds,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=QUEUE_EVALUATION_PERIODS,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        alarm_description=(
            f"Karpenter is not draining its interruption queue: the oldest message has been older than "
            f"{max_age_seconds} s for 15 minutes, so Spot interruptions and maintenance events are not handled "
            "before the instances go. First check: the karpenter pods in kube-system (running? "
            "'kubectl logs' for SQS or AccessDenied errors) and that settings.interruptionQueue names this queue."
        ),
    )
    depth_alarm = cloudwatch.Alarm(
        scope,
        "InterruptionQueueDepthAlarm",
        metric=visible,
        threshold=max_visible,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=QUEUE_EVALUATION_PERIODS,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        alarm_description=(
            f"More than {max_visible} interruption notices have waited in Karpenter's queue for 15 minutes: "
            "Karpenter is not keeping up (or not reading). First check: the karpenter pods and their logs; then "
            "the EventBridge rules feeding the queue (a rule matching far more events than interruptions)."
        ),
    )
    return [_notify(age_alarm, action), _notify(depth_alarm, action)]


# --------------------------------------------------------------------------- errors in a log group

LOG_PERIOD = cdk.Duration.minutes(5)


def json_level_pattern(level: str = "ERROR") -> logs.IFilterPattern:
    """``{ $.level = "ERROR" }``: JSON log events whose top-level ``level`` field is ``level``.

    Karpenter's controller logs one JSON object per line with ``"level":"ERROR"`` for errors; Fluent Bit ships each
    container line's JSON as the event message, so the pattern matches the event itself.
    """
    if not re.fullmatch(r"[A-Za-z]+", level):
        raise ValueError(f"level {level!r}: a log level is letters only")
    return logs.FilterPattern.string_value("$.level", "=", level)


class LogErrorAlarm(Construct):
    """A metric filter that counts matching log events, and an alarm on that count.

    The filter emits 1 per matching event and 0 for every other event (``default_value``), so the series has data
    whenever the group receives logs, errors or not. The alarm takes the Sum per 5 minutes and fires when it is at
    least ``threshold`` in ``evaluation_periods`` periods in a row (default: errors in each of 3 periods, 15
    minutes): one stray error is noise, errors that keep coming are a fault. Missing data (the group received no
    events at all) is not breaching: no logs is not an error, and a silent log shipper is another alarm's concern.

    ``metric_namespace``/``metric_name``: the custom metric the filter publishes (e.g. ``DynamicFactory`` /
    ``KarpenterErrors``); one metric, no dimensions, billed as one custom metric.
    ``description``: what the errors mean and what to check first (it becomes the alarm description).

    Attributes: ``metric_filter``, ``alarm``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        log_group: logs.ILogGroup,
        filter_pattern: logs.IFilterPattern,
        metric_namespace: str,
        metric_name: str,
        action: cloudwatch.IAlarmAction,
        description: str,
        threshold: int = 1,
        evaluation_periods: int = 3,
    ) -> None:
        super().__init__(scope, construct_id)
        if metric_namespace.startswith("AWS/"):
            raise ValueError(f"metric_namespace {metric_namespace!r}: the AWS/ prefix is reserved for AWS services")
        if threshold < 1 or evaluation_periods < 1:
            raise ValueError("threshold and evaluation_periods must be at least 1")
        if not description.strip():
            raise ValueError("description: say what the errors mean and what to check first")

        self.metric_filter = logs.MetricFilter(
            self,
            "Filter",
            log_group=log_group,
            filter_pattern=filter_pattern,
            metric_namespace=metric_namespace,
            metric_name=metric_name,
            metric_value="1",
            default_value=0,
        )
        self.alarm = cloudwatch.Alarm(
            self,
            "Alarm",
            metric=self.metric_filter.metric(statistic="Sum", period=LOG_PERIOD),
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=evaluation_periods,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        _notify(self.alarm, action)


# --------------------------------------------------------------------------- a managed node group below desired

ASG_DESCRIBE_PATH = "nodegroup.resources.autoScalingGroups.0.name"
ASG_METRICS = ("GroupDesiredCapacity", "GroupInServiceInstances")
CAPACITY_PERIOD = cdk.Duration.minutes(1)
# EKS names the Auto Scaling groups of managed node groups eks-<node group name>-<uuid>: its service-linked role
# may act only on autoScalingGroupName/eks-* (AWS managed policy reference, AWSServiceRoleForAmazonEKSNodegroup:
# https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSServiceRoleForAmazonEKSNodegroup.html).
EKS_ASG_NAME_PATTERN = "eks-*"
# The tags EKS puts on a managed node group's Auto Scaling group (the same policy lets EKS set exactly these keys,
# and EKS's own statements select its resources by them). Enable/DisableMetricsCollection take both
# aws:ResourceTag/${TagKey} and autoscaling:ResourceTag/${TagKey} on the autoScalingGroup resource type (Service
# Authorization Reference, Amazon EC2 Auto Scaling:
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2autoscaling.html).
EKS_CLUSTER_TAG = "eks:cluster-name"
EKS_NODEGROUP_TAG = "eks:nodegroup-name"


class NodeGroupCapacityAlarm(Construct):
    """"System node count below desired": an alarm on an EKS managed node group's Auto Scaling group.

    EKS creates the group (it is in no template) and the group publishes ``GroupDesiredCapacity`` and
    ``GroupInServiceInstances`` only while metrics collection is enabled for it (Auto Scaling user guide,
    "Amazon CloudWatch metrics for Amazon EC2 Auto Scaling"; free, one-minute granularity). So, at deploy time:

    1. ``DescribeNodegroup`` (``eks:DescribeNodegroup`` on this node group's ARN only) reads the group's name,
       ``nodegroup.resources.autoScalingGroups.0.name``. It runs again whenever the node group name changes (a
       replaced node group has a new name and a new Auto Scaling group).
    2. ``EnableMetricsCollection`` (1Minute, the two metrics) on that name; it runs again when the name changes.
       When it is removed (or replaced), ``DisableMetricsCollection`` switches collection off, ignoring a group
       that is already gone (``ValidationError``) or no longer carries this node group's tags (``AccessDenied``):
       neither should fail a deletion over metrics of a group that is on its way out.
       IAM: both calls only on ``autoScalingGroupName/eks-*`` groups tagged ``eks:cluster-name`` = ``cluster_name``;
       enabling also requires ``eks:nodegroup-name`` = this node group. Disabling checks the cluster tag only: the
       group it switches off after a replacement carries the previous node group's name.

    The alarm: metric math ``desired - inService`` over 1-minute periods, ALARM when it is above 0 in each of
    ``evaluation_periods`` minutes in a row (default 10). A new instance is InService within a few minutes of
    launch, so a gap that lasts 10 minutes is capacity EKS could not get (instance capacity, subnet addresses,
    launch template, quota), not a rolling update or a scale-out in progress; 3 minutes would page on both.
    Missing data is kept as missing and notified through INSUFFICIENT_DATA: it means the group stopped reporting
    (metrics collection switched off, or the group replaced behind CloudFormation's back), and the alarm cannot
    see the nodes. Treating it as breaching would also page once at every creation of the alarm, before the first
    datapoint arrives.

    ``nodegroup``: the ``aws_eks_v2.Nodegroup`` or its ``CfnNodegroup``; or pass ``nodegroup_name`` and
    ``nodegroup_arn`` (tokens) instead. ``cluster_name``: the cluster the node group belongs to (the tag value).

    Attributes: ``alarm``, ``auto_scaling_group_name`` (a token: the custom resource's response).
    The ``AwsCustomResource`` singleton Lambda is shared by the whole stack and so is its role: these two
    statements join any other ``AwsCustomResource`` policy of the stack on that role.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        action: cloudwatch.IAlarmAction,
        nodegroup: eks.Nodegroup | eks.CfnNodegroup | None = None,
        nodegroup_name: str | None = None,
        nodegroup_arn: str | None = None,
        evaluation_periods: int = 10,
        log_group: logs.ILogGroup | None = None,
    ) -> None:
        """``log_group``: where the custom resources' Lambda writes (pass an encrypted group that goes with the
        stack; None: the one aws-cdk-lib makes, unencrypted and retained after the stack)."""
        super().__init__(scope, construct_id)
        if nodegroup is not None:
            if nodegroup_name is not None or nodegroup_arn is not None:
                raise ValueError("pass either nodegroup or nodegroup_name + nodegroup_arn, not both")
            if isinstance(nodegroup, eks.CfnNodegroup):
                nodegroup_name, nodegroup_arn = nodegroup.attr_nodegroup_name, nodegroup.attr_arn
            elif isinstance(nodegroup, eks.Nodegroup):
                nodegroup_name, nodegroup_arn = nodegroup.nodegroup_name, nodegroup.nodegroup_arn
            else:
                raise TypeError(f"nodegroup: expected aws_eks_v2.Nodegroup or CfnNodegroup, got {type(nodegroup)}")
        if not nodegroup_name or not nodegroup_arn:
            raise ValueError("nodegroup_name and nodegroup_arn are both required without nodegroup")
        if not 1 <= evaluation_periods <= 60:
            raise ValueError(f"evaluation_periods {evaluation_periods}: 1 to 60 one-minute periods")

        describe_call = cr.AwsSdkCall(
            service="@aws-sdk/client-eks",
            action="DescribeNodegroup",
            parameters={"clusterName": cluster_name, "nodegroupName": nodegroup_name},
            physical_resource_id=cr.PhysicalResourceId.of(nodegroup_name),
            output_paths=[ASG_DESCRIBE_PATH],
        )
        describe = cr.AwsCustomResource(
            self,
            "AutoScalingGroup",
            resource_type="Custom::EksNodegroupAutoScalingGroup",
            on_create=describe_call,
            on_update=describe_call,
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [iam.PolicyStatement(actions=["eks:DescribeNodegroup"], resources=[nodegroup_arn])]
            ),
            install_latest_aws_sdk=False,
            log_group=log_group,
        )
        self.auto_scaling_group_name = describe.get_response_field(ASG_DESCRIBE_PATH)

        stack = cdk.Stack.of(self)
        eks_groups = stack.format_arn(
            service="autoscaling",
            resource="autoScalingGroup",
            resource_name=f"*:autoScalingGroupName/{EKS_ASG_NAME_PATTERN}",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        enable_call = cr.AwsSdkCall(
            service="@aws-sdk/client-auto-scaling",
            action="EnableMetricsCollection",
            parameters={
                "AutoScalingGroupName": self.auto_scaling_group_name,
                "Granularity": "1Minute",
                "Metrics": list(ASG_METRICS),
            },
            physical_resource_id=cr.PhysicalResourceId.of(self.auto_scaling_group_name),
        )
        collection = cr.AwsCustomResource(
            self,
            "MetricsCollection",
            resource_type="Custom::AutoScalingGroupMetricsCollection",
            on_create=enable_call,
            on_update=enable_call,
            on_delete=cr.AwsSdkCall(
                service="@aws-sdk/client-auto-scaling",
                action="DisableMetricsCollection",
                parameters={"AutoScalingGroupName": self.auto_scaling_group_name, "Metrics": list(ASG_METRICS)},
                ignore_error_codes_matching="^(ValidationError|AccessDenied)$",
            ),
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [
                    iam.PolicyStatement(
                        actions=["autoscaling:EnableMetricsCollection"],
                        resources=[eks_groups],
                        conditions={
                            "StringEquals": {
                                f"aws:ResourceTag/{EKS_CLUSTER_TAG}": cluster_name,
                                f"aws:ResourceTag/{EKS_NODEGROUP_TAG}": nodegroup_name,
                            }
                        },
                    ),
                    iam.PolicyStatement(
                        actions=["autoscaling:DisableMetricsCollection"],
                        resources=[eks_groups],
                        conditions={"StringEquals": {f"aws:ResourceTag/{EKS_CLUSTER_TAG}": cluster_name}},
                    ),
                ]
            ),
            install_latest_aws_sdk=False,
            log_group=log_group,
        )

        group = {"AutoScalingGroupName": self.auto_scaling_group_name}
        # https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-metrics.html (group metrics)
        desired = _aws_metric("AWS/AutoScaling", "GroupDesiredCapacity", group,
                              statistic="Average", period=CAPACITY_PERIOD)
        # https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-metrics.html (group metrics)
        in_service = _aws_metric("AWS/AutoScaling", "GroupInServiceInstances", group,
                                 statistic="Average", period=CAPACITY_PERIOD)
        missing = cloudwatch.MathExpression(
            expression="desired - inService",
            using_metrics={"desired": desired, "inService": in_service},
            label="Nodes below desired",
            period=CAPACITY_PERIOD,
        )
        self.alarm = cloudwatch.Alarm(
            self,
            "Alarm",
            metric=missing,
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=evaluation_periods,
            treat_missing_data=cloudwatch.TreatMissingData.MISSING,
            alarm_description=(
                f"The system node group has had fewer InService instances than desired for {evaluation_periods} "
                "minutes: system pods (CoreDNS, Cilium operator, Karpenter, the hub) may be unschedulable. First "
                "check: the Auto Scaling group's Activity history (InsufficientInstanceCapacity, subnet out of "
                "addresses, launch template errors) and 'aws eks describe-nodegroup' health issues. "
                "INSUFFICIENT_DATA means the group stopped publishing metrics (collection off or group replaced)."
            ),
        )
        # The group publishes its metrics only after collection is on: create the alarm after that.
        self.alarm.node.add_dependency(collection)
        _notify(self.alarm, action)
        self.alarm.add_insufficient_data_action(action)


# --------------------------------------------------------------------------- the validation job

BUILD_PERIOD = cdk.Duration.minutes(5)


def build_failure_alarm(
    scope: Construct, construct_id: str, *, project: codebuild.IProject, action: cloudwatch.IAlarmAction
) -> cloudwatch.Alarm:
    """ALARM when a run of the validation job (the CodeBuild project that runs the XGBoost job on the cluster)
    fails: FailedBuilds Sum >= 1 in a 5-minute period.

    One period is enough: every failed run is worth a look. Missing data (no build finished in the period, the
    usual case) is not breaching, so the alarm returns to OK 5 minutes after the failure: the OK mail says no
    further run failed, not that the job was fixed (the description says so).
    """
    # https://docs.aws.amazon.com/codebuild/latest/userguide/cloudwatch_metrics-codebuild.html
    failed = _aws_metric("AWS/CodeBuild", "FailedBuilds", {"ProjectName": project.project_name},
                         statistic="Sum", period=BUILD_PERIOD)
    alarm = cloudwatch.Alarm(
        scope,
        construct_id,
        metric=failed,
        threshold=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        alarm_description=(
            "A run of the validation job (XGBoost on Ray against the cluster) failed or timed out. First check: "
            "the build's log in CodeBuild (which step failed: kubeconfig, Ray head not ready, job submission, the "
            "job's metric). OK 5 minutes later only means no further run failed; rerun the job to confirm a fix."
        ),
    )
    return _notify(alarm, action)
