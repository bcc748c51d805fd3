"""S3 storage for Ray checkpoints and results, and the Pod Identity role the Ray pods use to reach it.

Choices (and why):

* **Encryption: SSE-S3** (``S3_MANAGED``). Checkpoints are not more sensitive than the cluster's other data at
  rest, and SSE-S3 keeps the Ray role S3-only (SSE-KMS would add ``kms:Decrypt`` / ``kms:GenerateDataKey`` grants
  and a KMS request per object). The access-log bucket must use SSE-S3 anyway (S3 log delivery does not write to
  SSE-KMS buckets).
* **TLS only** (``enforce_ssl``: a bucket-policy ``Deny`` on ``aws:SecureTransport = false``) and **all public
  access blocked** on both buckets; ACLs disabled (bucket-owner-enforced ownership).
* **Lifecycle**: objects expire after ``expire_after_days``, incomplete multipart uploads are aborted after one
  day; with ``versioned=True`` noncurrent versions expire after ``noncurrent_version_expiration_days`` and
  orphaned delete markers are removed. The log bucket expires logs after ``access_log_retention_days``.
* **Server access logs** go to a separate bucket (prefix ``ray-checkpoints/``), written through a bucket policy
  for the S3 logging service (CDK's default under ``@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy``), so the log
  bucket needs no ACLs. The log bucket itself has no access logging (logging it would need a third bucket):
  cdk-nag's ``AwsSolutions-S1`` on it must be acknowledged with that reason.
* **Removal: RETAIN** by default for both buckets. Checkpoints and results are data that outlives a stack, and
  ``auto_delete_objects`` would add a custom-resource Lambda (and delete data on a mistaken ``cdk destroy``).
  ``RemovalPolicy.DESTROY`` may be passed for throw-away environments: CloudFormation then deletes the buckets
  only when they are empty.
* **IAM**: a :class:`~cdk_constructs.pod_identity.PodIdentityRole` for ``namespace/service_account`` allowed
  exactly ``s3:ListBucket`` on the bucket and ``s3:GetObject`` / ``s3:PutObject`` / ``s3:DeleteObject`` on its
  objects: no wildcard action, no other resource. (Multipart uploads are covered by ``s3:PutObject``; failed ones
  are cleaned up by the lifecycle rule.)
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk_constructs.pod_identity import PodIdentityRole

__all__ = ["ACCESS_LOG_PREFIX", "OBJECT_ACTIONS", "LIST_ACTIONS", "RayStorage"]

ACCESS_LOG_PREFIX = "ray-checkpoints/"
LIST_ACTIONS = ("s3:ListBucket",)
OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")


def _positive_days(name: str, value: object, problems: list[str], *, maximum: int = 36500) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        problems.append(f"{name} {value!r} must be an integer number of days from 1 to {maximum}")


class RayStorage(Construct):
    """Checkpoint/result bucket + access-log bucket + the Ray pods' Pod Identity role.

    :param cluster: the EKS cluster (an imported ``ICluster`` is fine) whose pods get the role.
    :param namespace / service_account: the Kubernetes service account bound to the role (``ray/ray``).
    :param expire_after_days: current objects expire after this many days.
    :param versioned: keep old object versions (for ``noncurrent_version_expiration_days``).
    :param access_log_retention_days: server access logs expire after this many days.
    :param removal_policy: of both buckets; RETAIN by default (see the module docstring).

    Exposes ``bucket``, ``access_log_bucket``, ``role``, ``association`` (``CfnPodIdentityAssociation``) and
    ``policy``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        namespace: str = "ray",
        service_account: str = "ray",
        expire_after_days: int = 90,
        versioned: bool = False,
        noncurrent_version_expiration_days: int = 7,
        access_log_retention_days: int = 90,
        removal_policy: cdk.RemovalPolicy = cdk.RemovalPolicy.RETAIN,
    ) -> None:
        super().__init__(scope, construct_id)
        problems: list[str] = []
        _positive_days("expire_after_days", expire_after_days, problems)
        _positive_days("noncurrent_version_expiration_days", noncurrent_version_expiration_days, problems)
        _positive_days("access_log_retention_days", access_log_retention_days, problems)
        for name, value in (("namespace", namespace), ("service_account", service_account)):
            if not isinstance(value, str) or not value:
                problems.append(f"{name} must be a non-empty string")
        if not isinstance(versioned, bool):
            problems.append(f"versioned {versioned!r} must be a bool")
        if problems:
            raise ValueError("RayStorage: " + "; ".join(problems))

        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # log delivery requires SSE-S3
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=False,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=cdk.Duration.days(access_log_retention_days),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                )
            ],
            removal_policy=removal_policy,
        )

        rules = [
            s3.LifecycleRule(
                id="expire-objects",
                expiration=cdk.Duration.days(expire_after_days),
                abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
            )
        ]
        if versioned:
            rules.append(
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=cdk.Duration.days(noncurrent_version_expiration_days),
                    expired_object_delete_marker=True,
                )
            )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=versioned,
            lifecycle_rules=rules,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix=ACCESS_LOG_PREFIX,
            removal_policy=removal_policy,
        )

        self.pod_identity = PodIdentityRole(
            self,
            "PodIdentity",
            cluster=cluster,
            namespace=namespace,
            service_account=service_account,
            description=f"Ray pods ({namespace}/{service_account}): read/write the checkpoint bucket only",
            statements=[
                iam.PolicyStatement(
                    sid="ListCheckpointBucket",
                    actions=list(LIST_ACTIONS),
                    resources=[self.bucket.bucket_arn],
                ),
                iam.PolicyStatement(
                    sid="ReadWriteCheckpointObjects",
                    actions=list(OBJECT_ACTIONS),
                    resources=[self.bucket.arn_for_objects("*")],
                ),
            ],
        )
        self.role: iam.IRole = self.pod_identity.role
        self.policy = self.pod_identity.policy
        self.association: eks.CfnPodIdentityAssociation = self.pod_identity.association
