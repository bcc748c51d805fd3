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
creates only when it is told which account the pipeline lives in. The invoker is the runner's
only door from outside, so it is narrow on both sides:

* who: its trust policy names one principal, the pipeline's validation step role for this stage
  (:func:`validation_step_role_name`, a fixed name the pipeline gives that role), never the
  pipeline account as a whole;
* what: ``StartBuild`` on this project only when the request carries no override at all
  (:data:`START_BUILD_OVERRIDE_KEYS`): no other buildspec, source, image, environment variable,
  role or key. Whoever holds the invoker runs the reviewed build and nothing else.

IAM role names are global to an account, so the invoker's (and the step role's) name carries the
cluster, the stage and the region (:func:`invoker_role_name`): two stages in one account (different
regions) get two roles. They are the only fixed role names; each side must name the other's role in
a policy at synth, in another account.

Everything the build installs is pinned by digest: the kubectl release archive by the SHA-512 that
Kubernetes publishes in its changelog (:data:`KUBECTL_CLIENT_SHA512`), the Python packages by
``pip --require-hashes`` over ``deploy/validation-runner/requirements.txt`` (``tools/lock_runner_requirements.py``
writes it). The build's logs and artifacts are encrypted with a key of its own (rotating, its policy
admits CloudWatch Logs for the runner's log group only), not the cluster's.
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
from cdk_constructs.kms_logs import LOGS_CONTEXT_KEY

REPO_ROOT = Path(__file__).resolve().parent.parent
KUBERNETES_GROUP = "dynamic-factory:validation"
# The Node.js major version every CodeBuild build of the platform asks for (runtime-versions): 22 is the
# oldest LTS the CDK CLI and jsii still support. CodeBuild's standard:7.0 (Ubuntu) image offers it
# (aws/aws-codebuild-docker-images issue #733; the image's default is 18, past its end of life).
NODE_RUNTIME = "22"


# The lock of what the build pip-installs (hash-pinned; tools/lock_runner_requirements.py writes it). It travels
# in the build's source asset next to jobs/, and the build installs it with --require-hashes.
RUNNER_REQUIREMENTS = "deploy/validation-runner/requirements.txt"

# SHA-512 of the kubectl client archive (kubernetes-client-linux-amd64.tar.gz) of each kubectl release the runner
# may install, as Kubernetes publishes it in its changelog ("Downloads for vX.Y.Z", "Client Binaries"):
# kubernetes/kubernetes CHANGELOG/CHANGELOG-1.35.md (v1.35.2) and CHANGELOG/CHANGELOG-1.36.md (v1.36.0). The digest
# comes from the source repository, not from the download host, so a swapped archive on dl.k8s.io fails the build.
# A kubectl version without an entry fails synth (add the entry from the changelog when versions.py moves).
KUBECTL_CLIENT_SHA512 = {
    "1.35.2": "c16cad61183e84a8dd6247ba6b163a830dc9490a06e86f452d8406c8d877620688557695f89b70b87672bb4a8922889e8"
              "aea8ca8f085f7cf68c1cbee9db63c92",
    "1.36.0": "cac4ee270f7a5ca8e96f2b86f1b822bdc66168253b253f4838caf5bd16b8e314ae307c7ba718f32e9543d502f5d0c703bd"
              "3358449718c6956436969e125011cf",
}

# The StartBuild request fields the invoker may never set. For every override a StartBuild call carries, CodeBuild
# puts a condition key in the request context (buildspecOverride -> codebuild:source.buildspec, imageOverride ->
# codebuild:environment.image, environmentVariablesOverride -> codebuild:environment.environmentVariables...):
# the StartBuild row of the Service Authorization Reference, "Actions, resources, and condition keys for AWS
# CodeBuild" (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awscodebuild.html), and the
# CodeBuild user guide, "AWS CodeBuild condition keys" (the Null operator tests whether a field is in the request:
# https://docs.aws.amazon.com/codebuild/latest/userguide/action-context-keys.html). The invoker's StartBuild is
# allowed only while each of these keys is absent. Keys with a ${...} part name one list item (a variable, a
# secondary source); their list-level key is here. CodeBuild has no key for sourceVersion (an S3 object version:
# the asset's key is its content hash, so every version holds the same code), the timeouts, gitCloneDepth and
# debugSessionEnabled (a Session Manager session needs ssmmessages:* on the build's role, which it does not have).
_OVERRIDE_FIELDS: dict[str, tuple[str, ...]] = {
    "artifacts": ("bucketOwnerAccess", "encryptionDisabled", "location"),
    "autoRetryLimit": (),
    "cache": ("location", "modes", "type"),
    "encryptionKey": (),
    "environment": (
        "certificate", "computeType", "environmentVariables", "environmentVariables.name",
        "environmentVariables.value", "fleet.fleetArn", "image", "imagePullCredentialsType", "privilegedMode",
        "registryCredential", "registryCredential.credential", "registryCredential.credentialProvider", "type",
    ),
    "logsConfig": ("s3Logs", "s3Logs.bucketOwnerAccess", "s3Logs.encryptionDisabled", "s3Logs.location",
                   "s3Logs.status"),
    "secondaryArtifacts": ("artifactIdentifier", "bucketOwnerAccess", "encryptionDisabled", "location"),
    "secondarySources": ("auth.resource", "auth.type", "buildspec", "buildStatusConfig.context",
                         "buildStatusConfig.targetUrl", "insecureSsl", "location", "sourceIdentifier"),
    "serviceRole": (),
    "source": ("auth.resource", "auth.type", "buildspec", "buildStatusConfig.context", "buildStatusConfig.targetUrl",
               "insecureSsl", "location"),
}
START_BUILD_OVERRIDE_KEYS: tuple[str, ...] = tuple(sorted(
    f"codebuild:{section}{'.' + field if field else ''}"
    for section, fields in _OVERRIDE_FIELDS.items() for field in ("", *fields)
))


