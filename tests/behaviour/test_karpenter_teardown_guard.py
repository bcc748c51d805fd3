"""The Karpenter teardown guard's handler, the file the Lambda ships, run against moto's EC2.

A region holds what a `make destroy` may find when the Karpenter stack's NodePools are gone: instances
Karpenter launched for this cluster (tagged as Karpenter 1.14 tags them) that it terminates a few polls later,
and instances the guard must never wait for: another cluster's Karpenter node, this cluster's system node
group node (EKS's own tags, no nodepool), an untagged instance, and a Karpenter node already terminated.
"Karpenter terminates it" is a real TerminateInstances on moto between two polls, made from the handler's poll
hook (``sleep``), which also advances the handler's clock. The guard itself must never terminate anything: the
tests check the instances it waits for are still there at every poll before Karpenter's turn.

The second resource of the same function (``WaitFor: InstanceProfiles``, deleted after the EC2NodeClass
manifest) runs against moto's IAM: the node role in the instance profile Karpenter made for it (its path and
tags), which "the EC2NodeClass finalizer" removes between two polls (RemoveRoleFromInstanceProfile, then
DeleteInstanceProfile, as Karpenter does), next to profiles it must ignore (another role's, another
cluster's).

The stack status comes from a real boto3 CloudFormation client answered by botocore's Stubber (moto's
CloudFormation needs an extra this suite does not install); the Stubber checks the request against the API.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from cdk_constructs.karpenter_teardown_guard import HANDLER_DIR

REGION = "eu-west-1"
MOTO_AMI = "ami-12c6146b"  # one of moto's built-in AMIs (moto/ec2/resources/amis.json.gz)
CLUSTER = "dynamic-factory"
STACK_ID = "arn:aws:cloudformation:eu-west-1:123456789012:stack/dynamic-factory-karpenter/5f3c2a10"


def _load_handler():
    """The handler as Lambda loads it: index.py of the asset directory, not a copy."""
    spec = importlib.util.spec_from_file_location("karpenter_teardown_guard_index", HANDLER_DIR / "index.py")
    module = importlib.util.module_from_spec(spec)
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # keep __pycache__ out of the asset directory
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


index = _load_handler()


def karpenter_tags(cluster: str, pool: str = "spot") -> dict[str, str]:
    """What Karpenter 1.14 tags an instance with at launch (pkg/utils/utils.go GetTags, plus Name/nodeclaim)."""
    return {
        "Name": f"ip-10-0-1-17.{REGION}.compute.internal",
        "karpenter.sh/nodeclaim": f"{pool}-x7k2p",
        "karpenter.sh/nodepool": pool,
        "karpenter.k8s.aws/ec2nodeclass": "default",
        f"kubernetes.io/cluster/{cluster}": "owned",
        "eks:eks-cluster-name": cluster,
    }


class Region:
    """Instances a teardown may find; ids by role."""

    def __init__(self, ec2):
        self.ec2 = ec2
        self.ours = [self._run(karpenter_tags(CLUSTER, "spot")), self._run(karpenter_tags(CLUSTER, "on-demand"))]
        self.ignored = {
            "another cluster's Karpenter node": self._run(karpenter_tags("ml-prod")),
            "this cluster's system node group": self._run({
                "eks:cluster-name": CLUSTER,
                "eks:nodegroup-name": "system",
                f"kubernetes.io/cluster/{CLUSTER}": "owned",
            }),
            "untagged": self._run({}),
        }
        gone = self._run(karpenter_tags(CLUSTER))
        ec2.terminate_instances(InstanceIds=[gone])
        self.ignored["terminated Karpenter node"] = gone

    def _run(self, tags: dict[str, str]) -> str:
        spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        return self.ec2.run_instances(
            ImageId=MOTO_AMI, MinCount=1, MaxCount=1, InstanceType="m7i.large", TagSpecifications=spec if tags else []
        )["Instances"][0]["InstanceId"]

    def state(self, instance_id: str) -> str:
        (reservation,) = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return reservation["Instances"][0]["State"]["Name"]

    def karpenter_terminates(self, *instance_ids: str) -> None:
        self.ec2.terminate_instances(InstanceIds=list(instance_ids))

    def untouched(self) -> bool:
        """The instances the guard must ignore are as they were (the terminated one stays terminated)."""
        return all(self.state(i) == ("terminated" if what == "terminated Karpenter node" else "running")
                   for what, i in self.ignored.items())


class Clock:
    """The handler's clock and poll hook: each poll interval passes instantly; ``on_poll`` runs between polls."""

    def __init__(self, on_poll=lambda n: None):
        self.now = 1000.0
        self.sleeps = 0
        self.on_poll = on_poll

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        self.on_poll(self.sleeps)


