"""The delivery pipeline: V2, connection source, tests in synth, one PlatformStage per environment, validation after deploy."""

from __future__ import annotations

import collections
import json
import os
import re
import stat
import subprocess
import sys
import textwrap

import pytest

import versions
from cdk_constructs import validation_runner
from charts import raycluster as rc
from stacks.pipeline_stack import CDK_ASSETS_CLI, SYNTH_COMMAND, SYNTH_COMMANDS, wait_for_validation_commands
from tests.platform_synth import PIPELINE_OVERRIDES, ROOT


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


def _projects(p) -> dict[str, dict]:
    return {k: r["Properties"] for k, r in p.template["Resources"].items() if r["Type"] == "AWS::CodeBuild::Project"}


def _build_specs(p) -> dict[str, dict]:
    """Every CodeBuild project's buildspec, by logical id (all inline: assets publish in parallel)."""
    specs = {k: json.loads(props["Source"]["BuildSpec"]) for k, props in _projects(p).items()}
    assert len(specs) == len(_projects(p)), "a project without an inline buildspec: read it from the assembly"
    return specs


def _spec_named(p, fragment: str) -> dict:
    (spec,) = [s for k, s in _build_specs(p).items() if fragment in k]
    return spec


def test_synth_runs_the_test_suite_then_synth(pipeline_platform):
    specs = _build_specs(pipeline_platform).values()
    synth = [s for s in specs if "make test" in json.dumps(s)]
    assert len(synth) == 1
    commands = synth[0]["phases"]["build"]["commands"]
    assert commands == list(SYNTH_COMMANDS)
    assert commands.index("make test") < commands.index(SYNTH_COMMAND)


def _locked_cli_version() -> str:
    lock = json.loads((ROOT / "package-lock.json").read_text())
    return lock["packages"]["node_modules/aws-cdk"]["version"]


def test_every_step_uses_the_cdk_cli_package_lock_pins(pipeline_platform):
    """Self-mutation used to install `aws-cdk@2` (whatever was newest) and asset publishing `cdk-assets@latest`."""
    assert versions.CDK_CLI == _locked_cli_version()
    specs = _build_specs(pipeline_platform)
    installs = [c for s in specs.values() for c in s["phases"].get("install", {}).get("commands", [])
                if c.startswith("npm install")]
    assert installs, "CDK Pipelines installs its tools with npm install -g"
    for command in installs:  # every global install names an exact version
        assert re.fullmatch(r"npm install -g (@?[\w./-]+)@\d+\.\d+\.\d+", command), command
    mutate = _spec_named(pipeline_platform, "SelfMutation")
    assert mutate["phases"]["install"]["commands"] == [f"npm install -g aws-cdk@{versions.CDK_CLI}"]
    assets = [s for k, s in specs.items() if "Assets" in k]
    assert assets and all(s["phases"]["install"]["commands"] == [f"npm install -g cdk-assets@{CDK_ASSETS_CLI}"]
                          for s in assets)
    # The synth step runs the CLI from node_modules (npm ci from package-lock.json) and checks its version.
    synth = _spec_named(pipeline_platform, "Synth")["phases"]["build"]["commands"]
    check = next(c for c in synth if "--version" in c)
    assert f'= "{versions.CDK_CLI}"' in check and "./node_modules/.bin/cdk" in check
    assert synth.index(check) < synth.index(SYNTH_COMMAND)
    assert "@latest" not in json.dumps(specs)


def test_every_codebuild_step_asks_for_node_22_and_python_311(pipeline_platform):
    """Node 20 (the synth step's `n 20`) and the image default (18) are past their end of life."""
    projects = _projects(pipeline_platform)
    kinds = {"Synth", "SelfMutation", "Assets", "Validate"}
    assert all(any(kind in k for k in projects) for kind in kinds)
    for logical_id, spec in _build_specs(pipeline_platform).items():
        assert projects[logical_id]["Environment"]["Image"] == "aws/codebuild/standard:7.0", logical_id
        runtimes = spec["phases"]["install"]["runtime-versions"]
        assert int(runtimes["nodejs"]) >= 22, logical_id
        assert runtimes["python"] == versions.RAY_PYTHON_VERSION and tuple(map(int, runtimes["python"].split("."))) >= (3, 11)
        commands = json.dumps(spec)
        assert not re.search(r"\bn \d+", commands), f"{logical_id} switches Node with `n`"


