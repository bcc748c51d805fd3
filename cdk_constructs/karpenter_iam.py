"""IAM for Karpenter: the controller role (EKS Pod Identity) and the node role.

Reference: ``website/content/en/v1.14/getting-started/getting-started-with-karpenter/cloudformation.yaml`` in
aws/karpenter-provider-aws at commit c88abbbad455186e69e30296c595e474123e9bc1 (release v1.14.1),
checked against the v1.14 copy of that file as stored at repository commit
e0834c2bd02ed804561d5748ab92f5c2b8f86d60 (the only snapshot available when this was written). The
controller permissions are split there into six customer-managed policies; this module keeps that split and
every statement (Sid, actions, resources, conditions) of them:

* ``NodeLifecycle``    RunInstances/CreateFleet/CreateLaunchTemplate/CreateTags/TerminateInstances/
                       DeleteLaunchTemplate, scoped by ``aws:ResourceTag``/``aws:RequestTag``
                       ``kubernetes.io/cluster/<cluster>``, ``eks:eks-cluster-name``, ``karpenter.sh/nodepool``
* ``IAMIntegration``   ``iam:PassRole`` on the node role only, only to EC2; instance-profile actions by tags
* ``EKSIntegration``   ``eks:DescribeCluster`` on this cluster only
* ``Interruption``     SQS receive/delete on this queue only
* ``ZonalShift``       ``arc-zonal-shift:GetManagedResource`` for this cluster only
* ``ResourceDiscovery`` regional Describe*, ``ssm:GetParameter`` on public AWS parameters, pricing, instance
                       profile reads

Deviations from the reference, and why:

1. Controller role trust: upstream's template leaves the controller role to eksctl/IRSA or a Pod Identity
   association; here the role trusts ``pods.eks.amazonaws.com`` with ``sts:AssumeRole`` + ``sts:TagSession``
   (what EKS Pod Identity requires), with ``aws:SourceAccount`` = this account and ``aws:SourceArn`` = this
   cluster's ARN as a confused-deputy guard. The Pod Identity association is created by the cluster stack.
2. Resource ARNs use the role ARN / queue ARN / cluster ARN *objects* passed in, instead of re-deriving names
   (``KarpenterNodeRole-${ClusterName}`` etc.); names are CDK-generated so that stacks can be replaced and
   several clusters can share an account without name collisions.
3. ``pricing:GetProducts`` (upstream: ``Resource: "*"`` with no condition) is restricted with
   ``aws:RequestedRegion`` to the Pricing API endpoint regions Karpenter calls (:data:`PRICING_API_REGIONS`,
   from Karpenter's ``getPricingAPIRegion``), so that every ``Resource: "*"`` statement carries a condition.
   If Karpenter's ``pricingRegion`` override is ever set to another region, extend that constant.
4. ``iam:ListInstanceProfiles`` stays ``Resource: "*"`` without a condition, exactly like upstream
   (Sid ``AllowUnscopedInstanceProfileListAction``): the list API cannot be scoped to a resource and no
   condition key narrows it meaningfully; it reveals names only. The tests allow exactly this one exception.
5. Node role: trusts only ``ec2.amazonaws.com`` (the stored v1.14 template also lets ``pods.eks.amazonaws.com``
   assume the *node* role, which nodes do not need). ``AmazonEKS_CNI_Policy`` is NOT attached: there is no
   aws-node; Cilium's operator gets its own ENI permissions. No instance profile is created: Karpenter creates
   and tags its own from ``EC2NodeClass.spec.role`` (covered by the IAMIntegration statements).
6. ``iam:PassedToService`` keeps upstream's two values ``ec2.amazonaws.com`` and ``ec2.amazonaws.com.cn``
   (both are EC2: the second is its principal in the China partitions), so the role can only be passed to EC2.
"""

from __future__ import annotations

import re
from typing import Mapping

from aws_cdk import Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

