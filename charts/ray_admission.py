"""The Ray head's Kubernetes identity may scale its own RayCluster and do nothing else (issue #16).

Why: the KubeRay autoscaler runs as a sidecar in the Ray head pod, under the head's service account, with the
service-account token mounted. Every job's driver runs in that pod too (the Jobs API starts entrypoints on the
head), so any job can read the token and act as the autoscaler. KubeRay 1.7.0 binds that identity to a Role
(``ray-operator/controllers/ray/common/rbac.go``, ``BuildRole``; pods ``patch`` and ``pods/resize`` were added for
in-place resizing by ray-project/kuberay#3960) allowing:

* ``rayclusters``: ``get``, ``patch`` - with ``patch``, a job could rewrite its own cluster: images, volumes,
  ``authOptions`` (turn the token off), ``headGroupSpec``, ``maxReplicas``, new worker groups, ``suspend``...;
* ``pods``: ``get``, ``list``, ``watch``, ``patch`` and ``pods/resize``: ``patch`` - with ``patch``, a job could
  relabel Ray pods, and labels decide which network policies select a pod.

What the autoscaler really writes (Ray 2.60.0, autoscaler v2, which this platform runs:
``python/ray/autoscaler/v2/instance_manager/cloud_providers/kuberay/cloud_provider.py`` with the patch builders
of ``python/ray/autoscaler/_private/kuberay/node_provider.py``): JSON patches ``replace
/spec/workerGroupSpecs/<i>/replicas`` and ``replace /spec/workerGroupSpecs/<i>/scaleStrategy`` (``{workersToDelete:
[...]}``) on its own RayCluster; it reads the RayCluster, lists the cluster's pods and reads the head pod. It
writes nothing else unless two features the platform does not use are configured: in-place pod resizing (the
RayCluster annotation ``ray.io/ippr``: pod and ``pods/resize`` patches) and idle termination
(``spec.idleTerminationOptions``, absent from KubeRay 1.7.0's CRD: ``spec.idleSuspend``, a finalizer, a delete).

So one ``ValidatingAdmissionPolicy`` (admissionregistration.k8s.io/v1, GA since Kubernetes 1.30) matches every
write by the head service account of the given namespaces (``system:serviceaccount:<namespace>:<service
account>``) and denies all of it except an ``UPDATE`` (a patch is an update to admission) of a ``RayCluster`` in
that same namespace that changes nothing but worker groups' ``replicas`` and ``scaleStrategy`` (whose only key
may be ``workersToDelete``), with every ``replicas`` within ``0..maxReplicas``. Any other identity (the KubeRay
operator, an administrator, the token bootstrap Job) is not matched at all. Reads never reach admission.

The comparison is generic on purpose: every key of ``spec`` but ``workerGroupSpecs``, and every key of each worker
group but the two above, must be unchanged, so a field a future CRD adds is frozen too. ``metadata`` labels,
annotations, finalizers and owner references must be unchanged (``managedFields`` and ``resourceVersion``
change on every write and are not compared). ``object`` and ``oldObject`` are dynamically typed in admission
policies (``k8s.io/apiserver/pkg/admission/plugin/cel/compile.go``), so iterating their keys is allowed.

If the platform ever turns on in-place pod resizing, this policy must learn the pod patches first.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

__all__ = [
    "AUTOSCALER_WRITABLE_GROUP_FIELDS",
    "POLICY_NAME",
    "autoscaler_username",
    "ray_admission_objects",
]

POLICY_NAME = "ray-autoscaler-scope"
# The only worker-group fields the autoscaler writes (see the module docstring).
AUTOSCALER_WRITABLE_GROUP_FIELDS = ("replicas", "scaleStrategy")
_API_VERSION = "admissionregistration.k8s.io/v1"
_LABELS = {"app.kubernetes.io/part-of": "dynamic-factory", "app.kubernetes.io/component": "ray"}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_FROZEN_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")


def autoscaler_username(namespace: str, service_account: str) -> str:
    """The user name the API server gives the head pod's service-account token."""
    return f"system:serviceaccount:{namespace}:{service_account}"


