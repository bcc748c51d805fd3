"""A CodeBuild project inside the VPC that runs the XGBoost validation job on the cluster.

The API endpoint is private by default, so whatever submits the job must sit in the VPC.
The runner:

1. gets a kubeconfig for the cluster (its role has an EKS access entry that maps it to one
   Kubernetes group, bound to a Role in the Ray namespace: read the token Secret, look up
   the head Service and its pods, port-forward to them; nothing else);
2. waits, for at most ``RAY_HEAD_TIMEOUT_SECONDS`` (15 minutes), until a pod behind the head
   Service is Ready (right after a deployment the head may still be pulling its image or
   waiting for a node), then port-forwards the Jobs API (8265) and waits until it answers;
   either wait ends with a message that says what was not ready and how to look;
3. reads the Ray auth token, submits ``python -m jobs.xgboost_validation`` (its code and pinned
   packages are in the cluster's Ray image: only the command line travels), follows the logs, and
   fails when the job fails or misses its metric. With ``gpu_workers=True`` (the RayCluster has a GPU
   worker group) the job runs with ``--device cuda``: the same job, boosting on the GPU workers.

Anyone with ``codebuild:StartBuild`` on the project can run it (the README shows how); the
delivery pipeline does so after each deployment through the invoker role, which this construct
creates only when it is told which account the pipeline lives in. IAM role names are global to an
account, so the invoker's name carries the cluster, the stage and the region
(:func:`invoker_role_name`): two stages in one account (different regions) get two roles. It is the
only fixed name here; the pipeline needs it because it must name the role in its own policy at synth,
in another account.
"""

from __future__ import annotations

import hashlib
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

import versions

REPO_ROOT = Path(__file__).resolve().parent.parent
KUBERNETES_GROUP = "dynamic-factory:validation"
# The Node.js major version every CodeBuild build of the platform asks for (runtime-versions): 22 is the
# oldest LTS the CDK CLI and jsii still support. CodeBuild's standard:7.0 (Ubuntu) image offers it
# (aws/aws-codebuild-docker-images issue #733; the image's default is 18, past its end of life).
NODE_RUNTIME = "22"


def project_name(cluster_name: str) -> str:
    return f"{cluster_name}-validation"


# IAM role names: at most 64 characters of [\w+=,.@-].
_ROLE_NAME_MAX = 64


def invoker_role_name(cluster_name: str, stage_name: str, region: str) -> str:
    """``<cluster>-<stage>-<region>-invoker``: IAM names are global to the account, so two stages that
    share an account (in different regions) must not share this name. Longer than IAM allows, the name is
    cut and ends with a hash of the whole, so it stays unique and deterministic."""
    name = f"{cluster_name}-{stage_name}-{region}-invoker"
    if len(name) <= _ROLE_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:_ROLE_NAME_MAX - len(digest) - 1]}-{digest}"


def invoker_role_arn(role_name: str, account: str, *, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account}:role/{role_name}"


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


# How long the runner waits for the Ray head, and for the port-forward to answer (seconds). Both can be
# overridden per build (`aws codebuild start-build --environment-variables-override ...`).
RAY_HEAD_TIMEOUT_SECONDS = 900
PORT_FORWARD_TIMEOUT_SECONDS = 60


def wait_for_head_command(*, namespace: str, head_service: str) -> str:
    """A POSIX shell script: wait until a pod behind the head Service is Ready, for a bounded time.

    The pods are found through the Service's own selector (``get services`` on the head Service and
    ``list pods`` are all the runner's Role allows), so this never drifts from what KubeRay labels.
    No pod yet, a pod not Ready yet and a failed API call are all "not yet"; the deadline decides.
    """
    return f"""\
timeout=${{RAY_HEAD_TIMEOUT_SECONDS:-{RAY_HEAD_TIMEOUT_SECONDS}}}; poll=${{POLL_SECONDS:-10}}
deadline=$(( $(date +%s) + timeout )); selector=""; state=""
while :; do
  if [ -z "$selector" ]; then
    selector=$(kubectl -n {namespace} get service {head_service} \\
      -o go-template='{{{{range $k, $v := .spec.selector}}}}{{{{$k}}}}={{{{$v}}}},{{{{end}}}}' 2>/tmp/head.err) || selector=""
    selector=${{selector%,}}
  fi
  if [ -n "$selector" ]; then
    state=$(kubectl -n {namespace} get pods -l "$selector" \\
      -o jsonpath='{{range .items[*]}}{{.metadata.name}}={{.status.conditions[?(@.type=="Ready")].status}} {{end}}' \\
      2>/tmp/head.err) || state=""
    case "$state" in *"=True "*) echo "Ray head ready: $state"; break ;; esac
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "ERROR: the Ray head was not Ready after ${{timeout}}s (service {namespace}/{head_service}," \\
      "selector '${{selector:-unknown}}', pods: '${{state:-none}}'; last error: $(cat /tmp/head.err 2>/dev/null))." \\
      "Look with: kubectl -n {namespace} get pods -l '${{selector}}' -o wide; kubectl -n {namespace} describe pods" >&2
    exit 1
  fi
  echo "waiting for the Ray head (pods: '${{state:-none}}')"
  sleep "$poll"
done"""


