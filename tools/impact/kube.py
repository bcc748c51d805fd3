"""What a change to CDK's EKS custom resources does inside the cluster.

CloudFormation sees ``Custom::AWSCDK-EKS-KubernetesResource`` and ``Custom::AWSCDK-EKS-HelmChart`` as opaque
property bags; the kubectl handler (aws-cdk-lib, ``custom-resource-handlers/dist/aws-eks-v2/kubectl-handler``)
decides what happens, and it returns no physical id, so an update never becomes a replacement by itself:

- manifest, Create: ``kubectl create`` (``apply`` with ``Overwrite``): an object that already exists fails it.
- manifest, Update: ``kubectl apply``, with ``--prune -l <PruneLabel>`` when set: objects dropped from the
  manifest are deleted; without a prune label they stay in the cluster, unmanaged.
- manifest, Delete: ``kubectl delete`` of every object in the manifest (a Namespace takes all it holds).
- chart, Create/Update: ``helm upgrade --install <Release>``; a renamed release is installed next to the old
  one, which is never uninstalled. Delete: ``helm uninstall``.

Deletes run in CloudFormation's cleanup phase, after every create and update: objects or a release that a
new resource takes over from a removed (or replaced) one are deleted right after they were re-applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tools.impact.diff import changed_paths, summarize
from tools.render import HELM_TYPE, MANIFEST_TYPE, join

KUBE_TYPES = (MANIFEST_TYPE, HELM_TYPE)

# Kinds whose deletion loses data or everything below them.
_STATEFUL_KINDS = {
    "Namespace": "every object in it: PersistentVolumeClaims (and their EBS volumes), Secrets, what charts installed there",
    "PersistentVolumeClaim": "the claimed volume and its data (gp3 reclaimPolicy Delete)",
    "PersistentVolume": "the volume and its data",
    "CustomResourceDefinition": "every custom resource of that kind",
}

# Fields the API server refuses to change on an existing object: `kubectl apply` fails, and so does the
# stack update. (None = the whole spec except the listed mutable fields.)
_IMMUTABLE: dict[str, tuple[tuple[str, ...], ...]] = {
    "StorageClass": (("provisioner",), ("parameters",), ("reclaimPolicy",), ("volumeBindingMode",)),
    "Deployment": (("spec", "selector"),),
    "DaemonSet": (("spec", "selector"),),
    "ReplicaSet": (("spec", "selector"),),
    "Job": (("spec", "selector"), ("spec", "template")),
    "Service": (("spec", "clusterIP"),),
}
_MUTABLE_SPEC = {
    "StatefulSet": {"replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds"},
    "PersistentVolumeClaim": {"resources", "volumeAttributesClassName"},
}


@dataclass
class KubeAccount:
    lines: list[str] = field(default_factory=list)     # "+ NodePool gpu", "~ NodePool spot: spec.limits.cpu"
    losses: list[str] = field(default_factory=list)    # what a user would lose
    problems: list[str] = field(default_factory=list)  # what would fail or be left behind


def objects(props: dict[str, Any] | None) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The manifest's objects keyed by (kind, namespace, name); deploy-time values become placeholders."""
    if not props or "Manifest" not in props:
        return {}
    found = json.loads(join(props["Manifest"]))
    out = {}
    for obj in found if isinstance(found, list) else [found]:
        meta = obj.get("metadata", {})
        out[(obj.get("kind", "?"), meta.get("namespace", ""), meta.get("name", "?"))] = obj
    return out


def key_text(key: tuple[str, str, str]) -> str:
    kind, namespace, name = key
    return f"{kind} {namespace + '/' if namespace else ''}{name}"


def _loss(key: tuple[str, str, str]) -> str | None:
    what = _STATEFUL_KINDS.get(key[0])
    return f"{key_text(key)}: {what}" if what else None


def _immutable_hits(kind: str, paths: list[tuple]) -> list[tuple]:
    hits = []
    for path in paths:
        if kind in _MUTABLE_SPEC and path[:1] == ("spec",) and (len(path) == 1 or path[1] not in _MUTABLE_SPEC[kind]):
            hits.append(path)
        for fixed in _IMMUTABLE.get(kind, ()):
            if tuple(map(str, path[:len(fixed)])) == fixed or fixed[:len(path)] == tuple(map(str, path)):
                hits.append(path)
    return list(dict.fromkeys(hits))


def _immutable_problem(key: tuple[str, str, str], obj: dict[str, Any], paths: list[tuple]) -> str | None:
    hits = _immutable_hits(key[0], paths)
    if not hits:
        return None
    ttl = obj.get("spec", {}).get("ttlSecondsAfterFinished") if key[0] == "Job" else None
    when = (f"while the finished Job still exists (it is deleted {ttl}s after it finishes; then it runs again)"
            if ttl is not None else "on the existing object")
    return f"{key_text(key)}: {summarize(hits)} cannot change: kubectl apply fails {when}"


