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
from aws_cdk import aws_iam as iam
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
            f"ENI IPAM uses {kind}s of this account and region it cannot name in advance; {scope}",
        )
        for kind, scope in (
            ("network-interface", "every change to an existing ENI requires ec2:Vpc = this VPC, and a new ENI "
             "can only be created in a subnet of this VPC"),
            ("security-group", "limited to this VPC by the ec2:Vpc condition"),
            ("subnet", "limited to this VPC by the ec2:Vpc condition"),
            ("instance", "limited to this cluster's nodes by the kubernetes.io/cluster/<name>=owned tag "
             "(ec2:Vpc does not exist on instances)"),
            ("prefix-list", "read-only (GetManagedPrefixListEntries) on the account's own prefix lists"),
        )
    ),
    Acknowledgement(
        "Cluster/CiliumOperatorIdentity/Policy/Resource",
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:aws:prefix-list/*]",
        "read-only (GetManagedPrefixListEntries) on the AWS-managed prefix lists of this region, whose ids "
        "differ per region and which the operator discovers at run time",
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
    # --- Observability: the dashboards' chart is an S3 asset (charts/dashboards.py write_dashboards_chart) -----
    *(Acknowledgement(
        f"{_KUBECTL_HANDLER}/ServiceRole/DefaultPolicy/Resource", finding,
        "aws_eks_v2.HelmChart grants the kubectl handler read of the CDK bootstrap assets bucket (Asset.grantRead) so "
        "that it can fetch the Grafana dashboards chart asset; that bucket holds this app's templates, Lambda code "
        "and that chart, never secrets",
    ) for finding in (
        "AwsSolutions-IAM5[Action::s3:GetBucket*]",
        "AwsSolutions-IAM5[Action::s3:GetObject*]",
        "AwsSolutions-IAM5[Action::s3:List*]",
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*]",
    )),
    # --- Observability: the system node group's alarm (cdk_constructs/alarms.py NodeGroupCapacityAlarm) ---
    Acknowledgement(
        "Observability/AWS679f53fac002430cb0da5b7982bd2287/ServiceRole/Resource", _LAMBDA_BASIC,
        "the AwsCustomResource singleton Lambda (created by aws-cdk-lib) writes only its own logs with it; its API "
        "permissions are the node-group-scoped statements of the alarm construct",
    ),
    Acknowledgement(
        "Observability/SystemNodes/MetricsCollection/CustomResourcePolicy/Resource",
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:autoscaling:<AWS::Region>:<AWS::AccountId>:autoScalingGroup"
        ":*:autoScalingGroupName/eks-*]",
        "EKS creates the node group's Auto Scaling group under a random name (eks-<node group>-<uuid>, in no "
        "template); Enable/DisableMetricsCollection are limited to groups tagged eks:cluster-name of this cluster "
        "(enable: also eks:nodegroup-name)",
    ),
)


# --- Network: the Lambda ENI cleanup run on stack delete (cdk_constructs/lambda_eni_cleanup.py) ---
_ENI_CLEANUP_ROLE = "Network/LambdaEniCleanup/Role/Resource"
ACKNOWLEDGEMENTS += (
    Acknowledgement(
        _ENI_CLEANUP_ROLE,
        "AwsSolutions-IAM5[Resource::*]",
        "ec2:DescribeNetworkInterfaces supports no resource-level permissions (it finds the Lambda ENIs left in "
        "the VPC); read-only and limited to this region by aws:RequestedRegion",
    ),
    Acknowledgement(
        _ENI_CLEANUP_ROLE,
        f"AwsSolutions-IAM5[Resource::{_EC2}:network-interface/*]",
        "the ids of Lambda's leftover ENIs are known only at delete time; ec2:DeleteNetworkInterface is limited "
        "to network interfaces of this VPC by the ec2:Vpc condition",
    ),
)


# --- Karpenter: the teardown guard run on stack delete (cdk_constructs/karpenter_teardown_guard.py) ---
ACKNOWLEDGEMENTS += (
    Acknowledgement(
        "Karpenter/TeardownGuard/Role/Resource",
        "AwsSolutions-IAM5[Resource::*]",
        "ec2:DescribeInstances supports no resource-level permissions (it finds the instances Karpenter launched "
        "for this cluster by their tags); read-only and limited to this region by aws:RequestedRegion",
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


# --- Ray: checkpoint storage and the validation runner ------------------------------------
_RUNNER = "Ray/ValidationRunner/Project"
_RUNNER_POLICY = f"{_RUNNER}/Role/DefaultPolicy/Resource"
ACKNOWLEDGEMENTS += (
    Acknowledgement(
        "Ray/Storage/PodIdentity/Policy/Resource",
        "AwsSolutions-IAM5[Resource::<StorageBucket5CB7C8EA.Arn>/<aws:PrincipalTag/kubernetes-namespace>/*]",
        "Ray pods read and add checkpoint objects only under their own namespace's prefix of their own checkpoint "
        "bucket (the EKS Pod Identity session tag kubernetes-namespace); no delete",
    ),
    *(
        Acknowledgement(_RUNNER_POLICY, f"AwsSolutions-IAM5[Action::{action}]", reason)
        for action, reason in (
            ("s3:GetBucket*", "CDK's read grant on the asset that carries the job's code (jobs/)"),
            ("s3:GetObject*", "CDK's read grant on the asset that carries the job's code (jobs/)"),
            ("s3:List*", "CDK's read grant on the asset that carries the job's code (jobs/)"),
            ("kms:GenerateDataKey*", "CodeBuild encrypts its artifacts and logs with the runner's own KMS key"),
            ("kms:ReEncrypt*", "CodeBuild encrypts its artifacts and logs with the runner's own KMS key"),
        )
    ),
    Acknowledgement(
        _RUNNER_POLICY,
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*]",
        "file assets live in the CDK bootstrap bucket under content-hash keys; read-only",
    ),
    Acknowledgement(
        _RUNNER_POLICY,
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-interface/*]",
        "CodeBuild in a VPC attaches ENIs it creates at build time; limited to the runner's subnets by ec2:Subnet",
    ),
    Acknowledgement(
        _RUNNER_POLICY,
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/codebuild/<ValidationRunnerProjectE1DC2038>:*]",
        "CodeBuild writes build logs into the log group named after its own project",
    ),
    Acknowledgement(
        _RUNNER_POLICY,
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:codebuild:<AWS::Region>:<AWS::AccountId>:report-group/<ValidationRunnerProjectE1DC2038>-*]",
        "CodeBuild publishes reports into report groups named after its own project",
    ),
    Acknowledgement(
        f"{_RUNNER}/PolicyDocument/Resource",
        "AwsSolutions-IAM5[Resource::*]",
        "EC2 Describe* for the build's VPC networking has no resource-level permissions; limited to this region",
    ),
    *(
        Acknowledgement(
            f"{_RUNNER}/PolicyDocument/Resource",
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:{kind}/*]",
            f"the build's ENIs may use any {kind} of this VPC (the ec2:Vpc condition pins the VPC)",
        )
        for kind in ("network-interface", "subnet", "security-group")
    ),
)


def _find(root: Construct, path: str) -> IConstruct | None:
    node: IConstruct | None = root
    for part in path.split("/"):
        node = node.node.try_find_child(part) if node is not None else None
    return node


def _env_variants(finding: str, scope: Construct) -> set[str]:
    """The finding id as cdk-nag prints it in an environment-agnostic stage and in ``scope``'s environment."""
    variants = {finding}
    stage = cdk.Stage.of(scope)
    account, region = (stage.account, stage.region) if stage is not None else (None, None)
    if region and not cdk.Token.is_unresolved(region):
        partition = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
        concrete = finding.replace("<AWS::Partition>", partition).replace("<AWS::Region>", region)
        if account and not cdk.Token.is_unresolved(account):
            concrete = concrete.replace("<AWS::AccountId>", account)
        variants.add(concrete)
    return variants


def enable(stage: Construct, acknowledgements: tuple[Acknowledgement, ...] | None = None) -> None:
    """Run AwsSolutions checks over ``stage`` and apply the acknowledgements that match constructs in it."""
    cdk.Validations.of(stage).add_plugins(AwsSolutionsChecks(stage))
    for ack in ACKNOWLEDGEMENTS if acknowledgements is None else acknowledgements:
        if ack.finding.split("[")[0] in NEVER_ACKNOWLEDGED:
            raise ValueError(f"{ack.finding} must be fixed, not acknowledged ({ack.path})")
        if not ack.reason.strip():
            raise ValueError(f"acknowledgement of {ack.finding} on {ack.path} has no reason")
        target = _find(stage, ack.path)
        if target is not None:  # optional parts (GPU pool, pipeline) may be absent
            for finding in sorted(_env_variants(ack.finding, target)):
                cdk.Validations.of(target).acknowledge(cdk.Acknowledgment(id=finding, reason=ack.reason))


# --- CDK Pipelines' generated roles ------------------------------------------------------
# The delivery pipeline's roles are written by CDK Pipelines (aws_cdk.pipelines), not by us.
# Their wildcard findings come from a small, known set of CDK grant patterns; each is
# acknowledged per policy and per finding, computed from the synthesized statements, and only
# when it matches one of these patterns. Anything else in the pipeline still fails synth.
_PIPELINE_ACTION_REASONS = {
    "s3:GetObject*": "CDK grant to read pipeline artifacts from the pipeline's own artifact bucket",
    "s3:GetBucket*": "CDK grant to read the pipeline's own artifact bucket's location and settings",
    "s3:List*": "CDK grant to list the pipeline's own artifact bucket",
    "s3:DeleteObject*": "CDK grant to replace artifacts in the pipeline's own artifact bucket",
    "s3:Abort*": "CDK grant to abort multipart uploads into the pipeline's own artifact bucket",
    "kms:GenerateDataKey*": "CDK grant to encrypt artifacts with the pipeline's own artifact key",
    "kms:ReEncrypt*": "CDK grant to re-encrypt artifacts with the pipeline's own artifact key",
}


def _nag_string(value) -> str:
    """Render a resolved CloudFormation value the way cdk-nag names it in finding ids."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref":
            return f"<{arg}>"
        if fn == "Fn::GetAtt":
            return f"<{arg[0]}.{arg[1]}>"
        if fn == "Fn::Join":
            return arg[0].join(_nag_string(part) for part in arg[1])
    return json.dumps(value, separators=(",", ":"))


def _pipeline_resource_reason(resource: str, artifact_bucket: str) -> str | None:
    if resource == f"<{artifact_bucket}.Arn>/*":
        return "CDK grant on the objects of the pipeline's own artifact bucket"
    if ":log-group:/aws/codebuild/" in resource:
        return "CodeBuild writes its build logs into log groups named after its own project"
    if ":report-group/" in resource:
        return "CodeBuild publishes test reports into report groups named after its own project"
    if resource.endswith(":role/*") and ":iam::" in resource:
        return ("self-mutation assumes only CDK bootstrap roles (condition iam:ResourceTag/aws-cdk:bootstrap-role) "
                "to deploy the pipeline stack")
    if resource == "*":
        return "CDK Pipelines' read of CloudFormation stack state and of CDK bootstrap version (no resource scoping)"
    return None


def pipeline_acknowledgements(stack: cdk.Stack, artifact_bucket: Construct) -> tuple[Acknowledgement, ...]:
    """Acknowledgements for the CDK-generated IAM policies of a CDK Pipelines stack."""
    bucket_id = stack.get_logical_id(artifact_bucket.node.default_child)  # type: ignore[arg-type]
    stack_path = stack.node.path + "/"
    acks = []
    for child in stack.node.find_all():
        if not isinstance(child, iam.CfnPolicy) or "/Delivery/" not in child.node.path + "/":
            continue
        path = child.node.path.removeprefix(stack_path)
        document = stack.resolve(child.policy_document)
        findings: dict[str, str] = {}
        for statement in document.get("Statement", []):
            actions = statement.get("Action", [])
            for action in actions if isinstance(actions, list) else [actions]:
                if "*" in action and action in _PIPELINE_ACTION_REASONS:
                    findings[f"AwsSolutions-IAM5[Action::{action}]"] = _PIPELINE_ACTION_REASONS[action]
            resources = statement.get("Resource", [])
            for resource in resources if isinstance(resources, list) else [resources]:
                rendered = _nag_string(resource)
                if "*" in rendered:
                    reason = _pipeline_resource_reason(rendered, bucket_id)
                    if reason:
                        findings[f"AwsSolutions-IAM5[Resource::{rendered}]"] = reason
        acks += [Acknowledgement(path, finding, reason) for finding, reason in sorted(findings.items())]
    return tuple(acks)


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
