"""Resource types whose replacement or deletion loses something a user cannot get back by redeploying."""

from __future__ import annotations

STATEFUL: dict[str, str] = {
    "AWS::EKS::Cluster": "the cluster and everything in it: workloads, Kubernetes Secrets, volume bindings, "
                         "the Ray token, every notebook server",
    "AWS::EC2::VPC": "the network and everything in it: subnets, nodes, pod addresses, load balancers",
    "AWS::EC2::Subnet": "the subnet and what runs in it: nodes and their pods' ENIs (Cilium ENI mode)",
    "AWS::S3::Bucket": "every object in the bucket",
    "AWS::Cognito::UserPool": "every user, password and MFA device",
    "AWS::KMS::Key": "the key, and with it what is encrypted under it (Kubernetes Secrets, logs) once it is deleted",
    "AWS::Logs::LogGroup": "the log history",
    "AWS::EC2::Volume": "the volume's data",
    "AWS::EFS::FileSystem": "the file system's data",
    "AWS::DynamoDB::Table": "the table's items",
    "AWS::RDS::DBInstance": "the database",
    "AWS::RDS::DBCluster": "the database",
    "AWS::ECR::Repository": "every image in the repository",
    "AWS::SecretsManager::Secret": "the secret's value (a generated one cannot be recovered)",
}


def loss(type_name: str, policy: str | None, *, replaced: bool) -> tuple[str | None, str | None]:
    """(what is lost, note) for a stateful resource being replaced or deleted under ``policy``
    (UpdateReplacePolicy for a replacement, DeletionPolicy for a deletion)."""
    what = STATEFUL.get(type_name)
    if what is None:
        return None, None
    attribute = "UpdateReplacePolicy" if replaced else "DeletionPolicy"
    if policy == "Retain" or policy == "RetainExceptOnCreate":
        note = f"{attribute} {policy}: the old one stays in the account, unmanaged"
        # A replacement still moves the platform to a new, empty resource.
        return (f"{what} (the stack moves to a new, empty one)" if replaced else None), note
    if policy == "Snapshot":
        return what, f"{attribute} Snapshot: a snapshot is kept where the type supports one"
    return what, None
