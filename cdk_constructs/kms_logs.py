"""Let CloudWatch Logs use a KMS key for this account's log groups, and nothing else."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms

# CloudWatch Logs passes the log group's ARN as this encryption context key on every call it
# makes with the key (CloudWatch Logs user guide, "Encrypt log data in CloudWatch Logs using AWS KMS").
LOGS_CONTEXT_KEY = "kms:EncryptionContext:aws:logs:arn"

# What CloudWatch Logs needs to write log events under a key and to read them back.
LOGS_WRITE_ACTIONS = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*")
LOGS_READ_ACTIONS = ("kms:Decrypt",)


def _logs_statement(key: kms.Key, sid: str, actions: tuple[str, ...]) -> iam.PolicyStatement:
    """The regional Logs service, limited to the log groups of this account and region."""
    stack = cdk.Stack.of(key)
    return iam.PolicyStatement(
        sid=sid,
        principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
        actions=list(actions),
        resources=["*"],  # in a key policy, "*" is this key
        conditions={
            "ArnLike": {LOGS_CONTEXT_KEY: f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"}
        },
    )


def allow_cloudwatch_logs(key: kms.Key) -> None:
    """Key policy statement: log groups of this account and region may encrypt their events with ``key``."""
    key.add_to_resource_policy(_logs_statement(key, "CloudWatchLogsOfThisAccount", LOGS_WRITE_ACTIONS))


def allow_cloudwatch_logs_to_read_back(key: kms.Key) -> None:
    """Key policy statement: log groups of this account and region may decrypt, never encrypt, with ``key``.

    For a key that log groups used before they moved to another one: CloudWatch Logs keeps the events ingested
    under the previous key encrypted with it and needs it whenever they are read (CloudWatch Logs API reference,
    AssociateKmsKey and DisassociateKmsKey). The encryption context condition keeps the service to log data: a
    ciphertext made without the ``aws:logs:arn`` context (Kubernetes secrets' data keys) does not decrypt with one.
    """
    key.add_to_resource_policy(_logs_statement(key, "CloudWatchLogsReadBackOnly", LOGS_READ_ACTIONS))
