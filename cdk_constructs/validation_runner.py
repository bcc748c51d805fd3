"""A CodeBuild project inside the VPC that runs the XGBoost validation job on the cluster.

The API endpoint is private by default, so whatever submits the job must sit in the VPC.
The runner:

1. gets a kubeconfig for the cluster (its role has an EKS access entry that maps it to one
   Kubernetes group, bound to a Role in the Ray namespace: read the token Secret, look up
   the head Service and its pods, port-forward to them; nothing else);
2. port-forwards the Ray head's Jobs API (8265) and reads the Ray auth token;
3. submits ``python -m jobs.xgboost_validation`` with the ``jobs/`` package and pinned
   XGBoost, follows the logs, and fails when the job fails or misses its metric.

Anyone with ``codebuild:StartBuild`` on the project can run it (the README shows how); the
delivery pipeline does so after each deployment through ``invoker_role_name``, a role this
construct creates only when it is told which account the pipeline lives in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

REPO_ROOT = Path(__file__).resolve().parent.parent
KUBERNETES_GROUP = "dynamic-factory:validation"


def project_name(cluster_name: str) -> str:
    return f"{cluster_name}-validation"


def invoker_role_name(cluster_name: str) -> str:
    return f"{cluster_name}-validation-invoker"


def invoker_role_arn(cluster_name: str, account: str, *, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account}:role/{invoker_role_name(cluster_name)}"


def rbac_objects(*, namespace: str, head_service: str, token_secret: str) -> list[dict]:
    """Role + RoleBinding for the runner's Kubernetes group: only what the validation run does."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "validation-runner", "namespace": namespace},
            "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [token_secret], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["services"], "resourceNames": [head_service], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "validation-runner", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "validation-runner"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": KUBERNETES_GROUP}],
        },
    ]


def build_commands(
    *, namespace: str, head_service: str, dashboard_port: int, token_secret: str, token_key: str, job_args: Sequence[str]
) -> list[str]:
    args = " ".join(job_args)
    return [
        'aws eks update-kubeconfig --name "$CLUSTER_NAME" --region "$AWS_REGION"',
        f"kubectl -n {namespace} port-forward svc/{head_service} {dashboard_port}:{dashboard_port} >/tmp/pf.log 2>&1 &",
        f"export RAY_AUTH_TOKEN=$(kubectl -n {namespace} get secret {token_secret} "
        f"-o jsonpath='{{.data.{token_key}}}' | base64 -d)",
        "sleep 5",
        f"python -m jobs.submit --address http://127.0.0.1:{dashboard_port} --wait -- {args}",
    ]


