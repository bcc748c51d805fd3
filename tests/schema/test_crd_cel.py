"""The CEL rules (``x-kubernetes-validations``) of the vendored CRDs, evaluated against the objects we apply.

The OpenAPI schemas are checked elsewhere (tests/support/k8s_schema.py); Karpenter puts most of its cross-field
checks in CEL, which only the API server runs. :mod:`tests.support.cel_rules` evaluates them with cel-python the
way the server does on create: defaults applied, rules bound at every matching location, transition rules
(``oldSelf``) skipped, runtime errors counted as failures.

The negative tests take a real object of the platform, break it the way a config or chart change could, and
expect the exact message of the CRD rule that catches it: proof that the evaluator is live.
"""

from __future__ import annotations

import copy
import json
import textwrap
from collections import Counter

import pytest

from charts import karpenter_nodes as kn
from tests.platform_synth import ROOT
from tests.support import cel_rules
from tests.support.cel_rules import ALLOWLIST, CrdCelRules, compile_rule
from tests.support.k8s_schema import CrdValidator

CRD_FILES = (
    ROOT / "schemas" / "karpenter" / "karpenter.k8s.aws_ec2nodeclasses.yaml",
    ROOT / "schemas" / "karpenter" / "karpenter.sh_nodepools.yaml",
    ROOT / "schemas" / "karpenter" / "karpenter.sh_nodeclaims.yaml",
    ROOT / "schemas" / "kuberay" / "ray.io_rayclusters.yaml",
    ROOT / "schemas" / "kuberay" / "ray.io_rayjobs.yaml",
)
# Kinds the platform must apply (and so must be checked) in every configuration.
EXPECTED_KINDS = {"EC2NodeClass", "NodePool", "RayCluster"}


@pytest.fixture(scope="module")
def crds() -> dict[tuple[str, str], CrdCelRules]:
    """Every served version of every vendored CRD, keyed by (apiVersion, kind). Rules compile once (cached)."""
    out = {}
    for path in CRD_FILES:
        for crd in CrdCelRules.load_all(path):
            out[(crd.api_version, crd.kind)] = crd
            for rule in crd.rules:
                compile_rule(rule.rule)
    return out


def _reports(synth, crds):
    objs = [o for o in synth.assembly.kube_objects() if (o.get("apiVersion"), o.get("kind")) in crds]
    return [(o, crds[(o["apiVersion"], o["kind"])].evaluate(o)) for o in objs]


def _obj(synth, kind, name=None):
    for o in synth.assembly.kube_objects():
        if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name):
            return copy.deepcopy(o)
    raise AssertionError(f"no {kind}/{name} among the platform's objects")


def _crd(crds, obj) -> CrdCelRules:
    return crds[(obj["apiVersion"], obj["kind"])]


# --------------------------------------------------------------------------------------------------------
# Every rule can be evaluated
# --------------------------------------------------------------------------------------------------------


def test_every_rule_of_the_vendored_crds_is_evaluable_or_allowlisted(crds):
    unsupported = [u for crd in crds.values() for u in crd.unsupported_rules()]
    assert unsupported == [], "CEL rules celpy cannot evaluate; add the function to K8S_EXTENSIONS or the rule " \
                              "to ALLOWLIST with a reason:\n  " + "\n  ".join(unsupported)
    unreachable = [u for crd in crds.values() for u in crd.unreachable_rules()]
    assert unreachable == [], "rules outside properties/items/additionalProperties:\n  " + "\n  ".join(unreachable)


def test_allowlist_has_no_stale_entries(crds):
    rules = {r.rule: r for crd in crds.values() for r in crd.rules}
    for text, reason in ALLOWLIST.items():
        assert reason.strip(), f"allowlisted rule {text!r} needs a reason"
        assert text in rules, f"allowlisted rule {text!r} is in no vendored CRD: remove it"
        assert compile_rule(text).problem, f"allowlisted rule {text!r} now evaluates fine: remove it from ALLOWLIST"