def test_the_validation_runner_asks_for_node_22_too(pipeline_platform):
    ray = pipeline_platform.stages["prod"]["Ray"]["Resources"]
    (runner,) = [r["Properties"] for r in ray.values() if r["Type"] == "AWS::CodeBuild::Project"]
    runtimes = json.loads(runner["Source"]["BuildSpec"])["phases"]["install"]["runtime-versions"]
    assert int(runtimes["nodejs"]) >= 22 and runtimes["python"] == versions.RAY_PYTHON_VERSION


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


def _invoker_names(p) -> dict[str, str]:
    """{stage: the RoleName of the invoker role in the stage's Ray stack}."""
    out = {}
    for stage, templates in p.stages.items():
        (name,) = [r["Properties"]["RoleName"] for r in templates["Ray"]["Resources"].values()
                   if r["Type"] == "AWS::IAM::Role" and "RoleName" in r["Properties"]]
        out[stage] = name
    return out


def test_validation_step_assumes_only_the_stage_invoker_role(pipeline_platform):
    resources = pipeline_platform.template["Resources"]
    policies = [r["Properties"]["PolicyDocument"] for r in resources.values() if r["Type"] == "AWS::IAM::Policy"]
    assume = [s for p in policies for s in p["Statement"] if s["Action"] == "sts:AssumeRole"
              and "-invoker" in json.dumps(s["Resource"])]
    targets = sorted(json.dumps(s["Resource"]) for s in assume)
    assert len(targets) == 2
    names = _invoker_names(pipeline_platform)
    # Each step may assume exactly the role its stage created, in the stage's account.
    assert any(f"444455556666:role/{names['prod']}" in t for t in targets)
    assert any(f"111122223333:role/{names['staging']}" in t for t in targets)


def test_invoker_role_names_are_unique_per_stage_and_region(pipeline_platform):
    """IAM names are global to an account: `<cluster>-validation-invoker` collided for two stages in one account."""
    names = _invoker_names(pipeline_platform)
    assert len(set(names.values())) == len(names)
    for stage in PIPELINE_OVERRIDES["platform.pipeline.stages"]:
        assert names[stage["name"]] == f"dynamic-factory-{stage['name']}-{stage['region']}-invoker"
    # Same cluster, same stage name, same account: only the region differs.
    assert validation_runner.invoker_role_name("dynamic-factory", "prod", "eu-west-1") != \
        validation_runner.invoker_role_name("dynamic-factory", "prod", "us-east-1")


def test_invoker_role_name_fits_iam_and_stays_unique_when_cut():
    longest = ("c" * 40, "S" * 20, "ap-southeast-4")
    name = validation_runner.invoker_role_name(*longest)
    assert len(name) <= 64 and re.fullmatch(r"[\w+=,.@-]+", name)
    assert name == validation_runner.invoker_role_name(*longest)  # deterministic
    assert name != validation_runner.invoker_role_name("c" * 40, "S" * 20, "ap-southeast-3")


def test_no_other_fixed_role_names_in_the_pipeline_or_its_stages(pipeline_platform):
    """Only the invoker and the validation step roles are named (each side's policy names the other's role at
    synth, in another account); every other role's name is generated, so nothing else can collide between stages,
    regions or pipelines."""
    pipeline_named = [r["Properties"]["RoleName"] for r in pipeline_platform.template["Resources"].values()
                      if r["Type"] == "AWS::IAM::Role" and "RoleName" in r["Properties"]]
    assert sorted(pipeline_named) == sorted(
        validation_runner.validation_step_role_name("dynamic-factory", s["name"], s["region"])
        for s in PIPELINE_OVERRIDES["platform.pipeline.stages"])
    for stage, templates in pipeline_platform.stages.items():
        named = [r["Properties"]["RoleName"] for t in templates.values() for r in t["Resources"].values()
                 if r["Type"] == "AWS::IAM::Role" and "RoleName" in r["Properties"]]
        assert named == [_invoker_names(pipeline_platform)[stage]]


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


# ------------------------------------------------------------------------------------------------------
# The validation step's wait loop and the runner's wait for the Ray head, run for real in `sh` against
# stand-ins for `aws` and `kubectl` that play back scripted answers.
# ------------------------------------------------------------------------------------------------------

