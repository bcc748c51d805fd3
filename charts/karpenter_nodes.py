"""Karpenter node configuration: one ``EC2NodeClass`` and the ``NodePool``s (spot, on-demand, optional gpu).

A cdk8s chart of raw ``ApiObject``s for the Karpenter v1 APIs (CRDs of v1.14.1, vendored in
``schemas/karpenter/``). It takes explicit arguments only; the config layer maps its settings onto
:class:`NodePoolSettings`. Nothing here imports the stacks.

Placement scheme (how workloads pick a pool):

* Every node carries the label ``dynamic-factory/pool: <pool name>`` (:data:`POOL_LABEL_KEY`), besides
  Karpenter's own ``karpenter.sh/nodepool`` and ``karpenter.sh/capacity-type``.
* ``spot`` is untainted: anything without other constraints lands there. Spot first; Karpenter falls back to
  on-demand capacity *in the same pool* when no Spot offering is available (both capacity types allowed,
  Karpenter prefers Spot).
* ``on-demand`` is for long-lived pods that must not be interrupted (Ray head, JupyterHub hub). It is tainted
  ``dynamic-factory/pool=on-demand:NoSchedule`` so that Spot-tolerant work never fills expensive nodes; such
  pods need the nodeSelector *and* the toleration: :func:`pool_placement` returns both.
* ``gpu`` (only when enabled) is tainted ``nvidia.com/gpu=true:NoSchedule``; GPU pods tolerate it.

Every pool has the Cilium startup taint (:data:`CILIUM_STARTUP_TAINT`): without it pods are scheduled on a
node before Cilium manages its network, and Karpenter, seeing pending pods that then fail, launches duplicate
nodes. Cilium's operator removes the taint once the agent is ready on the node.

``kubelet.maxPods`` must not exceed what Cilium ENI IPAM can hand out on the smallest instance type a pool can
launch, or pods on that node wait forever for an IP: see :func:`max_pods_for_pools`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import cdk8s
from constructs import Construct

from charts.cilium_values import AGENT_NOT_READY_TAINT_KEY
from charts.k8s import api_object

__all__ = [
    "CILIUM_STARTUP_TAINT",
    "DEFAULT_AMI_ALIAS",
    "DEFAULT_GPU_POOL",
    "DEFAULT_NODE_CLASS_NAME",
    "DEFAULT_ON_DEMAND_POOL",
    "DEFAULT_ROOT_VOLUME_GIB",
    "DEFAULT_SPOT_POOL",
    "DISCOVERY_TAG_KEY",
    "GPU_TAINT",
    "INSTANCE_TYPES",
    "KUBERNETES_MAX_PODS",
    "ON_DEMAND_TAINT",
    "POOL_LABEL_KEY",
    "DisruptionBudget",
    "InstanceTypeInfo",
    "KarpenterNodesChart",
    "NodePoolSettings",
    "Taint",
    "default_node_pools",
    "eni_max_pods",
    "max_pods_for_pools",
    "pool_placement",
    "reachable_instance_types",
]

# EKS-optimized Amazon Linux 2023 AMI release, pinned: an unpinned alias (``@latest``) makes every new AMI
# release drift-replace all nodes. Release v20260818 of awslabs/amazon-eks-ami; bump deliberately (Karpenter
# rolls nodes through drift when this changes).
DEFAULT_AMI_ALIAS = "al2023@v20260818"
DEFAULT_NODE_CLASS_NAME = "default"
DEFAULT_ROOT_VOLUME_GIB = 100  # Ray / notebook images are several GiB; the AL2023 default is 20 GiB.

# Subnets Karpenter may use carry this tag with the cluster name as value (set by the network stack).
DISCOVERY_TAG_KEY = "karpenter.sh/discovery"
POOL_LABEL_KEY = "dynamic-factory/pool"

# Kubernetes' tested per-node pod limit; also what EKS uses as the cap for small instance types.
KUBERNETES_MAX_PODS = 110

# Karpenter API groups/versions (CRDs of Karpenter 1.14.1 serve only v1).
NODECLASS_API_VERSION = "karpenter.k8s.aws/v1"
NODEPOOL_API_VERSION = "karpenter.sh/v1"

_QUALIFIED_NAME = r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_KEY_RE = re.compile(rf"^{_QUALIFIED_NAME}$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_EKS_CLUSTER_NAME_RE = re.compile(r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$")
# Karpenter's duration patterns (NodePool CRD): consolidateAfter / expireAfter / terminationGracePeriod.
_DURATION_OR_NEVER_RE = re.compile(r"^(([0-9]+(s|m|h))+|Never)$")
_DURATION_RE = re.compile(r"^([0-9]+(s|m|h))+$")
_BUDGET_NODES_RE = re.compile(r"^((100|[0-9]{1,2})%|[0-9]+)$")
_BUDGET_DURATION_RE = re.compile(r"^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$")
_AMI_ALIAS_RE = re.compile(r"^al2023@v[0-9]{8}$")

_CAPACITY_TYPES = ("spot", "on-demand", "reserved")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_BUDGET_REASONS = ("Underutilized", "Empty", "Drifted")
# Label domains Karpenter rejects in NodePool labels (its RestrictedLabelDomains and the CEL rules of the
# NodePool CRD, which a JSON-schema validator does not enforce, so checked here), with Karpenter's exceptions.
_RESTRICTED_LABEL_DOMAINS = ("karpenter.sh", "karpenter.k8s.aws", "kubernetes.io", "k8s.io")
_LABEL_DOMAIN_EXCEPTIONS = ("node.kubernetes.io", "node-restriction.kubernetes.io", "kops.k8s.io")
# EC2NodeClass tag keys Karpenter rejects (CEL rules of the EC2NodeClass CRD): it sets them itself.
_RESTRICTED_TAG_KEYS = ("eks:eks-cluster-name", "karpenter.sh/nodepool", "karpenter.sh/nodeclaim",
                        "karpenter.k8s.aws/ec2nodeclass")


# --------------------------------------------------------------------------------------------------------
# Taints, budgets, pool settings
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str
    value: str | None = None

    def __post_init__(self) -> None:
        if not _LABEL_KEY_RE.match(self.key) or len(self.key) > 316:
            raise ValueError(f"taint key {self.key!r} is not a valid qualified name")
        if self.effect not in _TAINT_EFFECTS:
            raise ValueError(f"taint {self.key!r}: effect {self.effect!r} not in {list(_TAINT_EFFECTS)}")
        if self.value is not None and (not self.value or not _LABEL_VALUE_RE.match(self.value) or len(self.value) > 63):
            raise ValueError(f"taint {self.key!r}: value {self.value!r} is not a valid label value (omit it instead of '')")

    def to_manifest(self) -> dict[str, str]:
        out = {"key": self.key, "effect": self.effect}
        if self.value is not None:
            out["value"] = self.value
        return out

    def toleration(self) -> dict[str, str]:
        """The toleration a pod needs to run on a node with this taint."""
        if self.value is None:
            return {"key": self.key, "operator": "Exists", "effect": self.effect}
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}


# Cilium startup taint. Effect NoExecute, as Cilium's documentation recommends for this taint: besides keeping
# new pods off the node (like NoSchedule), it evicts pods that were bound before the agent was ready (e.g. by a
# blanket toleration), so no workload keeps a network set up without Cilium. Cilium's operator removes the
# taint (any effect) once cilium-agent runs on the node; Karpenter ignores startup taints when simulating
# scheduling, so pods need no toleration for it.
CILIUM_STARTUP_TAINT = Taint(key=AGENT_NOT_READY_TAINT_KEY, value="true", effect="NoExecute")
ON_DEMAND_TAINT = Taint(key=POOL_LABEL_KEY, value="on-demand", effect="NoSchedule")
GPU_TAINT = Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule")
# The NVIDIA device plugin chart's default node affinity runs it only on nodes labelled by Node Feature
# Discovery or with this label (NVIDIA/k8s-device-plugin deployments/helm/nvidia-device-plugin/values.yaml,
# `affinity`). Without NFD, GPU nodes must carry it, or nothing ever advertises nvidia.com/gpu.
GPU_PRESENT_LABEL = ("nvidia.com/gpu.present", "true")


@dataclass(frozen=True)
class DisruptionBudget:
    """One ``spec.disruption.budgets`` entry: at most ``nodes`` (count or percentage) disrupted at once."""

    nodes: str
    reasons: tuple[str, ...] = ()
    schedule: str | None = None
    duration: str | None = None

    def __post_init__(self) -> None:
        if not _BUDGET_NODES_RE.match(self.nodes):
            raise ValueError(f"disruption budget nodes {self.nodes!r}: expected a count like '1' or a percentage like '10%'")
        bad = [r for r in self.reasons if r not in _BUDGET_REASONS]
        if bad:
            raise ValueError(f"disruption budget reasons {bad} not in {list(_BUDGET_REASONS)}")
        if (self.schedule is None) != (self.duration is None):
            raise ValueError("disruption budget: 'schedule' and 'duration' must be set together")
        if self.duration is not None and not _BUDGET_DURATION_RE.match(self.duration):
            raise ValueError(f"disruption budget duration {self.duration!r}: expected e.g. '8h' or '1h30m'")

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nodes": self.nodes}
        if self.reasons:
            out["reasons"] = list(self.reasons)
        if self.schedule is not None:
            out["schedule"] = self.schedule
            out["duration"] = self.duration
        return out


@dataclass(frozen=True)
class NodePoolSettings:
    """What one NodePool may launch and how it is disrupted.

    :param name: NodePool name (DNS label), also the value of the ``dynamic-factory/pool`` node label.
    :param capacity_types: subset of ``spot``, ``on-demand``, ``reserved``. With both spot and on-demand,
        Karpenter launches Spot and falls back to on-demand.
    :param instance_families: EC2 families (``c6i``, ``g5`` ...); each must be in :data:`INSTANCE_TYPES`, so that
        ``kubelet.maxPods`` can be checked against every type the pool can launch.
    :param instance_sizes: sizes (``xlarge`` ...), each present in :data:`INSTANCE_TYPES` for some family.
    :param cpu_limit: NodePool ``limits.cpu`` (vCPUs across all its nodes).
    :param memory_limit_gib: NodePool ``limits.memory`` in GiB.
    :param gpu_limit: ``limits["nvidia.com/gpu"]``; required when the pool can launch GPU types.
    :param min_generation: lowest instance generation (``karpenter.k8s.aws/instance-generation Gt n-1``).
    :param consolidate_after / expire_after / termination_grace_period: Karpenter durations (``90s``, ``720h``,
        ``Never`` for the first two).
    :param taints / labels: applied to every node of the pool (labels merge over ``dynamic-factory/pool``).
    :param weight: NodePool priority 1-100 (None: Karpenter's 0).
    :param budgets: disruption budgets.
    """

    name: str
    capacity_types: tuple[str, ...]
    instance_families: tuple[str, ...]
    instance_sizes: tuple[str, ...]
    cpu_limit: int
    memory_limit_gib: int
    gpu_limit: int | None = None
    min_generation: int = 5
    architectures: tuple[str, ...] = ("amd64",)
    consolidate_after: str = "60s"
    expire_after: str = "720h"
    termination_grace_period: str | None = None
    taints: tuple[Taint, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)  # a dict: left out of __hash__
    weight: int | None = None
    budgets: tuple[DisruptionBudget, ...] = (DisruptionBudget(nodes="10%"),)

    def __post_init__(self) -> None:
        # Accept lists from callers but store tuples (the dataclass is frozen; keep it immutable-ish).
        for name in ("capacity_types", "instance_families", "instance_sizes", "architectures", "taints", "budgets"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise ValueError(f"node pool {self.name!r}: {name} must be a sequence, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "labels", dict(self.labels))
        problems = self.problems()
        if problems:
            raise ValueError(f"node pool {self.name!r}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        p: list[str] = []
        if not isinstance(self.name, str) or not _DNS1123_LABEL_RE.match(self.name) or len(self.name) > 63:
            p.append(f"name {self.name!r} must be a DNS label (lowercase letters, digits, '-')")
        for attr, allowed in (("capacity_types", _CAPACITY_TYPES), ("architectures", ("amd64", "arm64"))):
            values = getattr(self, attr)
            if not values:
                p.append(f"{attr} must not be empty")
            bad = [v for v in values if v not in allowed]
            if bad:
                p.append(f"{attr} {bad} not in {list(allowed)}")
            if len(set(values)) != len(values):
                p.append(f"{attr} has duplicates: {list(values)}")
        if not self.instance_families:
            p.append("instance_families must not be empty")
        if not self.instance_sizes:
            p.append("instance_sizes must not be empty")
        known_families = {t.family for t in INSTANCE_TYPES.values()}
        unknown = [f for f in self.instance_families if f not in known_families]
        if unknown:
            p.append(f"instance_families {unknown} are not in INSTANCE_TYPES (known: {sorted(known_families)}); "
                     "add them there with their ENI limits")
        known_sizes = {t.size for t in INSTANCE_TYPES.values()}
        unknown_sizes = [s for s in self.instance_sizes if s not in known_sizes]
        if unknown_sizes:
            p.append(f"instance_sizes {unknown_sizes} are not in INSTANCE_TYPES (known: {sorted(known_sizes)})")
        if not isinstance(self.min_generation, int) or self.min_generation < 1:
            p.append(f"min_generation {self.min_generation!r} must be an integer >= 1")
        else:
            too_old = sorted({t.family for t in INSTANCE_TYPES.values()
                              if t.family in self.instance_families and t.generation < self.min_generation})
            if too_old:
                p.append(f"instance_families {too_old} are older than min_generation {self.min_generation}")
        # Only evaluate reachability when the inputs it depends on are sound.
        reachable = _reachable_names(self) if not p else None
        if reachable == []:
            p.append("the requirements reach no instance type in INSTANCE_TYPES")
        for attr in ("cpu_limit", "memory_limit_gib"):
            v = getattr(self, attr)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                p.append(f"{attr} {v!r} must be a positive integer")
        gpu_types = any(INSTANCE_TYPES[t].gpus for t in reachable or ())
        if self.gpu_limit is not None and (not isinstance(self.gpu_limit, int) or self.gpu_limit <= 0):
            p.append(f"gpu_limit {self.gpu_limit!r} must be a positive integer")
        if gpu_types and self.gpu_limit is None:
            p.append("gpu_limit is required when the pool can launch GPU instance types")
        for attr in ("consolidate_after", "expire_after"):
            v = getattr(self, attr)
            if not isinstance(v, str) or not _DURATION_OR_NEVER_RE.match(v):
                p.append(f"{attr} {v!r} must be a duration like '30s', '5m', '720h' or 'Never'")
        if self.termination_grace_period is not None and not _DURATION_RE.match(str(self.termination_grace_period)):
            p.append(f"termination_grace_period {self.termination_grace_period!r} must be a duration like '24h'")
        if self.weight is not None and (not isinstance(self.weight, int) or not 1 <= self.weight <= 100):
            p.append(f"weight {self.weight!r} must be an integer from 1 to 100")
        if not self.budgets:
            p.append("budgets must not be empty (use DisruptionBudget(nodes='0') to block disruption)")
        for t in self.taints:
            if not isinstance(t, Taint):
                p.append(f"taints must be Taint objects, got {t!r}")
            elif t.key == CILIUM_STARTUP_TAINT.key:
                p.append("the Cilium startup taint is added by the chart as a startup taint; do not list it in taints")
        for key, value in self.labels.items():
            p.extend(_label_problems(key, value))
        if POOL_LABEL_KEY in self.labels:
            p.append(f"label {POOL_LABEL_KEY!r} is set by the chart from the pool name")
        return p

    @property
    def gpu(self) -> bool:
        return any(INSTANCE_TYPES[t].gpus for t in _reachable_names(self))


def _label_problems(key: str, value: str) -> list[str]:
    p = []
    if not isinstance(key, str) or not _LABEL_KEY_RE.match(key):
        p.append(f"label key {key!r} is not a valid qualified name")
    else:
        domain = key.split("/", 1)[0] if "/" in key else ""
        excepted = any(domain == d or domain.endswith("." + d) for d in _LABEL_DOMAIN_EXCEPTIONS)
        if not excepted and any(domain == d or domain.endswith("." + d) for d in _RESTRICTED_LABEL_DOMAINS):
            p.append(f"label key {key!r} uses a domain reserved by Kubernetes/Karpenter")
    if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE_RE.match(value):
        p.append(f"label {key!r}: value {value!r} is not a valid label value")
    return p


# --------------------------------------------------------------------------------------------------------
# Instance types: what a pool can reach, and how many pods Cilium ENI IPAM can address on each
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceTypeInfo:
    name: str
    vcpus: int
    memory_gib: int
    max_enis: int  # network interfaces
    ipv4_per_eni: int  # IPv4 addresses per interface (primary + secondaries)
    gpus: int = 0
    arch: str = "amd64"

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def size(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def generation(self) -> int:
        return int(re.match(r"^[a-z]+(\d+)", self.family).group(1))


def _types(families: Sequence[str], table: Mapping[str, tuple[int, int, int, int]], gpus: int = 0) -> dict[str, InstanceTypeInfo]:
    out = {}
    for fam in families:
        for size, (vcpus, mem, enis, ips) in table.items():
            name = f"{fam}.{size}"
            out[name] = InstanceTypeInfo(name, vcpus, mem, enis, ips, gpus)
    return out


# size → (vCPUs, memory GiB, max ENIs, IPv4 per ENI). Source: Amazon EC2 User Guide, "Maximum IP addresses per
# network interface" and the instance type specifications. These Nitro families share the per-size limits.
_COMPUTE = {"large": (2, 4, 3, 10), "xlarge": (4, 8, 4, 15), "2xlarge": (8, 16, 4, 15), "4xlarge": (16, 32, 8, 30)}
_GENERAL = {"large": (2, 8, 3, 10), "xlarge": (4, 16, 4, 15), "2xlarge": (8, 32, 4, 15), "4xlarge": (16, 64, 8, 30)}
_MEMORY = {"large": (2, 16, 3, 10), "xlarge": (4, 32, 4, 15), "2xlarge": (8, 64, 4, 15), "4xlarge": (16, 128, 8, 30)}
_GPU = {"xlarge": (4, 16, 4, 15), "2xlarge": (8, 32, 4, 15), "4xlarge": (16, 64, 8, 30)}  # 1 GPU each
_BURSTABLE = {"medium": (2, 4, 3, 6), "large": (2, 8, 3, 12), "xlarge": (4, 16, 4, 15)}

# The instance types the pools may name (x86_64 only: the Ray and notebook images are amd64). Extend this table
# to allow more families or sizes; the chart refuses families/sizes it does not know, because maxPods must hold
# for every type a pool can launch.
INSTANCE_TYPES: Mapping[str, InstanceTypeInfo] = {
    **_types(("c5", "c6i", "c6a", "c7i"), _COMPUTE),
    **_types(("m5", "m6i", "m6a", "m7i"), _GENERAL),
    **_types(("r5", "r6i", "r6a", "r7i"), _MEMORY),
    **_types(("g5", "g6"), _GPU, gpus=1),
    # Burstable types: only for the system managed node group (see node_group_pool), never in a NodePool.
    **_types(("t3", "t3a"), _BURSTABLE),
}


def _reachable_names(pool: NodePoolSettings) -> list[str]:
    return [
        name
        for name, t in INSTANCE_TYPES.items()
        if t.family in pool.instance_families
        and t.size in pool.instance_sizes
        and t.generation > pool.min_generation - 1
        and t.arch in pool.architectures
    ]


def reachable_instance_types(pool: NodePoolSettings) -> tuple[str, ...]:
    """Instance types of :data:`INSTANCE_TYPES` that satisfy all of the pool's requirements (sorted).

    Mirrors the requirements the chart writes: family In, size In, generation Gt min-1, arch In. Because the
    family and size requirements are closed lists, this is exactly what Karpenter can launch for the pool as
    long as the table holds every existing family×size combination of the named families and sizes.
    """
    return tuple(sorted(_reachable_names(pool)))


def eni_max_pods(instance_type: str | InstanceTypeInfo, *, first_interface_index: int = 0) -> int:
    """Pods Cilium ENI IPAM can address on one node: ``enis * (ips_per_eni - 1) + 2``.

    Each ENI's primary address is not handed to pods; ``+ 2`` accounts for host-network pods (they need no
    pod IP) as in EKS's formula. ``first_interface_index`` is Cilium's ``eni.nodeSpec.firstInterfaceIndex``
    (ENIs below it are not used for pod IPs); 0 is Cilium's default.
    """
    t = INSTANCE_TYPES[instance_type] if isinstance(instance_type, str) else instance_type
    usable = t.max_enis - first_interface_index
    if usable < 1:
        raise ValueError(f"{t.name}: first_interface_index {first_interface_index} leaves no ENI for pods")
    return usable * (t.ipv4_per_eni - 1) + 2


def max_pods_for_pools(pools: Iterable[NodePoolSettings], *, first_interface_index: int = 0) -> int:
    """The ``kubelet.maxPods`` for an EC2NodeClass shared by ``pools``.

    One EC2NodeClass serves every pool, so its single maxPods must hold on the *smallest* instance type any
    pool can launch: the minimum of :func:`eni_max_pods` over all reachable types, capped at
    :data:`KUBERNETES_MAX_PODS` (110). With the default pools (smallest size ``xlarge``: 4 ENIs x 15 IPv4)
    that is 4*14+2 = 58; allowing ``large`` types (3 x 10) would lower it to 29 for every node.
    """
    names = {n for pool in pools for n in _reachable_names(pool)}
    if not names:
        raise ValueError("no instance types reachable: cannot compute maxPods")
    return min(KUBERNETES_MAX_PODS, *(eni_max_pods(n, first_interface_index=first_interface_index) for n in names))


# --------------------------------------------------------------------------------------------------------
# Default pools
# --------------------------------------------------------------------------------------------------------

# Spot first, broad: 3 categories x 4 families x 3 sizes = 36 instance types, generation >= 5. Ray workers.
DEFAULT_SPOT_POOL = NodePoolSettings(
    name="spot",
    capacity_types=("spot", "on-demand"),
    instance_families=("c5", "c6i", "c6a", "c7i", "m5", "m6i", "m6a", "m7i", "r5", "r6i", "r6a", "r7i"),
    instance_sizes=("xlarge", "2xlarge", "4xlarge"),
    cpu_limit=256,
    memory_limit_gib=1024,
    consolidate_after="120s",
    expire_after="168h",
    # Expiry is forceful (Karpenter 1.14 disruption docs: budgets do not hold it back, the node is drained at
    # once): without a grace period a node with a busy, do-not-disrupt Ray worker would stay half-drained
    # forever. After an hour the worker is evicted and the job resumes from its last checkpoint.
    termination_grace_period="1h",
    budgets=(DisruptionBudget(nodes="20%"),),
)

# Long-lived, interruption-sensitive pods (Ray head, JupyterHub hub): on-demand only, tainted (see module doc),
# slow to consolidate and one node at a time. Nodes never expire: expiry is forceful (the node is drained at
# once, budgets do not apply), so a live notebook or the Ray head (karpenter.sh/do-not-disrupt) would either be
# killed after a terminationGracePeriod or keep a half-drained node forever. Drift (a new AMI alias) replaces
# these nodes gracefully once the culler or the user has ended what runs there.
DEFAULT_ON_DEMAND_POOL = NodePoolSettings(
    name="on-demand",
    capacity_types=("on-demand",),
    instance_families=("m6i", "m6a", "m7i"),
    instance_sizes=("xlarge", "2xlarge"),
    cpu_limit=32,
    memory_limit_gib=128,
    consolidate_after="600s",
    expire_after="Never",
    taints=(ON_DEMAND_TAINT,),
    budgets=(DisruptionBudget(nodes="1"),),
)

# Single-GPU NVIDIA types (A10G / L4), Spot first. The AL2023 alias selects the NVIDIA AMI variant for them.
DEFAULT_GPU_POOL = NodePoolSettings(
    name="gpu",
    capacity_types=("spot", "on-demand"),
    instance_families=("g5", "g6"),
    instance_sizes=("xlarge", "2xlarge", "4xlarge"),
    cpu_limit=64,
    memory_limit_gib=256,
    gpu_limit=4,
    consolidate_after="300s",
    expire_after="168h",
    termination_grace_period="1h",  # as for the spot pool
    taints=(GPU_TAINT,),
    budgets=(DisruptionBudget(nodes="1"),),
)


def default_node_pools(*, gpu_enabled: bool = False) -> tuple[NodePoolSettings, ...]:
    """``spot`` and ``on-demand``, plus ``gpu`` when enabled."""
    pools = (DEFAULT_SPOT_POOL, DEFAULT_ON_DEMAND_POOL)
    return pools + ((DEFAULT_GPU_POOL,) if gpu_enabled else ())


def node_group_pool(name: str, instance_type: str, *, nodes: int, taints: Sequence[Taint] = ()) -> NodePoolSettings:
    """A managed node group described as a pool, for placement only (it is never rendered as a NodePool).

    Its nodes must carry the label ``dynamic-factory/pool=<name>`` and ``taints``; then
    :func:`pool_placement` and the charts' size checks work for it as for a Karpenter pool.
    """
    if instance_type not in INSTANCE_TYPES:
        raise ValueError(f"instance type {instance_type!r} is not in INSTANCE_TYPES (known: {sorted(INSTANCE_TYPES)})")
    info = INSTANCE_TYPES[instance_type]
    return NodePoolSettings(
        name=name,
        capacity_types=("on-demand",),
        instance_families=(info.family,),
        instance_sizes=(info.size,),
        cpu_limit=info.vcpus * nodes,
        memory_limit_gib=info.memory_gib * nodes,
        min_generation=min(info.generation, 5),
        taints=tuple(taints),
    )


def pool_placement(pool: NodePoolSettings) -> dict[str, Any]:
    """``{"nodeSelector": ..., "tolerations": [...]}`` for a pod that must run on ``pool``'s nodes."""
    return {
        "nodeSelector": {POOL_LABEL_KEY: pool.name},
        "tolerations": [t.toleration() for t in pool.taints],
    }


