"""Custom resource handler: on Delete, remove the Lambda network interfaces our functions left in one VPC.

Lambda functions attached to a VPC get "Hyperplane" ENIs that the Lambda service owns (interface type
``lambda``, description ``AWS Lambda VPC ENI-<function>-...``), one per subnet and security group combination,
holding the function's security groups. Lambda detaches and deletes them on its own time after the functions
are gone: the AWS Lambda team quotes ~35 minutes at P99 (terraform-provider-aws,
internal/service/ec2, ``deleteLingeringLambdaENIs``, which waits up to 45 minutes for the same reason), and
sometimes leaves them ``available`` for good (go-to-k/delstack issue #637). An in-use one cannot be detached
by its account (the attachment belongs to the service); an ``available`` one can be deleted like any other.
Until they are gone, their subnets and security groups cannot be deleted (DependencyViolation).

On Delete this handler deletes the Lambda ENIs that are in the VPC of ``ResourceProperties.VpcId`` AND carry
the security group ``ResourceProperties.SecurityGroupId`` (the kubectl handlers' own group, which only this
platform's functions use): it lists them with the ``vpc-id`` and ``group-id`` filters, keeps those of interface
type ``lambda`` or with Lambda's description prefix, deletes the ``available`` ones and polls (every
``POLL_SECONDS``, for at most ``WAIT_SECONDS`` and never past the function's own timeout) until the in-use ones
have been released, deleting each as it turns ``available``. Any other ENI is never touched, in particular
other Lambda functions' ENIs in a shared VPC (they hold other groups), available or not; without a group id it
touches nothing rather than match more widely. Create and Update do nothing. If in-use Lambda ENIs of the group
remain at the deadline it reports FAILED with their ids, so the stack stops before the subnets; running the
delete again resumes here.

Only a stack teardown cleans (stack status ``DELETE_IN_PROGRESS``, or ``ROLLBACK_IN_PROGRESS`` when a first
create fails and everything goes): CloudFormation also sends Delete when an update that created this resource
rolls back, and then the subnets stay, and so do the kubectl handler functions whose ENIs are in use. Waiting
for those would only turn a rollback into UPDATE_ROLLBACK_FAILED, and their ENIs are not in anyone's way. When
the status cannot be read, it cleans (the safe side).

Only boto3 (in the Lambda runtime) and the standard library: no bundling.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from typing import Any, Callable

import boto3
from botocore.exceptions import ClientError

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)

# How Lambda marks its Hyperplane ENIs: the interface type (``lambda`` in the EC2 API's NetworkInterfaceType
# enum) and the description it writes (``AWS Lambda VPC ENI-<function>-<id>``; terraform-provider-aws finds
# lingering Lambda ENIs by this description plus a group-id, subnet-id or vpc-id filter). Either suffices.
# The requester id (``*:awslambda_*``) is not used: it marked the per-function ENIs of before 2019 and, alone,
# says nothing about whose function it was.
LAMBDA_INTERFACE_TYPE = "lambda"
LAMBDA_DESCRIPTION_PREFIX = "AWS Lambda VPC ENI"
# Stack statuses in which a Delete event means the whole stack goes.
TEARDOWN_STATUSES = ("DELETE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS")

POLL_SECONDS = 15
WAIT_SECONDS = 600  # well under the function's timeout (cdk_constructs/lambda_eni_cleanup.py)
# Left for the last sweep and the response to CloudFormation when the function's own time runs out first.
SAFETY_SECONDS = 60


def is_lambda_eni(eni: dict[str, Any]) -> bool:
    by_type = eni.get("InterfaceType") == LAMBDA_INTERFACE_TYPE
    return by_type or eni.get("Description", "").startswith(LAMBDA_DESCRIPTION_PREFIX)


def holds_group(eni: dict[str, Any], group_id: str) -> bool:
    return any(group.get("GroupId") == group_id for group in eni.get("Groups", []))


def lambda_enis(ec2, vpc_id: str, group_id: str) -> list[dict[str, Any]]:
    """The Lambda ENIs in the VPC that hold the group (filtered on the server by both, checked again here)."""
    found = []
    pages = ec2.get_paginator("describe_network_interfaces").paginate(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-id", "Values": [group_id]}]
    )
    for page in pages:
        found += [
            eni
            for eni in page["NetworkInterfaces"]
            if eni.get("VpcId") == vpc_id and holds_group(eni, group_id) and is_lambda_eni(eni)
        ]
    return found


def sweep(ec2, vpc_id: str, group_id: str, deleted: list[str]) -> list[dict[str, Any]]:
    """Delete the available Lambda ENIs of the VPC and group (their ids appended to ``deleted``); return the rest."""
    pending = []
    for eni in lambda_enis(ec2, vpc_id, group_id):
        eni_id = eni["NetworkInterfaceId"]
        if eni.get("Status") != "available":
            pending.append(eni)
            continue
        try:
            ec2.delete_network_interface(NetworkInterfaceId=eni_id)
            deleted.append(eni_id)
            LOG.info("deleted %s (%s)", eni_id, eni.get("Description", ""))
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code == "InvalidNetworkInterfaceID.NotFound":
                continue  # Lambda deleted it meanwhile
            if code == "InvalidNetworkInterface.InUse":
                pending.append(eni)  # taken again between the describe and the delete
                continue
            raise
    return pending


def clean(
    ec2,
    vpc_id: str,
    group_id: str,
    *,
    wait_seconds: float = WAIT_SECONDS,
    poll_seconds: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Sweep until no Lambda ENI of the group is left in the VPC or ``wait_seconds`` have passed."""
    deadline = clock() + wait_seconds
    deleted: list[str] = []
    polls = 0
    while True:
        polls += 1
        pending = sweep(ec2, vpc_id, group_id, deleted)
        if not pending or clock() + poll_seconds > deadline:
            break
        LOG.info("waiting for Lambda to release %s", [e["NetworkInterfaceId"] for e in pending])
        sleep(poll_seconds)
    return {
        "deleted": deleted,
        "pending": [f'{e["NetworkInterfaceId"]} ({e.get("Status")}, {e.get("Description", "")})' for e in pending],
        "polls": polls,
    }


