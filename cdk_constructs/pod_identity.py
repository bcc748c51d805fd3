"""An IAM role handed to one Kubernetes service account through EKS Pod Identity."""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"


def pod_identity_principal(cluster_arn: str) -> iam.IPrincipal:
    """The EKS Pod Identity service, limited to this account and this cluster (confused-deputy guard)."""
    return iam.ServicePrincipal(POD_IDENTITY_PRINCIPAL).with_conditions(
        {
            "StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID},
            "ArnEquals": {"aws:SourceArn": cluster_arn},
        }
    )


class PodIdentityRole(Construct):
    """A role assumable only through Pod Identity, bound to ``namespace/service_account``.

    Pass ``role`` to bind an existing role (its trust policy must allow Pod Identity);
    otherwise a new role is created. The association must exist before the pods start:
    EKS injects credentials only into pods created after it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        namespace: str,
        service_account: str,
        role: iam.IRole | None = None,
        managed_policies: Sequence[iam.IManagedPolicy] = (),
        statements: Sequence[iam.PolicyStatement] = (),
        description: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if role is None:
            role = iam.Role(
                self,
                "Role",
                assumed_by=pod_identity_principal(cluster.cluster_arn),
                description=description or f"EKS Pod Identity role for {namespace}/{service_account}",
                managed_policies=list(managed_policies),
            )
            role.assume_role_policy.add_statements(
                iam.PolicyStatement(
                    actions=["sts:TagSession"],
                    principals=[pod_identity_principal(cluster.cluster_arn)],
                )
            )
        if statements:
            policy = iam.Policy(self, "Policy", statements=list(statements))
            role.attach_inline_policy(policy)
            self.policy: iam.Policy | None = policy
        else:
            self.policy = None
        self.role = role
        self.association = eks.CfnPodIdentityAssociation(
            self,
            "Association",
            cluster_name=cluster.cluster_name,
            namespace=namespace,
            service_account=service_account,
            role_arn=role.role_arn,
        )
        if self.policy is not None:
            # Credentials are useless until the permissions are attached.
            self.association.node.add_dependency(self.policy)