# --------------------------------------------------------------------------------------------------------
# The chart
# --------------------------------------------------------------------------------------------------------


class KarpenterNodesChart(cdk8s.Chart):
    """One ``EC2NodeClass`` (named ``node_class_name``) and one ``NodePool`` per entry of ``node_pools``.

    :param cluster_name: literal EKS cluster name: value of the ``karpenter.sh/discovery`` subnet selector tag.
    :param node_role_name: the node IAM role *name* (a CDK token is fine): ``EC2NodeClass.spec.role``.
    :param security_group_ids: ids of the security groups for the nodes (CDK tokens are fine): the cluster security
        group that EKS creates. Selected by id, not by tag: EKS does not tag that group with the cluster's tags, and
        a CDK tag on the imported group never reaches AWS, so a tag selector would match nothing and no node could
        ever launch.
    :param node_pools: pools to create; default :func:`default_node_pools` (no GPU pool).
    :param ami_alias: pinned ``al2023@vYYYYMMDD`` alias (:data:`DEFAULT_AMI_ALIAS`).
    :param max_pods: ``kubelet.maxPods``; default :func:`max_pods_for_pools` of ``node_pools``. A larger value
        than that is refused (pods would wait for IPs Cilium cannot allocate).
    :param cilium_first_interface_index: Cilium's ``eni.nodeSpec.firstInterfaceIndex`` (for the maxPods check).
    :param root_volume_gib: encrypted gp3 root volume size.
    :param tags: extra EC2 tags for everything Karpenter launches.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_name: str,
        node_role_name: str,
        security_group_ids: Sequence[str],
        node_pools: Sequence[NodePoolSettings] | None = None,
        ami_alias: str = DEFAULT_AMI_ALIAS,
        max_pods: int | None = None,
        cilium_first_interface_index: int = 0,
        root_volume_gib: int = DEFAULT_ROOT_VOLUME_GIB,
        node_class_name: str = DEFAULT_NODE_CLASS_NAME,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        pools = tuple(default_node_pools() if node_pools is None else node_pools)
        if isinstance(security_group_ids, str) or not security_group_ids or not all(security_group_ids):
            raise ValueError(f"security_group_ids must list at least one security group id, got {security_group_ids!r}")
        self._validate(
            cluster_name=cluster_name,
            node_role_name=node_role_name,
            pools=pools,
            ami_alias=ami_alias,
            root_volume_gib=root_volume_gib,
            node_class_name=node_class_name,
            tags=tags or {},
        )
        eni_limit = max_pods_for_pools(pools, first_interface_index=cilium_first_interface_index)
        if max_pods is None:
            max_pods = eni_limit
        elif not isinstance(max_pods, int) or isinstance(max_pods, bool) or not 1 <= max_pods <= eni_limit:
            raise ValueError(
                f"max_pods {max_pods!r} must be an integer from 1 to {eni_limit}: the smallest instance type the "
                f"pools can launch has IPs for {eni_limit} pods under Cilium ENI IPAM"
            )
        self.max_pods = max_pods
        self.node_pools = pools
        self.node_class_name = node_class_name

        self.node_class = api_object(
            self,
            "EC2NodeClass",
            {
                "apiVersion": NODECLASS_API_VERSION,
                "kind": "EC2NodeClass",
                "metadata": {"name": node_class_name},
                "spec": self._node_class_spec(
                    cluster_name=cluster_name,
                    node_role_name=node_role_name,
                    security_group_ids=tuple(security_group_ids),
                    ami_alias=ami_alias,
                    max_pods=max_pods,
                    root_volume_gib=root_volume_gib,
                    tags=tags or {},
                ),
            },
        )
        self.node_pool_objects: dict[str, cdk8s.ApiObject] = {}
        for pool in pools:
            obj = api_object(
                self,
                f"NodePool-{pool.name}",
                {
                    "apiVersion": NODEPOOL_API_VERSION,
                    "kind": "NodePool",
                    "metadata": {"name": pool.name},
                    "spec": self._node_pool_spec(pool, node_class_name),
                },
            )
            # A NodePool that names a missing EC2NodeClass is not ready: apply the class first.
            obj.add_dependency(self.node_class)
            self.node_pool_objects[pool.name] = obj

    # -- validation ----------------------------------------------------------------------------------------

    @staticmethod
    def _validate(*, cluster_name, node_role_name, pools, ami_alias, root_volume_gib, node_class_name, tags) -> None:
        problems: list[str] = []
        if not isinstance(cluster_name, str) or not _EKS_CLUSTER_NAME_RE.match(cluster_name):
            problems.append(
                f"cluster_name {cluster_name!r} must be the literal EKS cluster name (not a token): "
                "1-100 characters of A-Z a-z 0-9 - _"
            )
        if not isinstance(node_role_name, str) or not node_role_name:
            problems.append("node_role_name must be a non-empty string (a CDK token is fine)")
        if not isinstance(ami_alias, str) or not _AMI_ALIAS_RE.match(ami_alias):
            problems.append(
                f"ami_alias {ami_alias!r} must be a pinned Amazon Linux 2023 alias like {DEFAULT_AMI_ALIAS!r} "
                "('@latest' would replace every node on each AMI release)"
            )
        if not isinstance(root_volume_gib, int) or isinstance(root_volume_gib, bool) or not 20 <= root_volume_gib <= 16384:
            problems.append(f"root_volume_gib {root_volume_gib!r} must be an integer from 20 to 16384")
        if not isinstance(node_class_name, str) or not _DNS1123_LABEL_RE.match(node_class_name):
            problems.append(f"node_class_name {node_class_name!r} must be a DNS label")
        if not pools:
            problems.append("node_pools must not be empty")
        names = [p.name for p in pools if isinstance(p, NodePoolSettings)]
        if len(pools) != len(names):
            problems.append("node_pools must be NodePoolSettings objects")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"node pool names must be unique: {dupes}")
        for key, value in tags.items():
            if not isinstance(key, str) or not key or key in _RESTRICTED_TAG_KEYS or key.startswith("kubernetes.io/cluster"):
                problems.append(f"tag key {key!r} is empty or reserved by Karpenter")
            if not isinstance(value, str) or not value:
                problems.append(f"tag {key!r}: value must be a non-empty string")
        if problems:
            raise ValueError("KarpenterNodesChart: " + "; ".join(problems))

    # -- manifests -----------------------------------------------------------------------------------------

    @staticmethod
    def _node_class_spec(*, cluster_name, node_role_name, security_group_ids, ami_alias, max_pods, root_volume_gib,
                         tags) -> dict[str, Any]:
        discovery = [{"tags": {DISCOVERY_TAG_KEY: cluster_name}}]
        return {
            "amiSelectorTerms": [{"alias": ami_alias}],
            "role": node_role_name,
            "subnetSelectorTerms": discovery,
            "securityGroupSelectorTerms": [{"id": sg} for sg in security_group_ids],
            # IMDSv2 only, hop limit 1: pods cannot reach the node's instance credentials (they use Pod Identity).
            "metadataOptions": {
                "httpEndpoint": "enabled",
                "httpProtocolIPv6": "disabled",
                "httpPutResponseHopLimit": 1,
                "httpTokens": "required",
            },
            "blockDeviceMappings": [
                {
                    "deviceName": "/dev/xvda",  # AL2023 root device
                    "rootVolume": True,
                    "ebs": {
                        "volumeSize": f"{root_volume_gib}Gi",
                        "volumeType": "gp3",
                        "encrypted": True,
                        "deleteOnTermination": True,
                    },
                }
            ],
            "kubelet": {"maxPods": max_pods},
            "tags": {"dynamic-factory/cluster": cluster_name, **dict(tags)},
        }

    @staticmethod
    def _node_pool_spec(pool: NodePoolSettings, node_class_name: str) -> dict[str, Any]:
        requirements = [
            {"key": "kubernetes.io/arch", "operator": "In", "values": list(pool.architectures)},
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": list(pool.capacity_types)},
            {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": list(pool.instance_families)},
            {"key": "karpenter.k8s.aws/instance-size", "operator": "In", "values": list(pool.instance_sizes)},
            {"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": [str(pool.min_generation - 1)]},
        ]
        node_spec: dict[str, Any] = {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class_name},
            "requirements": requirements,
            "startupTaints": [CILIUM_STARTUP_TAINT.to_manifest()],
            "expireAfter": pool.expire_after,
        }
        if pool.taints:
            node_spec["taints"] = [t.to_manifest() for t in pool.taints]
        if pool.termination_grace_period is not None:
            node_spec["terminationGracePeriod"] = pool.termination_grace_period
        limits: dict[str, str] = {"cpu": str(pool.cpu_limit), "memory": f"{pool.memory_limit_gib}Gi"}
        if pool.gpu_limit is not None:
            limits["nvidia.com/gpu"] = str(pool.gpu_limit)
        spec: dict[str, Any] = {
            "template": {
                "metadata": {"labels": {POOL_LABEL_KEY: pool.name, **(dict([GPU_PRESENT_LABEL]) if pool.gpu else {}),
                                        **pool.labels}},
                "spec": node_spec,
            },
            "disruption": {
                "consolidationPolicy": "WhenEmptyOrUnderutilized",
                "consolidateAfter": pool.consolidate_after,
                "budgets": [b.to_manifest() for b in pool.budgets],
            },
            "limits": limits,
        }
        if pool.weight is not None:
            spec["weight"] = pool.weight
        return spec
