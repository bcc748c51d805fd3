"""Reusable CDK constructs of Dynamic Factory (named so it does not shadow the CDK's own ``constructs``)."""

from cdk_constructs.karpenter_iam import (
    CONTROLLER_POLICY_NAMES,
    NODE_ROLE_MANAGED_POLICIES,
    PRICING_API_REGIONS,
    KarpenterControllerRole,
    KarpenterNodeRole,
    controller_policy_statements,
)
from cdk_constructs.karpenter_interruption import (
    INTERRUPTION_EVENT_KINDS,
    INTERRUPTION_QUEUE_RETENTION,
    InterruptionEventKind,
    KarpenterInterruptionQueue,
)