def project_name(cluster_name: str) -> str:
    return f"{cluster_name}-validation"


def log_group_name(cluster_name: str) -> str:
    """The runner's log group: fixed, so its own key's policy can name it (``/<cluster>/<what>``, like the
    shipped namespaces' groups)."""
    return f"/{cluster_name}/validation-runner"


# IAM role names: at most 64 characters of [\w+=,.@-].
_ROLE_NAME_MAX = 64


def _role_name(cluster_name: str, stage_name: str, region: str, suffix: str) -> str:
    """``<cluster>-<stage>-<region>-<suffix>``: IAM names are global to the account, so two stages that share an
    account (in different regions) must not share it. Longer than IAM allows, the name is cut and ends with a hash
    of the whole, so it stays unique and deterministic."""
    name = f"{cluster_name}-{stage_name}-{region}-{suffix}"
    if len(name) <= _ROLE_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:_ROLE_NAME_MAX - len(digest) - 1]}-{digest}"


def invoker_role_name(cluster_name: str, stage_name: str, region: str) -> str:
    """The invoker role in the stage's account: the pipeline's validation step assumes it to start the runner."""
    return _role_name(cluster_name, stage_name, region, "invoker")


def validation_step_role_name(cluster_name: str, stage_name: str, region: str) -> str:
    """The pipeline's validation step role for one stage, in the pipeline's account: the one principal the
    stage's invoker trusts."""
    return _role_name(cluster_name, stage_name, region, "validate")


def role_arn(role_name: str, account: str, *, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account}:role/{role_name}"


def invoker_policy_statements(project_arn: str) -> list[iam.PolicyStatement]:
    """What the invoker may do: start this project with no override at all, and read its builds."""
    return [
        iam.PolicyStatement(
            sid="StartTheReviewedBuildOnly",
            actions=["codebuild:StartBuild"],
            resources=[project_arn],
            conditions={"Null": {key: "true" for key in START_BUILD_OVERRIDE_KEYS}},
        ),
        iam.PolicyStatement(sid="ReadItsBuilds", actions=["codebuild:BatchGetBuilds"], resources=[project_arn]),
    ]


def locked_ray_version(path: Path | None = None) -> str:
    """The Ray version the runner's lock pins (``ray==X``)."""
    path = path or REPO_ROOT / RUNNER_REQUIREMENTS
    for line in path.read_text().splitlines():
        name, sep, version = line.split(" ", 1)[0].partition("==")
        if sep and name.lower() == "ray":
            return version
    raise ValueError(f"{path}: pins no ray version")


def kubectl_install_commands(kubectl_version: str) -> list[str]:
    """Fetch the kubectl client archive, check it against its pinned SHA-512, install kubectl from it."""
    digest = KUBECTL_CLIENT_SHA512.get(kubectl_version)
    if digest is None:
        raise ValueError(
            f"kubectl_version {kubectl_version!r} has no pinned SHA-512 (pinned: {sorted(KUBECTL_CLIENT_SHA512)}): add "
            "the kubernetes-client-linux-amd64.tar.gz digest from the Kubernetes changelog to KUBECTL_CLIENT_SHA512"
        )
    return [
        f"curl -fsSLo /tmp/kubectl.tar.gz https://dl.k8s.io/v{kubectl_version}/kubernetes-client-linux-amd64.tar.gz",
        f'echo "{digest}  /tmp/kubectl.tar.gz" | sha512sum -c -',
        "tar -xzf /tmp/kubectl.tar.gz -C /usr/local/bin --strip-components=3 kubernetes/client/bin/kubectl",
        "kubectl version --client",
    ]


def pip_install_command() -> str:
    """Every package from the hash-pinned lock, wheels only, nothing resolved at build time."""
    return f"pip install --quiet --require-hashes --no-deps --only-binary :all: -r {RUNNER_REQUIREMENTS}"


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