__all__ = [
    "CONTROLLER_POLICY_NAMES",
    "NODE_ROLE_MANAGED_POLICIES",
    "PRICING_API_REGIONS",
    "KarpenterControllerRole",
    "KarpenterNodeRole",
    "controller_policy_statements",
]

# AWS-managed policies on the node role (upstream minus AmazonEKS_CNI_Policy, see deviation 5).
NODE_ROLE_MANAGED_POLICIES: tuple[str, ...] = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
)

# Regions whose Pricing API endpoint Karpenter calls (pkg/providers/pricing getPricingAPIRegion: eu-* →
# eu-central-1, ap-* → ap-south-1, cn-* → cn-northwest-1, anything else → us-east-1). See deviation 3.
PRICING_API_REGIONS: tuple[str, ...] = ("us-east-1", "eu-central-1", "ap-south-1", "cn-northwest-1")

# Keys of :func:`controller_policy_statements`, in upstream order (one managed policy each).
CONTROLLER_POLICY_NAMES: tuple[str, ...] = (
    "NodeLifecycle",
    "IAMIntegration",
    "EKSIntegration",
    "Interruption",
    "ZonalShift",
    "ResourceDiscovery",
)

_EKS_CLUSTER_NAME = re.compile(r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$")


def _require_literal_cluster_name(cluster_name: str) -> None:
    # The name is interpolated into condition *keys* (aws:ResourceTag/kubernetes.io/cluster/<name>); a token
    # there would synthesize a key CloudFormation cannot resolve. DESIGN.md: use the literal cluster name.
    if Token.is_unresolved(cluster_name):
        raise ValueError("cluster_name must be a literal string, not a CDK token (it is used in IAM condition keys)")
    if not _EKS_CLUSTER_NAME.match(cluster_name):
        raise ValueError(
            f"cluster_name {cluster_name!r}: an EKS cluster name is 1-100 characters of A-Z a-z 0-9 - _ "
            "starting with a letter or digit"
        )


def controller_policy_statements(
    *,
    cluster_name: str,
    cluster_arn: str,
    node_role_arn: str,
    queue_arn: str,
    partition: str,
    region: str,
    account: str,
) -> dict[str, list[iam.PolicyStatement]]:
    """The Karpenter controller's statements, grouped like upstream's managed policies.

    All arguments may be tokens except ``cluster_name``.
    """
    _require_literal_cluster_name(cluster_name)
    cluster_tag = f"kubernetes.io/cluster/{cluster_name}"

    def ec2(resource: str, *, any_account: bool = True) -> str:
        return f"arn:{partition}:ec2:{region}:{'*' if any_account else ''}:{resource}"

    instance_profiles = f"arn:{partition}:iam::{account}:instance-profile/*"
    created_resources = [
        ec2("fleet/*"),
        ec2("instance/*"),
        ec2("volume/*"),
        ec2("network-interface/*"),
        ec2("launch-template/*"),
        ec2("spot-instances-request/*"),
    ]

    node_lifecycle = [
        iam.PolicyStatement(
            sid="AllowScopedEC2InstanceAccessActions",
            actions=["ec2:RunInstances", "ec2:CreateFleet"],
            resources=[
                ec2("image/*", any_account=False),
                ec2("snapshot/*", any_account=False),
                ec2("security-group/*"),
                ec2("subnet/*"),
                ec2("capacity-reservation/*"),
                ec2("placement-group/*"),
            ],
        ),
        iam.PolicyStatement(
            sid="AllowScopedEC2LaunchTemplateAccessActions",
            actions=["ec2:RunInstances", "ec2:CreateFleet"],
            resources=[ec2("launch-template/*")],
            conditions={
                "StringEquals": {f"aws:ResourceTag/{cluster_tag}": "owned"},
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedEC2InstanceActionsWithTags",
            actions=["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            resources=created_resources,
            conditions={
                "StringEquals": {
                    f"aws:RequestTag/{cluster_tag}": "owned",
                    "aws:RequestTag/eks:eks-cluster-name": cluster_name,
                },
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedResourceCreationTagging",
            actions=["ec2:CreateTags"],
            resources=created_resources,
            conditions={
                "StringEquals": {
                    f"aws:RequestTag/{cluster_tag}": "owned",
                    "aws:RequestTag/eks:eks-cluster-name": cluster_name,
                    "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
                },
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedResourceTagging",
            actions=["ec2:CreateTags"],
            resources=[ec2("instance/*")],
            conditions={
                "StringEquals": {f"aws:ResourceTag/{cluster_tag}": "owned"},
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                },
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedDeletion",
            actions=["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
            resources=[ec2("instance/*"), ec2("launch-template/*")],
            conditions={
                "StringEquals": {f"aws:ResourceTag/{cluster_tag}": "owned"},
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
            },
        ),
    ]

    iam_integration = [
        iam.PolicyStatement(
            sid="AllowPassingInstanceRole",
            actions=["iam:PassRole"],
            resources=[node_role_arn],
            conditions={"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}},
        ),
        iam.PolicyStatement(
            sid="AllowScopedInstanceProfileCreationActions",
            actions=["iam:CreateInstanceProfile"],
            resources=[instance_profiles],
            conditions={
                "StringEquals": {
                    f"aws:RequestTag/{cluster_tag}": "owned",
                    "aws:RequestTag/eks:eks-cluster-name": cluster_name,
                    "aws:RequestTag/topology.kubernetes.io/region": region,
                },
                "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedInstanceProfileTagActions",
            actions=["iam:TagInstanceProfile"],
            resources=[instance_profiles],
            conditions={
                "StringEquals": {
                    f"aws:ResourceTag/{cluster_tag}": "owned",
                    "aws:ResourceTag/topology.kubernetes.io/region": region,
                    f"aws:RequestTag/{cluster_tag}": "owned",
                    "aws:RequestTag/eks:eks-cluster-name": cluster_name,
                    "aws:RequestTag/topology.kubernetes.io/region": region,
                },
                "StringLike": {
                    "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                },
            },
        ),
        iam.PolicyStatement(
            sid="AllowScopedInstanceProfileActions",
            actions=[
                "iam:AddRoleToInstanceProfile",
                "iam:RemoveRoleFromInstanceProfile",
                "iam:DeleteInstanceProfile",
            ],
            resources=[instance_profiles],
            conditions={
                "StringEquals": {
                    f"aws:ResourceTag/{cluster_tag}": "owned",
                    "aws:ResourceTag/topology.kubernetes.io/region": region,
                },
                "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        ),
    ]

    eks_integration = [
        iam.PolicyStatement(
            sid="AllowAPIServerEndpointDiscovery",
            actions=["eks:DescribeCluster"],
            resources=[cluster_arn],
        )
    ]

    interruption = [
        iam.PolicyStatement(
            sid="AllowInterruptionQueueActions",
            actions=["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
            resources=[queue_arn],
        )
    ]

    zonal_shift = [
        iam.PolicyStatement(
            sid="AllowZonalShiftStatusReadOnly",
            actions=["arc-zonal-shift:GetManagedResource"],
            resources=["*"],
            conditions={"StringEquals": {"arc-zonal-shift:ResourceIdentifier": cluster_arn}},
        )
    ]

    resource_discovery = [
        iam.PolicyStatement(
            sid="AllowRegionalReadActions",
            actions=[
                "ec2:DescribeCapacityReservations",
                "ec2:DescribeImages",
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeInstanceTypeOfferings",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribePlacementGroups",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSpotPriceHistory",
                "ec2:DescribeSubnets",
            ],
            resources=["*"],
            conditions={"StringEquals": {"aws:RequestedRegion": region}},
        ),
        iam.PolicyStatement(
            sid="AllowSSMReadActions",
            actions=["ssm:GetParameter"],
            resources=[f"arn:{partition}:ssm:{region}::parameter/aws/service/*"],
        ),
        iam.PolicyStatement(
            sid="AllowPricingReadActions",
            actions=["pricing:GetProducts"],
            resources=["*"],
            # Deviation 3: upstream has no condition here.
            conditions={"StringEquals": {"aws:RequestedRegion": list(PRICING_API_REGIONS)}},
        ),
        iam.PolicyStatement(
            sid="AllowUnscopedInstanceProfileListAction",
            actions=["iam:ListInstanceProfiles"],
            resources=["*"],  # deviation 4: cannot be scoped, same as upstream
        ),
        iam.PolicyStatement(
            sid="AllowInstanceProfileReadActions",
            actions=["iam:GetInstanceProfile"],
            resources=[instance_profiles],
        ),
    ]

    out = {
        "NodeLifecycle": node_lifecycle,
        "IAMIntegration": iam_integration,
        "EKSIntegration": eks_integration,
        "Interruption": interruption,
        "ZonalShift": zonal_shift,
        "ResourceDiscovery": resource_discovery,
    }
    assert tuple(out) == CONTROLLER_POLICY_NAMES
    return out


class KarpenterNodeRole(Construct):
    """The IAM role of nodes Karpenter launches (``EC2NodeClass.spec.role`` = ``role.role_name``).

    Trusts ``ec2.amazonaws.com``; AWS-managed policies :data:`NODE_ROLE_MANAGED_POLICIES`. The cluster stack
    must give it an EKS access entry of type ``EC2_LINUX`` so nodes can join.
    """

    def __init__(self, scope: Construct, construct_id: str, *, description: str | None = None) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description=description or "Nodes launched by Karpenter (EC2NodeClass role)",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(n) for n in NODE_ROLE_MANAGED_POLICIES],
        )


class KarpenterControllerRole(Construct):
    """The Karpenter controller's IAM role, assumed through EKS Pod Identity.

    :param cluster_name: the literal EKS cluster name (used inside IAM condition keys; tokens are rejected).
    :param cluster_arn: the cluster's ARN (a token is fine): ``eks:DescribeCluster`` and zonal-shift scope.
    :param node_role: the node role; the only role the controller may pass (to EC2 only).
    :param interruption_queue: the interruption queue; the only queue the controller may read/delete from.

    Attributes: ``role`` (:class:`aws_iam.Role`), ``policies`` (name in :data:`CONTROLLER_POLICY_NAMES` →
    :class:`aws_iam.ManagedPolicy` attached to ``role``).

    The cluster stack creates the ``CfnPodIdentityAssociation`` (namespace/service account of the Karpenter
    release) for ``role.role_arn``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        cluster_arn: str,
        node_role: iam.IRole,
        interruption_queue: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        _require_literal_cluster_name(cluster_name)
        stack = Stack.of(self)
        statements = controller_policy_statements(
            cluster_name=cluster_name,
            cluster_arn=cluster_arn,
            node_role_arn=node_role.role_arn,
            queue_arn=interruption_queue.queue_arn,
            partition=stack.partition,
            region=stack.region,
            account=stack.account,
        )
        self.role = iam.Role(
            self,
            "Role",
            # EKS Pod Identity: the agent calls AssumeRole + TagSession (session tags carry cluster/namespace/SA),
            # limited to this account and this cluster (confused-deputy guard; deviation 1).
            assumed_by=iam.ServicePrincipal("pods.eks.amazonaws.com")
            .with_conditions(
                {
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnEquals": {"aws:SourceArn": cluster_arn},
                }
            )
            .with_session_tags(),
            description=f"Karpenter controller for EKS cluster {cluster_name} (EKS Pod Identity)",
        )
        policies: dict[str, iam.ManagedPolicy] = {}
        for name in CONTROLLER_POLICY_NAMES:
            policies[name] = iam.ManagedPolicy(
                self,
                f"{name}Policy",
                description=f"Karpenter controller {name} permissions for cluster {cluster_name} (upstream v1.14.1)",
                statements=statements[name],
                roles=[self.role],
            )
        self.policies: Mapping[str, iam.ManagedPolicy] = policies

