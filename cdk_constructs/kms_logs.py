"""Let CloudWatch Logs use a KMS key for this account's log groups, and nothing else."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms

# CloudWatch Logs passes the log group's ARN as this encryption context key on every call it
# makes with the key (CloudWatch Logs user guide, "Encrypt log data in CloudWatch Logs using AWS KMS").
LOGS_CONTEXT_KEY = "kms:EncryptionContext:aws:logs:arn"


def allow_cloudwatch_logs(key: kms.Key) -> None:
    """Key policy statement for the regional Logs service, limited to log groups of this account and region."""
    stack = cdk.Stack.of(key)
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="CloudWatchLogsOfThisAccount",
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"],
            resources=["*"],  # in a key policy, "*" is this key
            conditions={
                "ArnLike": {
                    LOGS_CONTEXT_KEY: f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"
                }
            },
        )
    )