# How long the runner waits for the Ray head, and for the port-forward to answer (seconds). An operator with their
# own codebuild:StartBuild can override both per build (`aws codebuild start-build --environment-variables-override
# ...`); the pipeline's invoker cannot (it may start the build with no override at all).
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
        """``invoker_account``: the delivery pipeline's account; with it the construct creates the invoker role,
        trusted by that account's validation step role for this stage only (the stage needs an explicit
        environment). ``ray_version`` must be the Ray version the runner's lock pins.

        ``encryption_key``: the key of CodeBuild's artifacts and the runner's log group: the platform's logs key
        (never the Kubernetes secrets key; each KMS key costs $1 a month, counted in the idle budget); without one
        the runner makes a key of its own (``self.key``) that admits only its log group.
        """
        super().__init__(scope, construct_id)
        locked = locked_ray_version()
        if ray_version != locked:
            raise ValueError(
                f"ray_version {ray_version!r} is not the Ray version the runner installs: {RUNNER_REQUIREMENTS} pins "
                f"ray=={locked}; regenerate the lock with tools/lock_runner_requirements.py"
            )

        # The job's code (jobs/) and the runner's hash-pinned lock travel as a file asset (zipped at synth, no
        # Docker). Dotfiles never travel (a developer's .npmrc or .env at the repo root): the last patterns win.
        lock_dir = str(Path(RUNNER_REQUIREMENTS).parent)
        source = s3_assets.Asset(
            self,
            "JobSource",
            path=str(REPO_ROOT),
            exclude=["*", "!jobs", "!jobs/**", "jobs/**/__pycache__",
                     f"!{Path(lock_dir).parent}", f"!{lock_dir}", f"!{RUNNER_REQUIREMENTS}", ".*", "**/.*"],
        )

        security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, description="Validation runner: egress to the EKS API and the internet"
        )
        self.key = encryption_key if encryption_key is not None else self._build_key(cluster_name)
        log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=log_group_name(cluster_name),
            retention=logs.RetentionDays.ONE_MONTH,
            encryption_key=self.key,
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
            encryption_key=self.key,
            environment=codebuild.BuildEnvironment(
                build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                compute_type=codebuild.ComputeType.SMALL,
                privileged=False,
            ),
            environment_variables={"CLUSTER_NAME": codebuild.BuildEnvironmentVariable(value=cluster_name)},
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
                            # Versions and digests are literals of the buildspec, not variables a build
                            # could be started with (the invoker may not override any anyway).
                            "commands": [*kubectl_install_commands(kubectl_version), pip_install_command()],
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
        self.trusted_step_role_arn: str | None = None
        if invoker_account:
            self._build_invoker(cluster_name, invoker_account)

        cdk.CfnOutput(self, "ProjectName", value=self.project.project_name)

    def _build_key(self, cluster_name: str) -> kms.Key:
        """The runner's own key: CodeBuild's artifacts and the runner's log group, nothing else.

        Its policy has the account statement CDK writes by default (the key is administered, and used by the
        runner's role, through IAM policies of this account: the build role's grant names this key only) and
        one statement for CloudWatch Logs, limited by encryption context to the runner's log group (CloudWatch
        Logs user guide, "Encrypt log data in CloudWatch Logs using AWS KMS": the context key is the group's ARN).
        """
        key = kms.Key(
            self,
            "Key",
            description=f"{cluster_name}: validation runner (CodeBuild artifacts and logs)",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        stack = cdk.Stack.of(self)
        group_arn = f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:{log_group_name(cluster_name)}"
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchLogsForTheRunnerLogGroup",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"ArnEquals": {LOGS_CONTEXT_KEY: group_arn}},
            )
        )
        return key

    def _build_invoker(self, cluster_name: str, invoker_account: str) -> None:
        """The role the pipeline's validation step for this stage assumes: start the reviewed build, read it."""
        stage_name, stack = cdk.Stage.of(self).stage_name, cdk.Stack.of(self)
        if cdk.Token.is_unresolved(stack.region) or not stage_name:
            raise ValueError(
                "the validation invoker role is named after its stage and region: give the stage that holds "
                "the validation runner an explicit environment (the pipeline does)"
            )
        self.invoker_role_name = invoker_role_name(cluster_name, stage_name, stack.region)
        # One principal, the step role by its ARN (IAM resolves it when the trust policy is saved, so the role must
        # exist first: the pipeline stack, which creates it, deploys before any stage).
        self.trusted_step_role_arn = role_arn(
            validation_step_role_name(cluster_name, stage_name, stack.region), invoker_account, partition=stack.partition
        )
        self.invoker = iam.Role(
            self,
            "Invoker",
            role_name=self.invoker_role_name,
            description="Lets the delivery pipeline's validation step start the validation run and read its status",
            assumed_by=iam.ArnPrincipal(self.trusted_step_role_arn),
        )
        for statement in invoker_policy_statements(self.project.project_arn):
            self.invoker.add_to_policy(statement)

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
