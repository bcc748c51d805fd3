"""Continuous delivery: CDK Pipelines deploys PlatformStage to each environment and proves it works.

source (CodeConnections) -> synth (`make test`, then `npx cdk synth`) -> self-mutation ->
for each environment: [manual approval] -> deploy PlatformStage -> run the XGBoost validation
job on the new cluster, failing the pipeline when the job fails or misses its metric.

The validation job runs from inside the environment's VPC (the API endpoint is private by
default): the stage deploys a small CodeBuild runner next to the cluster, and the
post-deployment step here only starts that runner and waits for its verdict, retrying transient
API errors. Each stage's step runs as a role of its own with a fixed name
(``<cluster>-<stage>-<region>-validate``), which is the one principal the stage's invoker role
trusts; the invoker may start the runner with no override at all. See
cdk_constructs/validation_runner.py.

The synth step holds no credentials of any target account: it synthesizes with ``--no-lookups``, so the
context the app looks up (the target environments' availability zones, for their VPCs) must come from the
committed ``cdk.context.json`` (or from ``network.availability_zones``). When it is missing the step fails,
naming the missing context keys, instead of looking it up in the target accounts.

Every CodeBuild project of the pipeline (synth, self-mutation, asset publishing, validation) runs
on CodeBuild's standard:7.0 image with Node.js 22 and Python 3.11 asked for in its buildspec (a
partial buildspec in ``code_build_defaults``, which CDK Pipelines merges into every project it
makes). The CDK CLI is the one package-lock.json pins, everywhere: the synth step runs it from
node_modules (and checks it), self-mutation installs exactly ``versions.CDK_CLI``. Asset publishing
uses the separate ``cdk-assets`` tool, pinned exactly too (``CDK_ASSETS_CLI``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import pipelines
from constructs import Construct

import versions
from cdk_constructs import validation_runner

# The synth step does what the README tells a developer to do, and refuses to synthesize with any CDK CLI
# but the one package-lock.json pins (`make test` has run `npm ci` by then).
CLI_CHECK = (
    f'test "$(./node_modules/.bin/cdk --version | cut -d" " -f1)" = "{versions.CDK_CLI}" '
    f'|| {{ echo "the CDK CLI in node_modules is not {versions.CDK_CLI} (package-lock.json)" >&2; exit 1; }}'
)
# `--no-lookups`: the synth step has no role in any target account, so context the app would look up (availability
# zones of environment-specific stacks) must be committed in cdk.context.json; the CLI fails with "Context lookups
# have been disabled ... Missing context keys: ..." otherwise (aws-cdk CLI, lib/cxapp/cloud-executable.js).
SYNTH_COMMAND = "npx cdk synth --quiet --no-lookups"
SYNTH_COMMANDS = ("make test", CLI_CHECK, SYNTH_COMMAND)

# CodeBuild's Ubuntu standard:7.0 image offers Node.js 22 and Python 3.11 through runtime-versions.
BUILD_IMAGE = codebuild.LinuxBuildImage.STANDARD_7_0
NODE_RUNTIME = validation_runner.NODE_RUNTIME
PYTHON_RUNTIME = versions.RAY_PYTHON_VERSION  # the suite (and the job it runs locally) needs the cluster's Python
# CDK Pipelines (aws-cdk-lib 2.273.0, pipelines/lib/codepipeline/codepipeline.ts) installs the CLI for
# self-mutation as `npm install -g aws-cdk@<cliVersion>` (default "2": whatever is newest) and publishes
# assets with the separate `cdk-assets` package, `npm install -g cdk-assets@<cdkAssetsCliVersion>` (default
# "latest"). Both are pinned, to package.json's versions. cdk-assets reads cloud-assembly schema 54 at most,
# which is why aws-cdk-lib is held at 2.273.0 (versions.py).
CDK_ASSETS_CLI = versions.CDK_ASSETS
# How long the validation step waits for the runner (seconds): inside the step's 60-minute timeout, so the
# step ends with its own message; the runner itself stops after 45 minutes.
VALIDATION_WAIT_SECONDS = 55 * 60


@dataclass(frozen=True)
class DeploymentTarget:
    name: str
    account: str
    region: str
    approval: bool = False


# (scope, construct id, environment) -> the PlatformStage to deploy there.
StageFactory = Callable[[Construct, str, cdk.Environment], cdk.Stage]


def runtime_build_spec() -> codebuild.BuildSpec:
    """The partial buildspec every CodeBuild project of the pipeline gets: Node.js and Python versions."""
    return codebuild.BuildSpec.from_object(
        {"version": "0.2", "phases": {"install": {"runtime-versions": {"nodejs": NODE_RUNTIME, "python": PYTHON_RUNTIME}}}}
    )


def wait_for_validation_commands() -> list[str]:
    """A POSIX shell script that starts the stage's validation runner and fails unless it succeeds.

    Reads ``INVOKER_ROLE_ARN``, ``TARGET_REGION`` and ``VALIDATION_PROJECT``. Every AWS call runs with fresh
    credentials of the invoker role (a run can outlast one set). A failed call, or a status that is not
    there yet, is retried; ``MAX_API_ERRORS`` in a row (10) end the step with the last error. The verdict is
    the runner's final status: SUCCEEDED passes, anything else (FAILED, FAULT, TIMED_OUT, STOPPED) fails
    and says where the logs are. The wait is bounded (``WAIT_TIMEOUT_SECONDS``).
    """
    return [f"""\