def test_the_registered_extensions_are_exactly_those_the_rules_call(crds):
    called = {f for crd in crds.values() for r in crd.rules for f in compile_rule(r.rule).functions}
    assert set(cel_rules.K8S_EXTENSIONS) <= called, "an extension no rule uses: drop it"
    assert called - cel_rules.SUPPORTED_FUNCTIONS == set()


# --------------------------------------------------------------------------------------------------------
# The platform's objects pass
# --------------------------------------------------------------------------------------------------------

# Rules whose location our objects always have: if they ever show up as "not applicable", path matching broke
# and the suite would pass vacuously.
MUST_BE_EVALUATED = {
    ("EC2NodeClass", "spec"),
    ("EC2NodeClass", "spec.amiSelectorTerms"),
    ("EC2NodeClass", "spec.amiSelectorTerms[*].alias"),
    ("EC2NodeClass", "spec.securityGroupSelectorTerms"),
    ("EC2NodeClass", "spec.subnetSelectorTerms[*].tags"),
    ("EC2NodeClass", "spec.tags"),
    ("EC2NodeClass", "spec.role"),
    ("EC2NodeClass", "spec.blockDeviceMappings[*].ebs"),
    ("NodePool", "spec"),
    ("NodePool", "spec.disruption.budgets"),
    ("NodePool", "spec.template.metadata.labels"),
    ("NodePool", "spec.template.spec.requirements"),
    ("NodePool", "spec.template.spec.requirements[*].key"),
    ("NodePool", "spec.template.spec.nodeClassRef.name"),
}


def test_platform_objects_pass_the_crd_cel_rules(any_platform, crds, request, record_property, capsys):
    config = request.node.callspec.id
    reports = _reports(any_platform, crds)
    kinds = Counter(o["kind"] for o, _ in reports)
    assert EXPECTED_KINDS <= set(kinds), f"missing kinds: {EXPECTED_KINDS - set(kinds)}"

    failures = [r.failure_text() for _, r in reports if not r.ok]
    assert failures == [], "\n".join(failures)

    counts: Counter = Counter()
    evaluated_paths = set()
    for _, report in reports:
        counts.update(report.counts())
        evaluated_paths |= {(o.rule.kind, o.rule.schema_path) for o in report.outcomes if o.status == "passed"}
    missing = MUST_BE_EVALUATED - evaluated_paths
    assert not missing, f"rules that should have been evaluated were not applicable: {sorted(missing)}"
    assert counts["failed"] == 0

    summary = {
        "objects": dict(sorted(kinds.items())),
        "evaluated": counts["passed"] + counts["failed"],
        "evaluations": counts["evaluations"],
        "oldSelf_skipped": counts["transition"],
        "not_applicable": counts["not_applicable"],
        "allowlisted": counts["allowlisted"],
    }
    record_property("cel_rules", json.dumps(summary, sort_keys=True))
    with capsys.disabled():
        print(
            f"\nCEL rules [{config}]: {sum(kinds.values())} objects {summary['objects']}; object x rule pairs: "
            f"{summary['evaluated']} evaluated ({summary['evaluations']} locations), "
            f"{summary['oldSelf_skipped']} oldSelf-skipped, {summary['not_applicable']} not applicable, "
            f"{summary['allowlisted']} allowlisted"
        )


# --------------------------------------------------------------------------------------------------------
# Negative tests: real rules, real objects, one break each
# --------------------------------------------------------------------------------------------------------

AMI_ID_EXCLUSIVE = "'id' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms"
AMI_ALIAS_EXCLUSIVE = (
    "'alias' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms"
)
AMI_ALIAS_ALONE = "'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms"
REQ = "spec.template.spec.requirements"


def _add_requirement(np, req):
    reqs = np["spec"]["template"]["spec"]["requirements"]
    reqs.append(req)
    return len(reqs) - 1


def _np_requirement_key(key):
    def mutate(np):
        i = _add_requirement(np, {"key": key, "operator": "Exists"})
        return f"{REQ}[{i}].key"
    return mutate


