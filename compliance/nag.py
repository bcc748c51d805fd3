"""cdk-nag (AwsSolutions pack) over every PlatformStage, and every acknowledgement in one reviewed place.

Synthesis fails on any finding that is not acknowledged below. Each acknowledgement names
one finding (rule id plus the finding's own suffix, e.g. ``AwsSolutions-IAM5[Resource::*]``)
on one construct path inside the stage, with the reason it is acceptable. Prefix matching
is not used: a new finding on the same construct fails synth until someone reviews it.

Never acknowledged, always fixed (tests/policy/test_cdk_nag.py enforces this):
an API endpoint open to the world (EKS1), missing control-plane logs (EKS2), missing VPC
flow logs (VPC7), SQS or S3 without TLS enforcement (SQS4, S10), S3 without a public-access
block or access logs (S1, S2), KMS keys without rotation (KMS5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import Construct, IConstruct

NEVER_ACKNOWLEDGED = (
    "AwsSolutions-EKS1",
    "AwsSolutions-EKS2",
    "AwsSolutions-VPC7",
    "AwsSolutions-SQS4",
    "AwsSolutions-S1",
    "AwsSolutions-S2",
    "AwsSolutions-S10",
    "AwsSolutions-KMS5",
)


@dataclass(frozen=True)
class Acknowledgement:
    path: str  # construct path below the stage, e.g. "Cluster/SystemNodeRole/Resource"
    finding: str
    reason: str


_KUBECTL_HANDLER = "Cluster/Cluster/KubectlProvider/Handler"
_KUBECTL_FRAMEWORK = "Cluster/Cluster/KubectlProvider/Provider/framework-onEvent"
_LAMBDA_BASIC = "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]"
_LAMBDA_VPC = "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]"
_CDK_HANDLER = (
    "created by aws_eks_v2 for the kubectl/Helm custom-resource handler, which runs in the VPC "
    "(private endpoint); CDK chooses and maintains its policies"
)
_EC2 = "arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>"
_NODE_POLICY = "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{}]"

ACKNOWLEDGEMENTS: tuple[Acknowledgement, ...] = (
    # --- EKS control plane and CDK's kubectl handler --------------------------------
    Acknowledgement(
        "Cluster/Cluster/Role/Resource",
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonEKSClusterPolicy]",
        "the EKS service role must carry AmazonEKSClusterPolicy; AWS keeps it in step with EKS",
    ),
    Acknowledgement(f"{_KUBECTL_HANDLER}/ServiceRole/Resource", _LAMBDA_BASIC, _CDK_HANDLER),
    Acknowledgement(f"{_KUBECTL_HANDLER}/ServiceRole/Resource", _LAMBDA_VPC, _CDK_HANDLER),
    Acknowledgement(f"{_KUBECTL_FRAMEWORK}/ServiceRole/Resource", _LAMBDA_BASIC, _CDK_HANDLER),
    Acknowledgement(f"{_KUBECTL_FRAMEWORK}/ServiceRole/Resource", _LAMBDA_VPC, _CDK_HANDLER),
    Acknowledgement(
        f"{_KUBECTL_HANDLER}/ServiceRole/Resource",
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly]",
        "the kubectl handler pulls Helm charts from OCI registries (Karpenter's is on ECR Public)",
    ),
    Acknowledgement(
        f"{_KUBECTL_HANDLER}/ServiceRole/Resource",
        'AwsSolutions-IAM4[Policy::{"Fn::If":["ClusterKubectlProviderHandlerHasEcrPublic69E09706",'
        '{"Fn::Join":["",["arn:",{"Ref":"AWS::Partition"},'
        '":iam::aws:policy/AmazonElasticContainerRegistryPublicReadOnly"]]},{"Ref":"AWS::NoValue"}]}]',
        "read-only ECR Public access, only in partitions that have ECR Public, for OCI Helm charts",
    ),
    Acknowledgement(
        f"{_KUBECTL_HANDLER}/Resource",
        "AwsSolutions-L1",
        "the handler runtime is pinned by aws-cdk-lib together with its code; it moves with CDK upgrades",
    ),
    Acknowledgement(
        f"{_KUBECTL_FRAMEWORK}/ServiceRole/DefaultPolicy/Resource",
        "AwsSolutions-IAM5[Resource::<ClusterKubectlProviderHandler2E05C68A.Arn>:*]",
        "the provider framework may invoke any version of its own handler function (ARN:*), nothing else",
    ),
    # --- Cilium operator (ENI IPAM) -------------------------------------------------
    Acknowledgement(
        "Cluster/CiliumOperatorIdentity/Policy/Resource",
        "AwsSolutions-IAM5[Resource::*]",
        "EC2 Describe* calls support no resource-level permissions; limited to this region by aws:RequestedRegion",
    ),
    *(
        Acknowledgement(
            "Cluster/CiliumOperatorIdentity/Policy/Resource",
            f"AwsSolutions-IAM5[Resource::{_EC2}:{kind}/*]",
            f"ENI management needs any {kind} of this account and region, and every statement is limited "
            "to resources in this VPC by the ec2:Vpc condition",
        )
        for kind in ("instance", "network-interface", "security-group", "subnet")
    ),
    # --- node and add-on roles ------------------------------------------------------
    *(
        Acknowledgement(
            "Cluster/SystemNodeRole/Resource",
            _NODE_POLICY.format(policy),
            f"{policy} is the AWS-maintained minimum for an EKS node ({why})",
        )
        for policy, why in (
            ("AmazonEKSWorkerNodePolicy", "join the cluster"),
            ("AmazonEC2ContainerRegistryPullOnly", "pull images, no push"),
            ("AmazonSSMManagedInstanceCore", "SSM sessions instead of SSH keys"),
        )
    ),
    *(
        Acknowledgement(
            "Karpenter/NodeRole/Role/Resource",
            _NODE_POLICY.format(policy),
            f"{policy} is the AWS-maintained minimum for a Karpenter node ({why})",
        )
        for policy, why in (
            ("AmazonEKSWorkerNodePolicy", "join the cluster"),
            ("AmazonEC2ContainerRegistryPullOnly", "pull images, no push"),
            ("AmazonSSMManagedInstanceCore", "SSM sessions instead of SSH keys"),
        )
    ),
    Acknowledgement(
        "Cluster/EbsCsiIdentity/Role/Resource",
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy]",
        "AWS's policy for the EBS CSI driver scopes volume and snapshot actions by the driver's own tags",
    ),
)


# --- Karpenter controller (Karpenter 1.14 reference policy, same scoping) ----------------
_KARPENTER_EC2 = "arn:<AWS::Partition>:ec2:<AWS::Region>"
_LAUNCH_INPUTS = "launch inputs chosen by the EC2NodeClass at run time; the instances and fleets themselves"
ACKNOWLEDGEMENTS += (
    *(
        Acknowledgement(
            "Karpenter/Controller/NodeLifecyclePolicy/Resource",
            f"AwsSolutions-IAM5[Resource::{_KARPENTER_EC2}:{owner}:{kind}/*]",
            f"RunInstances/CreateFleet must reference any {kind} among the {_LAUNCH_INPUTS} are only "
            "allowed with the cluster and nodepool request tags (Karpenter's reference policy)",
        )
        for owner, kind in (
            ("", "image"), ("", "snapshot"), ("*", "security-group"), ("*", "subnet"),
            ("*", "capacity-reservation"), ("*", "placement-group"),
        )
    ),
    *(
        Acknowledgement(
            "Karpenter/Controller/NodeLifecyclePolicy/Resource",
            f"AwsSolutions-IAM5[Resource::{_KARPENTER_EC2}:*:{kind}/*]",
            f"{kind} ids are unknown until Karpenter creates them; creation, tagging and deletion require "
            "kubernetes.io/cluster/<name>=owned, eks:eks-cluster-name and karpenter.sh/nodepool tags",
        )
        for kind in ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")
    ),
    *(
        Acknowledgement(
            f"Karpenter/Controller/{policy}Policy/Resource",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iam::<AWS::AccountId>:instance-profile/*]",
            "Karpenter names instance profiles at run time; every change requires the cluster, region and "
            "ec2nodeclass tags, and reads stay within this account",
        )
        for policy in ("IAMIntegration", "ResourceDiscovery")
    ),
    Acknowledgement(
        "Karpenter/Controller/ResourceDiscoveryPolicy/Resource",
        "AwsSolutions-IAM5[Resource::*]",
        "EC2 Describe*, pricing:GetProducts and iam:ListInstanceProfiles have no resource-level permissions; "
        "Describe is limited to this region and pricing to the pricing endpoints' regions",
    ),
    Acknowledgement(
        "Karpenter/Controller/ResourceDiscoveryPolicy/Resource",
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ssm:<AWS::Region>::parameter/aws/service/*]",
        "read-only access to the public parameters AWS publishes AMI ids under (/aws/service/...)",
    ),
    Acknowledgement(
        "Karpenter/Controller/ZonalShiftPolicy/Resource",
        "AwsSolutions-IAM5[Resource::*]",
        "arc-zonal-shift:GetManagedResource is limited to this cluster by the ResourceIdentifier condition",
    ),
    Acknowledgement(
        "Karpenter/Interruption/Queue/Resource",
        "AwsSolutions-SQS3",
        "interruption notices are worthless after their 300 s retention (a Spot warning gives two minutes); "
        "a dead-letter queue would only keep stale notices, as in Karpenter's reference template",
    ),
)


def _find(root: Construct, path: str) -> IConstruct | None:
    node: IConstruct | None = root
    for part in path.split("/"):
        node = node.node.try_find_child(part) if node is not None else None
    return node


def enable(stage: cdk.Stage, acknowledgements: tuple[Acknowledgement, ...] | None = None) -> None:
    """Run AwsSolutions checks over ``stage`` and apply the acknowledgements that match constructs in it."""
    cdk.Validations.of(stage).add_plugins(AwsSolutionsChecks(stage))
    for ack in ACKNOWLEDGEMENTS if acknowledgements is None else acknowledgements:
        if ack.finding.split("[")[0] in NEVER_ACKNOWLEDGED:
            raise ValueError(f"{ack.finding} must be fixed, not acknowledged ({ack.path})")
        if not ack.reason.strip():
            raise ValueError(f"acknowledgement of {ack.finding} on {ack.path} has no reason")
        target = _find(stage, ack.path)
        if target is not None:  # optional parts (GPU pool, pipeline) may be absent
            cdk.Validations.of(target).acknowledge(cdk.Acknowledgment(id=ack.finding, reason=ack.reason))


def findings(outdir: str | Path) -> list[tuple[str, str]]:
    """(construct path, finding id) of every unacknowledged finding in a cloud assembly's validation report."""
    report = Path(outdir) / "validation-report.json"
    if not report.exists():
        return []
    found = []
    for plugin in json.loads(report.read_text()).get("pluginReports", []):
        for violation in plugin.get("violations", []):
            for construct in violation.get("violatingConstructs", []):
                found.append((construct["constructPath"], violation["ruleName"]))
    return found
