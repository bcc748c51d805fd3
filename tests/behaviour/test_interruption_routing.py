"""Interruption events reach Karpenter's queue through the *synthesized* EventBridge rules (moto).

The rules' EventPatterns and the queue name are read from the CloudFormation template of the construct, the
rules are recreated in moto's EventBridge with the queue as their target, and realistic events (shaped like
AWS's documented examples) are published. Exactly the five interruption kinds must arrive, each once; lookalikes
(other detail-types, other sources, a misspelling, a spoofed custom source) must not.
"""

from __future__ import annotations

import copy
import json
from collections import Counter

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from cdk_constructs.karpenter_interruption import KarpenterInterruptionQueue

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")
from moto import mock_aws  # noqa: E402
from moto.events.models import EventPattern  # noqa: E402

REGION = "us-east-1"
ACCOUNT = "123456789012"
QUEUE_NAME = "df-behaviour"
INSTANCE = "i-0abcd1234ef567890"
INSTANCE_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{INSTANCE}"

# One event of each kind Karpenter handles, shaped like the examples in AWS's documentation (EC2 User Guide:
# Spot interruption notices, rebalance recommendations, instance state-change events, interruptible Capacity
# Reservations; AWS Health User Guide: EventBridge events).
MATCHING_EVENTS = [
    {
        "Source": "aws.health",
        "DetailType": "AWS Health Event",
        "Resources": [INSTANCE_ARN],
        "Detail": {
            "eventArn": f"arn:aws:health:{REGION}::event/EC2/AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED/"
                        "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED_ABC123",
            "service": "EC2",
            "eventTypeCode": "AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED",
            "eventTypeCategory": "scheduledChange",
            "startTime": "Sat, 05 Dec 2026 14:00:00 GMT",
            "endTime": "Sat, 05 Dec 2026 14:30:00 GMT",
            "eventDescription": [{"language": "en_US", "latestDescription": "Your instance will be retired."}],
            "affectedEntities": [{"entityValue": INSTANCE}],
        },
    },
    {
        "Source": "aws.ec2",
        "DetailType": "EC2 Spot Instance Interruption Warning",
        "Resources": [INSTANCE_ARN],
        "Detail": {"instance-id": INSTANCE, "instance-action": "terminate"},
    },
    {
        "Source": "aws.ec2",
        "DetailType": "EC2 Instance Rebalance Recommendation",
        "Resources": [INSTANCE_ARN],
        "Detail": {"instance-id": INSTANCE},
    },
    {
        "Source": "aws.ec2",
        "DetailType": "EC2 Instance State-change Notification",
        "Resources": [INSTANCE_ARN],
        "Detail": {"instance-id": INSTANCE, "state": "stopping"},
    },
    {
        "Source": "aws.ec2",
        "DetailType": "EC2 Capacity Reservation Instance Interruption Warning",
        "Resources": [INSTANCE_ARN],
        "Detail": {
            "instance-id": INSTANCE,
            "instance-action": "terminate",
            "instance-termination-time": "2026-12-05T14:02:00Z",
            "azId": "use1-az1",
        },
    },
]

NON_MATCHING_EVENTS = [
    # Misspelt detail-type (plural).
    {"Source": "aws.ec2", "DetailType": "EC2 Instance State-change Notifications",
     "Detail": {"instance-id": INSTANCE, "state": "running"}},
    # Case matters in EventBridge patterns.
    {"Source": "aws.ec2", "DetailType": "ec2 spot instance interruption warning",
     "Detail": {"instance-id": INSTANCE, "instance-action": "terminate"}},
    # Right detail-type, wrong (spoofed custom) source.
    {"Source": "my.app", "DetailType": "EC2 Spot Instance Interruption Warning",
     "Detail": {"instance-id": INSTANCE, "instance-action": "terminate"}},
    # Right detail-type, another AWS source.
    {"Source": "aws.autoscaling", "DetailType": "EC2 Instance State-change Notification",
     "Detail": {"instance-id": INSTANCE, "state": "stopping"}},
    # Other sources / kinds Karpenter does not consume.
    {"Source": "aws.autoscaling", "DetailType": "EC2 Instance-terminate Lifecycle Action",
     "Detail": {"EC2InstanceId": INSTANCE, "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"}},
    {"Source": "aws.ec2", "DetailType": "EC2 Fast Snapshot Restore State-change Notification",
     "Detail": {"snapshot-id": "snap-0123", "state": "enabled"}},
    {"Source": "aws.ec2", "DetailType": "AWS API Call via CloudTrail",
     "Detail": {"eventSource": "ec2.amazonaws.com", "eventName": "TerminateInstances"}},
    {"Source": "aws.health", "DetailType": "AWS Health Abuse Event",
     "Detail": {"service": "ABUSE", "eventTypeCategory": "issue"}},
]