NODEPOOL_NEGATIVES = {
    "karpenter.sh domain in a requirement": (
        _np_requirement_key("karpenter.sh/foo"), 'label domain "karpenter.sh" is restricted'),
    "karpenter.k8s.aws domain in a requirement": (
        _np_requirement_key("karpenter.k8s.aws/foo"), 'label domain "karpenter.k8s.aws" is restricted'),
    "subdomain of karpenter.sh in a requirement": (
        _np_requirement_key("x.karpenter.sh/foo"), 'label domain "karpenter.sh" is restricted'),
    "kubernetes.io/hostname requirement": (
        _np_requirement_key("kubernetes.io/hostname"), 'label "kubernetes.io/hostname" is restricted'),
    "karpenter.sh/nodepool requirement": (
        _np_requirement_key("karpenter.sh/nodepool"), 'label "karpenter.sh/nodepool" is restricted'),
    "karpenter.sh/nodepool template label (the domain rule excepts it, the key rule does not)": (
        lambda np: np["spec"]["template"]["metadata"]["labels"].update({"karpenter.sh/nodepool": "x"})
        or "spec.template.metadata.labels",
        'label "karpenter.sh/nodepool" is restricted'),
    "karpenter.k8s.aws template label": (
        lambda np: np["spec"]["template"]["metadata"]["labels"].update({"karpenter.k8s.aws/team": "x"})
        or "spec.template.metadata.labels",
        'label domain "karpenter.k8s.aws" is restricted'),
    "Gt with two values": (
        lambda np: _add_requirement(np, {"key": "karpenter.k8s.aws/instance-cpu", "operator": "Gt",
                                         "values": ["4", "8"]}) and REQ,
        "requirements operator 'Gt', 'Lt', 'Gte', or 'Lte' must have a single positive integer value"),
    "In without values": (
        lambda np: _add_requirement(np, {"key": "topology.kubernetes.io/zone", "operator": "In", "values": []})
        and REQ,
        "requirements with operator 'In' must have a value defined"),
    "minValues above the number of values": (
        lambda np: _add_requirement(np, {"key": "node.kubernetes.io/instance-type", "operator": "In",
                                         "values": ["m6i.xlarge"], "minValues": 2}) and REQ,
        "requirements with 'minValues' must have at least that many values specified in the 'values' field"),
    "budget schedule without duration": (
        lambda np: np["spec"]["disruption"]["budgets"].append({"nodes": "0", "schedule": "0 9 * * mon-fri"})
        or "spec.disruption.budgets",
        "'schedule' must be set with 'duration'"),
    "static NodePool with a weight": (
        lambda np: np["spec"].update({"replicas": 2, "weight": 10}) or "spec",
        "'weight' is not supported on static NodePools"),
    "static NodePool with cpu limits": (
        lambda np: np["spec"].update({"replicas": 2}) or "spec",
        "only 'limits.nodes' is supported on static NodePools"),
    "empty nodeClassRef name": (
        lambda np: np["spec"]["template"]["spec"]["nodeClassRef"].update({"name": ""})
        or "spec.template.spec.nodeClassRef.name",
        "name may not be empty"),
}


@pytest.mark.parametrize("case", list(NODEPOOL_NEGATIVES))
def test_nodepool_negative(platform, crds, case):
    mutate, message = NODEPOOL_NEGATIVES[case]
    np = _obj(platform, "NodePool", "spot")
    location = mutate(np)
    report = _crd(crds, np).evaluate(np)
    assert (location, message) in report.failed(), report.failure_text() if not report.ok else "passed"


def _ami_terms(terms):
    def mutate(nc):
        nc["spec"]["amiSelectorTerms"] = terms
        return "spec.amiSelectorTerms"
    return mutate


def _set(path, value, location=None):
    """Set spec.<path> (dot-separated, list indexes as ints) and return the expected failure location."""
    def mutate(obj):
        node = obj["spec"]
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[parts[-1]] = value
        return location or "spec." + ".".join(f"[{p}]" if p.isdigit() else p for p in parts).replace(".[", "[")
    return mutate


