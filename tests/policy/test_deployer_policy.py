"""The starter policy for whoever runs `make deploy` (deploy/deployer-policy.json), checked like the platform's own.

The deployer needs little: the CDK CLI does everything through the bootstrap roles, so the policy
lets the deployer assume those, read the platform's stacks, write a kubeconfig, start the validation
run and create the Spot service-linked role once. The same checks as every synthesized policy apply:
actions exist, condition keys exist for their action and resource type, no wildcards.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.policy.test_iam_conditions import check_templates, privilege
from tests.support.iam import allow_statements, as_list

POLICY = Path(__file__).resolve().parents[2] / "deploy" / "deployer-policy.json"


def _template() -> dict:
    return json.loads(POLICY.read_text())


def test_the_deployer_policy_passes_the_condition_key_check():
    result = check_templates({"deployer": _template()})
    assert result.problems == [], "\n".join(result.problems)
    # The Spot service-linked role statement is the one with a condition: it must have been checked.
    assert any(key == "iam:AWSServiceName" for *_, key in result.checked)


def test_the_deployer_policy_names_real_actions_and_no_wildcards():
    statements = [found.statement for found in allow_statements({"deployer": _template()})]
    assert statements
    for statement in statements:
        for action in as_list(statement["Action"]):
            assert privilege(action) is not None, f"{action} is not an IAM action"
            assert "*" not in action.split(":", 1)[1], action
        if "*" in as_list(statement["Resource"]):
            # Only for actions that act on no resource type (the reference lists none, e.g. a catalogue call).
            for action in as_list(statement["Action"]):
                assert not privilege(action)["resource_types"].keys() - {""}, (statement.get("Sid"), action)


def test_the_deployer_may_assume_exactly_the_bootstrap_roles_the_cli_uses():
    (assume,) = [s for s in _template()["Resources"]["DeployerPolicy"]["Properties"]["PolicyDocument"]["Statement"]
                 if s["Action"] == "sts:AssumeRole"]
    kinds = sorted(r["Fn::Sub"].split("cdk-${Qualifier}-", 1)[1].split("-role-", 1)[0] for r in assume["Resource"])
    assert kinds == ["deploy", "file-publishing", "image-publishing", "lookup"]


def test_the_validation_project_the_policy_names_exists(platform):
    """The runner project `<cluster>-validation` the policy lets the deployer start is in the synthesized platform."""
    names = [res["Properties"].get("Name") for _, _, res in platform.assembly.resources("AWS::CodeBuild::Project")]
    assert f"{platform.config.cluster.name}-validation" in names
