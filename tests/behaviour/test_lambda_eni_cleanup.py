"""The teardown ENI cleanup's handler, the file the Lambda ships, run against moto's EC2.

A VPC holds what a `cdk destroy` leaves behind: our kubectl handlers' Lambda ENIs (holding the handlers' security
group, given to the resource as ``SecurityGroupId``) already ``available`` (deleted at once), one of them still
``in-use`` that Lambda releases only after a few polls (deleted once it turns ``available``, never before), and
ENIs that are never touched: not Lambda's (even holding our group), marked only by Lambda's requester id, in
another VPC, or another team's Lambda ENIs in this (shared) VPC holding another group, available or in use.
Lambda's in-use Hyperplane ENIs are played by ENIs attached to an instance; "Lambda releases it" is a real
DetachNetworkInterface on moto between two polls, made from the handler's poll hook (``sleep``), which also
advances the handler's clock. What only AWS sets on an ENI (interface type, requester id) is set on moto's model.

moto deletes an in-use ENI without complaint (real EC2 answers InvalidNetworkInterface.InUse), so the tests
check the in-use one still exists at every poll before its release, not merely that it is gone at the end.

The stack status comes from a real boto3 CloudFormation client answered by botocore's Stubber (moto's
CloudFormation needs an extra this suite does not install); the Stubber checks the request against the API.
Only a teardown (or a status it cannot read) cleans: an update rollback that deletes the resource leaves the
VPC's ENIs alone.
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
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from cdk_constructs.lambda_eni_cleanup import HANDLER_DIR

REGION = "eu-west-1"
MOTO_AMI = "ami-12c6146b"  # one of moto's built-in AMIs (moto/ec2/resources/amis.json.gz)
LAMBDA_DESCRIPTION = "AWS Lambda VPC ENI-dynamic-factory-cluster-ClusterKubectlProviderHandl-4f1c2a9e"
OTHER_LAMBDA_DESCRIPTION = "AWS Lambda VPC ENI-other-team-orders-7d1e5b2c"
STACK_ID = "arn:aws:cloudformation:eu-west-1:123456789012:stack/dynamic-factory-network/1"


def _load_handler():
    """The handler as Lambda loads it: index.py of the asset directory, not a copy."""
    spec = importlib.util.spec_from_file_location("lambda_eni_cleanup_index", HANDLER_DIR / "index.py")
    module = importlib.util.module_from_spec(spec)
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # keep __pycache__ out of the asset directory
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


index = _load_handler()


class Vpcs:
    """Two VPCs with the ENIs a teardown may find; ids by role."""

    def __init__(self, ec2):
        self.ec2 = ec2
        self.vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.subnets = [
            ec2.create_subnet(VpcId=self.vpc, CidrBlock=f"10.0.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)
        ]
        self.other_vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
        other_subnet = ec2.create_subnet(VpcId=self.other_vpc, CidrBlock="10.1.1.0/24")["Subnet"]["SubnetId"]
        # The kubectl handlers' group (the network stack's KubectlHandlerSecurityGroup), and another team's.
        self.group = self._group(self.vpc, "kubectl-handlers")
        self.other_group = self._group(self.vpc, "other-team-functions")

        # Ours, available: by description, and by interface type alone (how EC2 types Hyperplane ENIs).
        self.available = [
            self._eni(self.subnets[0], LAMBDA_DESCRIPTION, self.group),
            self._eni(self.subnets[1], "", self.group, interface_type="lambda"),
        ]
        # Ours, still in use (attached) until the test releases it.
        self.in_use = self._eni(self.subnets[1], LAMBDA_DESCRIPTION, self.group)
        instance = ec2.run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1, SubnetId=self.subnets[0])
        self.instance = instance["Instances"][0]["InstanceId"]
        self.attachment = self._attach(self.in_use, device_index=1)
        # Another team's Lambda ENIs in this shared VPC, with their own group: available (by description, by
        # interface type) and in use (Lambda keeps it; waiting for it would only run into the deadline).
        self.other_team = [
            self._eni(self.subnets[0], OTHER_LAMBDA_DESCRIPTION, self.other_group),
            self._eni(self.subnets[1], "", self.other_group, interface_type="lambda"),
        ]
        self.other_team_in_use = self._eni(self.subnets[0], OTHER_LAMBDA_DESCRIPTION, self.other_group)
        self._attach(self.other_team_in_use, device_index=2)
        # Not Lambda's: an available ENI of something else, even holding our group, and the instance's own.
        self.not_lambda = [
            self._eni(self.subnets[0], "Amazon EKS dynamic-factory", self.group),
            *self._enis_of_instance(exclude={self.in_use, self.other_team_in_use}),
        ]
        # Holding our group and marked only by Lambda's requester id: no longer taken for Lambda's.
        self.requester_only = self._eni(self.subnets[1], "", self.group, requester_id="123456789012:awslambda_0abc")
        # Lambda's, available, in another VPC.
        self.elsewhere = self._eni(other_subnet, LAMBDA_DESCRIPTION, self._group(self.other_vpc, "elsewhere"))

    @property
    def ours(self) -> set[str]:
        return {*self.available, self.in_use}

    @property
    def untouchable(self) -> set[str]:
        return {*self.other_team, self.other_team_in_use, *self.not_lambda, self.requester_only, self.elsewhere}

    def _backend(self):
        return ec2_backends[DEFAULT_ACCOUNT_ID][REGION]

    def _group(self, vpc: str, name: str) -> str:
        return self.ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]

    def _eni(self, subnet: str, description: str, group: str, **backend_attributes) -> str:
        """An ENI holding ``group``; ``backend_attributes`` set what only AWS sets (interface type, requester)."""
        eni_id = self.ec2.create_network_interface(SubnetId=subnet, Description=description, Groups=[group])[
            "NetworkInterface"
        ]["NetworkInterfaceId"]
        for name, value in backend_attributes.items():
            setattr(self._backend().enis[eni_id], name, value)
        return eni_id

    def _attach(self, eni_id: str, device_index: int) -> str:
        return self.ec2.attach_network_interface(
            NetworkInterfaceId=eni_id, InstanceId=self.instance, DeviceIndex=device_index
        )["AttachmentId"]

    def _enis_of_instance(self, exclude: set[str]) -> list[str]:
        enis = self.ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [self.instance]}]
        )["NetworkInterfaces"]
        return [e["NetworkInterfaceId"] for e in enis if e["NetworkInterfaceId"] not in exclude]

    def release(self) -> None:
        """What Lambda does eventually: detach its ENI, which turns ``available``."""
        self.ec2.detach_network_interface(AttachmentId=self.attachment)

    def lambda_deletes_it(self) -> None:
        """What Lambda does at other times: detach and delete the ENI itself."""
        self.release()
        self.ec2.delete_network_interface(NetworkInterfaceId=self.in_use)

    def existing(self) -> set[str]:
        return {e["NetworkInterfaceId"] for e in self.ec2.describe_network_interfaces()["NetworkInterfaces"]}


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
                {"Stacks": [{"StackId": STACK_ID, "StackName": "dynamic-factory-network",
                             "CreationTime": "2026-01-01T00:00:00Z", "StackStatus": status}]},
                expected_params={"StackName": STACK_ID},
            )
    stubber.activate()
    client.stubber = stubber  # for assert_no_pending_responses()
    return client


def _event(request_type: str, vpcs: Vpcs, **extra) -> dict:
    return {
        "RequestType": request_type,
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:x",
                               "VpcId": vpcs.vpc, "SecurityGroupId": vpcs.group},
        "StackId": STACK_ID,
        "RequestId": "req-1",
        "LogicalResourceId": "LambdaEniCleanupDF3E2491",
        "ResourceType": "Custom::LambdaEniCleanup",
        **extra,
    }


@pytest.fixture
def vpcs(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield Vpcs(boto3.client("ec2", region_name=REGION))


def test_delete_removes_available_lambda_enis_and_waits_for_the_in_use_one(vpcs):
    seen_at_poll = []

    def lambda_releases_after_three_polls(poll: int) -> None:
        seen_at_poll.append(vpcs.in_use in vpcs.existing())
        if poll == 3:
            vpcs.release()

    clock = Clock(lambda_releases_after_three_polls)
    result = index.handle(_event("Delete", vpcs), vpcs.ec2, cloudformation(), sleep=clock.sleep, clock=clock)

    assert sorted(result["deleted"]) == sorted(vpcs.ours)
    assert result["deleted"][-1] == vpcs.in_use  # only once released
    assert result["pending"] == [] and result["polls"] == 4  # not waiting for the other team's in-use ENI
    assert seen_at_poll == [True, True, True]  # kept while in use
    left = vpcs.existing()
    assert vpcs.untouchable <= left
    assert not vpcs.ours & left


def test_delete_is_done_when_lambda_deletes_the_in_use_one_itself(vpcs):
    clock = Clock(lambda poll: vpcs.lambda_deletes_it() if poll == 2 else None)
    result = index.handle(_event("Delete", vpcs), vpcs.ec2, cloudformation(), sleep=clock.sleep, clock=clock)
    assert sorted(result["deleted"]) == sorted(vpcs.available)
    assert result["pending"] == [] and result["polls"] == 3
    left = vpcs.existing()
    assert vpcs.in_use not in left and vpcs.untouchable <= left


def test_delete_gives_up_at_the_deadline_and_names_what_is_left(vpcs):
    clock = Clock()
    with pytest.raises(RuntimeError) as err:
        index.handle(_event("Delete", vpcs), vpcs.ec2, cloudformation(), wait_seconds=60, poll_seconds=15,
                     sleep=clock.sleep, clock=clock)
    message = str(err.value)
    assert vpcs.in_use in message and "in-use" in message and "delete the stack again" in message
    assert vpcs.group in message and vpcs.other_team_in_use not in message  # only ours are waited for
    assert clock.sleeps == 4 and clock.now - 1000.0 == 60  # polled at 0, 15, 30, 45, 60 s, then stopped
    left = vpcs.existing()
    assert vpcs.in_use in left  # never deleted while in use
    assert not set(vpcs.available) & left  # what could go, went
    assert vpcs.untouchable <= left


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_create_and_update_do_nothing(vpcs, request_type):
    before = vpcs.existing()
    clock = Clock()
    stack = cloudformation(calls=0)  # not even the stack status is read
    result = index.handle(_event(request_type, vpcs), vpcs.ec2, stack, sleep=clock.sleep, clock=clock)
    assert result == {"deleted": [], "pending": [], "polls": 0}
    assert vpcs.existing() == before and clock.sleeps == 0


@pytest.mark.parametrize("status", ["UPDATE_ROLLBACK_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
                                    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS"])
def test_a_delete_that_is_not_a_teardown_touches_no_eni(vpcs, status):
    """An update that added the cleanup and then rolled back deletes it while the subnets, and the kubectl
    handlers whose ENIs are in use, stay: waiting for those would only turn the rollback into
    UPDATE_ROLLBACK_FAILED."""
    before = vpcs.existing()
    clock = Clock()
    stack = cloudformation(status)
    result = index.handle(_event("Delete", vpcs), vpcs.ec2, stack, sleep=clock.sleep, clock=clock)
    assert result == {"deleted": [], "pending": [], "polls": 0} and clock.sleeps == 0
    assert vpcs.existing() == before  # not even the available Lambda ENIs
    stack.stubber.assert_no_pending_responses()  # it did read the status


@pytest.mark.parametrize("status", ["DELETE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS", None])
def test_a_teardown_or_an_unknown_status_cleans(vpcs, status):
    """Stack delete, a failed first create rolling everything back, or a status it cannot read: it cleans."""
    clock = Clock()
    stack = cloudformation(status)
    with pytest.raises(RuntimeError):
        index.handle(_event("Delete", vpcs), vpcs.ec2, stack, wait_seconds=30, poll_seconds=15,
                     sleep=clock.sleep, clock=clock)
    assert clock.sleeps == 2
    left = vpcs.existing()
    assert not set(vpcs.available) & left and vpcs.in_use in left and vpcs.untouchable <= left
    stack.stubber.assert_no_pending_responses()


def test_only_lambdas_enis_are_recognised():
    lambda_like = [
        {"InterfaceType": "lambda", "Description": ""},
        {"InterfaceType": "interface", "Description": "AWS Lambda VPC ENI-fn-1234"},
        {"InterfaceType": "lambda", "Description": "AWS Lambda VPC ENI-fn-1234"},  # what real Hyperplane ENIs carry
    ]
    others = [
        # The requester id alone: no longer enough (it marked the per-function ENIs of before 2019).
        {"InterfaceType": "interface", "RequesterId": "123456789012:awslambda_0123456789", "Description": ""},
        {"InterfaceType": "interface", "Description": "Primary network interface"},
        {"InterfaceType": "vpc_endpoint", "Description": "VPC Endpoint Interface vpce-1"},
        {"InterfaceType": "interface", "Description": "Amazon EKS dynamic-factory"},
        {"InterfaceType": "interface", "Description": "aws-K8S-i-0123 (Cilium ENI)"},
        {"InterfaceType": "nat_gateway", "Description": "Interface for NAT Gateway nat-1"},
        {"InterfaceType": "interface", "Description": "my AWS Lambda VPC ENI notes"},  # prefix, not substring
    ]
    assert all(index.is_lambda_eni(e) for e in lambda_like)
    assert not any(index.is_lambda_eni(e) for e in others)


# ----------------------------------------------------------------- only our handlers' ENIs (a shared VPC)


def test_another_teams_lambda_enis_in_the_vpc_are_left_alone(vpcs):
    """A shared VPC: Lambda ENIs of another team's functions hold their group, not the kubectl handlers'. Their
    available ones stay, and their in-use one neither holds the teardown up nor fails it."""
    vpcs.release()  # ours are all available: one sweep is enough
    clock = Clock()
    result = index.handle(_event("Delete", vpcs), vpcs.ec2, cloudformation(), wait_seconds=60, poll_seconds=15,
                          sleep=clock.sleep, clock=clock)
    assert sorted(result["deleted"]) == sorted(vpcs.ours)
    assert result["pending"] == [] and result["polls"] == 1 and clock.sleeps == 0
    left = vpcs.existing()
    assert set(vpcs.other_team) | {vpcs.other_team_in_use} <= left
    assert not vpcs.ours & left


def test_an_eni_is_taken_for_ours_only_by_lambdas_marks_and_our_group(vpcs):
    """Our group alone (an EKS ENI holding it) or Lambda's requester id alone is not enough; Lambda's description or
    interface type and our group are."""
    vpcs.release()
    clock = Clock()
    result = index.handle(_event("Delete", vpcs), vpcs.ec2, cloudformation(), wait_seconds=60, poll_seconds=15,
                          sleep=clock.sleep, clock=clock)
    deleted = set(result["deleted"])
    assert deleted == vpcs.ours
    assert vpcs.not_lambda[0] not in deleted and vpcs.requester_only not in deleted
    assert {vpcs.not_lambda[0], vpcs.requester_only} <= vpcs.existing()


def test_the_enis_are_listed_by_vpc_and_group_on_the_server(vpcs):
    """Server-side filters: the response never holds other teams' ENIs in the first place."""
    requests = []
    vpcs.ec2.meta.events.register(
        "provide-client-params.ec2.DescribeNetworkInterfaces", lambda params, **_: requests.append(params)
    )
    vpcs.release()
    clock = Clock()
    index.handle(_event("Delete", vpcs), vpcs.ec2, cloudformation(), wait_seconds=60, poll_seconds=15,
                 sleep=clock.sleep, clock=clock)
    assert requests
    for params in requests:
        filters = {f["Name"]: f["Values"] for f in params["Filters"]}
        assert filters == {"vpc-id": [vpcs.vpc], "group-id": [vpcs.group]}