@pytest.fixture(scope="module")
def synthesized() -> dict:
    """Queue name and rule patterns as they appear in the synthesized CloudFormation template."""
    app = cdk.App()
    stack = cdk.Stack(app, "InterruptionBehaviour")
    KarpenterInterruptionQueue(stack, "Interruption", queue_name=QUEUE_NAME)
    resources = Template.from_stack(stack).to_json()["Resources"]
    (queue,) = [r for r in resources.values() if r["Type"] == "AWS::SQS::Queue"]
    rules = {lid: r["Properties"] for lid, r in resources.items() if r["Type"] == "AWS::Events::Rule"}
    return {"queue_name": queue["Properties"]["QueueName"], "rules": rules}


@pytest.fixture(scope="module")
def aws_env():
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SECURITY_TOKEN": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        yield


def _entries(events: list[dict]) -> list[dict]:
    out = []
    for e in events:
        entry = {"Source": e["Source"], "DetailType": e["DetailType"], "Detail": json.dumps(e["Detail"])}
        if "Resources" in e:
            entry["Resources"] = e["Resources"]
        out.append(entry)
    return out


def _as_bus_event(e: dict) -> dict:
    """The event as EventBridge delivers it (what a pattern is matched against)."""
    return {
        "version": "0", "id": "00000000-0000-0000-0000-000000000000", "detail-type": e["DetailType"],
        "source": e["Source"], "account": ACCOUNT, "time": "2026-12-05T14:00:00Z", "region": REGION,
        "resources": e.get("Resources", []), "detail": copy.deepcopy(e["Detail"]),
    }


@pytest.fixture(scope="module")
def delivered(synthesized, aws_env) -> list[dict]:
    """Create queue + rules in moto from the template, publish every event, drain the queue."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        events = boto3.client("events", region_name=REGION)
        queue_url = sqs.create_queue(
            QueueName=synthesized["queue_name"], Attributes={"MessageRetentionPeriod": "300"}
        )["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        for logical_id, props in synthesized["rules"].items():
            events.put_rule(Name=logical_id, EventPattern=json.dumps(props["EventPattern"]), State=props["State"])
            targets = props["Targets"]
            assert len(targets) == 1
            events.put_targets(Rule=logical_id, Targets=[{"Id": targets[0]["Id"], "Arn": queue_arn}])

        entries = _entries(MATCHING_EVENTS + NON_MATCHING_EVENTS)
        for i in range(0, len(entries), 10):  # PutEvents takes at most 10 entries
            response = events.put_events(Entries=entries[i:i + 10])
            assert response["FailedEntryCount"] == 0, response

        received: list[dict] = []
        while True:
            batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = batch.get("Messages", [])
            if not messages:
                break
            for m in messages:
                received.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        return received


def test_exactly_the_five_interruption_kinds_arrive_each_once(delivered):
    got = Counter((e["source"], e["detail-type"]) for e in delivered)
    expected = Counter((e["Source"], e["DetailType"]) for e in MATCHING_EVENTS)
    assert got == expected
    assert len(delivered) == 5


def test_delivered_events_keep_the_detail_karpenter_parses(delivered):
    by_type = {e["detail-type"]: e for e in delivered}
    assert by_type["EC2 Spot Instance Interruption Warning"]["detail"]["instance-id"] == INSTANCE
    assert by_type["AWS Health Event"]["detail"]["affectedEntities"] == [{"entityValue": INSTANCE}]
    assert by_type["EC2 Instance State-change Notification"]["detail"]["state"] == "stopping"
    assert by_type["EC2 Capacity Reservation Instance Interruption Warning"]["detail"]["instance-action"] == "terminate"


@pytest.mark.parametrize("event", MATCHING_EVENTS + NON_MATCHING_EVENTS, ids=lambda e: f"{e['Source']}:{e['DetailType']}")
def test_each_event_matches_exactly_the_rules_it_should(synthesized, event):
    """Pattern-level check of the same template patterns (moto's EventBridge pattern matcher)."""
    bus_event = _as_bus_event(event)
    matching_rules = [
        lid for lid, props in synthesized["rules"].items()
        if EventPattern.load(json.dumps(props["EventPattern"])).matches_event(bus_event)
    ]
    should_match = event in MATCHING_EVENTS
    assert len(matching_rules) == (1 if should_match else 0), matching_rules
