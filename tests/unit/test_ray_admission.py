"""The admission policy that confines the Ray head's service account (charts/ray_admission.py), evaluated.

The policy's CEL runs in cel-python (via tests/support/cel_rules.py's compiler) against admission requests built
the way the API server builds them, around real RayCluster manifests rendered by ``charts.raycluster`` and
changed with Ray 2.60's own autoscaler patch builders. The evaluator follows
``k8s.io/apiserver/pkg/admission/plugin/policy/validating`` for what this policy uses:

* matching: ``matchConstraints.resourceRules`` (rule matching as in ``.../webhook/predicates/rules/rules.go``:
  ``"*/*"`` is every resource and subresource), then ``matchConditions`` (all true, else the policy is skipped);
* ``variables`` (evaluated in order; an error is kept and surfaces where the variable is used);
* ``validations``: a result that is not ``true`` (false or an error, ``failurePolicy: Fail``) denies, with the
  validation's message.

``request`` carries only the fields the API server sets for the request (``namespace`` and ``subResource``
are omitted when empty, as the JSON form of AdmissionRequest does), so a policy reading them without ``has()``
errors here as it would there.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import cdk8s
import celpy
import kubernetes_validate
import pytest

from charts.ray_admission import (
    AUTOSCALER_WRITABLE_GROUP_FIELDS,
    POLICY_NAME,
    autoscaler_username,
    ray_admission_objects,
)
from charts.raycluster import CPU_GROUP, SERVICE_ACCOUNT, RayClusterChart, RayClusterSettings
from tests.support.cel_rules import compile_rule

from ray.autoscaler._private.kuberay.node_provider import (  # Ray 2.60.0's patch builders (requirements-dev.txt)
    worker_delete_patch,
    worker_replica_patch,
)

KUBERNETES_VERSION = "1.35"
NAMESPACES = ("ray", "ray-team-a")
BUCKET = "df-unit-ray-checkpoints"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ray:2.60.0-cpu"
OPERATOR = "system:serviceaccount:kuberay-system:kuberay-operator"
ADMIN = "kubernetes-admin"


# ====================================================================== the objects


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return ray_admission_objects(NAMESPACES, SERVICE_ACCOUNT)


@pytest.fixture(scope="module")
def policy(objects) -> dict[str, Any]:
    return objects[0]


def test_a_policy_and_its_binding(objects):
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("ValidatingAdmissionPolicy", POLICY_NAME), ("ValidatingAdmissionPolicyBinding", POLICY_NAME)]
    binding = objects[1]["spec"]
    assert binding == {"policyName": POLICY_NAME, "validationActions": ["Deny"]}
    assert objects[0]["spec"]["failurePolicy"] == "Fail"


@pytest.mark.parametrize("index", [0, 1])
def test_valid_against_the_kubernetes_schema(objects, index):
    kubernetes_validate.validate(objects[index], KUBERNETES_VERSION, strict=True)


def test_every_expression_compiles_with_known_functions(policy):
    spec = policy["spec"]
    for entry in spec["matchConditions"] + spec["variables"] + spec["validations"]:
        compiled = compile_rule(entry["expression"])
        assert compiled.problem is None, (entry["expression"], compiled.problem)


@pytest.mark.parametrize("namespaces, service_account, message", [
    ("ray", "ray", "non-empty sequence"),
    ([], "ray", "non-empty sequence"),
    (["Ray"], "ray", "'Ray' is not a namespace name"),
    (["ray", "ray"], "ray", "twice"),
    (["ray"], "", "service_account"),
])
def test_bad_arguments(namespaces, service_account, message):
    with pytest.raises(ValueError, match=message):
        ray_admission_objects(namespaces, service_account)


# ====================================================================== the evaluator


@dataclasses.dataclass(frozen=True)
class Decision:
    matched: bool
    allowed: bool
    messages: tuple[str, ...] = ()
    variable_errors: tuple[str, ...] = ()


def _rule_matches(rule: dict[str, Any], req: dict[str, Any]) -> bool:
    def listed(values: list[str], value: str) -> bool:
        return "*" in values or value in values

    if not listed(rule["apiGroups"], req["resource"]["group"]) or not listed(rule["apiVersions"], req["resource"]["version"]):
        return False
    if not listed(rule["operations"], req["operation"]):
        return False
    scope = rule.get("scope", "*")
    if scope != "*" and (scope == "Namespaced") != ("namespace" in req):
        return False
    for resource in rule["resources"]:
        res, _, sub = resource.partition("/")
        if res in ("*", req["resource"]["resource"]) and sub in ("*", req.get("subResource", "")):
            return True
    return False


def _evaluate(expression: str, activation: dict[str, Any]) -> Any:
    try:
        return compile_rule(expression).program.evaluate(activation)
    except celpy.CELEvalError as err:
        return err


def _verdict(result: Any) -> bool | None:
    """True / False for a CEL boolean, None for anything else (an error, or a non-boolean result)."""
    return bool(result) if isinstance(result, celpy.celtypes.BoolType) else None


def admit(policy: dict[str, Any], req: dict[str, Any], obj: Any, old: Any) -> Decision:
    """The policy's decision for one admission request (``obj`` / ``old``: the object after / before)."""
    spec = policy["spec"]
    if not any(_rule_matches(rule, req) for rule in spec["matchConstraints"]["resourceRules"]):
        return Decision(matched=False, allowed=True)
    activation: dict[str, Any] = {"request": celpy.json_to_cel(req), "object": celpy.json_to_cel(obj),
                                  "oldObject": celpy.json_to_cel(old)}
    for condition in spec.get("matchConditions", []):
        result = _evaluate(condition["expression"], activation)
        if _verdict(result) is False:
            return Decision(matched=False, allowed=True)
        if _verdict(result) is None:  # failurePolicy Fail: an erroring condition rejects
            return Decision(matched=True, allowed=False, messages=(f"error: matchCondition: {result}",))
    variables: dict[str, Any] = {}
    errors = []
    for variable in spec.get("variables", []):
        activation["variables"] = celpy.celtypes.MapType(
            {celpy.celtypes.StringType(k): v for k, v in variables.items()})
        value = _evaluate(variable["expression"], activation)
        if isinstance(value, celpy.CELEvalError):
            errors.append(f"{variable['name']}: {value}")
        variables[variable["name"]] = value
    activation["variables"] = celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in variables.items()})
    messages = []
    for validation in spec["validations"]:
        result = _evaluate(validation["expression"], activation)
        if _verdict(result) is not True:
            messages.append(validation["message"] if _verdict(result) is False else f"error: {result}")
    return Decision(matched=True, allowed=not messages, messages=tuple(messages), variable_errors=tuple(errors))


