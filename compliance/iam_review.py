"""The reviewed list of IAM statements allowed to say ``Resource: "*"``.

Every other statement the platform authors names its resources. An entry here names the
policy (construct path inside the stage, without ``/Resource``) and the statement's Sid,
the condition keys that must scope it, and why ``*`` is unavoidable. All of them are
read-only: tests/policy/test_iam_least_privilege.py checks that too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReviewedWildcard:
    policy_path: str
    sid: str
    required_condition_keys: tuple[str, ...]
    reason: str


REVIEWED_WILDCARDS: tuple[ReviewedWildcard, ...] = (
    ReviewedWildcard(
        "Cluster/CiliumOperatorIdentity/Policy",
        "DescribeNetworking",
        ("aws:RequestedRegion",),
        "EC2 Describe* has no resource-level permissions; the operator reads ENIs, subnets and instance types",
    ),
    ReviewedWildcard(
        "Karpenter/Controller/ResourceDiscoveryPolicy",
        "AllowRegionalReadActions",
        ("aws:RequestedRegion",),
        "EC2 Describe* has no resource-level permissions (Karpenter 1.14 reference policy)",
    ),
    ReviewedWildcard(
        "Karpenter/Controller/ResourceDiscoveryPolicy",
        "AllowPricingReadActions",
        ("aws:RequestedRegion",),
        "the Pricing API has no resources; limited to the regions its endpoints live in",
    ),
    ReviewedWildcard(
        "Karpenter/Controller/ZonalShiftPolicy",
        "AllowZonalShiftStatusReadOnly",
        ("arc-zonal-shift:ResourceIdentifier",),
        "zonal-shift status is read per managed resource; the condition pins it to this cluster",
    ),
    ReviewedWildcard(
        "Ray/ValidationRunner/Project/PolicyDocument",
        "DescribeVpcResources",
        ("aws:RequestedRegion",),
        "CodeBuild in a VPC describes subnets, security groups and ENIs; EC2 Describe* cannot be scoped",
    ),
    ReviewedWildcard(
        "Network/LambdaEniCleanup/Role",
        "DescribeNetworkInterfaces",
        ("aws:RequestedRegion",),
        "the teardown cleanup finds Lambda's leftover ENIs in the VPC; EC2 Describe* cannot be scoped to resources",
    ),
    ReviewedWildcard(
        "Karpenter/TeardownGuard/Role",
        "DescribeInstances",
        ("aws:RequestedRegion",),
        "the teardown guard finds the instances Karpenter launched for the cluster by their tags; "
        "EC2 Describe* cannot be scoped to resources",
    ),
    ReviewedWildcard(
        "Karpenter/Controller/ResourceDiscoveryPolicy",
        "AllowUnscopedInstanceProfileListAction",
        (),
        "iam:ListInstanceProfiles supports no resource or condition scoping (Karpenter 1.14 reference policy); "
        "it reveals profile names only",
    ),
)