def manifest_account(before: dict | None, after: dict | None) -> KubeAccount:
    """What applying ``after`` over ``before`` does (either may be None: create or delete)."""
    acc = KubeAccount()
    try:
        old, new = objects(before), objects(after)
    except (json.JSONDecodeError, TypeError):
        acc.lines.append("manifest cannot be read offline")
        return acc
    prune = bool((after or {}).get("PruneLabel"))
    for key in new.keys() - old.keys():
        acc.lines.append(f"+ {key_text(key)}")
    for key in sorted(old.keys() - new.keys()):
        if after is None:
            acc.lines.append(f"- {key_text(key)} (kubectl delete)")
        elif prune:
            acc.lines.append(f"- {key_text(key)} (pruned)")
        else:
            acc.lines.append(f"- {key_text(key)} dropped from the manifest, left in the cluster (no prune label)")
            continue
        if loss := _loss(key):
            acc.losses.append(loss)
    for key in sorted(old.keys() & new.keys()):
        paths = changed_paths(old[key], new[key])
        if not paths:
            continue
        acc.lines.append(f"~ {key_text(key)}: {summarize(paths)}")
        if problem := _immutable_problem(key, new[key], paths):
            acc.problems.append(problem)
    acc.lines.sort(key=lambda line: ("+~-".index(line[0]) if line[0] in "+~-" else 3, line))
    return acc


def _values(props: dict | None) -> dict[str, Any]:
    raw = (props or {}).get("Values")
    try:
        return json.loads(join(raw)) if raw else {}
    except (json.JSONDecodeError, TypeError):
        return {"<unreadable>": True}


def chart_losses(props: dict[str, Any]) -> list[str]:
    """What ``helm uninstall`` of this release takes with it (the charts' own templates at the pinned versions)."""
    chart, release = props.get("Chart", ""), props.get("Release", "?")
    if chart == "jupyterhub":
        db = _values(props).get("hub", {}).get("db", {}).get("type", "sqlite-pvc")
        if db == "sqlite-pvc":
            return [f"Helm release {release}: the hub database (PVC hub-db-dir: users, API tokens, server state)"]
    if chart == "karpenter-crd":
        return [f"Helm release {release}: Karpenter's CRDs and with them every NodePool, EC2NodeClass and "
                "NodeClaim (Karpenter's nodes are terminated)"]
    return []


def _chart_text(props: dict) -> str:
    return f"{props.get('Chart')} {props.get('Version', '')}".strip()


def helm_account(before: dict | None, after: dict | None) -> KubeAccount:
    acc = KubeAccount()
    if before is None and after is not None:
        acc.lines.append(f"+ release {after.get('Release')} ({_chart_text(after)}) in {after.get('Namespace', 'default')}")
        return acc
    if after is None and before is not None:
        acc.lines.append(f"- release {before.get('Release')} (helm uninstall)")
        acc.losses.extend(chart_losses(before))
        return acc
    assert before is not None and after is not None
    release = after.get("Release")
    for prop in ("Chart", "Version", "Repository", "ChartAssetURL"):
        if before.get(prop) != after.get(prop):
            acc.lines.append(f"~ release {release}: {prop} {before.get(prop)} -> {after.get(prop)}")
    if (before.get("Release"), before.get("Namespace")) != (release, after.get("Namespace")):
        acc.lines.append(f"+ release {release} in {after.get('Namespace', 'default')}")
        acc.problems.append(
            f"release {before.get('Release')} in {before.get('Namespace', 'default')} is left installed: an update "
            "runs helm upgrade --install for the new name and never uninstalls the old one")
    paths = changed_paths(_values(before), _values(after))
    if paths:
        acc.lines.append(f"~ release {release} values: {summarize(paths)}")
    rest = sorted(k for k in set(before) | set(after)
                  if k not in ("Chart", "Version", "Repository", "ChartAssetURL", "Release", "Namespace", "Values")
                  and before.get(k) != after.get(k))
    if rest:
        acc.lines.append(f"~ release {release}: {', '.join(rest)}")
    return acc


def account(type_name: str, before: dict | None, after: dict | None) -> KubeAccount:
    if type_name == HELM_TYPE:
        return helm_account(before, after)
    return manifest_account(before, after)


def footprint(type_name: str, props: dict[str, Any], stack_name: str = "") -> set[tuple]:
    """What a resource owns in the cluster: its objects or its release, keyed with the cluster they live in
    (a reference to a resource of its own stack means that stack's cluster: it is qualified by the stack name)."""
    cluster = json.dumps(props.get("ClusterName"), sort_keys=True)
    if '"Ref"' in cluster or '"Fn::GetAtt"' in cluster:
        cluster = f"{stack_name}:{cluster}"
    if type_name == HELM_TYPE:
        return {(cluster, "release", props.get("Namespace", "default"), props.get("Release"))}
    try:
        return {(cluster, *key) for key in objects(props)}
    except (json.JSONDecodeError, TypeError):
        return set()


def footprint_text(item: tuple) -> str:
    if item[1] == "release":
        return f"Helm release {item[2]}/{item[3]}"
    return key_text(item[1:])