def port_forward_command(*, namespace: str, head_service: str, dashboard_port: int) -> str:
    """Port-forward the Jobs API and wait (bounded) until it answers through the tunnel."""
    return f"""\
kubectl -n {namespace} port-forward svc/{head_service} {dashboard_port}:{dashboard_port} >/tmp/pf.log 2>&1 &
timeout=${{PORT_FORWARD_TIMEOUT_SECONDS:-{PORT_FORWARD_TIMEOUT_SECONDS}}}; deadline=$(( $(date +%s) + timeout ))
until [ "$(curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{dashboard_port}/api/version)" != 000 ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "ERROR: the Ray Jobs API did not answer on the port-forward to {namespace}/{head_service}:{dashboard_port}" \\
      "within ${{timeout}}s; kubectl said: $(cat /tmp/pf.log)" >&2
    exit 1
  fi
  sleep 1
done"""


def validation_job_args(job_args: Sequence[str], *, gpu_workers: bool = False) -> list[str]:
    """The job's arguments: the configured ones, plus ``--device cuda`` when the cluster has GPU workers.

    Whether the GPU worker group exists is known at synth time, so the run does not have to guess it
    (the job's ``--device auto`` would ask the cluster instead)."""
    args = list(job_args)
    if any(a == "--device" or a.startswith("--device=") for a in args):
        raise ValueError(f"job_args {args!r} already choose a device; gpu_workers decides it")
    return args + (["--device", "cuda"] if gpu_workers else [])


def build_commands(
    *, namespace: str, head_service: str, dashboard_port: int, token_secret: str, token_key: str, job_args: Sequence[str]
) -> list[str]:
    args = " ".join(job_args)
    return [
        'aws eks update-kubeconfig --name "$CLUSTER_NAME" --region "$AWS_REGION"',
        wait_for_head_command(namespace=namespace, head_service=head_service),
        port_forward_command(namespace=namespace, head_service=head_service, dashboard_port=dashboard_port),
        f"export RAY_AUTH_TOKEN=$(kubectl -n {namespace} get secret {token_secret} "
        f"-o jsonpath='{{.data.{token_key}}}' | base64 -d)",
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
        gpu_workers: bool = False,
        invoker_account: str | None = None,
        encryption_key: kms.IKey | None = None,
        python_version: str = versions.RAY_PYTHON_VERSION,
    ) -> None:
        super().__init__(scope, construct_id)

        # The job's code travels as a file asset (zipped at synth, no Docker): jobs/ only.
        source = s3_assets.Asset(
            self,
            "JobSource",
            path=str(REPO_ROOT),
            # Dotfiles never travel (a developer's .npmrc or .env at the repo root): the last patterns win.
            exclude=["*", "!jobs", "!jobs/**", "jobs/**/__pycache__", ".*", "**/.*"],
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
                            # Nothing here runs Node; pinned anyway so an image default past its end of
                            # life (standard:7.0 defaults to Node 18) is never what a build gets.
                            "runtime-versions": {"python": python_version, "nodejs": NODE_RUNTIME},
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
                                job_args=validation_job_args(job_args, gpu_workers=gpu_workers),
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
        self.invoker_role_name: str | None = None
        if invoker_account:
            stage_name, region = cdk.Stage.of(self).stage_name, cdk.Stack.of(self).region
            if cdk.Token.is_unresolved(region) or not stage_name:
                raise ValueError(
                    "the validation invoker role is named after its stage and region: give the stage that holds "
                    "the validation runner an explicit environment (the pipeline does)"
                )
            self.invoker_role_name = invoker_role_name(cluster_name, stage_name, region)
            self.invoker = iam.Role(
                self,
                "Invoker",
                role_name=self.invoker_role_name,
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