EC2NODECLASS_NEGATIVES = {
    "alias and id in one term (id rule)": (
        _ami_terms([{"alias": kn.DEFAULT_AMI_ALIAS, "id": "ami-0123456789abcdef0"}]), AMI_ID_EXCLUSIVE),
    "alias and id in one term (alias rule)": (
        _ami_terms([{"alias": kn.DEFAULT_AMI_ALIAS, "id": "ami-0123456789abcdef0"}]), AMI_ALIAS_EXCLUSIVE),
    "alias term plus another term": (
        _ami_terms([{"alias": kn.DEFAULT_AMI_ALIAS}, {"id": "ami-0123456789abcdef0"}]), AMI_ALIAS_ALONE),
    "alias without a version": (
        _set("amiSelectorTerms.0.alias", "al2023"),
        "'alias' is improperly formatted, must match the format 'family@version'"),
    "alias of an unknown family": (
        _set("amiSelectorTerms.0.alias", "ubuntu@latest"),
        "family is not supported, must be one of the following: "
        "'al2', 'al2023', 'bottlerocket', 'windows2019', 'windows2022', 'windows2025'"),
    "pinned windows alias": (
        _set("amiSelectorTerms.0.alias", "windows2022@v20260101"),
        "windows families may only specify version 'latest'"),
    "amiFamily that contradicts the AL2023 alias": (
        _set("amiFamily", "Bottlerocket", "spec"),
        "if set, amiFamily must be 'AL2023' or 'Custom' when using an AL2023 alias"),
    "security group term with id and tags": (
        _set("securityGroupSelectorTerms", [{"id": "sg-0123456789abcdef0", "tags": {"a": "b"}}]),
        "'id' is mutually exclusive, cannot be set with a combination of other fields in a security group "
        "selector term"),
    "security group term with name and tags": (
        _set("securityGroupSelectorTerms", [{"name": "nodes", "tags": {"a": "b"}}]),
        "'name' is mutually exclusive, cannot be set with a combination of other fields in a security group "
        "selector term"),
    "no security group terms": (
        _set("securityGroupSelectorTerms", []), "securityGroupSelectorTerms cannot be empty"),
    "subnet term with id and tags": (
        _set("subnetSelectorTerms", [{"id": "subnet-0123456789abcdef0", "tags": {"a": "b"}}]),
        "'id' is mutually exclusive, cannot be set with a combination of other fields in a subnet selector term"),
    "empty subnet tag value": (
        _set("subnetSelectorTerms.0.tags", {"karpenter.sh/discovery": ""}),
        "empty tag keys or values aren't supported"),
    "role and instanceProfile": (
        _set("instanceProfile", "KarpenterNodeProfile", "spec"),
        "must specify exactly one of ['role', 'instanceProfile']"),
    "empty role": (_set("role", ""), "role cannot be empty"),
    "two root volumes": (
        lambda nc: nc["spec"]["blockDeviceMappings"].append(
            {"deviceName": "/dev/xvdb", "rootVolume": True, "ebs": {"volumeSize": "20Gi"}})
        or "spec.blockDeviceMappings",
        "must have only one blockDeviceMappings with rootVolume"),
    "ebs without size or snapshot": (
        lambda nc: nc["spec"]["blockDeviceMappings"][0]["ebs"].pop("volumeSize") and "spec.blockDeviceMappings[0].ebs",
        "snapshotID or volumeSize must be defined"),
    "negative kubeReserved": (
        _set("kubelet.kubeReserved", {"cpu": "-100m"}), "kubeReserved value cannot be a negative resource quantity"),
    "unknown evictionHard signal": (
        _set("kubelet.evictionHard", {"memory.free": "5%"}),
        "valid keys for evictionHard are ['memory.available','nodefs.available','nodefs.inodesFree',"
        "'imagefs.available','imagefs.inodesFree','pid.available']"),
    "imageGC thresholds inverted": (
        lambda nc: nc["spec"]["kubelet"].update({"imageGCHighThresholdPercent": 50, "imageGCLowThresholdPercent": 80})
        or "spec.kubelet",
        "imageGCHighThresholdPercent must be greater than imageGCLowThresholdPercent"),
    "empty connectionTracking": (
        _set("connectionTracking", {}),
        "at least one of tcpEstablishedTimeout, udpStreamTimeout, or udpTimeout must be set"),
}