def test_without_a_group_id_nothing_is_touched(vpcs):
    """A Delete without SecurityGroupId never falls back to every Lambda ENI of the VPC."""
    event = _event("Delete", vpcs)
    del event["ResourceProperties"]["SecurityGroupId"]
    before = vpcs.existing()
    clock = Clock()
    stack = cloudformation(calls=0)
    result = index.handle(event, vpcs.ec2, stack, sleep=clock.sleep, clock=clock)
    assert result == {"deleted": [], "pending": [], "polls": 0} and clock.sleeps == 0
    assert vpcs.existing() == before


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


def test_the_lambda_entry_point_answers_cloudformation(vpcs, response_url, monkeypatch):
    """handler(): boto3's default EC2 client (moto), the real PUT of the response; SUCCESS on create, SUCCESS at
    once and nothing deleted in an update rollback, FAILED when an ENI is still in use at a teardown and no time
    is left to wait (remaining time = the safety margin), SUCCESS once Lambda has released it."""
    # One client per invocation; the Create reads no status.
    stacks = iter([cloudformation(calls=0), cloudformation("UPDATE_ROLLBACK_IN_PROGRESS"),
                   cloudformation(), cloudformation()])
    real_client = boto3.client

    def client(service, **kwargs):
        return next(stacks) if service == "cloudformation" else real_client(service, **kwargs)

    monkeypatch.setattr(index.boto3, "client", client)
    url, received = response_url
    index.handler(_event("Create", vpcs, ResponseURL=url), _Context(720_000))
    physical = f"lambda-eni-cleanup-{vpcs.vpc}"
    assert received[-1]["Status"] == "SUCCESS" and received[-1]["PhysicalResourceId"] == physical
    assert received[-1]["content_type"] == ""  # the pre-signed URL is signed without one

    before = vpcs.existing()
    index.handler(_event("Delete", vpcs, ResponseURL=url, PhysicalResourceId=physical), _Context(720_000))
    assert received[-1]["Status"] == "SUCCESS" and "deleted 0 Lambda ENI" in received[-1]["Reason"]
    assert vpcs.existing() == before  # the rollback keeps the subnets: their ENIs stay too

    index.handler(_event("Delete", vpcs, ResponseURL=url, PhysicalResourceId=physical),
                  _Context(index.SAFETY_SECONDS * 1000))
    failed = received[-1]
    assert failed["Status"] == "FAILED" and vpcs.in_use in failed["Reason"]
    assert vpcs.other_team_in_use not in failed["Reason"]
    assert (failed["RequestId"], failed["LogicalResourceId"]) == ("req-1", "LambdaEniCleanupDF3E2491")
    assert failed["PhysicalResourceId"] == physical and failed["StackId"] == STACK_ID
    assert not set(vpcs.available) & vpcs.existing()

    vpcs.release()
    index.handler(_event("Delete", vpcs, ResponseURL=url, PhysicalResourceId=physical), _Context(720_000))
    assert received[-1]["Status"] == "SUCCESS" and "deleted 1 Lambda ENI" in received[-1]["Reason"]
    assert vpcs.in_use not in vpcs.existing() and vpcs.untouchable <= vpcs.existing()
