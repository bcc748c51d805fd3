"""Template assertions for RayStorage: the checkpoint bucket, its access-log bucket and the Ray pods' role.

One small env-agnostic stack with an imported cluster (no kubectl provider needed), synthesized once per module.
"""

from __future__ import annotations


import aws_cdk as cdk
import pytest
from aws_cdk import aws_eks_v2 as eks
from aws_cdk.assertions import Template

from cdk_constructs.ray_storage import ACCESS_LOG_PREFIX, RayStorage
from tests.platform_synth import feature_flags

CLUSTER = "df-unit"


class Synth:
    def __init__(self, **kwargs) -> None:
        app = cdk.App(context=feature_flags())
        self.stack = cdk.Stack(app, "RayStorageUnit")
        cluster = eks.Cluster.from_cluster_attributes(self.stack, "Cluster", cluster_name=CLUSTER)
        kwargs.setdefault("namespaces", ["ray"])
        self.storage = RayStorage(self.stack, "RayStorage", cluster=cluster, **kwargs)
        self.template = Template.from_stack(self.stack)
        self.json = self.template.to_json()
        self.bucket_id = self.logical_id(self.storage.bucket)
        self.log_bucket_id = self.logical_id(self.storage.access_log_bucket)

    def logical_id(self, construct) -> str:
        return self.stack.resolve(construct.node.default_child.logical_id)

    def resources(self, type_: str) -> dict[str, dict]:
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == type_}

    def bucket_policy(self, bucket_id: str) -> dict:
        (policy,) = [p for p in self.resources("AWS::S3::BucketPolicy").values()
                     if p["Properties"]["Bucket"] == {"Ref": bucket_id}]
        return policy["Properties"]["PolicyDocument"]


@pytest.fixture(scope="module")
def synth() -> Synth:
    return Synth()


@pytest.fixture(scope="module")
def custom() -> Synth:
    return Synth(expire_after_days=30, noncurrent_version_expiration_days=3, removal_policy=cdk.RemovalPolicy.DESTROY)


def _bucket(s: Synth, logical_id: str) -> dict:
    return s.json["Resources"][logical_id]


# ------------------------------------------------------------------ buckets


def test_two_buckets_and_no_lambda(synth):
    assert set(synth.resources("AWS::S3::Bucket")) == {synth.bucket_id, synth.log_bucket_id}
    assert not synth.resources("AWS::Lambda::Function"), "no auto_delete_objects custom resource"
    assert not synth.resources("Custom::S3AutoDeleteObjects")


@pytest.mark.parametrize("which", ["bucket_id", "log_bucket_id"])
def test_encrypted_and_public_access_blocked(synth, which):
    props = _bucket(synth, getattr(synth, which))["Properties"]
    assert props["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


@pytest.mark.parametrize("which", ["bucket_id", "log_bucket_id"])
def test_tls_only_bucket_policy(synth, which):
    bucket_id = getattr(synth, which)
    # (The data bucket's other Deny, on the Ray role's destructive actions: tests/unit/test_ray_storage_security.py.)
    deny = [s for s in synth.bucket_policy(bucket_id)["Statement"]
            if s["Effect"] == "Deny" and s.get("Sid") != "DenyRayPodsDestructiveActions"]
    assert deny == [{
        "Action": "s3:*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Resource": [
            {"Fn::GetAtt": [bucket_id, "Arn"]},
            {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]},
        ],
    }]


def test_data_bucket_lifecycle_expires_objects_and_aborts_multipart_uploads(synth):
    rules = _bucket(synth, synth.bucket_id)["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rules[0] == {"Id": "expire-objects", "Status": "Enabled", "ExpirationInDays": 90,
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}
    # Versioning is always on (tests/unit/test_ray_storage_security.py): old versions expire by the second rule.
    assert [r["Id"] for r in rules] == ["expire-objects", "expire-noncurrent-versions"]


def test_settings_reach_the_lifecycle_rules(custom):
    props = _bucket(custom, custom.bucket_id)["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-objects"]["ExpirationInDays"] == 30
    assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 3}
    assert rules["expire-noncurrent-versions"]["ExpiredObjectDeleteMarker"] is True


