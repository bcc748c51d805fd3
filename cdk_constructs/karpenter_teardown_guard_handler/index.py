"""Custom resource handler: on Delete, wait until Karpenter has terminated every instance it launched, or (the
second resource, ``WaitFor: InstanceProfiles``) until Karpenter has removed its instance profiles from the
node role.

CDK's kubectl handler (aws-cdk-lib 2.273.0, ``apply/__init__.py``) runs ``kubectl delete -f`` on Delete and
only logs what fails, so a NodePools resource can be "deleted" while its NodePools, NodeClaims and nodes are
still there. The next resources to go are the Karpenter controller, its credentials and the nodes' access
entry: with them gone nothing terminates those instances, which keep running (and billing) and hold on to the
VPC. This resource is deleted after the NodePools and before the EC2NodeClass manifest and the controller;
its Delete waits, bounded, until
no instance launched by Karpenter for this cluster is left, and answers FAILED naming the ones left otherwise,
so the stack stops with the controller still installed and the next delete resumes here.

It never terminates anything: Karpenter does, through its finalizers (NodeClaim termination drains the node,
honouring disruption budgets and grace periods, then terminates the instance; the EC2NodeClass waits for its
NodeClaims). An instance terminated behind its back would skip the drain and leave NodeClaims whose finalizer
only a running controller removes.

Karpenter's instances: Karpenter 1.14 tags every instance at launch with ``eks:eks-cluster-name: <cluster>``,
``karpenter.sh/nodepool``, ``karpenter.k8s.aws/ec2nodeclass``, ``karpenter.sh/nodeclaim``,
``kubernetes.io/cluster/<cluster>: owned`` and ``Name`` (aws/karpenter-provider-aws at v1.14: ``GetTags`` in
``pkg/utils/utils.go``, keys in ``pkg/apis/v1/labels.go``, listed in
``website/content/en/v1.14/concepts/nodeclasses.md`` under spec.tags), and finds its own instances by
``eks:eks-cluster-name`` = the cluster, both tag keys ``karpenter.sh/nodepool`` and
``karpenter.k8s.aws/ec2nodeclass``, and state pending, running, stopping, stopped or shutting-down
(``pkg/providers/instance/instance.go``: ``List`` and ``instanceStateFilter``). This guard takes the same
states and the two tags the controller's IAM policy *requires* on every instance it launches
(cdk_constructs/karpenter_iam.py, AllowScopedEC2InstanceActionsWithTags: ``eks:eks-cluster-name`` = the
cluster, ``karpenter.sh/nodepool`` present), not the ec2nodeclass key as well: so no instance this controller
could have launched escapes it, and it still waits for everything Karpenter's own List sees. The EC2 request
filters on both tags and the states; the classification here checks them again. Instances of the system node
group (EKS's ``eks:cluster-name``, no nodepool tag) and of other clusters are never waited for.

The second check. The EC2NodeClass is a manifest of its own, deleted after this guard: its finalizer waits
for the NodeClaims, then deletes the instance profile(s) Karpenter made for the node role and its launch
templates, and only then lets the object go. ``kubectl delete`` of that manifest can fail (swallowed, as
above) or outlast the kubectl handler's 15 minutes, and CloudFormation would go on to uninstall the
controller with the finalizer's work undone: the node role's delete then fails with DeleteConflict (IAM
deletes no role that is still in an instance profile) and the launch templates stay. So a second resource of
this function, deleted after the EC2NodeClass manifest and before the controller, waits (bounded) until
``iam:ListInstanceProfilesForRole`` on the node role is empty, and answers FAILED naming the profiles left
otherwise. It waits for every profile on the role, as DeleteRole does; one Karpenter did not make (its path
is not ``/karpenter/<region>/<cluster>/...``, ``pkg/providers/instanceprofile``) is named as such, since only
whoever made it can remove it. Launch templates are not waited for: the finalizer deletes them in the same
pass, right after the profiles. This check cannot be part of the instance wait: that one runs before the
EC2NodeClass is deleted (so that its finalizer finds no NodeClaim left and the kubectl delete returns
quickly), when the profile is still in use.

Only a stack teardown waits (stack status ``DELETE_IN_PROGRESS``, or ``ROLLBACK_IN_PROGRESS`` when a first
create fails and everything goes): CloudFormation also sends Delete when an update that created this resource
rolls back, and then the NodePools stay, and so do their nodes. Waiting for them there would only turn a
rollback into UPDATE_ROLLBACK_FAILED. When the status cannot be read, it waits (the safe side).

Only boto3 (in the Lambda runtime) and the standard library: no bundling.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from typing import Any, Callable

import boto3

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)

# Tags Karpenter 1.14 puts on every instance it launches (pkg/apis/v1/labels.go), and that the controller's
# IAM policy requires at launch: an instance of this cluster's Karpenter without them cannot exist.
CLUSTER_NAME_TAG = "eks:eks-cluster-name"
NODEPOOL_TAG = "karpenter.sh/nodepool"
# Karpenter's instanceStateFilter: everything but terminated.
LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
# Stack statuses in which a Delete event means the whole stack goes.
TEARDOWN_STATUSES = ("DELETE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS")

# ``WaitFor`` of the second resource: the node role's instance profiles instead of the instances.
WAIT_FOR_INSTANCE_PROFILES = "InstanceProfiles"
# Where Karpenter 1.14 creates its instance profiles: /karpenter/<region>/<cluster>/<EC2NodeClass uid>/.
KARPENTER_PROFILE_PATH = "/karpenter/"

POLL_SECONDS = 15
WAIT_SECONDS = 600  # well under the function's timeout (cdk_constructs/karpenter_teardown_guard.py)
# Left for the last check and the response to CloudFormation when the function's own time runs out first.
SAFETY_SECONDS = 60


def _tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in instance.get("Tags", [])}


def is_karpenter_instance(instance: dict[str, Any], cluster_name: str) -> bool:
    """Launched by Karpenter for ``cluster_name`` and not terminated."""
    tags = _tags(instance)
    return (
        tags.get(CLUSTER_NAME_TAG) == cluster_name
        and NODEPOOL_TAG in tags
        and instance.get("State", {}).get("Name") in LIVE_STATES
    )


def karpenter_instances(ec2, cluster_name: str) -> list[dict[str, Any]]:
    found = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{CLUSTER_NAME_TAG}", "Values": [cluster_name]},
            {"Name": "tag-key", "Values": [NODEPOOL_TAG]},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ]
    )
    for page in pages:
        for reservation in page["Reservations"]:
            found += [i for i in reservation["Instances"] if is_karpenter_instance(i, cluster_name)]
    return found


def describe(instance: dict[str, Any]) -> str:
    tags = _tags(instance)
    return (f'{instance["InstanceId"]} ({instance["State"]["Name"]}, {instance.get("InstanceType", "?")}, '
            f"nodepool {tags.get(NODEPOOL_TAG, '?')})")


def node_role_profiles(iam, role_name: str) -> list[dict[str, Any]]:
    """The instance profiles the node role is in (what makes IAM refuse to delete the role)."""
    found = []
    try:
        for page in iam.get_paginator("list_instance_profiles_for_role").paginate(RoleName=role_name):
            found += page["InstanceProfiles"]
    except iam.exceptions.NoSuchEntityException:
        return []  # no role, no profile on it
    return found


def describe_profile(profile: dict[str, Any]) -> str:
    path = profile.get("Path", "/")
    owner = "Karpenter's" if path.startswith(KARPENTER_PROFILE_PATH) else "not Karpenter's: remove the role from it"
    return f'{profile["InstanceProfileName"]} (path {path}, {owner})'


def poll(
    find: Callable[[], list[dict[str, Any]]],
    key: str,
    show: Callable[[dict[str, Any]], str],
    what: str,
    *,
    wait_seconds: float = WAIT_SECONDS,
    poll_seconds: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Check until ``find`` returns nothing or ``wait_seconds`` have passed."""
    deadline = clock() + wait_seconds
    seen: list[str] = []
    polls = 0
    while True:
        polls += 1
        left = find()
        seen += [item[key] for item in left if item[key] not in seen]
        if not left or clock() + poll_seconds > deadline:
            break
        LOG.info("waiting for Karpenter to remove %s %s", what, [show(item) for item in left])
        sleep(poll_seconds)
    return {"waited_for": seen, "remaining": [show(item) for item in left], "polls": polls}


