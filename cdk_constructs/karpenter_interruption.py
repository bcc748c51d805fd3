"""Karpenter interruption handling: one SQS queue per cluster fed by EventBridge rules.

Karpenter (``settings.interruptionQueue`` = the queue *name*) long-polls this queue and cordons/drains a node
ahead of a Spot interruption, a scheduled AWS Health maintenance, a rebalance recommendation, an instance
state change or a capacity-reservation interruption.

Reference: ``website/content/en/v1.14/getting-started/getting-started-with-karpenter/cloudformation.yaml`` in
aws/karpenter-provider-aws at commit c88abbbad455186e69e30296c595e474123e9bc1 (release v1.14.1); resources
``KarpenterInterruptionQueue``, ``KarpenterInterruptionQueuePolicy`` and the five ``AWS::Events::Rule``s.
(Checked against the v1.14 copy of that file as stored at repository commit
e0834c2bd02ed804561d5748ab92f5c2b8f86d60, the only snapshot available when this was written.)

Matches upstream: queue name = cluster name, 300 s retention, SSE-SQS (not KMS: EventBridge would need key
grants), ``sqs:SendMessage`` for ``events.amazonaws.com`` in the queue policy, a ``Deny sqs:*`` when
``aws:SecureTransport`` is false, and one rule per event kind whose pattern is exactly
``{source: [...], detail-type: [...]}`` (upstream filters neither ``detail`` nor ``resources``).

Deviations (also listed in the report to the lead):
* The send permission is narrower than upstream's, which names ``events.amazonaws.com`` and ``sqs.amazonaws.com``
  with no condition, so that any account's rule (or any SQS feature acting for anyone) could fill the queue
  Karpenter acts on: the confused-deputy problem of the IAM user guide
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/confused-deputy.html). Here only ``events.amazonaws.com`` may
  send, with ``aws:SourceAccount`` = this account and ``aws:SourceArn`` = one of the five rules below (the form
  of the EventBridge user guide, "Using resource-based policies for Amazon EventBridge", Amazon SQS
  permissions: https://docs.aws.amazon.com/eventbridge/latest/userguide/resource-based-policies-eventbridge.html).
  ``sqs.amazonaws.com`` is dropped: no SQS feature sends to this queue (it has no dead-letter source and no
  redrive), and Karpenter itself only receives and deletes, with its own role.
* The rules' targets are bound without the CDK ``SqsQueue`` target, whose ``bind`` adds a statement of its own per
  rule (``sqs:SendMessage``/``GetQueueAttributes``/``GetQueueUrl``, conditioned on the rule's ARN only): the one
  statement above is the whole grant.
* The deny-non-TLS statement comes from ``enforce_ssl=True`` (Principal ``{"AWS": "*"}``, condition value the
  string ``"false"``, no Sid); upstream writes ``Sid: DenyHTTP``, ``Principal: "*"`` and a boolean. Same
  effect. The policy document has no ``Id: EC2InterruptionPolicy`` either (an Id has no effect).
* Rule/target ids and logical ids are CDK-generated rather than upstream's names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import jsii
from aws_cdk import Duration, Stack, Token
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

__all__ = [
    "INTERRUPTION_EVENT_KINDS",
    "INTERRUPTION_QUEUE_RETENTION",
    "InterruptionEventKind",
    "KarpenterInterruptionQueue",
]


@dataclass(frozen=True)
class InterruptionEventKind:
    """One EventBridge event kind Karpenter consumes: the ``source`` and ``detail-type`` to match."""

    construct_id: str
    source: str
    detail_type: str

    @property
    def event_pattern(self) -> dict[str, list[str]]:
        """The EventBridge pattern, in CloudFormation's JSON shape (what the synthesized rule carries)."""
        return {"source": [self.source], "detail-type": [self.detail_type]}