poll=${{POLL_SECONDS:-30}}; max_errors=${{MAX_API_ERRORS:-10}}; timeout=${{WAIT_TIMEOUT_SECONDS:-{VALIDATION_WAIT_SECONDS}}}
as_invoker() {{
  creds=$(aws sts assume-role --role-arn "$INVOKER_ROLE_ARN" --role-session-name df-validation \\
    --query 'Credentials.[AccessKeyId,SecretAccessKey,SessionToken]' --output text 2>/tmp/aws.err) || return 1
  key=$(printf '%s' "$creds" | cut -f1); secret=$(printf '%s' "$creds" | cut -f2); token=$(printf '%s' "$creds" | cut -f3)
  AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_SESSION_TOKEN=$token aws "$@" 2>/tmp/aws.err
}}
errors=0; build=""
while [ -z "$build" ] || [ "$build" = None ]; do
  build=$(as_invoker codebuild start-build --region "$TARGET_REGION" --project-name "$VALIDATION_PROJECT" \\
    --query build.id --output text) || build=""
  if [ -z "$build" ] || [ "$build" = None ]; then
    errors=$((errors + 1))
    if [ "$errors" -ge "$max_errors" ]; then
      echo "ERROR: could not start $VALIDATION_PROJECT in $TARGET_REGION ($errors attempts): $(cat /tmp/aws.err)" >&2
      exit 1
    fi
    echo "start-build failed (attempt $errors of $max_errors), retrying: $(cat /tmp/aws.err)"
    sleep "$poll"
  fi
done
echo "validation build: $build (CodeBuild project $VALIDATION_PROJECT, $TARGET_REGION)"
errors=0; status=IN_PROGRESS; deadline=$(( $(date +%s) + timeout ))
while [ "$status" != SUCCEEDED ]; do
  sleep "$poll"
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "ERROR: $build still $status after ${{timeout}}s; stop it with: aws codebuild stop-build --id $build" >&2
    exit 1
  fi
  if ! now=$(as_invoker codebuild batch-get-builds --region "$TARGET_REGION" --ids "$build" \\
      --query 'builds[0].buildStatus' --output text) || [ -z "$now" ] || [ "$now" = None ]; then
    errors=$((errors + 1))
    if [ "$errors" -ge "$max_errors" ]; then
      echo "ERROR: no status for $build after $errors tries in a row: $(cat /tmp/aws.err)" >&2
      exit 1
    fi
    echo "status unavailable (try $errors of $max_errors), retrying: $(cat /tmp/aws.err)"
    continue
  fi
  errors=0; status=$now; echo "status: $status"
  case "$status" in
    IN_PROGRESS|SUCCEEDED) ;;
    *) echo "ERROR: the validation run $build ended $status: its log is in CloudWatch Logs of project" \\
         "$VALIDATION_PROJECT ($TARGET_REGION)" >&2
       exit 1 ;;
  esac