def stack_status(cloudformation, stack_id: str) -> str | None:
    try:
        return cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"]
    except Exception:  # noqa: BLE001 - unknown means "clean", never "skip"
        LOG.warning("could not read the status of %s; treating the delete as a teardown", stack_id, exc_info=True)
        return None


NOTHING = {"deleted": [], "pending": [], "polls": 0}


def handle(event: dict[str, Any], ec2, cloudformation, **clean_options) -> dict[str, Any]:
    """The custom resource's work; raises when Lambda ENIs are still in use at the deadline."""
    properties = event.get("ResourceProperties", {})
    vpc_id, group_id = properties.get("VpcId", ""), properties.get("SecurityGroupId", "")
    if event["RequestType"] != "Delete":
        return dict(NOTHING)
    if not (vpc_id and group_id):
        # Never fall back to "every Lambda ENI of the VPC": in a shared VPC those include other teams'.
        LOG.warning("no VpcId or SecurityGroupId in %s: nothing to clean", properties)
        return dict(NOTHING)
    status = stack_status(cloudformation, event["StackId"])
    if status is not None and status not in TEARDOWN_STATUSES:
        LOG.info("stack is %s, not being torn down: its subnets and functions stay, nothing to clean", status)
        return dict(NOTHING)
    result = clean(ec2, vpc_id, group_id, **clean_options)
    LOG.info(json.dumps({"vpc": vpc_id, "group": group_id, "stack_status": status, **result}))
    if result["pending"]:
        raise RuntimeError(
            f"Lambda ENIs of {group_id} in {vpc_id} still in use after {result['polls']} checks: "
            f"{', '.join(result['pending'])}. "
            "Lambda releases them on its own (up to ~35 minutes after a function is deleted): delete the stack "
            "again in a few minutes and this cleanup resumes."
        )
    return result


def physical_id(event: dict[str, Any]) -> str:
    vpc_id = event.get("ResourceProperties", {}).get("VpcId", "")
    return event.get("PhysicalResourceId") or f"lambda-eni-cleanup-{vpc_id}"


def respond(event: dict[str, Any], status: str, reason: str) -> None:
    """PUT the result to CloudFormation's pre-signed response URL (custom resource response objects)."""
    body = json.dumps({
        "Status": status,
        "Reason": reason[:3000],
        "PhysicalResourceId": physical_id(event),
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
    }).encode()
    request = urllib.request.Request(
        event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - CloudFormation's https URL
        response.read()


def handler(event: dict[str, Any], context) -> None:
    LOG.info("%s %s", event.get("RequestType"), event.get("ResourceProperties"))
    try:
        budget = context.get_remaining_time_in_millis() / 1000 - SAFETY_SECONDS
        result = handle(event, boto3.client("ec2"), boto3.client("cloudformation"),
                        wait_seconds=max(0.0, min(WAIT_SECONDS, budget)))
        status, reason = "SUCCESS", f"deleted {len(result['deleted'])} Lambda ENI(s)"
    except Exception as err:  # noqa: BLE001 - CloudFormation must always get an answer
        LOG.exception("cleanup failed")
        status, reason = "FAILED", str(err)
    respond(event, status, reason)