def cloudformation(status: str | None = "DELETE_IN_PROGRESS", calls: int = 1):
    """A real CloudFormation client whose DescribeStacks answers ``status`` (None: access denied)."""
    client = boto3.client("cloudformation", region_name=REGION)
    stubber = Stubber(client)
    for _ in range(calls):
        if status is None:
            stubber.add_client_error("describe_stacks", "AccessDenied", "not authorized", 403,
                                     expected_params={"StackName": STACK_ID})
        else:
            stubber.add_response(
                "describe_stacks",
                {"Stacks": [{"StackId": STACK_ID, "StackName": "dynamic-factory-karpenter",
                             "CreationTime": "2026-01-01T00:00:00Z", "StackStatus": status}]},
                expected_params={"StackName": STACK_ID},
            )
    stubber.activate()
    return client


def _event(request_type: str, cluster: str = CLUSTER, **extra) -> dict:
    return {
        "RequestType": request_type,
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:x",
                               "ClusterName": cluster},
        "StackId": STACK_ID,
        "RequestId": "req-1",
        "LogicalResourceId": "TeardownGuardE873C1CD",
        "ResourceType": "Custom::KarpenterTeardownGuard",
        **extra,
    }


NODE_ROLE = "dynamic-factory-karpenter-NodeRole1A2B3C4D-x9Y8z7W6v5U4"


def _profile_event(request_type: str, role: str = NODE_ROLE, **extra) -> dict:
    """The event of the profile guard (cdk_constructs/karpenter_teardown_guard.py, ``profile_guard``)."""
    return _event(request_type, LogicalResourceId="TeardownGuardInstanceProfiles5D1E2F3A",
                  ResourceType="Custom::KarpenterInstanceProfileGuard",
                  ResourceProperties={"ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:x",
                                      "ClusterName": CLUSTER, "NodeRoleName": role, "WaitFor": "InstanceProfiles"},
                  **extra)


@pytest.fixture
def region(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield Region(boto3.client("ec2", region_name=REGION))


class Profiles:
    """The account's instance profiles at teardown: the one Karpenter made for the node role (path
    /karpenter/<region>/<cluster>/<EC2NodeClass uid>/, Karpenter's tags), and ones the guard must ignore."""

    def __init__(self, iam):
        self.iam = iam
        for role in (NODE_ROLE, "ml-prod-karpenter-NodeRole", "SomeOtherInstanceRole"):
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                               "Action": "sts:AssumeRole"}]}))
        self.ours = self._profile(f"{CLUSTER}_1748235930412876543", NODE_ROLE, CLUSTER)
        self.ignored = [
            self._profile("ml-prod_9921873465", "ml-prod-karpenter-NodeRole", "ml-prod"),
            self._profile("bastion", "SomeOtherInstanceRole", None),
        ]

    def _profile(self, name: str, role: str, cluster: str | None) -> str:
        path = f"/karpenter/{REGION}/{cluster}/6d1f1c2e-8a3b-4c5d-9e0f-123456789abc/" if cluster else "/"
        tags = ([{"Key": "eks:eks-cluster-name", "Value": cluster},
                 {"Key": f"kubernetes.io/cluster/{cluster}", "Value": "owned"},
                 {"Key": "karpenter.k8s.aws/ec2nodeclass", "Value": "default"},
                 {"Key": "topology.kubernetes.io/region", "Value": REGION}] if cluster else [])
        self.iam.create_instance_profile(InstanceProfileName=name, Path=path, Tags=tags)
        self.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
        return name

    def exists(self, name: str) -> bool:
        return any(p["InstanceProfileName"] == name for p in self.iam.list_instance_profiles()["InstanceProfiles"])

    def finalizer_removes(self, name: str) -> None:
        """What Karpenter's EC2NodeClass finalizer does (pkg/providers/instanceprofile Delete)."""
        self.iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=NODE_ROLE)
        self.iam.delete_instance_profile(InstanceProfileName=name)

    def untouched(self) -> bool:
        return all(self.exists(name) for name in self.ignored)


