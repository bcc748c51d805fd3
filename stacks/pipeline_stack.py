"""Continuous delivery: CDK Pipelines deploys PlatformStage to each environment and proves it works.

source (CodeConnections) -> synth (`make test`, then `npx cdk synth`) -> self-mutation ->
for each environment: [manual approval] -> deploy PlatformStage -> run the XGBoost validation
job on the new cluster, failing the pipeline when the job fails or misses its metric.

The validation job runs from inside the environment's VPC (the API endpoint is private by
default): the stage deploys a small CodeBuild runner next to the cluster, and the
post-deployment step here only starts that runner (through a role the stage creates for this
pipeline's account) and waits for its verdict. See cdk_constructs/validation_runner.py.
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

from cdk_constructs import validation_runner

# The synth step does exactly what the README tells a developer to do.
SYNTH_COMMANDS = ("make test", "npx cdk synth --quiet")


@dataclass(frozen=True)
class DeploymentTarget:
    name: str
    account: str
    region: str
    approval: bool = False


# (scope, construct id, environment) -> the PlatformStage to deploy there.
StageFactory = Callable[[Construct, str, cdk.Environment], cdk.Stage]


def wait_for_validation_commands(cluster_name: str) -> list[str]:
    """Shell commands that start the stage's validation runner and fail unless it succeeds."""
    project = validation_runner.project_name(cluster_name)
    return [
        'creds=$(aws sts assume-role --role-arn "$INVOKER_ROLE_ARN" --role-session-name df-validation '
        "--query Credentials --output json)",
        'export AWS_ACCESS_KEY_ID=$(echo "$creds" | python3 -c "import json,sys; print(json.load(sys.stdin)[\'AccessKeyId\'])")',
        'export AWS_SECRET_ACCESS_KEY=$(echo "$creds" | python3 -c "import json,sys; print(json.load(sys.stdin)[\'SecretAccessKey\'])")',
        'export AWS_SESSION_TOKEN=$(echo "$creds" | python3 -c "import json,sys; print(json.load(sys.stdin)[\'SessionToken\'])")',
        f'build=$(aws codebuild start-build --region "$TARGET_REGION" --project-name {project} --query build.id --output text)',
        'echo "validation build: $build"',
        'status=IN_PROGRESS; while [ "$status" = IN_PROGRESS ]; do sleep 30; '
        'status=$(aws codebuild batch-get-builds --region "$TARGET_REGION" --ids "$build" '
        "--query 'builds[0].buildStatus' --output text); echo \"status: $status\"; done",
        'test "$status" = SUCCEEDED',
    ]


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
            # KMS-encrypted artifacts (required to deploy into other accounts), rotating keys.
            cross_account_keys=True,
            enable_key_rotation=True,
            docker_enabled_for_synth=False,
            code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(
                    build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                    compute_type=codebuild.ComputeType.LARGE,
                    privileged=False,
                ),
            ),
            # Environment-specific stacks look up availability zones at synth time, through
            # the lookup role that `cdk bootstrap` creates in each target account.
            synth_code_build_defaults=pipelines.CodeBuildOptions(
                role_policy=[
                    iam.PolicyStatement(
                        actions=["sts:AssumeRole"],
                        resources=[f"arn:{self.partition}:iam::{t.account}:role/cdk-hnb659fds-lookup-role-{t.account}-{t.region}"
                                   for t in targets],
                    )
                ]
            ),
            synth=pipelines.ShellStep(
                "Synth",
                input=pipelines.CodePipelineSource.connection(repository, branch, connection_arn=connection_arn),
                install_commands=["n 20", "python3 --version", "node --version"],
                commands=list(SYNTH_COMMANDS),
                env={"CI": "true", "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"},
            ),
        )

        for target in targets:
            env = cdk.Environment(account=target.account, region=target.region)
            stage = stage_factory(self, target.name, env)
            invoker = validation_runner.invoker_role_arn(cluster_name, target.account, partition=self.partition)
            validate = pipelines.CodeBuildStep(
                f"Validate-{target.name}",
                commands=wait_for_validation_commands(cluster_name),
                env={"INVOKER_ROLE_ARN": invoker, "TARGET_REGION": target.region},
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