FAKE_CLI = textwrap.dedent("""\
    import json, os, sys
    state = os.environ["FAKE_STATE"]
    args = sys.argv[1:]
    with open(os.path.join(state, "calls.log"), "a") as log:
        log.write(json.dumps({"args": args, "key": os.environ.get("AWS_ACCESS_KEY_ID", "")}) + "\\n")
    if args[:2] == ["sts", "assume-role"]:
        print("AKINVOKER\\tSECRET\\tTOKEN")
        sys.exit(0)
    key = next((a for a in args if a in SCRIPTED), None)
    path = os.path.join(state, key + ".json")
    queue = json.load(open(path))
    answer = queue.pop(0) if len(queue) > 1 else queue[0]  # the last answer repeats
    json.dump(queue, open(path, "w"))
    if "err" in answer:
        sys.stderr.write(answer["err"] + "\\n")
        sys.exit(255)
    sys.stdout.write(answer["out"])
""")


def _fake_cli(tmp_path, name: str, scripted: dict[str, list[dict]]):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text(f"#!{sys.executable}\nSCRIPTED = {sorted(scripted)!r}\n" + FAKE_CLI)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    for key, answers in scripted.items():
        (tmp_path / f"{key}.json").write_text(json.dumps(answers))
    return bin_dir


def _run_sh(script: str, tmp_path, bin_dir, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_STATE": str(tmp_path), **env}
    return subprocess.run(["sh", "-c", script], env=full_env, capture_output=True, text=True, timeout=60)


def _calls(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "calls.log").read_text().splitlines()]


WAIT_ENV = {"INVOKER_ROLE_ARN": "arn:aws:iam::444455556666:role/x", "TARGET_REGION": "eu-west-1",
            "VALIDATION_PROJECT": "dynamic-factory-validation", "POLL_SECONDS": "0"}


def _wait_script() -> str:
    (script,) = wait_for_validation_commands()
    return script


def test_validation_step_runs_the_wait_script_with_its_stage_settings(pipeline_platform):
    spec = _spec_named(pipeline_platform, "Validateprod")
    assert spec["phases"]["build"]["commands"] == wait_for_validation_commands()
    step = next(p for k, p in _projects(pipeline_platform).items() if "Validateprod" in k)
    env = {v["Name"]: v["Value"] for v in step["Environment"]["EnvironmentVariables"]}
    assert env["VALIDATION_PROJECT"] == validation_runner.project_name("dynamic-factory")
    assert env["TARGET_REGION"] == "eu-west-1"