def test_access_logging_to_the_separate_log_bucket(synth):
    logging = _bucket(synth, synth.bucket_id)["Properties"]["LoggingConfiguration"]
    assert logging == {"DestinationBucketName": {"Ref": synth.log_bucket_id}, "LogFilePrefix": ACCESS_LOG_PREFIX}
    allow = [s for s in synth.bucket_policy(synth.log_bucket_id)["Statement"] if s["Effect"] == "Allow"]
    assert len(allow) == 1
    assert allow[0]["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert allow[0]["Action"] == "s3:PutObject"
    assert allow[0]["Condition"]["ArnLike"]["aws:SourceArn"] == {"Fn::GetAtt": [synth.bucket_id, "Arn"]}


def test_log_bucket_has_its_own_lifecycle(synth):
    rules = _bucket(synth, synth.log_bucket_id)["Properties"]["LifecycleConfiguration"]["Rules"]
    assert [r["ExpirationInDays"] for r in rules] == [90]
    assert rules[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def test_buckets_are_retained_by_default_and_destroy_is_opt_in(synth, custom):
    for s, policy in ((synth, "Retain"), (custom, "Delete")):
        for logical_id in (s.bucket_id, s.log_bucket_id):
            assert s.json["Resources"][logical_id]["DeletionPolicy"] == policy
            assert s.json["Resources"][logical_id]["UpdateReplacePolicy"] == policy


# ------------------------------------------------------------------ the Pod Identity role


def test_pod_identity_association_for_ray_service_account(synth):
    synth.template.resource_count_is("AWS::EKS::PodIdentityAssociation", 1)
    synth.template.has_resource_properties("AWS::EKS::PodIdentityAssociation", {
        "ClusterName": CLUSTER,
        "Namespace": "ray",
        "ServiceAccount": "ray",
        "RoleArn": {"Fn::GetAtt": [synth.logical_id(synth.storage.role), "Arn"]},
    })
    # Credentials are useless until the permissions are attached.
    (assoc,) = synth.resources("AWS::EKS::PodIdentityAssociation").values()
    assert synth.logical_id(synth.storage.policy) in assoc["DependsOn"]


def test_role_trusts_only_pod_identity_for_this_cluster(synth):
    (role,) = synth.resources("AWS::IAM::Role").values()
    statements = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert {tuple(sorted([s["Action"]] if isinstance(s["Action"], str) else s["Action"])) for s in statements} == {
        ("sts:AssumeRole",), ("sts:TagSession",)}
    for s in statements:
        assert s["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        assert s["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Join"][1][-1] == f":cluster/{CLUSTER}"
    assert "ManagedPolicyArns" not in role["Properties"]


def test_role_policy_allows_only_this_bucket(synth):
    """Which actions, under which keys and conditions: tests/unit/test_ray_storage_security.py."""
    policies = synth.resources("AWS::IAM::Policy")
    assert len(policies) == 1
    (policy,) = policies.values()
    assert policy["Properties"]["Roles"] == [{"Ref": synth.logical_id(synth.storage.role)}]
    bucket_arn = {"Fn::GetAtt": [synth.bucket_id, "Arn"]}
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        resource = statement["Resource"]
        assert resource == bucket_arn or resource["Fn::Join"][1][0] == bucket_arn, resource


def test_no_other_principal_gets_bucket_access(synth):
    for s in synth.bucket_policy(synth.bucket_id)["Statement"]:
        assert s["Effect"] == "Deny", s  # the data bucket's policy only denies (non-TLS access, the Ray role)
    synth.template.resource_count_is("AWS::IAM::Role", 1)
    for bucket in synth.resources("AWS::S3::Bucket").values():
        assert "AccessControl" not in bucket["Properties"]  # no ACL grants (ownership enforced)


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"expire_after_days": 0}, "expire_after_days"),
        ({"access_log_retention_days": "90"}, "access_log_retention_days"),
        ({"noncurrent_version_expiration_days": True}, "noncurrent_version_expiration_days"),
        ({"namespaces": [""]}, "namespaces"),
        ({"namespaces": "ray"}, "namespaces"),
        ({"service_account": ""}, "service_account"),
    ],
)
def test_bad_arguments_raise_a_clear_value_error(kwargs, message):
    stack = cdk.Stack(cdk.App())
    cluster = eks.Cluster.from_cluster_attributes(stack, "Cluster", cluster_name=CLUSTER)
    with pytest.raises(ValueError, match=message):
        RayStorage(stack, "RayStorage", cluster=cluster, **{"namespaces": ["ray"], **kwargs})