@pytest.mark.parametrize("case", list(EC2NODECLASS_NEGATIVES))
def test_ec2nodeclass_negative(platform, crds, case):
    mutate, message = EC2NODECLASS_NEGATIVES[case]
    nc = _obj(platform, "EC2NodeClass")
    location = mutate(nc)
    report = _crd(crds, nc).evaluate(nc)
    assert (location, message) in report.failed(), report.failure_text() if not report.ok else "passed"


# Karpenter's own tag keys (and the kubernetes.io/cluster prefix) are rejected by the CRD: the same set the chart
# refuses up front with _RESTRICTED_TAG_KEYS.
TAG_MESSAGES = {
    "eks:eks-cluster-name": "tag contains a restricted tag matching eks:eks-cluster-name",
    "karpenter.sh/nodepool": "tag contains a restricted tag matching karpenter.sh/nodepool",
    "karpenter.sh/nodeclaim": "tag contains a restricted tag matching karpenter.sh/nodeclaim",
    "karpenter.k8s.aws/ec2nodeclass": "tag contains a restricted tag matching karpenter.k8s.aws/ec2nodeclass",
    "kubernetes.io/cluster/ml-prod": "tag contains a restricted tag matching kubernetes.io/cluster/",
    "": "empty tag keys aren't supported",
}


def test_chart_restricted_tag_keys_are_all_cel_rules():
    assert set(kn._RESTRICTED_TAG_KEYS) <= set(TAG_MESSAGES)


@pytest.mark.parametrize("key", list(TAG_MESSAGES))
def test_ec2nodeclass_restricted_tag(platform, crds, key):
    nc = _obj(platform, "EC2NodeClass")
    nc["spec"]["tags"][key] = "x"
    report = _crd(crds, nc).evaluate(nc)
    assert ("spec.tags", TAG_MESSAGES[key]) in report.failed(), report.failure_text() if not report.ok else "passed"


def test_raycluster_managed_by_must_be_a_known_controller(platform, crds):
    rc = _obj(platform, "RayCluster")
    rc["spec"]["managedBy"] = "example.com/my-controller"
    report = _crd(crds, rc).evaluate(rc)
    assert report.failed() == {(
        "spec.managedBy",
        "the managedBy field value must be either 'ray.io/kuberay-operator' or 'kueue.x-k8s.io/multikueue'",
    )}
    # The immutability rule on the same field is a transition rule: skipped on create, not evaluated.
    statuses = {o.rule.rule: o.status for o in report.outcomes if o.rule.schema_path == "spec.managedBy"}
    assert statuses["self == oldSelf"] == "transition"


def test_a_rule_that_errors_rejects_the_object(platform, crds):
    """evictionSoft without evictionSoftGracePeriod: the rule reads a missing key and errors, as on the server."""
    nc = _obj(platform, "EC2NodeClass")
    nc["spec"]["kubelet"]["evictionSoft"] = {"memory.available": "10%"}
    report = _crd(crds, nc).evaluate(nc)
    assert not report.ok
    (failure,) = [f for f in report.failures() if f.location == "spec.kubelet"]
    assert "rule evaluation error" in failure.message and "evictionSoftGracePeriod" in failure.message


def test_non_integer_gt_value_is_an_error_not_a_pass(platform, crds):
    np = _obj(platform, "NodePool", "spot")
    _add_requirement(np, {"key": "karpenter.k8s.aws/instance-cpu", "operator": "Gt", "values": ["four"]})
    report = _crd(crds, np).evaluate(np)
    assert [f.location for f in report.failures()] == [REQ]
    assert "rule evaluation error" in report.failures()[0].message