def _cel_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _policy_spec(namespaces: Sequence[str], service_account: str) -> dict[str, Any]:
    usernames = [autoscaler_username(ns, service_account) for ns in namespaces]
    writable = _cel_list(AUTOSCALER_WRITABLE_GROUP_FIELDS)
    guard = "!variables.rayClusterUpdate || "
    return {
        "failurePolicy": "Fail",
        # Every write to anything: the identity below may write nothing but what the validations allow.
        "matchConstraints": {
            "resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"],
                               "resources": ["*/*"], "scope": "*"}],
            "matchPolicy": "Equivalent",
        },
        "matchConditions": [
            {"name": "ray-head-service-account", "expression": f"request.userInfo.username in {_cel_list(usernames)}"},
        ],
        "variables": [
            # Fields the API server omits when empty (subResource, namespace) are tested with has().
            {"name": "subresource", "expression": "has(request.subResource) ? request.subResource : ''"},
            {"name": "rayClusterUpdate",
             "expression": "request.resource.group == 'ray.io' && request.resource.resource == 'rayclusters' && "
                           "request.operation == 'UPDATE' && variables.subresource == ''"},
            # Worker groups before and after an update ([] otherwise: object is null on DELETE, oldObject on
            # CREATE; tested through the operation, not by comparing an object with null).
            {"name": "newGroups",
             "expression": "request.operation == 'UPDATE' && has(object.spec) && has(object.spec.workerGroupSpecs) "
                           "? object.spec.workerGroupSpecs : []"},
            {"name": "oldGroups",
             "expression": "request.operation == 'UPDATE' && has(oldObject.spec) && "
                           "has(oldObject.spec.workerGroupSpecs) ? oldObject.spec.workerGroupSpecs : []"},
        ],
        "validations": [
            {
                "expression": "variables.rayClusterUpdate",
                "message": "the Ray head's service account may only update its RayCluster's worker replicas "
                           "(autoscaler); every other write is denied",
                "reason": "Forbidden",
            },
            {
                "expression": guard + "has(request.namespace) && request.userInfo.username == "
                                      f"'system:serviceaccount:' + request.namespace + ':{service_account}'",
                "message": "the Ray head's service account may only scale the RayCluster of its own namespace",
                "reason": "Forbidden",
            },
            {
                "expression": guard + f"{_cel_list(_FROZEN_METADATA)}.all(k, "
                                      "(k in object.metadata) == (k in oldObject.metadata) && "
                                      "(!(k in object.metadata) || object.metadata[k] == oldObject.metadata[k]))",
                "message": "the Ray autoscaler may not change a RayCluster's labels, annotations, finalizers or "
                           "owner references",
                "reason": "Forbidden",
            },
            {
                "expression": guard + "object.spec.all(k, k == 'workerGroupSpecs' || "
                                      "(k in oldObject.spec && object.spec[k] == oldObject.spec[k])) && "
                                      "oldObject.spec.all(k, k == 'workerGroupSpecs' || k in object.spec)",
                "message": "the Ray autoscaler may not change a RayCluster's spec outside workerGroupSpecs "
                           "(images, headGroupSpec, authOptions, suspend, ...)",
                "reason": "Forbidden",
            },
            {
                "expression": guard + "size(variables.newGroups) == size(variables.oldGroups) && "
                                      "variables.newGroups.all(g, "
                                      "variables.oldGroups.exists_one(o, o.groupName == g.groupName) && "
                                      "variables.oldGroups.exists(o, o.groupName == g.groupName && "
                                      f"g.all(k, k in {writable} || (k in o && g[k] == o[k])) && "
                                      f"o.all(k, k in {writable} || k in g)))",
                "message": "the Ray autoscaler may change only replicas and scaleStrategy of existing worker groups "
                           "(no new or removed groups, no maxReplicas, template or rayStartParams change)",
                "reason": "Forbidden",
            },
            {
                "expression": guard + "variables.newGroups.all(g, "
                                      "(!has(g.scaleStrategy) || g.scaleStrategy.all(k, k == 'workersToDelete')) && "
                                      "(!has(g.replicas) || (g.replicas >= 0 && "
                                      "(!has(g.maxReplicas) || g.replicas <= g.maxReplicas))))",
                "message": "the Ray autoscaler may set replicas only within 0..maxReplicas and scaleStrategy only "
                           "to workersToDelete",
                "reason": "Invalid",
            },
        ],
    }


def ray_admission_objects(namespaces: Sequence[str], service_account: str) -> list[dict[str, Any]]:
    """The ``ValidatingAdmissionPolicy`` and its ``ValidatingAdmissionPolicyBinding`` (cluster-scoped, in apply
    order) confining the Ray head's service account ``service_account`` of each of ``namespaces``.

    Raises ValueError on bad arguments.
    """
    problems = []
    if isinstance(namespaces, (str, bytes)) or not isinstance(namespaces, Sequence) or not namespaces:
        problems.append(f"namespaces {namespaces!r} must be a non-empty sequence of namespace names")
    else:
        for ns in namespaces:
            if not isinstance(ns, str) or not _DNS_LABEL.match(ns) or len(ns) > 63:
                problems.append(f"namespaces: {ns!r} is not a namespace name (DNS label)")
        if len(set(namespaces)) != len(namespaces):
            problems.append(f"namespaces {list(namespaces)!r} name a namespace twice")
    if not isinstance(service_account, str) or not _DNS_SUBDOMAIN.match(service_account) or len(service_account) > 253:
        problems.append(f"service_account {service_account!r} is not a service account name")
    if problems:
        raise ValueError("ray admission policy: " + "; ".join(problems))

    description = ("The Ray head's service account (the KubeRay autoscaler, and every job's driver) may only "
                   "scale worker groups of the RayCluster in its own namespace.")
    return [
        {
            "apiVersion": _API_VERSION,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": POLICY_NAME, "labels": dict(_LABELS),
                         "annotations": {"dynamic-factory/description": description}},
            "spec": _policy_spec(list(namespaces), service_account),
        },
        {
            "apiVersion": _API_VERSION,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY_NAME, "labels": dict(_LABELS)},
            "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
        },
    ]