# The event kinds routed to the queue. EXACTLY the rules of Karpenter's reference template:
# aws/karpenter-provider-aws @ c88abbbad455186e69e30296c595e474123e9bc1 (v1.14.1),
# website/content/en/v1.14/getting-started/getting-started-with-karpenter/cloudformation.yaml
# (ScheduledChangeRule, SpotInterruptionRule, RebalanceRule, InstanceStateChangeRule,
# CapacityReservationInterruptionRule). Adding or removing one here changes what tests expect.
INTERRUPTION_EVENT_KINDS: tuple[InterruptionEventKind, ...] = (
    InterruptionEventKind("ScheduledChangeRule", "aws.health", "AWS Health Event"),
    InterruptionEventKind("SpotInterruptionRule", "aws.ec2", "EC2 Spot Instance Interruption Warning"),
    InterruptionEventKind("RebalanceRule", "aws.ec2", "EC2 Instance Rebalance Recommendation"),
    InterruptionEventKind("InstanceStateChangeRule", "aws.ec2", "EC2 Instance State-change Notification"),
    InterruptionEventKind(
        "CapacityReservationInterruptionRule", "aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"
    ),
)

# Upstream's MessageRetentionPeriod: interruption notices are useless after a few minutes.
INTERRUPTION_QUEUE_RETENTION = Duration.seconds(300)

_SQS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
SEND_SID = "InterruptionRulesOfThisAccount"


@jsii.implements(events.IRuleTarget)
class _QueueTarget:
    """A rule target that names the queue and grants nothing: the queue policy holds the one send grant.

    (aws-cdk-lib's ``aws_events_targets.SqsQueue.bind`` adds a grant per rule to the queue policy.)"""

    def __init__(self, queue: sqs.IQueue) -> None:
        self._queue = queue

    def bind(self, _rule: events.IRuleRef, _id: str | None = None) -> events.RuleTargetConfig:
        return events.RuleTargetConfig(arn=self._queue.queue_arn)


class KarpenterInterruptionQueue(Construct):
    """SQS queue + EventBridge rules for Karpenter's interruption handling.

    :param queue_name: the queue's name; Karpenter's convention (and the lead's wiring) is the cluster name.
        Pass it to the Karpenter chart as ``settings.interruptionQueue``.

    Attributes: ``queue`` (:class:`aws_sqs.Queue`), ``rules`` (detail-type → :class:`aws_events.Rule`, in
    :data:`INTERRUPTION_EVENT_KINDS` order), ``queue_name`` (the literal name).
    """

    def __init__(self, scope: Construct, construct_id: str, *, queue_name: str) -> None:
        super().__init__(scope, construct_id)
        if not Token.is_unresolved(queue_name) and not _SQS_NAME.match(queue_name):
            raise ValueError(
                f"queue_name {queue_name!r}: an SQS queue name is 1-80 characters of A-Z a-z 0-9 - _"
            )
        self.queue_name = queue_name

        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=queue_name,
            retention_period=INTERRUPTION_QUEUE_RETENTION,
            # SSE-SQS: EventBridge can deliver without KMS grants (DESIGN.md: SSE-SQS, not KMS-managed).
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            # Adds the upstream "DenyHTTP" statement: Deny sqs:* unless aws:SecureTransport.
            enforce_ssl=True,
        )
        rules: dict[str, events.Rule] = {}
        for kind in INTERRUPTION_EVENT_KINDS:
            rule = events.Rule(
                self,
                kind.construct_id,
                description=f"Karpenter interruption handling: {kind.detail_type} ({kind.source}) to SQS",
                event_pattern=events.EventPattern(source=[kind.source], detail_type=[kind.detail_type]),
            )
            rule.add_target(_QueueTarget(self.queue))
            rules[kind.detail_type] = rule
        self.rules: Mapping[str, events.Rule] = rules

        # Upstream KarpenterInterruptionQueuePolicy statement 1, narrowed (module docstring): EventBridge may send
        # for these rules of this account only. No cycle: the policy refers to the rules, the rules to the queue.
        self.queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid=SEND_SID,
                effect=iam.Effect.ALLOW,
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[self.queue.queue_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": Stack.of(self).account},
                    "ArnEquals": {"aws:SourceArn": [rule.rule_arn for rule in rules.values()]},
                },
            )
        )