def test_every_ec2nodeclass_rule_passes_on_a_valid_object_using_all_optional_fields(platform, crds):
    """Positive control for the rules our own object leaves not applicable: a schema-valid EC2NodeClass that sets
    them all must pass, so celpy evaluates those rules (maps, nested filter(), has()) without spurious errors."""
    nc = _obj(platform, "EC2NodeClass")
    nc["spec"].update({
        "capacityReservationSelectorTerms": [{"id": "cr-0123456789abcdef0"}, {"tags": {"team": "ml"}}],
        "connectionTracking": {"tcpEstablishedTimeout": 3600},
        "networkInterfaces": [
            {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"},
            {"networkCardIndex": 1, "deviceIndex": 0, "interfaceType": "efa-only"},
        ],
        "placementGroupSelector": {"name": "ray-workers"},
    })
    nc["spec"]["securityGroupSelectorTerms"] = [{"tags": {"karpenter.sh/discovery": "dynamic-factory"}}]
    nc["spec"]["kubelet"].update({
        "evictionHard": {"memory.available": "5%"},
        "evictionSoft": {"memory.available": "10%"},
        "evictionSoftGracePeriod": {"memory.available": "1m0s"},
        "kubeReserved": {"cpu": "100m", "memory": "512Mi"},
        "systemReserved": {"cpu": "100m", "memory": "256Mi"},
        "imageGCHighThresholdPercent": 85,
        "imageGCLowThresholdPercent": 80,
    })
    assert CrdValidator.from_files([CRD_FILES[0]]).errors(nc) == []  # a realistic object, not just CEL-valid
    report = _crd(crds, nc).evaluate(nc)
    assert report.ok, report.failure_text()
    not_applicable = {o.rule.schema_path for o in report.outcomes if o.status == "not_applicable"}
    # instanceProfile excludes role; tags on AMI terms exclude the alias.
    assert not_applicable == {"spec.instanceProfile", "spec.amiSelectorTerms[*].tags"}


# --------------------------------------------------------------------------------------------------------
# Faithfulness: what the API server does *not* reject (so the chart's own checks stay)
# --------------------------------------------------------------------------------------------------------


def test_upstream_selector_rules_only_catch_a_mix_when_every_term_mixes(platform, crds):
    """Karpenter writes `!self.all(x, has(x.id) && has(x.tags))`, not `!self.exists(...)`: one valid term next to a
    mixed one passes the API server. We mirror the server, so this passes here too."""
    nc = _obj(platform, "EC2NodeClass")
    nc["spec"]["securityGroupSelectorTerms"].append({"id": "sg-0123456789abcdef0", "tags": {"a": "b"}})
    assert _crd(crds, nc).evaluate(nc).ok


@pytest.mark.parametrize(
    "label, cel_rejects",
    [
        ("karpenter.sh/team", True),
        ("karpenter.k8s.aws/team", True),
        ("team.karpenter.sh/x", True),
        ("kubernetes.io/hostname", True),
        ("karpenter.sh/capacity-type", False),  # excepted by the CRD; the chart still refuses it
        ("kubernetes.io/team", False),  # kubernetes.io and k8s.io: only Karpenter's runtime validation
        ("example.k8s.io/team", False),
    ],
)
def test_label_domains_cel_versus_chart(platform, crds, label, cel_rejects):
    """Which of the chart's _RESTRICTED_LABEL_DOMAINS the CRD's CEL rules also enforce on NodePool labels."""
    np = _obj(platform, "NodePool", "spot")
    np["spec"]["template"]["metadata"]["labels"][label] = "x"
    assert (not _crd(crds, np).evaluate(np).ok) is cel_rejects
    assert kn._label_problems(label, "x") != []  # the chart rejects every one of them up front


def test_defaults_are_applied_before_evaluation(platform, crds):
    """Without spec.disruption the server defaults budgets to [{nodes: 10%}], and the budgets rule runs on it."""
    np = _obj(platform, "NodePool", "spot")
    del np["spec"]["disruption"]
    crd = _crd(crds, np)

    def budgets_rule(report):
        return {o.rule.schema_path: o.status for o in report.outcomes}["spec.disruption.budgets"]

    assert budgets_rule(crd.evaluate(np)) == "passed"
    assert budgets_rule(crd.evaluate(np, defaults=False)) == "not_applicable"


# --------------------------------------------------------------------------------------------------------
# The evaluator itself: extensions, message/messageExpression/reason/fieldPath, the allowlist gate
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("'al2023@v20260818'.find('^[^@]+')", "al2023"),
        ("'no-slash'.find('^([^/]+)/')", ""),
        ("'a@b@c'.split('@')", ["a", "b", "c"]),
        ("'a@b@c'.split('@', 2)", ["a", "b@c"]),
        ("'a@b@c'.split('@', 0)", []),
        ("'abc'.split('')", ["a", "b", "c"]),
    ],
)
def test_kubernetes_extension_functions(expr, expected):
    result = compile_rule(expr).program.evaluate({})
    assert (list(result) if isinstance(result, list) else result) == expected