done
echo "validation passed: $build"
"""]


class PipelineStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        connection_arn: str,
        repository: str,
        branch: str,
        cluster_name: str,
        targets: Sequence[DeploymentTarget],
        stage_factory: StageFactory,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)

        access_logs = s3.Bucket(
            self,
            "ArtifactAccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(90))],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.pipeline = pipelines.CodePipeline(
            self,
            "Delivery",
            pipeline_name=f"{cluster_name}-delivery",
            pipeline_type=codepipeline.PipelineType.V2,
            self_mutation=True,
            # The CLI self-mutation installs: the one package-lock.json pins (tests check they agree).
            cli_version=versions.CDK_CLI,
            cdk_assets_cli_version=CDK_ASSETS_CLI,
            # KMS-encrypted artifacts (required to deploy into other accounts), rotating keys.
            cross_account_keys=True,
            enable_key_rotation=True,
            docker_enabled_for_synth=False,
            # Merged into every project CDK Pipelines makes (synth, self-mutation, assets, the validation
            # steps): the image and the Node.js / Python versions asked for in its install phase
            # (pipelines/lib/codepipeline/codepipeline.ts, codeBuildDefaultsFor, aws-cdk-lib 2.273.0).
            code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(
                    build_image=BUILD_IMAGE,
                    compute_type=codebuild.ComputeType.LARGE,
                    privileged=False,
                ),
                partial_build_spec=runtime_build_spec(),
            ),
            # No synth_code_build_defaults role policy: the synth step (which runs the test suite and whatever it
            # installs) gets no role in any target account; context lookups are off (SYNTH_COMMAND).
            synth=pipelines.ShellStep(
                "Synth",
                input=pipelines.CodePipelineSource.connection(repository, branch, connection_arn=connection_arn),
                install_commands=["node --version", "python3 --version"],
                commands=list(SYNTH_COMMANDS),
                env={"CI": "true"},
            ),
        )

        for target in targets:
            env = cdk.Environment(account=target.account, region=target.region)
            stage = stage_factory(self, target.name, env)
            step_role_name = validation_runner.validation_step_role_name(cluster_name, stage.stage_name, target.region)
            step_role = self._validation_step_role(step_role_name, stage, target)
            step_role_arn = validation_runner.role_arn(step_role_name, self.account, partition=self.partition)
            runner = self._validation_runner(stage)
            if runner.trusted_step_role_arn != step_role_arn:
                raise ValueError(
                    f"stage {stage.stage_name!r}: its validation invoker trusts {runner.trusted_step_role_arn!r}, but "
                    f"this pipeline's validation step runs as {step_role_arn!r}: build the stage with "
                    f"pipeline_account={self.account!r}"
                )
            invoker = validation_runner.role_arn(runner.invoker_role_name, target.account, partition=self.partition)
            validate = pipelines.CodeBuildStep(
                f"Validate-{target.name}",
                commands=wait_for_validation_commands(),
                env={
                    "INVOKER_ROLE_ARN": invoker,
                    "TARGET_REGION": target.region,
                    "VALIDATION_PROJECT": validation_runner.project_name(cluster_name),
                },
                role=step_role,
                role_policy_statements=[
                    iam.PolicyStatement(actions=["sts:AssumeRole"], resources=[invoker]),
                ],
                timeout=cdk.Duration.minutes(60),
            )
            pre = [pipelines.ManualApprovalStep(f"Approve-{target.name}")] if target.approval else []
            self.pipeline.add_stage(stage, pre=pre, post=[validate])

        self.pipeline.build_pipeline()
        # Access logs for the artifact bucket that CDK Pipelines creates.
        bucket = self.pipeline.pipeline.artifact_bucket.node.default_child
        bucket.logging_configuration = s3.CfnBucket.LoggingConfigurationProperty(  # type: ignore[union-attr]
            destination_bucket_name=access_logs.bucket_name, log_file_prefix="artifacts/"
        )

    def _validation_step_role(self, role_name: str, stage: cdk.Stage, target: DeploymentTarget) -> iam.Role:
        """The role the stage's validation step runs as, with the fixed name the stage's invoker trusts.

        Created inside the CodePipeline construct, like the roles CDK Pipelines makes for its own steps: CDK
        Pipelines adds what a CodeBuild step needs (artifacts, logs, reports) to it, and nothing else is on it but
        sts:AssumeRole on the stage's invoker."""
        return iam.Role(
            self.pipeline,
            f"ValidateRole-{target.name}",
            role_name=role_name,
            description=f"Validation step of stage {stage.stage_name}: starts the stage's validation runner",
            assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com"),
        )

    @staticmethod
    def _validation_runner(stage: cdk.Stage) -> validation_runner.ValidationRunner:
        """The stage's validation runner, which must have an invoker role for this pipeline's account."""
        runners = [c for c in stage.node.find_all()
                   if isinstance(c, validation_runner.ValidationRunner) and c.invoker_role_name]
        if len(runners) != 1:
            raise ValueError(
                f"stage {stage.stage_name!r} must hold exactly one validation runner with an invoker role for the "
                f"pipeline account; found {len(runners)}"
            )
        return runners[0]
