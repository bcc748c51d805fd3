"""The delivery pipeline: V2, connection source, tests in synth, one PlatformStage per environment, validation after deploy."""

from __future__ import annotations

import collections
import json

import pytest

from stacks.pipeline_stack import SYNTH_COMMANDS
from tests.platform_synth import PIPELINE_OVERRIDES


def _pipeline_resource(p):
    (res,) = [r for r in p.template["Resources"].values() if r["Type"] == "AWS::CodePipeline::Pipeline"]
    return res["Properties"]


def _stage_actions(p):
    return {s["Name"]: [a for a in s["Actions"]] for s in _pipeline_resource(p)["Stages"]}


def test_default_synth_has_no_pipeline(platform):
    assert not (platform.outdir / "Pipeline.template.json").exists()


def test_pipeline_is_v2_and_self_mutating(pipeline_platform):
    props = _pipeline_resource(pipeline_platform)
    assert props["PipelineType"] == "V2"
    assert "UpdatePipeline" in _stage_actions(pipeline_platform)


def test_source_is_the_configured_connection(pipeline_platform):
    (source,) = _stage_actions(pipeline_platform)["Source"]
    assert source["ActionTypeId"]["Provider"] == "CodeStarSourceConnection"
    config = source["Configuration"]
    assert config["ConnectionArn"] == PIPELINE_OVERRIDES["platform.pipeline.connection_arn"]
    assert config["FullRepositoryId"] == "acme/dynamic-factory" and config["BranchName"] == "main"


def test_synth_runs_the_test_suite_then_synth(pipeline_platform):
    projects = [r["Properties"] for r in pipeline_platform.template["Resources"].values() if r["Type"] == "AWS::CodeBuild::Project"]
    specs = [json.loads(p["Source"]["BuildSpec"]) for p in projects if "BuildSpec" in p.get("Source", {})]
    synth = [s for s in specs if "make test" in json.dumps(s)]
    assert len(synth) == 1
    commands = synth[0]["phases"]["build"]["commands"]
    assert commands == list(SYNTH_COMMANDS)
    assert commands.index("make test") < commands.index("npx cdk synth --quiet")


def test_each_environment_deploys_the_platform_stage_with_approval_where_asked(pipeline_platform):
    stages = _stage_actions(pipeline_platform)
    assert {"staging", "prod"} <= set(stages)
    prod = [a["Name"] for a in stages["prod"]]
    assert any(n.startswith("Approve-prod") for n in prod)
    assert not any(n.startswith("Approve") for n in (a["Name"] for a in stages["staging"]))
    order = {a["Name"]: a["RunOrder"] for a in stages["prod"]}
    approve = min(v for k, v in order.items() if k.startswith("Approve"))
    deploys = [v for k, v in order.items() if k.endswith(".Deploy")]
    validate = [v for k, v in order.items() if k.startswith("Validate")]
    assert approve < min(deploys) and max(deploys) < min(validate)


def test_pipeline_stage_and_direct_stage_come_from_the_same_class(platform, pipeline_platform):
    def shape(templates):
        return {sid: collections.Counter(r["Type"] for r in t["Resources"].values()) for sid, t in templates.items()}

    direct = {s.node.id: s for s in platform.stage.stacks}
    staged = pipeline_platform.stages["prod"]
    assert set(staged) == set(direct)
    direct_shape = shape({k: platform.template_json(k) for k in direct})
    staged_shape = shape(staged)
    # The pipeline's stages carry the validation invoker role for the pipeline account, nothing else.
    staged_shape["Ray"]["AWS::IAM::Role"] -= 1
    staged_shape["Ray"]["AWS::IAM::Policy"] -= 1
    assert staged_shape == direct_shape


def test_validation_step_assumes_only_the_stage_invoker_role(pipeline_platform):
    resources = pipeline_platform.template["Resources"]
    policies = [r["Properties"]["PolicyDocument"] for r in resources.values() if r["Type"] == "AWS::IAM::Policy"]
    assume = [s for p in policies for s in p["Statement"] if s["Action"] == "sts:AssumeRole"
              and "validation-invoker" in json.dumps(s["Resource"])]
    targets = sorted(json.dumps(s["Resource"]) for s in assume)
    assert len(targets) == 2
    assert "444455556666:role/dynamic-factory-validation-invoker" in targets[0] + targets[1]


def test_artifacts_encrypted_with_rotating_keys_and_access_logged(pipeline_platform):
    resources = pipeline_platform.template["Resources"]
    buckets = {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::S3::Bucket"}
    artifact = next(p for k, p in buckets.items() if "ArtifactsBucket" in k)
    assert artifact["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert "LoggingConfiguration" in artifact
    keys = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::KMS::Key"]
    assert keys and all(k.get("EnableKeyRotation") for k in keys)
    projects = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CodeBuild::Project"]
    assert all("EncryptionKey" in p for p in projects)


def test_no_admin_wildcards_in_pipeline_roles(pipeline_platform):
    for r in pipeline_platform.template["Resources"].values():
        if r["Type"] == "AWS::IAM::Policy":
            for s in r["Properties"]["PolicyDocument"]["Statement"]:
                actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
                assert "*" not in actions and not any(a.endswith(":*") for a in actions)


@pytest.mark.parametrize("overrides,fragment", [
    ({"platform.pipeline.connection_arn": "arn:aws:codestar:eu-west-1:1:conn"}, "connection_arn"),
    ({"platform.pipeline.repository": "just-a-name"}, "repository 'just-a-name' must be 'owner/name'"),
    ({"platform.pipeline.stages": []}, "at least one deployment stage"),
])
def test_pipeline_config_errors(overrides, fragment):
    import config

    merged = {**PIPELINE_OVERRIDES, **overrides}
    with pytest.raises(config.ConfigError, match="platform.pipeline") as info:
        config.build_config({}, merged)
    assert fragment in str(info.value)