SYNTHETIC_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Cluster
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: self.size > 3
              messageExpression: "'size ' + string(self.size) + ' is too small'"
              reason: FieldValueForbidden
              fieldPath: .size
            - rule: self.size < 100
            - rule: self.size != 50
              message: not fifty
              messageExpression: "self.nope"
            properties:
              size: {type: integer}
              q:
                type: string
                x-kubernetes-validations:
                - rule: "quantity(self).isLessThan(quantity('1'))"
"""


@pytest.fixture
def widget_crd(tmp_path):
    path = tmp_path / "widgets.yaml"
    path.write_text(SYNTHETIC_CRD)
    return CrdCelRules.load(path)


def _widget(size, q=None):
    spec = {"size": size} if q is None else {"size": size, "q": q}
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}


def test_message_expression_reason_and_field_path(widget_crd):
    texts = [f.text for f in widget_crd.evaluate(_widget(2)).failures()]
    assert texts == ["spec.size: Forbidden: size 2 is too small"]


def test_message_falls_back_to_the_rule_text_then_message(widget_crd):
    assert widget_crd.evaluate(_widget(200)).failed() == {("spec", "failed rule: self.size < 100")}
    # messageExpression errors: the server falls back to message.
    assert widget_crd.evaluate(_widget(50)).failed() == {("spec", "not fifty")}


def test_unsupported_functions_fail_unless_allowlisted(widget_crd, monkeypatch):
    rule = "quantity(self).isLessThan(quantity('1'))"
    assert [u for u in widget_crd.unsupported_rules() if "quantity" in u]
    assert compile_rule(rule).unknown_functions() == {"quantity", "isLessThan"}
    report = widget_crd.evaluate(_widget(10, q="500m"))
    assert [f.location for f in report.failures()] == ["spec.q"] and "Internal error" in report.failures()[0].text
    # Allowlisted (with a reason), it is skipped and counted, no longer a failure.
    monkeypatch.setitem(ALLOWLIST, rule, "quantity library not in celpy (test)")
    report = widget_crd.evaluate(_widget(10, q="500m"))
    assert report.ok and report.counts()["allowlisted"] == 1
    assert widget_crd.unsupported_rules() == []


def test_schema_paths_cover_items_and_map_values(tmp_path):
    path = tmp_path / "crd.yaml"
    path.write_text(textwrap.dedent("""\
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {name: things.example.com}
        spec:
          group: example.com
          names: {kind: Thing, plural: things}
          scope: Cluster
          versions:
          - name: v1
            served: true
            storage: true
            schema:
              openAPIV3Schema:
                type: object
                properties:
                  spec:
                    type: object
                    properties:
                      list:
                        type: array
                        x-kubernetes-validations: [{rule: "self.size() <= 2", message: too many}]
                        items:
                          type: string
                          x-kubernetes-validations: [{rule: "self != 'bad'", message: bad item}]
                      map:
                        type: object
                        additionalProperties:
                          type: integer
                          x-kubernetes-validations: [{rule: "self >= 0", message: negative}]
                      absent:
                        type: string
                        x-kubernetes-validations: [{rule: "self != ''", message: empty}]
        """))
    crd = CrdCelRules.load(path)
    obj = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"},
           "spec": {"list": ["ok", "bad", "bad"], "map": {"a": 1, "b.c": -1}}}
    report = crd.evaluate(obj)
    assert report.failed() == {
        ("spec.list", "too many"),
        ("spec.list[1]", "bad item"),
        ("spec.list[2]", "bad item"),
        ("spec.map[b.c]", "negative"),
    }
    assert report.counts()["not_applicable"] == 1 and report.counts()["evaluations"] == 6