class ValidationRunner(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        cluster_name: str,
        vpc: ec2.IVpc,
        kubectl_version: str,
        ray_version: str,
        namespace: str,
        head_service: str,
        dashboard_port: int,
        token_secret: str,
        token_key: str,
        job_args: Sequence[str],
        invoker_account: str | None = None,
        encryption_key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)

        # The job's code travels as a file asset (zipped at synth, no Docker): jobs/ only.
        source = s3_assets.Asset(
            self,
            "JobSource",
            path=str(REPO_ROOT),
            exclude=["*", "!jobs", "!jobs/**", "jobs/**/__pycache__"],
        )

        security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, description="Validation runner: egress to the EKS API and the internet"
        )
        log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            encryption_key=encryption_key,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.project = codebuild.Project(
            self,
            "Project",
            project_name=project_name(cluster_name),
            description="Runs the XGBoost validation job on the cluster through the Ray Jobs API",
            source=codebuild.Source.s3(bucket=source.bucket, path=source.s3_object_key),
            vpc=vpc,
            subnet_selection=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[security_group],
            encryption_key=encryption_key,
            environment=codebuild.BuildEnvironment(
                build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                compute_type=codebuild.ComputeType.SMALL,
                privileged=False,
            ),
            environment_variables={
                "CLUSTER_NAME": codebuild.BuildEnvironmentVariable(value=cluster_name),
                "KUBECTL_VERSION": codebuild.BuildEnvironmentVariable(value=kubectl_version),
                "RAY_VERSION": codebuild.BuildEnvironmentVariable(value=ray_version),
            },
            logging=codebuild.LoggingOptions(cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=log_group)),
            timeout=cdk.Duration.minutes(45),
            build_spec=codebuild.BuildSpec.from_object(
                {
                    "version": "0.2",
                    "phases": {
                        "install": {
                            "runtime-versions": {"python": "3.11"},
                            "commands": [
                                "curl -fsSLo /usr/local/bin/kubectl "
                                "https://dl.k8s.io/release/v${KUBECTL_VERSION}/bin/linux/amd64/kubectl",
                                "curl -fsSLo /tmp/kubectl.sha256 "
                                "https://dl.k8s.io/release/v${KUBECTL_VERSION}/bin/linux/amd64/kubectl.sha256",
                                'echo "$(cat /tmp/kubectl.sha256)  /usr/local/bin/kubectl" | sha256sum -c -',
                                "chmod +x /usr/local/bin/kubectl",
                                'pip install --quiet "ray[default]==${RAY_VERSION}"',
                            ],
                        },
                        "build": {
                            "commands": build_commands(
                                namespace=namespace,
                                head_service=head_service,
                                dashboard_port=dashboard_port,
                                token_secret=token_secret,
                                token_key=token_key,
                                job_args=job_args,
                            )
                        },
                    },
                }
            ),
        )
        self._scope_vpc_policy(vpc)
        source.grant_read(self.project)
        self.project.add_to_role_policy(
            iam.PolicyStatement(actions=["eks:DescribeCluster"], resources=[cluster.cluster_arn])
        )

        # Cluster access: one Kubernetes group, bound to the Role in rbac_objects().
        self.access_entry = eks.CfnAccessEntry(
            self,
            "Access",
            cluster_name=cluster.cluster_name,
            principal_arn=self.project.role.role_arn,  # type: ignore[union-attr]
            kubernetes_groups=[KUBERNETES_GROUP],
            type="STANDARD",
        )
        self.rbac = eks.KubernetesManifest(
            self,
            "Rbac",
            cluster=cluster,
            manifest=rbac_objects(namespace=namespace, head_service=head_service, token_secret=token_secret),
        )
        # Reach the API server's private endpoint. The rule is created here (not on the cluster's
        # side) so the cluster stack does not come to depend on this one.
        ec2.CfnSecurityGroupIngress(
            self,
            "ApiIngress",
            group_id=cluster.cluster_security_group_id,
            source_security_group_id=security_group.security_group_id,
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            description="validation runner to the EKS API",
        )

        self.invoker: iam.Role | None = None
        if invoker_account:
            self.invoker = iam.Role(
                self,
                "Invoker",
                role_name=invoker_role_name(cluster_name),
                description="Lets the delivery pipeline start the validation run and read its status",
                assumed_by=iam.AccountPrincipal(invoker_account),
            )
            self.invoker.add_to_policy(
                iam.PolicyStatement(
                    actions=["codebuild:StartBuild", "codebuild:BatchGetBuilds"],
                    resources=[self.project.project_arn],
                )
            )

        cdk.CfnOutput(self, "ProjectName", value=self.project.project_name)

    def _scope_vpc_policy(self, vpc: ec2.IVpc) -> None:
        """Replace CodeBuild's VPC policy (ENI create/delete on ``*``) by one limited to this VPC."""
        generated = self.project.node.find_child("PolicyDocument").node.default_child
        ec2_arn = f"arn:{cdk.Aws.PARTITION}:ec2:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}"
        generated.policy_document = iam.PolicyDocument(  # type: ignore[union-attr]
            statements=[
                iam.PolicyStatement(
                    sid="DescribeVpcResources",
                    actions=[
                        "ec2:DescribeDhcpOptions",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeSecurityGroups",
                        "ec2:DescribeSubnets",
                        "ec2:DescribeVpcs",
                    ],
                    resources=["*"],
                    conditions={"StringEquals": {"aws:RequestedRegion": cdk.Aws.REGION}},
                ),
                iam.PolicyStatement(
                    sid="BuildEnisInThisVpc",
                    actions=["ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface"],
                    resources=[f"{ec2_arn}:network-interface/*", f"{ec2_arn}:subnet/*", f"{ec2_arn}:security-group/*"],
                    conditions={"ArnEquals": {"ec2:Vpc": vpc.vpc_arn}},
                ),
            ]
        )
