"""S3 storage for Ray checkpoints and results, and the Pod Identity role the Ray pods use to reach it.

Threat this answers (issue #16): a job is arbitrary user code running with the Ray pods' AWS credentials. It
must not be able to destroy checkpoints, neither its own team's nor another team's, nor read or write another
team's. So the role can only *add* data under its own namespace's prefix, and only the bucket's lifecycle
rules ever remove anything.

Choices (and why):

* **Encryption: SSE-S3** (``S3_MANAGED``). Checkpoints are not more sensitive than the cluster's other data at
  rest, and SSE-S3 keeps the Ray role S3-only (SSE-KMS would add ``kms:Decrypt`` / ``kms:GenerateDataKey`` grants
  and a KMS request per object). The access-log bucket must use SSE-S3 anyway (S3 log delivery does not write to
  SSE-KMS buckets).
* **TLS only** (``enforce_ssl``: a bucket-policy ``Deny`` on ``aws:SecureTransport = false``) and **all public
  access blocked** on both buckets; ACLs disabled (bucket-owner-enforced ownership).
* **Versioning on, always.** An overwrite (``PutObject`` on an existing key, which the role needs) keeps the old
  data as a noncurrent version that an operator can restore, so overwriting is not destroying.
* **Lifecycle does every deletion** (rule ``expire-objects``): current versions expire after
  ``expire_after_days`` (they become noncurrent behind a delete marker); rule ``expire-noncurrent-versions``
  removes noncurrent versions after ``noncurrent_version_expiration_days`` and then the delete markers left
  with no version behind them; incomplete multipart uploads are aborted after one day. A checkpoint therefore
  lives at most ``expire_after_days`` + ``noncurrent_version_expiration_days``.
  The noncurrent period defaults to **7 days**: long enough to notice a bad overwrite over a weekend and restore
  the previous version, short enough that what piles up is small: Ray Train rewrites only small files in place
  (``.validate_storage_marker`` per run, its checkpoint-manager snapshot per report); every checkpoint goes to a
  new key and is never overwritten.
* **IAM** (a :class:`~cdk_constructs.pod_identity.PodIdentityRole`, one association per Ray namespace, the same
  service account name in each; one role for all of them):

  - ``s3:GetObject`` / ``s3:PutObject`` / ``s3:AbortMultipartUpload`` on
    ``<bucket>/${aws:PrincipalTag/kubernetes-namespace}/*`` only. EKS Pod Identity tags every role session with
    the pod's namespace (``kubernetes-namespace``, Amazon EKS User Guide, "Grant Pods access to AWS resources
    based on tags", https://docs.aws.amazon.com/eks/latest/userguide/pod-id-abac.html, list of session tags);
    the role's trust policy allows ``sts:TagSession`` for that (PodIdentityRole), and the associations set
    ``DisableSessionTags: false`` explicitly. A session without the tag matches no resource (fail closed).
    Multipart uploads are covered by ``s3:PutObject``; ``s3:AbortMultipartUpload`` only cancels an upload in
    progress (pyarrow aborts a stream that is not closed), never touches a stored object.
  - ``s3:ListBucket`` on the bucket, only with ``s3:prefix`` under the namespace **or with no prefix at all**
    (``StringLikeIfExists``). The no-prefix case is required: pyarrow's ``S3FileSystem.create_dir`` (which
    Ray Train 2.60's ``StorageContext`` calls before every run and every checkpoint) first calls
    ``HeadBucket``, which S3 authorizes as ``s3:ListBucket`` with no ``s3:prefix`` key, and a refused
    ``HeadBucket`` fails the run ("When testing for existence of bucket ...: ACCESS_DENIED"; measured with
    pyarrow 22 against moto's S3 server, see tests/unit/test_ray_storage_security.py). IAM cannot tell a
    ``HeadBucket`` from a ``ListObjectsV2`` sent without a prefix, so a job can list the *key names* of the
    whole bucket that way (not read or write any other namespace's objects). Every listing pyarrow itself
    makes carries the prefix.
  - No ``s3:DeleteObject`` / ``DeleteObjectVersion`` or any bucket-configuration action. On top of that, the
    data bucket's policy **denies** the role every destructive or configuration action
    (:data:`DENIED_TO_RAY_ROLE`), so a policy attached to the role later cannot grant them either.

  What this costs Ray Train: checkpoint rotation (``CheckpointConfig(num_to_keep=...)``) cannot delete old
  checkpoints. Ray Train 2.60 catches the error (``delete_fs_path`` logs it with a stack trace) and goes on, so
  the run still succeeds; the platform should not ask for rotation on S3 (the lifecycle bounds storage instead).
* **Server access logs** go to a separate bucket (prefix ``ray-checkpoints/``), written through a bucket policy
  for the S3 logging service (CDK's default under ``@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy``), so the log
  bucket needs no ACLs. The log bucket itself has no access logging (logging it would need a third bucket):
  cdk-nag's ``AwsSolutions-S1`` on it must be acknowledged with that reason.
* **Removal: RETAIN** by default for both buckets. Checkpoints and results are data that outlives a stack, and
  ``auto_delete_objects`` would add a custom-resource Lambda (and delete data on a mistaken ``cdk destroy``).
  ``RemovalPolicy.DESTROY`` may be passed for throw-away environments: CloudFormation then deletes the buckets
  only when they are empty, and a versioned bucket is empty only once its noncurrent versions and delete markers
  are gone too (the lifecycle gets there ``expire_after_days`` + ``noncurrent_version_expiration_days`` + 1 days
  after the last write).
"""