@pytest.fixture
def profiles(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield Profiles(boto3.client("iam", region_name=REGION))


def test_delete_waits_until_karpenter_has_terminated_this_clusters_instances(region):
    states_at_poll = []

    def karpenter_drains(poll: int) -> None:
        states_at_poll.append([region.state(i) for i in region.ours])
        if poll == 2:
            region.karpenter_terminates(region.ours[0])
        if poll == 4:
            region.karpenter_terminates(region.ours[1])

    clock = Clock(karpenter_drains)
    result = index.handle(_event("Delete"), region.ec2, cloudformation(), sleep=clock.sleep, clock=clock)

    assert result["remaining"] == [] and result["polls"] == 5
    assert sorted(result["waited_for"]) == sorted(region.ours)  # never any of the others
    # The guard only watches: the instances stay as they are until Karpenter terminates them.
    assert states_at_poll == [["running", "running"], ["running", "running"],
                              ["terminated", "running"], ["terminated", "running"]]
    assert region.untouched()


def test_other_clusters_system_nodes_and_untagged_instances_are_ignored(region):
    region.karpenter_terminates(*region.ours)
    clock = Clock()
    result = index.handle(_event("Delete"), region.ec2, cloudformation(), sleep=clock.sleep, clock=clock)
    assert result == {"waited_for": [], "remaining": [], "polls": 1}
    assert clock.sleeps == 0 and region.untouched()


def test_at_the_deadline_it_fails_naming_the_instances_left(region):
    clock = Clock()
    with pytest.raises(RuntimeError) as err:
        index.handle(_event("Delete"), region.ec2, cloudformation(), wait_seconds=60, poll_seconds=15,
                     sleep=clock.sleep, clock=clock)
    message = str(err.value)
    assert all(i in message for i in region.ours)
    assert not any(i in message for i in region.ignored.values())
    assert "nodepool spot" in message and "nodepool on-demand" in message and "running" in message
    assert "delete the stack again" in message and "kubectl delete nodepools --all" in message
    assert clock.sleeps == 4 and clock.now - 1000.0 == 60  # checked at 0, 15, 30, 45, 60 s, then stopped
    assert all(region.state(i) == "running" for i in region.ours)  # never terminated by the guard
    assert region.untouched()


def test_stopped_and_shutting_down_instances_still_count(region):
    """Karpenter's instanceStateFilter: pending, running, stopping, stopped, shutting-down."""
    region.ec2.stop_instances(InstanceIds=[region.ours[0]])
    assert region.state(region.ours[0]) == "stopped"
    left = {i["InstanceId"] for i in index.karpenter_instances(region.ec2, CLUSTER)}
    assert left == set(region.ours)
    for state in index.LIVE_STATES:
        instance = {"InstanceId": "i-1", "State": {"Name": state},
                    "Tags": [{"Key": k, "Value": v} for k, v in karpenter_tags(CLUSTER).items()]}
        assert index.is_karpenter_instance(instance, CLUSTER), state
    assert not index.is_karpenter_instance({**instance, "State": {"Name": "terminated"}}, CLUSTER)


@pytest.mark.parametrize(("missing", "counted"), [
    ("eks:eks-cluster-name", False),
    ("karpenter.sh/nodepool", False),
    # Required by Karpenter's own List, not by the controller's launch policy: the guard errs on waiting.
    ("karpenter.k8s.aws/ec2nodeclass", True),
    ("kubernetes.io/cluster/dynamic-factory", True),
    ("karpenter.sh/nodeclaim", True),
    ("Name", True),
])
def test_the_cluster_name_and_nodepool_tags_make_an_instance_karpenters(missing, counted):
    tags = karpenter_tags(CLUSTER)
    del tags[missing]
    instance = {"InstanceId": "i-1", "State": {"Name": "running"},
                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
    assert index.is_karpenter_instance(instance, CLUSTER) is counted


@pytest.mark.parametrize("request_type", ["Create", "Update"])
@pytest.mark.parametrize("event", [_event, _profile_event], ids=["instances", "instance profiles"])
def test_create_and_update_do_nothing(region, request_type, event):
    clock = Clock()
    stack = cloudformation(calls=0)  # not even the stack status is read
    iam = boto3.client("iam", region_name=REGION)
    result = index.handle(event(request_type), region.ec2, stack, iam, sleep=clock.sleep, clock=clock)
    assert result == {"waited_for": [], "remaining": [], "polls": 0}
    assert clock.sleeps == 0 and all(region.state(i) == "running" for i in region.ours)


@pytest.mark.parametrize("status", ["UPDATE_ROLLBACK_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
                                    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"])
def test_a_delete_that_is_not_a_teardown_does_not_wait(region, status):
    """An update that added the guard and then rolled back deletes it while the NodePools, and their nodes,
    stay: waiting there would only turn the rollback into UPDATE_ROLLBACK_FAILED."""
    clock = Clock()
    result = index.handle(_event("Delete"), region.ec2, cloudformation(status), sleep=clock.sleep, clock=clock)
    assert result == {"waited_for": [], "remaining": [], "polls": 0} and clock.sleeps == 0


@pytest.mark.parametrize("status", ["DELETE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS", None])
def test_a_teardown_or_an_unknown_status_waits(region, status):
    """Stack delete, a failed first create rolling everything back, or a status it cannot read: it waits."""
    clock = Clock()
    with pytest.raises(RuntimeError):
        index.handle(_event("Delete"), region.ec2, cloudformation(status), wait_seconds=30, poll_seconds=15,
                     sleep=clock.sleep, clock=clock)
    assert clock.sleeps == 2


# ----------------------------------------------------------------- the node role's instance profiles


def test_the_profile_guard_waits_until_the_finalizer_has_removed_the_node_roles_profile(profiles):
    existed_at_poll = []

    def finalizer(poll: int) -> None:
        existed_at_poll.append(profiles.exists(profiles.ours))
        if poll == 2:
            profiles.finalizer_removes(profiles.ours)

    clock = Clock(finalizer)
    result = index.handle(_profile_event("Delete"), None, cloudformation(), profiles.iam,
                          sleep=clock.sleep, clock=clock)
    assert result["remaining"] == [] and result["polls"] == 3
    assert result["waited_for"] == [profiles.ours]  # not another role's or another cluster's
    assert existed_at_poll == [True, True]  # the guard never removes it itself
    assert not profiles.exists(profiles.ours) and profiles.untouched()


def test_at_the_deadline_the_profile_guard_fails_naming_the_profiles_left(profiles):
    # A profile someone else put the node role in blocks the role's delete just as well; only they can remove it.
    profiles.iam.create_instance_profile(InstanceProfileName="hand-made")
    profiles.iam.add_role_to_instance_profile(InstanceProfileName="hand-made", RoleName=NODE_ROLE)
    clock = Clock()
    with pytest.raises(RuntimeError) as err:
        index.handle(_profile_event("Delete"), None, cloudformation(), profiles.iam, wait_seconds=60,
                     poll_seconds=15, sleep=clock.sleep, clock=clock)
    message = str(err.value)
    assert f"{profiles.ours} (path /karpenter/{REGION}/{CLUSTER}/" in message and "Karpenter's" in message
    assert "hand-made (path /, not Karpenter's" in message
    assert not any(name in message for name in profiles.ignored)
    assert NODE_ROLE in message and "kubectl delete ec2nodeclasses --all" in message
    assert "delete the stack again" in message
    assert clock.sleeps == 4 and clock.now - 1000.0 == 60
    assert profiles.exists(profiles.ours) and profiles.exists("hand-made") and profiles.untouched()


def test_the_profile_guard_ignores_other_roles_profiles_and_waits_only_on_a_teardown(profiles):
    profiles.finalizer_removes(profiles.ours)
    clock = Clock()
    result = index.handle(_profile_event("Delete"), None, cloudformation(), profiles.iam,
                          sleep=clock.sleep, clock=clock)
    assert result == {"waited_for": [], "remaining": [], "polls": 1} and clock.sleeps == 0
    # With the profile there: a teardown waits; an update rolling back (the EC2NodeClass stays) does not.
    profiles._profile("again", NODE_ROLE, CLUSTER)
    with pytest.raises(RuntimeError, match="again"):
        index.handle(_profile_event("Delete"), None, cloudformation("DELETE_IN_PROGRESS"), profiles.iam,
                     wait_seconds=15, poll_seconds=15, sleep=clock.sleep, clock=clock)
    result = index.handle(_profile_event("Delete"), None, cloudformation("UPDATE_ROLLBACK_IN_PROGRESS"),
                          profiles.iam, sleep=clock.sleep, clock=clock)
    assert result == {"waited_for": [], "remaining": [], "polls": 0} and profiles.untouched()


def test_a_node_role_already_gone_is_in_no_profile():
    iam = boto3.client("iam", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(iam)
    stubber.add_client_error("list_instance_profiles_for_role", "NoSuchEntity", "role not found", 404,
                             expected_params={"RoleName": NODE_ROLE})
    stubber.activate()
    clock = Clock()
    result = index.handle(_profile_event("Delete"), None, cloudformation(), iam, sleep=clock.sleep, clock=clock)
    assert result == {"waited_for": [], "remaining": [], "polls": 1}
    stubber.assert_no_pending_responses()


class _ResponseCatcher(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_PUT(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"content_type": self.headers.get("Content-Type"), **json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def response_url():
    _ResponseCatcher.received = []
    server = HTTPServer(("127.0.0.1", 0), _ResponseCatcher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/response", _ResponseCatcher.received
    server.shutdown()
    server.server_close()


class _Context:
    def __init__(self, remaining_ms: int):
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_the_lambda_entry_point_answers_cloudformation(region, response_url, monkeypatch):
    """handler(): boto3's default EC2 client (moto), the real PUT of the response; SUCCESS on create, FAILED
    naming the instances when Karpenter's are still running and no time is left to wait (remaining time = the
    safety margin), SUCCESS once Karpenter has terminated them."""
    stacks = iter([cloudformation() for _ in range(3)])  # one client per invocation
    real_client = boto3.client

    def client(service, **kwargs):
        return next(stacks) if service == "cloudformation" else real_client(service, **kwargs)

    monkeypatch.setattr(index.boto3, "client", client)
    url, received = response_url

    index.handler(_event("Create", ResponseURL=url), _Context(720_000))
    physical = f"karpenter-teardown-guard-{CLUSTER}"
    assert received[-1]["Status"] == "SUCCESS" and received[-1]["PhysicalResourceId"] == physical
    assert received[-1]["content_type"] == ""  # the pre-signed URL is signed without one

    index.handler(_event("Delete", ResponseURL=url, PhysicalResourceId=physical),
                  _Context(index.SAFETY_SECONDS * 1000))
    failed = received[-1]
    assert failed["Status"] == "FAILED" and all(i in failed["Reason"] for i in region.ours)
    assert (failed["RequestId"], failed["LogicalResourceId"]) == ("req-1", "TeardownGuardE873C1CD")
    assert failed["PhysicalResourceId"] == physical and failed["StackId"] == STACK_ID
    assert all(region.state(i) == "running" for i in region.ours)

    region.karpenter_terminates(*region.ours)
    index.handler(_event("Delete", ResponseURL=url, PhysicalResourceId=physical), _Context(720_000))
    assert received[-1]["Status"] == "SUCCESS" and "no Karpenter instance left" in received[-1]["Reason"]
    assert region.untouched()


def test_the_lambda_entry_point_answers_for_the_profile_guard(profiles, response_url, monkeypatch):
    """handler() with boto3's default IAM client (moto): FAILED naming the profile while the node role is in it,
    SUCCESS once the finalizer has removed it; its own physical id."""
    stacks = iter([cloudformation() for _ in range(2)])
    real_client = boto3.client

    def client(service, **kwargs):
        return next(stacks) if service == "cloudformation" else real_client(service, **kwargs)

    monkeypatch.setattr(index.boto3, "client", client)
    url, received = response_url

    index.handler(_profile_event("Delete", ResponseURL=url), _Context(index.SAFETY_SECONDS * 1000))
    failed = received[-1]
    assert failed["Status"] == "FAILED" and profiles.ours in failed["Reason"]
    assert failed["PhysicalResourceId"] == f"karpenter-instance-profile-guard-{CLUSTER}"

    profiles.finalizer_removes(profiles.ours)
    index.handler(_profile_event("Delete", ResponseURL=url), _Context(720_000))
    assert received[-1]["Status"] == "SUCCESS"
    assert "no instance profile on the node role left" in received[-1]["Reason"]
    assert profiles.untouched()
