"""Low-severity findings of issue #16, read from the synthesized templates.

* The Karpenter interruption queue admits EventBridge for this account's interruption rules only (confused deputy:
  ``aws:SourceAccount`` and ``aws:SourceArn``), and no other service.
* The Karpenter teardown guard's log group uses the platform's logs key, not the Kubernetes secrets key.
"""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from cdk_constructs.karpenter_interruption import INTERRUPTION_EVENT_KINDS, KarpenterInterruptionQueue
from tests.support.iam import as_list


def _resources(template: dict, type_: str) -> dict[str, dict]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == type_}


@pytest.fixture(scope="module")
def construct_template() -> dict:
    stack = cdk.Stack(cdk.App(), "InterruptionFindings")
    KarpenterInterruptionQueue(stack, "Interruption", queue_name="df-findings")
    return Template.from_stack(stack).to_json()


def _check_queue_admits_only_its_own_rules(template: dict) -> None:
    (queue_id,) = _resources(template, "AWS::SQS::Queue")
    rules = {k for k, r in _resources(template, "AWS::Events::Rule").items()
             if {"Fn::GetAtt": [queue_id, "Arn"]} in [t["Arn"] for t in r["Properties"]["Targets"]]}
    assert len(rules) == len(INTERRUPTION_EVENT_KINDS)
    (policy,) = _resources(template, "AWS::SQS::QueuePolicy").values()
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    # One grant: SendMessage for EventBridge, from this account, for exactly the interruption rules.
    assert len(allows) == 1, json.dumps(allows, indent=1)
    (allow,) = allows
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}, allow["Principal"]
    assert as_list(allow["Action"]) == ["sqs:SendMessage"]
    assert allow["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    conditions = allow.get("Condition", {})
    assert conditions.get("StringEquals", {}).get("aws:SourceAccount") == {"Ref": "AWS::AccountId"}, conditions
    sources = as_list(conditions.get("ArnEquals", {}).get("aws:SourceArn", []))
    assert sorted(json.dumps(s, sort_keys=True) for s in sources) == sorted(
        json.dumps({"Fn::GetAtt": [rule, "Arn"]}, sort_keys=True) for rule in rules), sources
    assert set(conditions) == {"StringEquals", "ArnEquals"}, conditions


def test_the_interruption_queue_admits_eventbridge_only_for_this_accounts_rules(construct_template):
    _check_queue_admits_only_its_own_rules(construct_template)


def test_the_platforms_interruption_queue_admits_eventbridge_only_for_its_rules(any_platform):
    _check_queue_admits_only_its_own_rules(any_platform.template_json("Karpenter"))


def test_the_karpenter_teardown_guard_logs_with_the_logs_key_not_the_secrets_key(any_platform):
    cluster = any_platform.template_json("Cluster")["Resources"]
    (eks_cluster,) = [r for r in cluster.values() if r["Type"] == "AWS::EKS::Cluster"]
    secrets = eks_cluster["Properties"]["EncryptionConfig"][0]["Provider"]["KeyArn"]["Fn::GetAtt"][0]
    (logs_key,) = [k for k, r in cluster.items() if r["Type"] == "AWS::KMS::Key" and k != secrets]
    groups = _resources(any_platform.template_json("Karpenter"), "AWS::Logs::LogGroup")
    assert groups
    for logical_id, group in groups.items():
        reference = json.dumps(group["Properties"]["KmsKeyId"])
        # A cross-stack reference names the key's logical id (construct path + an 8-digit hash).
        assert logs_key[:-8] in reference and secrets[:-8] not in reference, (logical_id, reference)
        assert "EncryptionConfig" not in reference, (logical_id, reference)