def request(operation: str, *, user: str, namespace: str | None, resource: str = "rayclusters", group: str = "ray.io",
            version: str = "v1", kind: str = "RayCluster", name: str = "ray", sub: str = "",
            groups: tuple[str, ...] = ()) -> dict[str, Any]:
    """An AdmissionRequest as the policy sees it: empty optional fields left out."""
    req: dict[str, Any] = {
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": resource},
        "name": name,
        "operation": operation,
        "userInfo": {"username": user, "uid": "u-1",
                     "groups": list(groups) or (["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                                 "system:authenticated"] if user.startswith("system:serviceaccount:")
                                                else ["system:masters", "system:authenticated"])},
    }
    if namespace:
        req["namespace"] = namespace
    if sub:
        req["subResource"] = sub
        req["requestSubResource"] = sub
    return req


def autoscaler(namespace: str) -> str:
    return autoscaler_username(namespace, SERVICE_ACCOUNT)


# ====================================================================== RayClusters, as stored


def _stored(manifest: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A RayCluster as the API server holds it: the rendered manifest plus server-set metadata."""
    obj = copy.deepcopy(manifest)
    obj["metadata"].update(namespace=namespace, uid="0d7c1c4e-1111-4a52-9e0a-000000000001", resourceVersion="4711",
                           generation=3, creationTimestamp="2026-12-01T10:00:00Z",
                           managedFields=[{"manager": "kubectl", "operation": "Apply", "apiVersion": "ray.io/v1"}])
    return obj


@pytest.fixture(scope="module")
def clusters() -> dict[str, dict[str, Any]]:
    """namespace -> the RayCluster the platform's chart renders there (CPU and GPU groups)."""
    from charts.karpenter_nodes import DEFAULT_GPU_POOL

    out = {}
    for ns in NAMESPACES:
        chart = RayClusterChart(cdk8s.Testing.app(), f"ray-{ns}",
                                settings=RayClusterSettings(gpu_pool=DEFAULT_GPU_POOL, gpu_max_workers=2),
                                checkpoint_bucket=BUCKET, image=IMAGE, gpu_image=IMAGE, namespace=ns)
        (rc,) = [m for m in cdk8s.Testing.synth(chart) if m["kind"] == "RayCluster"]
        out[ns] = _stored(rc, ns)
    return out


def json_patch(obj: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply ``replace`` operations like the API server's JSON-patch library (evanphx/json-patch v4), which also
    replaces a key that is missing in an object (the autoscaler relies on that for ``scaleStrategy``)."""
    out = copy.deepcopy(obj)
    for op in operations:
        assert op["op"] == "replace", op
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = op["value"]
        else:
            node[last] = op["value"]
    out["metadata"]["managedFields"] = out["metadata"]["managedFields"] + [
        {"manager": "python-requests", "operation": "Update", "apiVersion": "ray.io/v1"}]
    return out


def _group_index(rc: dict[str, Any], name: str) -> int:
    return [g["groupName"] for g in rc["spec"]["workerGroupSpecs"]].index(name)


def _change(rc: dict[str, Any], edit) -> dict[str, Any]:
    new = copy.deepcopy(rc)
    edit(new)
    return new


# ====================================================================== what the autoscaler does: allowed


def test_the_rendered_cluster_has_what_the_cases_below_edit(clusters):
    rc = clusters["ray"]
    assert rc["spec"]["authOptions"] and rc["spec"]["headGroupSpec"] and len(rc["spec"]["workerGroupSpecs"]) == 2
    for group in rc["spec"]["workerGroupSpecs"]:
        assert "scaleStrategy" not in group and group["replicas"] == 0 and group["maxReplicas"] >= 1


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_the_autoscaler_scales_up_and_down(policy, clusters, namespace):
    rc = clusters[namespace]
    i = _group_index(rc, CPU_GROUP)
    req = request("UPDATE", user=autoscaler(namespace), namespace=namespace)
    up = json_patch(rc, [worker_replica_patch(i, rc["spec"]["workerGroupSpecs"][i]["maxReplicas"])])
    decision = admit(policy, req, up, rc)
    assert decision.matched and decision.allowed, decision.messages
    pod = f"ray-{CPU_GROUP}-worker-abcde"
    down = json_patch(up, [worker_replica_patch(i, up["spec"]["workerGroupSpecs"][i]["replicas"] - 1),
                           worker_delete_patch(i, [pod])])
    assert admit(policy, req, down, up).allowed
    cleared = json_patch(down, [worker_delete_patch(i, [])])  # the autoscaler empties workersToDelete afterwards
    assert admit(policy, req, cleared, down).allowed
    assert decision.variable_errors == ()


def test_a_patch_that_changes_nothing_is_allowed(policy, clusters):
    rc = clusters["ray"]
    assert admit(policy, request("UPDATE", user=autoscaler("ray"), namespace="ray"), json_patch(rc, []), rc).allowed


# ====================================================================== anything else by the autoscaler: denied


def _image(rc):
    rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["image"] = "evil.example/ray:latest"


def _head_image(rc):
    rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] = "evil.example/ray:latest"


def _auth_off(rc):
    del rc["spec"]["authOptions"]


def _auth_mode(rc):
    rc["spec"]["authOptions"]["mode"] = "disabled"


def _max_replicas(rc):
    rc["spec"]["workerGroupSpecs"][0]["maxReplicas"] += 10


def _head_params(rc):
    rc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = "8"


def _volume(rc):
    rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["volumes"].append(
        {"name": "host", "hostPath": {"path": "/"}})


def _new_group(rc):
    extra = copy.deepcopy(rc["spec"]["workerGroupSpecs"][0])
    extra["groupName"] = "more"
    rc["spec"]["workerGroupSpecs"].append(extra)


def _drop_group(rc):
    rc["spec"]["workerGroupSpecs"].pop()


def _rename_group(rc):
    rc["spec"]["workerGroupSpecs"][0]["groupName"] = "renamed"


def _group_suspend(rc):
    rc["spec"]["workerGroupSpecs"][0]["suspend"] = True


def _cluster_suspend(rc):
    rc["spec"]["suspend"] = True


def _replicas_over_max(rc):
    group = rc["spec"]["workerGroupSpecs"][0]
    group["replicas"] = group["maxReplicas"] + 1


def _negative_replicas(rc):
    rc["spec"]["workerGroupSpecs"][0]["replicas"] = -1


def _scale_strategy_extra(rc):
    rc["spec"]["workerGroupSpecs"][0]["scaleStrategy"] = {"workersToDelete": [], "other": True}


def _label(rc):
    rc["metadata"].setdefault("labels", {})["team"] = "someone-else"


def _annotation(rc):
    rc["metadata"].setdefault("annotations", {})["ray.io/ippr"] = "{}"


def _finalizer(rc):
    rc["metadata"]["finalizers"] = ["ray.io/idle-termination-cleanup-finalizer"]


def _autoscaler_options(rc):
    rc["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] = 1


@pytest.mark.parametrize("edit", [
    _image, _head_image, _auth_off, _auth_mode, _max_replicas, _head_params, _volume, _new_group, _drop_group,
    _rename_group, _group_suspend, _cluster_suspend, _replicas_over_max, _negative_replicas, _scale_strategy_extra,
    _label, _annotation, _finalizer, _autoscaler_options,
], ids=lambda f: f.__name__.strip("_"))
def test_any_other_change_by_the_autoscaler_is_denied(policy, clusters, edit):
    rc = clusters["ray"]
    new = _change(rc, edit)
    assert new != rc
    decision = admit(policy, request("UPDATE", user=autoscaler("ray"), namespace="ray"), new, rc)
    assert decision.matched and not decision.allowed
    assert all(not m.startswith("error") for m in decision.messages), decision.messages  # denied by a rule
    assert decision.variable_errors == ()


@pytest.mark.parametrize("edit", [_image, _auth_off, _max_replicas, _head_params, _new_group, _label],
                         ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("user", [OPERATOR, ADMIN, "system:serviceaccount:ray:ray-token-bootstrap",
                                  "system:serviceaccount:ray-team-b:ray"])
def test_other_identities_are_not_affected(policy, clusters, edit, user):
    rc = clusters["ray"]
    decision = admit(policy, request("UPDATE", user=user, namespace="ray"), _change(rc, edit), rc)
    assert not decision.matched and decision.allowed


def test_the_autoscaler_cannot_scale_another_namespace(policy, clusters):
    rc = clusters["ray-team-a"]
    i = _group_index(rc, CPU_GROUP)
    new = json_patch(rc, [worker_replica_patch(i, 1)])
    decision = admit(policy, request("UPDATE", user=autoscaler("ray"), namespace="ray-team-a"), new, rc)
    assert decision.matched and not decision.allowed
    assert any("its own namespace" in m for m in decision.messages)


def _pod(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"ray-{CPU_GROUP}-worker-abcde", "namespace": namespace,
                         "labels": {"ray.io/cluster": "ray", "ray.io/node-type": "worker"}},
            "spec": {"containers": [{"name": "ray-worker", "image": IMAGE}]}}


def _relabelled(pod: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(pod)
    out["metadata"]["labels"] = {"component": "singleuser-server"}  # would change which network policies apply
    return out


@pytest.mark.parametrize("operation, resource, sub, group, kind, obj, old", [
    ("DELETE", "rayclusters", "", "ray.io", "RayCluster", None, "rc"),
    ("UPDATE", "rayclusters", "status", "ray.io", "RayCluster", "rc", "rc"),
    ("CREATE", "rayclusters", "", "ray.io", "RayCluster", "rc", None),
    ("UPDATE", "pods", "", "", "Pod", "relabelled", "pod"),  # KubeRay's Role grants pods patch
    ("UPDATE", "pods", "resize", "", "Pod", "pod", "pod"),  # ... and pods/resize patch
    ("DELETE", "pods", "", "", "Pod", None, "pod"),
    ("CREATE", "pods", "", "", "Pod", "pod", None),
    ("CONNECT", "pods", "exec", "", "PodExecOptions", None, None),
    ("CREATE", "secrets", "", "", "Secret", None, None),
])
def test_the_autoscaler_writes_nothing_else(policy, clusters, operation, resource, sub, group, kind, obj, old):
    pod = _pod("ray")
    values = {"rc": clusters["ray"], "pod": pod, "relabelled": _relabelled(pod), None: None}
    req = request(operation, user=autoscaler("ray"), namespace="ray", resource=resource, group=group, sub=sub,
                  kind=kind, version="v1")
    decision = admit(policy, req, values[obj], values[old])
    assert decision.matched and not decision.allowed
    assert decision.messages[0].startswith("the Ray head's service account may only update")
    assert decision.variable_errors == ()
    # The same request by the operator passes this policy untouched.
    assert not admit(policy, {**req, "userInfo": {"username": OPERATOR, "groups": ["system:serviceaccounts"]}},
                     values[obj], values[old]).matched


def test_the_writable_fields_are_the_autoscalers_patch_paths():
    """The policy's list follows the paths Ray's patch builders write (so a Ray bump that writes another field
    fails here, before the autoscaler fails in the cluster)."""
    paths = {worker_replica_patch(0, 1)["path"], worker_delete_patch(0, [])["path"]}
    assert {p.rsplit("/", 1)[-1] for p in paths} == set(AUTOSCALER_WRITABLE_GROUP_FIELDS)
    assert all(p.startswith("/spec/workerGroupSpecs/0/") for p in paths)