def wait(ec2, cluster_name: str, **options) -> dict[str, Any]:
    """Check until no Karpenter instance of the cluster is left or ``wait_seconds`` have passed."""
    return poll(lambda: karpenter_instances(ec2, cluster_name), "InstanceId", describe, "instances", **options)


def wait_for_profiles(iam, role_name: str, **options) -> dict[str, Any]:
    """Check until the node role is in no instance profile or ``wait_seconds`` have passed."""
    return poll(lambda: node_role_profiles(iam, role_name), "InstanceProfileName", describe_profile,
                "instance profiles", **options)


def stack_status(cloudformation, stack_id: str) -> str | None:
    try:
        return cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"]
    except Exception:  # noqa: BLE001 - unknown means "wait", never "skip"
        LOG.warning("could not read the status of %s; treating the delete as a teardown", stack_id, exc_info=True)
        return None


NOTHING = {"waited_for": [], "remaining": [], "polls": 0}


def handle(event: dict[str, Any], ec2, cloudformation, iam=None, **wait_options) -> dict[str, Any]:
    """The custom resource's work; raises when Karpenter instances (or, for ``WaitFor: InstanceProfiles``, the
    node role's instance profiles) are still there at the deadline."""
    props = event.get("ResourceProperties", {})
    cluster_name = props.get("ClusterName", "")
    profiles = props.get("WaitFor") == WAIT_FOR_INSTANCE_PROFILES
    role_name = props.get("NodeRoleName", "")
    if event["RequestType"] != "Delete" or not cluster_name or (profiles and not role_name):
        return dict(NOTHING)
    status = stack_status(cloudformation, event["StackId"])
    if status is not None and status not in TEARDOWN_STATUSES:
        LOG.info("stack is %s, not being torn down: its NodePools and EC2NodeClass stay, nothing to wait for", status)
        return dict(NOTHING)
    if profiles:
        result = wait_for_profiles(iam, role_name, **wait_options)
        LOG.info(json.dumps({"cluster": cluster_name, "node_role": role_name, "stack_status": status, **result}))
        if result["remaining"]:
            raise RuntimeError(
                f"Karpenter's node role {role_name} of cluster {cluster_name} is still in "
                f"{len(result['remaining'])} instance profile(s) after {result['polls']} checks: "
                f"{', '.join(result['remaining'])}. The controller stays installed until the EC2NodeClass "
                "finalizer has deleted them (and its launch templates): IAM deletes no role still in an instance "
                "profile. If `kubectl get ec2nodeclasses` still lists one, its delete failed or it still waits for "
                "NodeClaims (`kubectl get nodeclaims`): run `kubectl delete ec2nodeclasses --all`, then delete the "
                "stack again. A profile that is not Karpenter's: `aws iam remove-role-from-instance-profile "
                f"--role-name {role_name} --instance-profile-name <name>`, then delete the stack again."
            )
        return result
    result = wait(ec2, cluster_name, **wait_options)
    LOG.info(json.dumps({"cluster": cluster_name, "stack_status": status, **result}))
    if result["remaining"]:
        raise RuntimeError(
            f"Karpenter still has {len(result['remaining'])} instance(s) of cluster {cluster_name} after "
            f"{result['polls']} checks: {', '.join(result['remaining'])}. The controller stays installed until "
            "they are gone. If it is still draining them, delete the stack again in a few minutes and this check "
            "resumes. If `kubectl get nodepools,nodeclaims` still lists them, their delete failed: run "
            "`kubectl delete nodepools --all`, then delete the stack again."
        )
    return result


def physical_id(event: dict[str, Any]) -> str:
    props = event.get("ResourceProperties", {})
    cluster_name = props.get("ClusterName", "")
    what = "instance-profile-guard" if props.get("WaitFor") == WAIT_FOR_INSTANCE_PROFILES else "teardown-guard"
    return event.get("PhysicalResourceId") or f"karpenter-{what}-{cluster_name}"


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
        result = handle(event, boto3.client("ec2"), boto3.client("cloudformation"), boto3.client("iam"),
                        wait_seconds=max(0.0, min(WAIT_SECONDS, budget)))
        left = ("instance profile on the node role"
                if event.get("ResourceProperties", {}).get("WaitFor") == WAIT_FOR_INSTANCE_PROFILES
                else "Karpenter instance")
        status, reason = "SUCCESS", f"no {left} left (waited for {len(result['waited_for'])})"
    except Exception as err:  # noqa: BLE001 - CloudFormation must always get an answer
        LOG.exception("teardown guard failed")
        status, reason = "FAILED", str(err)
    respond(event, status, reason)
