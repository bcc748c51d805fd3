"""Least privilege, proven over every IAM policy in the synthesized templates.

* No statement allows ``Action: "*"`` or a whole service (``s3:*``).
* ``Resource: "*"`` only in statements on the reviewed list (compliance/iam_review.py), each
  scoped by the condition keys listed there, and only for read-only actions.
* ``iam:PassRole`` always names its roles and says which service may receive them.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from compliance.iam_review import REVIEWED_WILDCARDS
from tests.support.iam import allow_statements, as_list

READ_ONLY_PREFIXES = ("Describe", "Get", "List")


def statements(synth) -> Iterator[tuple[str, dict]]:
    """(policy construct path below the stage, statement) for every Allow statement in every stack."""
    for found in allow_statements(synth.assembly.templates):
        yield found.path.split("/", 1)[-1].removesuffix("/Resource"), found.statement


def test_there_are_policies_to_check(platform):
    assert sum(1 for _ in statements(platform)) > 20


def test_no_action_wildcards(any_platform):
    offenders = [
        (path, s.get("Sid"), action)
        for path, s in statements(any_platform)
        for action in as_list(s.get("Action", []))
        if action == "*" or action.endswith(":*")
    ]
    assert offenders == []


def test_resource_wildcards_only_where_reviewed_and_scoped(any_platform):
    reviewed = {(w.policy_path, w.sid): w for w in REVIEWED_WILDCARDS}
    problems = []
    for path, s in statements(any_platform):
        if "*" not in as_list(s.get("Resource", [])):
            continue
        entry = reviewed.get((path, s.get("Sid")))
        if entry is None:
            problems.append(f"{path} {s.get('Sid')}: Resource '*' is not on the reviewed list")
            continue
        keys = {k for op in s.get("Condition", {}).values() for k in op}
        missing = set(entry.required_condition_keys) - keys
        if missing:
            problems.append(f"{path} {s.get('Sid')}: missing scoping condition(s) {sorted(missing)}")
        writes = [a for a in as_list(s["Action"]) if not a.split(":", 1)[1].startswith(READ_ONLY_PREFIXES)]
        if writes:
            problems.append(f"{path} {s.get('Sid')}: Resource '*' with non-read actions {writes}")
    assert problems == []


def test_every_reviewed_wildcard_is_still_used(platform):
    used = {(path, s.get("Sid")) for path, s in statements(platform) if "*" in as_list(s.get("Resource", []))}
    stale = [(w.policy_path, w.sid) for w in REVIEWED_WILDCARDS if (w.policy_path, w.sid) not in used]
    assert stale == []
    assert all(len(w.reason) > 30 for w in REVIEWED_WILDCARDS)


def test_pass_role_names_roles_and_the_receiving_service(any_platform):
    found = 0
    for path, s in statements(any_platform):
        if "iam:PassRole" in as_list(s.get("Action", [])):
            found += 1
            assert "*" not in as_list(s["Resource"]), path
            assert "iam:PassedToService" in s.get("Condition", {}).get("StringEquals", {}), path
    assert found >= 1


@pytest.mark.parametrize("action", ["*", "s3:*"])
def test_the_checks_catch_a_wildcard(action):
    class Fake:
        class assembly:  # noqa: N801 - mimics SynthesizedPlatform.assembly
            templates = {"S": {"Resources": {"P": {
                "Type": "AWS::IAM::Policy",
                "Metadata": {"aws:cdk:path": "Stage/S/P/Resource"},
                "Properties": {"PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]}},
            }}}}

    with pytest.raises(AssertionError):
        test_no_action_wildcards(Fake)
    with pytest.raises(AssertionError):
        test_resource_wildcards_only_where_reviewed_and_scoped(Fake)