def test_wait_loop_retries_transient_errors_and_passes_on_success(tmp_path):
    """It used to end at the first empty status (a throttled or failed call) and fail the pipeline."""
    bin_dir = _fake_cli(tmp_path, "aws", {
        "start-build": [{"err": "ThrottlingException: Rate exceeded"}, {"out": "dynamic-factory-validation:b1\n"}],
        "batch-get-builds": [{"err": "Could not connect to the endpoint URL"}, {"out": "None\n"}, {"out": ""},
                             {"out": "IN_PROGRESS\n"}, {"err": "ExpiredTokenException"}, {"out": "SUCCEEDED\n"}],
    })
    result = _run_sh(_wait_script(), tmp_path, bin_dir, **WAIT_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validation passed: dynamic-factory-validation:b1" in result.stdout
    codebuild = [c for c in _calls(tmp_path) if c["args"][0] == "codebuild"]
    assert len(codebuild) == 2 + 6
    assert all(c["key"] == "AKINVOKER" for c in codebuild), "every CodeBuild call runs as the invoker role"


@pytest.mark.parametrize("verdict", ["FAILED", "FAULT", "TIMED_OUT", "STOPPED"])
def test_wait_loop_fails_on_the_runners_verdict_and_says_where_the_logs_are(tmp_path, verdict):
    bin_dir = _fake_cli(tmp_path, "aws", {
        "start-build": [{"out": "p:b2\n"}],
        "batch-get-builds": [{"out": "IN_PROGRESS\n"}, {"out": f"{verdict}\n"}],
    })
    result = _run_sh(_wait_script(), tmp_path, bin_dir, **WAIT_ENV)
    assert result.returncode == 1
    assert f"ended {verdict}" in result.stderr and "dynamic-factory-validation" in result.stderr


def test_wait_loop_gives_up_after_persistent_errors_with_the_last_error(tmp_path):
    bin_dir = _fake_cli(tmp_path, "aws", {
        "start-build": [{"out": "p:b3\n"}],
        "batch-get-builds": [{"err": "AccessDeniedException: not authorized to perform codebuild:BatchGetBuilds"}],
    })
    result = _run_sh(_wait_script(), tmp_path, bin_dir, **WAIT_ENV, MAX_API_ERRORS="3")
    assert result.returncode == 1
    assert "no status for p:b3 after 3 tries" in result.stderr and "AccessDeniedException" in result.stderr


def test_wait_loop_is_bounded(tmp_path):
    bin_dir = _fake_cli(tmp_path, "aws", {"start-build": [{"out": "p:b4\n"}],
                                          "batch-get-builds": [{"out": "IN_PROGRESS\n"}]})
    result = _run_sh(_wait_script(), tmp_path, bin_dir, **{**WAIT_ENV, "POLL_SECONDS": "0.2"},
                     WAIT_TIMEOUT_SECONDS="1")
    assert result.returncode == 1
    assert "still IN_PROGRESS after 1s" in result.stderr and "stop-build --id p:b4" in result.stderr


def _head_script() -> str:
    return validation_runner.wait_for_head_command(namespace=rc.NAMESPACE, head_service=rc.HEAD_SERVICE)


SELECTOR = {"out": "ray.io/cluster=ray,ray.io/node-type=head,"}


def test_runner_waits_for_a_ready_ray_head_before_port_forwarding(tmp_path):
    """It used to port-forward right away and `sleep 5`: right after a deploy the head is often not up."""
    bin_dir = _fake_cli(tmp_path, "kubectl", {
        "service": [{"err": "Error from server (NotFound): services \"ray-head-svc\" not found"}, SELECTOR],
        "pods": [{"out": ""}, {"out": "ray-head-x= "}, {"out": "ray-head-x=False "}, {"out": "ray-head-x=True "}],
    })
    result = _run_sh(_head_script(), tmp_path, bin_dir, POLL_SECONDS="0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ray head ready: ray-head-x=True" in result.stdout
    pods = [c["args"] for c in _calls(tmp_path) if "pods" in c["args"]]
    assert len(pods) == 4 and all(a[a.index("-l") + 1] == "ray.io/cluster=ray,ray.io/node-type=head" for a in pods)


def test_runner_gives_up_on_a_head_that_never_gets_ready_with_a_clear_message(tmp_path):
    bin_dir = _fake_cli(tmp_path, "kubectl", {"service": [SELECTOR], "pods": [{"out": "ray-head-x=False "}]})
    result = _run_sh(_head_script(), tmp_path, bin_dir, POLL_SECONDS="0.2", RAY_HEAD_TIMEOUT_SECONDS="1")
    assert result.returncode == 1
    message = result.stderr
    assert "Ray head was not Ready after 1s" in message and "ray/ray-head-svc" in message
    assert "ray-head-x=False" in message and "kubectl -n ray describe pods" in message


def test_runner_build_waits_for_the_head_then_the_tunnel_then_submits(platform):
    ray = platform.template_json("Ray")["Resources"]
    (runner,) = [r["Properties"] for r in ray.values() if r["Type"] == "AWS::CodeBuild::Project"]
    commands = json.loads(runner["Source"]["BuildSpec"])["phases"]["build"]["commands"]
    head = next(i for i, c in enumerate(commands) if "Ray head was not Ready" in c)
    forward = next(i for i, c in enumerate(commands) if "port-forward" in c)
    submit = next(i for i, c in enumerate(commands) if "jobs.submit" in c)
    assert head < forward < submit
    assert "/api/version" in commands[forward] and "sleep 5" not in json.dumps(commands)
    assert validation_runner.RAY_HEAD_TIMEOUT_SECONDS <= 20 * 60  # well inside the runner's 45-minute timeout


def test_the_pinned_asset_publisher_reads_every_asset_manifest_the_pipeline_publishes(pipeline_platform):
    """The asset steps run `cdk-assets --path <manifest> publish`: the pinned release (package.json, what the
    steps install) must read the manifests aws-cdk-lib writes. It refuses a newer cloud-assembly schema than it
    knows ("Cloud assembly schema version mismatch"), which is what holds aws-cdk-lib back (versions.py).
    `ls` reads and lists the manifest without touching AWS."""
    tool = ROOT / "node_modules" / ".bin" / "cdk-assets"
    manifests = sorted(pipeline_platform.outdir.glob("assembly-Pipeline-*/*.assets.json"))
    assert manifests
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    for manifest in manifests[:3]:
        result = subprocess.run([str(tool), "--path", str(manifest), "ls"], capture_output=True, text=True,
                                timeout=120, env=env)
        assert result.returncode == 0, f"{manifest.name}: {result.stderr[-800:]}"
        assert "file" in result.stdout or "docker-image" in result.stdout