from __future__ import annotations

import re
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk_constructs.pod_identity import PodIdentityRole

__all__ = [
    "ACCESS_LOG_PREFIX",
    "DENIED_TO_RAY_ROLE",
    "LIST_ACTIONS",
    "NAMESPACE_TAG",
    "OBJECT_ACTIONS",
    "RayStorage",
    "namespace_prefix_pattern",
]

ACCESS_LOG_PREFIX = "ray-checkpoints/"
# The session tag EKS Pod Identity sets to the pod's namespace (see the module docstring for the source).
NAMESPACE_TAG = "kubernetes-namespace"
_NAMESPACE_VARIABLE = "${aws:PrincipalTag/" + NAMESPACE_TAG + "}"
LIST_ACTIONS = ("s3:ListBucket",)
DEFAULT_NAMESPACE = "ray"  # the shared cluster's association keeps the logical id it always had
OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload")
# Denied to the Ray role by the data bucket's policy, whatever the role's own policies say: everything that
# removes or hides stored data, or changes how long it is kept, who may reach it, or where it is copied.
DENIED_TO_RAY_ROLE = (
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersionTagging",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketVersioning",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutReplicationConfiguration",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
    "s3:PutBucketAcl",
    "s3:PutObjectAcl",
    "s3:PutObjectVersionAcl",
    "s3:PutBucketOwnershipControls",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutEncryptionConfiguration",
    "s3:DeleteBucket",
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def namespace_prefix_pattern() -> str:
    """The key pattern (IAM policy variable included) a Ray pod may read and write: its namespace's prefix."""
    return f"{_NAMESPACE_VARIABLE}/*"


def _positive_days(name: str, value: object, problems: list[str], *, maximum: int = 36500) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        problems.append(f"{name} {value!r} must be an integer number of days from 1 to {maximum}")


def _namespace_problems(namespaces: object) -> list[str]:
    if isinstance(namespaces, (str, bytes)) or not isinstance(namespaces, Sequence):
        return [f"namespaces {namespaces!r} must be a sequence of namespace names (a list, not one string)"]
    problems = []
    if not namespaces:
        problems.append("namespaces must name at least one namespace")
    for ns in namespaces:
        if not isinstance(ns, str) or not _DNS_LABEL.match(ns) or len(ns) > 63:
            problems.append(f"namespaces: {ns!r} is not a namespace name (a DNS label of at most 63 characters)")
    duplicates = sorted({ns for ns in namespaces if isinstance(ns, str) and list(namespaces).count(ns) > 1})
    if duplicates:
        problems.append(f"namespaces: {duplicates} listed more than once")
    return problems


class RayStorage(Construct):
    """Checkpoint/result bucket + access-log bucket + the Ray pods' Pod Identity role.

    :param cluster: the EKS cluster (an imported ``ICluster`` is fine) whose pods get the role.
    :param namespaces: the Ray namespaces (one RayCluster each); the role is bound to ``service_account`` in
        each of them, and each may use only the keys under ``<namespace>/``.
    :param service_account: the Kubernetes service account of the Ray pods, the same name in every namespace.
    :param expire_after_days: current objects expire after this many days.
    :param noncurrent_version_expiration_days: overwritten and expired data is kept this long (restorable).
    :param access_log_retention_days: server access logs expire after this many days.
    :param removal_policy: of both buckets; RETAIN by default (see the module docstring).

    Exposes ``bucket``, ``access_log_bucket``, ``role``, ``policy``, ``associations`` (namespace ->
    ``CfnPodIdentityAssociation``) and ``association`` (the first namespace's).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        namespaces: Sequence[str],
        service_account: str = "ray",
        expire_after_days: int = 90,
        noncurrent_version_expiration_days: int = 7,
        access_log_retention_days: int = 90,
        removal_policy: cdk.RemovalPolicy = cdk.RemovalPolicy.RETAIN,
    ) -> None:
        super().__init__(scope, construct_id)
        problems: list[str] = []
        _positive_days("expire_after_days", expire_after_days, problems)
        _positive_days("noncurrent_version_expiration_days", noncurrent_version_expiration_days, problems)
        _positive_days("access_log_retention_days", access_log_retention_days, problems)
        problems += _namespace_problems(namespaces)
        if not isinstance(service_account, str) or not _DNS_SUBDOMAIN.match(service_account) \
                or len(service_account) > 253:
            problems.append(f"service_account {service_account!r} is not a service account name (DNS subdomain)")
        if problems:
            raise ValueError("RayStorage: " + "; ".join(problems))
        namespaces = tuple(namespaces)

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

        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-objects",
                    expiration=cdk.Duration.days(expire_after_days),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                ),
                # A separate rule: S3 refuses ExpiredObjectDeleteMarker next to a Days expiration in one rule.
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=cdk.Duration.days(noncurrent_version_expiration_days),
                    expired_object_delete_marker=True,
                ),
            ],
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix=ACCESS_LOG_PREFIX,
            removal_policy=removal_policy,
        )

        first, *others = namespaces
        self.pod_identity = PodIdentityRole(
            self,
            "PodIdentity",
            cluster=cluster,
            namespace=first,
            service_account=service_account,
            description=(f"Ray pods (service account {service_account} in {', '.join(namespaces)}): read and add "
                         "checkpoints under their own namespace's prefix of the checkpoint bucket"),
            statements=[
                iam.PolicyStatement(
                    sid="ListCheckpointBucket",
                    actions=list(LIST_ACTIONS),
                    resources=[self.bucket.bucket_arn],
                    # IfExists: HeadBucket (s3:ListBucket without a prefix) must pass; see the module docstring.
                    conditions={"StringLikeIfExists": {"s3:prefix": [namespace_prefix_pattern()]}},
                ),
                iam.PolicyStatement(
                    sid="ReadAddOwnNamespaceObjects",
                    actions=list(OBJECT_ACTIONS),
                    resources=[self.bucket.arn_for_objects(namespace_prefix_pattern())],
                ),
            ],
        )
        self.role: iam.IRole = self.pod_identity.role
        self.policy = self.pod_identity.policy
        self.associations: dict[str, eks.CfnPodIdentityAssociation] = {first: self.pod_identity.association}
        for ns in others:
            association = eks.CfnPodIdentityAssociation(
                self.pod_identity,
                f"Association-{ns}",
                cluster_name=cluster.cluster_name,
                namespace=ns,
                service_account=service_account,
                role_arn=self.role.role_arn,
            )
            # Credentials are useless until the permissions are attached.
            association.node.add_dependency(self.policy)
            self.associations[ns] = association
        for ns, association in self.associations.items():
            # The IAM conditions key on the namespace session tag: never let it be switched off.
            association.disable_session_tags = False
            if ns != DEFAULT_NAMESPACE:
                # Keyed by the namespace, not by the position in the list: removing or reordering a team must
                # never turn one team's association into another's (a replacement EKS refuses while the other
                # namespace's association still exists).
                association.override_logical_id(
                    "RayPodIdentityAssociation" + "".join(part.capitalize() for part in ns.split("-")))
        self.association: eks.CfnPodIdentityAssociation = self.associations[first]

        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyRayPodsDestructiveActions",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=list(DENIED_TO_RAY_ROLE),
                resources=[self.bucket.bucket_arn, self.bucket.arn_for_objects("*")],
                conditions={"ArnEquals": {"aws:PrincipalArn": self.role.role_arn}},
            )
        )
