"""IAM permissions of the Cilium operator in ENI IPAM mode.

The actions are the "Required privileges" of Cilium's ENI IPAM documentation
(cilium/cilium ``Documentation/network/concepts/ipam/eni.rst``, read at commit 0e22bde581f1; this
platform pins Cilium 1.20.0), for this platform's settings: ``cluster.name`` is set (so no
``ec2:DescribeTags`` for ENI garbage collection) and ``eni.awsReleaseExcessIPs`` is on (so
``ec2:UnassignPrivateIpAddresses``). That list has neither ``ec2:DetachNetworkInterface`` nor (without
``--instance-tags-filter``) ``ec2:DescribeInstances``; both are kept from the earlier policy for now.

IAM condition keys exist per action *and* resource type (Service Authorization Reference, EC2):
``ec2:Vpc`` exists on ``network-interface``, ``subnet`` and ``security-group`` but not on
``instance``, and a condition on a key that is absent never matches. So the statements are split by
resource type, each scoped by a key that resource type has (tests/policy/test_iam_conditions.py
checks every statement of the platform against the reference):

* ``network-interface``, ``subnet``, ``security-group``: in this VPC (``ec2:Vpc``);
* ``instance``: this cluster's nodes, by the ``kubernetes.io/cluster/<cluster name>: owned`` tag. Both
  launchers of this platform's nodes set it: Karpenter puts it on every instance it launches
  (aws/karpenter-provider-aws ``pkg/cloudprovider/cloudprovider.go`` ``getTags``: static tags
  ``kubernetes.io/cluster/<clusterName>: owned``, ``karpenter.sh/nodepool``, ``eks:eks-cluster-name``,
  ``karpenter.k8s.aws/ec2nodeclass``), and EKS managed node groups tag their instances with it
  through their Auto Scaling group (alongside ``eks:cluster-name`` and ``eks:nodegroup-name``; the
  AWS cloud provider finds a cluster's nodes by it). ``eks:eks-cluster-name`` is Karpenter's only
  and ``eks:cluster-name`` the node group's only, so the ``kubernetes.io/cluster`` tag is the one
  both carry. Check it on the first deploy: ``aws ec2 describe-tags`` on a system node;
* ``prefix-list``: the account's own and AWS-managed lists of this region (read only).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam

# The ownership tag both EKS managed node groups and Karpenter put on the cluster's instances.
CLUSTER_TAG_KEY = "kubernetes.io/cluster/{cluster_name}"
CLUSTER_TAG_VALUE = "owned"


def cilium_operator_statements(vpc_arn: str, *, cluster_name: str) -> list[iam.PolicyStatement]:
    """EC2 permissions of the Cilium operator in ENI IPAM mode, least privilege.

    Describe calls cannot be scoped by resource (limited to this region); every call that changes
    something is limited to this VPC's ENIs, subnets and security groups, or to this cluster's nodes.
    ``cluster_name`` must be the literal name: it is part of a condition key.
    """
    if cdk.Token.is_unresolved(cluster_name) or not cluster_name:
        raise ValueError("cluster_name must be a literal string, not a CDK token (it is used in an IAM condition key)")
    region, account, partition = cdk.Aws.REGION, cdk.Aws.ACCOUNT_ID, cdk.Aws.PARTITION
    in_vpc = {"ArnEquals": {"ec2:Vpc": vpc_arn}}
    ec2_arn = f"arn:{partition}:ec2:{region}:{account}"
    cluster_tag = CLUSTER_TAG_KEY.format(cluster_name=cluster_name)
    return [
        iam.PolicyStatement(
            sid="DescribeNetworking",
            actions=[
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSubnets",
                "ec2:DescribeVpcs",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeRouteTables",
                "ec2:DescribeManagedPrefixLists",
            ],
            resources=["*"],
            conditions={"StringEquals": {"aws:RequestedRegion": region}},
        ),
        # Every ENI operation on an existing ENI: only ENIs in this VPC.
        iam.PolicyStatement(
            sid="ManageEnisInThisVpc",
            actions=[
                "ec2:AttachNetworkInterface",
                "ec2:DetachNetworkInterface",
                "ec2:DeleteNetworkInterface",
                "ec2:ModifyNetworkInterfaceAttribute",
                "ec2:AssignPrivateIpAddresses",
                "ec2:UnassignPrivateIpAddresses",
            ],
            resources=[f"{ec2_arn}:network-interface/*"],
            conditions=in_vpc,
        ),
        # A new ENI needs a subnet (required) and security groups of this VPC.
        iam.PolicyStatement(
            sid="UseSubnetsAndSecurityGroupsInThisVpc",
            actions=["ec2:CreateNetworkInterface", "ec2:ModifyNetworkInterfaceAttribute"],
            resources=[f"{ec2_arn}:subnet/*", f"{ec2_arn}:security-group/*"],
            conditions=in_vpc,
        ),
        # The ENI being created has no id and no VPC of its own yet (the Service Authorization Reference
        # lists only aws:RequestTag, aws:TagKeys and ec2:NetworkInterfaceID for it): it is confined to this
        # VPC by the subnet every CreateNetworkInterface must name, authorized just above.
        iam.PolicyStatement(
            sid="CreateEnis",
            actions=["ec2:CreateNetworkInterface"],
            resources=[f"{ec2_arn}:network-interface/*"],
        ),
        # Attaching, detaching and the attachment's delete-on-termination touch the instance too:
        # only this cluster's nodes (ec2:Vpc does not exist on instance; the cluster tag does).
        iam.PolicyStatement(
            sid="AttachEnisToClusterNodes",
            actions=[
                "ec2:AttachNetworkInterface",
                "ec2:DetachNetworkInterface",
                "ec2:ModifyNetworkInterfaceAttribute",
            ],
            resources=[f"{ec2_arn}:instance/*"],
            conditions={"StringEquals": {f"aws:ResourceTag/{cluster_tag}": CLUSTER_TAG_VALUE}},
        ),
        iam.PolicyStatement(
            sid="TagNewEnis",
            actions=["ec2:CreateTags"],
            resources=[f"{ec2_arn}:network-interface/*"],
            conditions={"StringEquals": {"ec2:CreateAction": "CreateNetworkInterface"}},
        ),
        # Read-only, resource-level: this account's prefix lists and the AWS-managed ones (whose ARN
        # has the account "aws", e.g. arn:aws:ec2:eu-west-1:aws:prefix-list/pl-6da54004), this region.
        iam.PolicyStatement(
            sid="ReadPrefixListEntries",
            actions=["ec2:GetManagedPrefixListEntries"],
            resources=[
                f"{ec2_arn}:prefix-list/*",
                f"arn:{partition}:ec2:{region}:aws:prefix-list/*",
            ],
        ),
    ]
