"""Nodes and the scheduler: what a node can hold and where each pod lands.

Allocatable follows EKS's AL2023 kubelet reservation (awslabs/amazon-eks-ami, nodeadm's kubelet config:
``kubeReserved`` CPU 6% of the first core, 1% of the second, 0.5% of the third and fourth, 0.25% of the
rest; memory 11 MiB per pod plus 255 MiB; hard eviction at 100 MiB) on top of the memory the instance
really shows the kernel, for which Karpenter's default VM overhead estimate (7.5 %, its
``vmMemoryOverheadPercent`` setting) stands in. ``maxPods`` of a managed node group is nodeadm's default,
the ENI formula; Karpenter's nodes take ``kubelet.maxPods`` from their EC2NodeClass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from charts.karpenter_nodes import INSTANCE_TYPES, POOL_LABEL_KEY, InstanceTypeInfo, eni_max_pods

VM_MEMORY_OVERHEAD = 0.075
EVICTION_HARD_MIB = 100


def reserved_cpu_millicores(vcpus: int) -> float:
    cores = [60.0, 10.0, 5.0, 5.0] + [2.5] * max(0, vcpus - 4)
    return sum(cores[:vcpus])


def allocatable(info: InstanceTypeInfo, max_pods: int) -> tuple[int, int]:
    """(millicores, MiB) a pod may request on a node of this type."""
    cpu = info.vcpus * 1000 - reserved_cpu_millicores(info.vcpus)
    mem = info.memory_gib * 1024 * (1 - VM_MEMORY_OVERHEAD) - (11 * max_pods + 255) - EVICTION_HARD_MIB
    return int(cpu), int(mem)


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if not t.get("key"):
            if t.get("operator") == "Exists":
                return True
            continue
        if t["key"] != taint.get("key"):
            continue
        if t.get("operator", "Equal") == "Exists" or t.get("value") == taint.get("value"):
            return True
    return False


@dataclass
class Node:
    name: str
    pool: str  # node group or NodePool name
    instance_type: str
    labels: dict[str, str]
    taints: list[dict[str, Any]]
    max_pods: int
    karpenter: bool = False
    placed: list[tuple[str, int, int]] = field(default_factory=list)  # (workload, millicores, MiB)

    @property
    def info(self) -> InstanceTypeInfo:
        return INSTANCE_TYPES[self.instance_type]

    @property
    def allocatable(self) -> tuple[int, int]:
        return allocatable(self.info, self.max_pods)

    @property
    def used(self) -> tuple[int, int]:
        return sum(c for _, c, _ in self.placed), sum(m for _, _, m in self.placed)

    @property
    def free(self) -> tuple[int, int]:
        (ac, am), (uc, um) = self.allocatable, self.used
        return ac - uc, am - um

    def blocking_taints(self, tolerations: Sequence[Mapping[str, Any]]) -> list[str]:
        return [f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in self.taints
                if t["effect"] in ("NoSchedule", "NoExecute") and not tolerates(tolerations, t)]

    def selector_mismatch(self, selector: Mapping[str, str]) -> list[str]:
        return [f"{k}={v}" for k, v in selector.items() if self.labels.get(k) != v]

    def affinity_mismatch(self, terms: Sequence[Mapping[str, Any]]) -> bool:
        return bool(terms) and not any(_term_matches(t, self.labels) for t in terms)

    def eligible(self, tolerations, selector, affinity_terms=()) -> list[str]:
        """Why a pod with these tolerations, nodeSelector and required node affinity cannot use this node."""
        return [f"taint {t} not tolerated" for t in self.blocking_taints(tolerations)] + \
               [f"nodeSelector {s} does not match" for s in self.selector_mismatch(selector)] + \
               (["required node affinity matches none of its labels"] if self.affinity_mismatch(affinity_terms) else [])


def _term_matches(term: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for expr in term.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], [str(v) for v in expr.get("values") or []]
        value = labels.get(key)
        if op == "In" and value not in values:
            return False
        if op == "NotIn" and value in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op in ("Gt", "Lt") and (value is None or not value.isdigit()
                                   or (int(value) <= int(values[0]) if op == "Gt" else int(value) >= int(values[0]))):
            return False
    return True


_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


def node_group_nodes(name: str, props: Mapping[str, Any]) -> list[Node]:
    """The nodes an ``AWS::EKS::Nodegroup`` brings up (its desired size), with their labels and taints."""
    itype = props["InstanceTypes"][0]
    info = INSTANCE_TYPES[itype]
    count = int(props.get("ScalingConfig", {}).get("DesiredSize", 1))
    taints = [{"key": t["Key"], "value": t.get("Value"), "effect": _EFFECTS.get(t["Effect"], t["Effect"])}
              for t in props.get("Taints", [])]
    out = []
    for i in range(count):
        labels = {"kubernetes.io/os": "linux", "kubernetes.io/arch": info.arch,
                  "node.kubernetes.io/instance-type": itype, "eks.amazonaws.com/capacityType": "ON_DEMAND",
                  "eks.amazonaws.com/nodegroup": props.get("NodegroupName", name), **props.get("Labels", {})}
        pool = props.get("Labels", {}).get(POOL_LABEL_KEY, name)
        out.append(Node(name=f"{pool}-{i}", pool=pool, instance_type=itype, labels=labels, taints=list(taints),
                        max_pods=min(110, eni_max_pods(info))))
    return out


@dataclass
class Pool:
    """A Karpenter NodePool: the node it would launch for a pod (its largest instance type, for fit)."""

    name: str
    labels: dict[str, str]
    taints: list[dict[str, Any]]
    startup_taints: list[dict[str, Any]]
    instance_types: list[str]
    capacity_types: list[str]
    max_pods: int

    def node(self, index: int) -> Node:
        largest = max(self.instance_types, key=lambda t: (INSTANCE_TYPES[t].vcpus, INSTANCE_TYPES[t].memory_gib))
        info = INSTANCE_TYPES[largest]
        labels = {"kubernetes.io/os": "linux", "kubernetes.io/arch": info.arch, "karpenter.sh/nodepool": self.name,
                  "node.kubernetes.io/instance-type": largest, **self.labels}
        if len(self.capacity_types) == 1:
            labels["karpenter.sh/capacity-type"] = self.capacity_types[0]
        return Node(name=f"{self.name}-{index}", pool=self.name, instance_type=largest, labels=labels,
                    taints=list(self.taints), max_pods=self.max_pods, karpenter=True)


def _requirement(reqs: Iterable[Mapping[str, Any]], key: str) -> Mapping[str, Any] | None:
    return next((r for r in reqs if r.get("key") == key), None)


def pools_from_manifests(node_pools: Sequence[Mapping[str, Any]], node_classes: Mapping[str, Mapping[str, Any]]) -> list[Pool]:
    out = []
    for np in node_pools:
        tpl = np["spec"]["template"]
        reqs = tpl["spec"].get("requirements", [])
        fam = _requirement(reqs, "karpenter.k8s.aws/instance-family")
        size = _requirement(reqs, "karpenter.k8s.aws/instance-size")
        gen = _requirement(reqs, "karpenter.k8s.aws/instance-generation")
        cap = _requirement(reqs, "karpenter.sh/capacity-type")
        types = [n for n, t in INSTANCE_TYPES.items()
                 if (fam is None or t.family in fam["values"]) and (size is None or t.size in size["values"])
                 and (gen is None or t.generation > int(gen["values"][0]))]
        node_class = node_classes.get(tpl["spec"]["nodeClassRef"]["name"], {})
        max_pods = int(node_class.get("spec", {}).get("kubelet", {}).get("maxPods", 110))
        out.append(Pool(
            name=np["metadata"]["name"], labels=dict(tpl.get("metadata", {}).get("labels", {})),
            taints=list(tpl["spec"].get("taints", [])), startup_taints=list(tpl["spec"].get("startupTaints", [])),
            instance_types=types, capacity_types=list(cap["values"]) if cap else ["on-demand"], max_pods=max_pods,
        ))
    return out
