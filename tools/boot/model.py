"""The first-boot model: play the deploy of a synthesized platform and judge every pod at its step.

For each pod a step starts: **admitted** (its namespace exists and its Pod Security level admits it),
**schedulable** (a node that exists at that step, or a Karpenter pool that can launch one, takes its
tolerations, selector and requests), **networked** (Cilium can give the node pod addresses: agent
scheduled there, operator running with EC2 credentials) and **credentialed** (its Pod Identity association
and the agent exist before it). Also: every resource that waits for pods (node groups, add-ons, Helm
releases with ``wait``) can be satisfied by what comes before it; every EC2NodeClass selector resolves to
resources that really carry the tag or id at deploy time; clients' Service addresses resolve; the network
policies allow the flows the platform needs; what runs at idle fits on the system nodes with headroom.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

from charts.ray_teams import RayTeam as ray_team_of
from tools.boot import admission, netpol
from tools.boot.deploy import DeployGraph, Key
from tools.boot.scheduling import Node, Pool, node_group_nodes, pools_from_manifests
from tools.boot.workloads import (RAY_CLUSTER_LABEL, RAY_NODE_TYPE_LABEL, SINGLEUSER_LABELS, Workload, collect,
                                  iter_kube_objects, load_table)
from tools.render import MANIFEST_TYPE, Assembly

# Free share of the system nodes' allocatable CPU and memory required once everything that runs at idle is
# placed: room for a rolling update of a controller, a bootstrap Job, or one more add-on.
MIN_HEADROOM = 0.10
POD_IDENTITY_AGENT = "eks-pod-identity-agent"
CILIUM_CHART = "cilium"
CILIUM_AGENT = "cilium"  # the agent DaemonSet's name in the chart
CILIUM_OPERATOR = "cilium-operator"
KARPENTER_CHART = "karpenter"
LOG_SHIPPER_CHART = "fluent-bit"
# Taints the node lifecycle controller keeps on a node until it is Ready (Kubernetes: "Taint based evictions").
NOT_READY_TAINTS = [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
POOL_SELECTOR_KEYS = ("dynamic-factory/pool", "karpenter.sh/nodepool")
# EKS tags the cluster security group it creates with these, and with nothing else of the cluster's tags
# (Amazon EKS user guide, "View Amazon EKS security group requirements for clusters").
def eks_cluster_sg_tags(cluster_name: str) -> dict[str, str]:
    return {"aws:eks:cluster-name": cluster_name, f"kubernetes.io/cluster/{cluster_name}": "owned"}


@dataclass
class Verdict:
    step: str
    subject: str
    check: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.check:<13} {self.subject}: {self.detail}"


@dataclass
class IdlePlacement:
    nodes: list[Node]
    karpenter_nodes: list[Node] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)

    def totals(self) -> tuple[int, int, int, int]:
        ac = sum(n.allocatable[0] for n in self.nodes)
        am = sum(n.allocatable[1] for n in self.nodes)
        uc = sum(n.used[0] for n in self.nodes)
        um = sum(n.used[1] for n in self.nodes)
        return ac, am, uc, um


class BootModel:
    def __init__(self, outdir: str | Path, table: Mapping[str, Any] | None = None):
        self.graph = DeployGraph(Assembly(outdir))
        self.workloads, self.read_problems = collect(self.graph, table if table is not None else load_table())
        g = self.graph
        self.namespaces: dict[str, tuple[Key | None, dict[str, Any]]] = {
            "kube-system": (None, {}), "default": (None, {})}
        for key, obj in iter_kube_objects(g, ["Namespace"]):
            self.namespaces[obj["metadata"]["name"]] = (key, obj)
        for res in g.assembly.helm_releases().values():
            if res.properties.get("CreateNamespace"):
                self.namespaces.setdefault(res.properties["Namespace"], ((res.stack, res.logical_id), {}))
        self.associations: dict[tuple[str, str], Key] = {
            (r.properties["Namespace"], r.properties["ServiceAccount"]): r.key
            for r in g.find("AWS::EKS::PodIdentityAssociation")}
        agents = g.find("AWS::EKS::Addon", lambda r: r.properties.get("AddonName") == POD_IDENTITY_AGENT)
        self.agent: Key | None = agents[0].key if agents else None
        self.cluster = next(iter(g.find("AWS::EKS::Cluster")), None)
        self.cluster_name = self.cluster.properties.get("Name") if self.cluster else None
        self.nodegroups = [(r.key, node_group_nodes(r.properties.get("NodegroupName", r.logical_id), r.properties))
                           for r in g.find("AWS::EKS::Nodegroup")]
        classes = {o["metadata"]["name"]: o for _, o in iter_kube_objects(g, ["EC2NodeClass"])}
        self.node_classes = classes
        nodepools = list(iter_kube_objects(g, ["NodePool"]))
        self.nodepool_key: Key | None = nodepools[0][0] if nodepools else None
        self.pools: list[Pool] = pools_from_manifests([o for _, o in nodepools], classes)
        self.node_access = [r.key for r in g.find("AWS::EKS::AccessEntry", lambda r: r.properties.get("Type") == "EC2_LINUX")]

    # ------------------------------------------------------------------ helpers

    def _by_origin(self, chart: str) -> list[Workload]:
        return [w for w in self.workloads if w.origin.startswith(f"helm {chart} ")]

    def _named(self, chart: str, name: str) -> Workload | None:
        return next((w for w in self._by_origin(chart) if w.name == name), None)

    def _nodes_at(self, scope: frozenset[Key]) -> list[Node]:
        return [n for key, nodes in self.nodegroups if key in scope for n in nodes]

    @cached_property
    def selector_verdicts(self) -> list[Verdict]:
        return list(self._check_node_class_selectors())

    def karpenter_can_launch(self, scope: frozenset[Key]) -> tuple[bool, str]:
        """Can Karpenter launch nodes once everything in ``scope`` exists?"""
        if self.nodepool_key is None or self.nodepool_key not in scope:
            return False, "no NodePool exists yet"
        controller = [w for w in self._by_origin(KARPENTER_CHART)]
        if not controller or controller[0].creator not in scope:
            return False, "the Karpenter controller is not installed yet"
        if not all(v.ok for v in self.selector_verdicts):
            return False, "the EC2NodeClass's selectors resolve to nothing (never Ready)"
        if not any(k in scope for k in self.node_access):
            return False, "no EC2_LINUX access entry for Karpenter's node role: its nodes cannot join"
        bad = self._workload_problems(controller[0], scope, karpenter=False)
        if bad:
            return False, "the Karpenter controller cannot run: " + "; ".join(bad)
        return True, ""

    def cilium_problems(self, scope: frozenset[Key], node: Node | None = None) -> list[str]:
        """Why Cilium cannot give pod addresses (on ``node``) once ``scope`` exists."""
        agent, operator = self._named(CILIUM_CHART, CILIUM_AGENT), self._named(CILIUM_CHART, CILIUM_OPERATOR)
        if agent is None or operator is None:
            return ["no Cilium release (agent and operator) in the assembly"]
        if agent.creator not in scope:
            return ["the Cilium release is not installed yet"]
        out = []
        if node is not None:
            taints = node.blocking_taints(agent.tolerations)
            if taints:
                out.append(f"the Cilium agent does not tolerate {taints} on {node.pool}")
        out += [f"cilium-operator: {p}" for p in self._credential_problems(operator, scope)]
        return out

    def _credential_problems(self, w: Workload, scope: frozenset[Key]) -> list[str]:
        assoc = self.associations.get((w.namespace, w.service_account))
        if (not w.aws_apis and assoc is None) or w.node_role_credentials:
            return []
        out = []
        if assoc is None:
            out.append(f"calls {list(w.aws_apis)} but no Pod Identity association exists for {w.namespace}/{w.service_account}")
        elif assoc not in self.graph.ancestors(w.creator):
            out.append(f"its Pod Identity association {assoc[1]} is not created before {w.creator[1]}: EKS injects "
                       "credentials only into pods created after it")
        if self.agent is None:
            out.append("no eks-pod-identity-agent add-on")
        elif self.agent not in scope:
            out.append(f"the Pod Identity agent ({self.agent[1]}) comes later in the deploy")
        return out

    def _admission_problems(self, w: Workload, scope: frozenset[Key]) -> list[str]:
        ns = self.namespaces.get(w.namespace)
        if ns is None:
            return [f"namespace {w.namespace!r} is created by nothing in the assembly"]
        key, obj = ns
        if key is not None and key != w.creator and key not in self.graph.ancestors(w.creator):
            return [f"namespace {w.namespace!r} ({key[1]}) is not created before {w.creator[1]}"]
        level = admission.namespace_level(obj)
        bad = admission.violations(level, w.pod_spec)
        return [f"Pod Security {level!r} of {w.namespace!r} refuses it: " + ", ".join(bad)] if bad else []

    def _schedule_problems(self, w: Workload, scope: frozenset[Key], karpenter: bool = True) -> tuple[list[str], str]:
        """(problems, where) for one replica of ``w`` with what exists in ``scope``."""
        reasons = []
        for node in self._nodes_at(scope):
            why = self._misfit(w, node)
            if why is None:
                return [], node.pool
            reasons.append(f"{node.pool}: {why}")
        if karpenter and self.pools:
            can, why_not = self.karpenter_can_launch(scope)
            for pool in self.pools:
                node = pool.node(0)  # the pool's largest instance type
                why = self._misfit(w, node)
                if why is not None:
                    reasons.append(f"pool {pool.name} ({node.instance_type}): {why}")
                    continue
                if not can:
                    reasons.append(f"pool {pool.name} matches, but Karpenter cannot launch: {why_not}")
                    continue
                missing = self._unadvertised(w, node, scope)
                if missing:
                    reasons.append(f"pool {pool.name}: nothing advertises {missing} on its nodes (no device plugin "
                                   "that runs there)")
                    continue
                return [], f"karpenter:{pool.name}"
        return [("no node takes it: " + " | ".join(reasons)) if reasons else "no node exists at this step"], ""

    @staticmethod
    def _misfit(w: Workload, node: Node) -> str | None:
        """Why one replica of ``w`` cannot run on ``node`` even when it is empty, or None when it can."""
        why = node.eligible(w.tolerations, w.node_selector, w.node_affinity)
        if why:
            return "; ".join(why)
        cpu, mem = w.requests
        if cpu > node.allocatable[0] or mem > node.allocatable[1]:
            return f"requests {cpu}m/{mem}Mi > allocatable {node.allocatable}"
        return None

    def _schedule_on(self, w: Workload, nodes: list[Node]) -> tuple[list[str], str]:
        """Like _schedule_problems on these nodes only, with one replica per node when w asks for that."""
        fits = [n for n in nodes if self._misfit(w, n) is None]
        reasons = [f"{n.pool}: {self._misfit(w, n)}" for n in nodes if n not in fits]
        needed = (w.replicas or 1) if w.anti_affinity_per_node else 1
        if len(fits) >= needed:
            return [], fits[0].pool
        if fits:
            return [f"{needed} replicas with one per node need {needed} nodes, {len(fits)} take it"], ""
        return ["no node takes it: " + " | ".join(reasons)], ""

    def _unadvertised(self, w: Workload, node: Node, scope: frozenset[Key]) -> list[str]:
        """Extended resources ``w`` requests that no DaemonSet running on ``node`` advertises."""
        plugins = [d for d in self.workloads if d.daemonset and d.advertises and d.creator in scope
                   and not node.eligible(d.tolerations, d.node_selector, d.node_affinity)]
        offered = {r for d in plugins for r in d.advertises}
        return sorted(w.extended_resources() - offered)

    def _workload_problems(self, w: Workload, scope: frozenset[Key], karpenter: bool = True) -> list[str]:
        out = self._admission_problems(w, scope)
        if not w.daemonset:
            sched, where = self._schedule_problems(w, scope, karpenter)
            out += sched
            if where and not w.host_network:
                node = self._node_for(where)
                out += [f"not networked: {p}" for p in self.cilium_problems(scope, node)]
        out += self._credential_problems(w, scope)
        return out

    def _node_for(self, where: str) -> Node | None:
        if where.startswith("karpenter:"):
            pool = next(p for p in self.pools if p.name == where.split(":", 1)[1])
            node = pool.node(0)
            node.taints = node.taints + pool.startup_taints
            return node
        return next((n for _, nodes in self.nodegroups for n in nodes if n.pool == where), None)

    # ------------------------------------------------------------------ checks

    def _check_node_class_selectors(self) -> Iterable[Verdict]:
        g = self.graph
        subnets = [(r, self._tags(r)) for r in g.find("AWS::EC2::Subnet")]
        groups = [(r, self._tags(r)) for r in g.find("AWS::EC2::SecurityGroup")]
        if self.cluster and self.cluster_name:
            # The cluster security group is created by EKS, not by a template resource.
            groups.append((self.cluster, eks_cluster_sg_tags(self.cluster_name)))
        for name, nc in self.node_classes.items():
            for field_name, candidates in (("subnetSelectorTerms", subnets), ("securityGroupSelectorTerms", groups)):
                matched = []
                for term in nc["spec"].get(field_name, []):
                    if "tags" in term:
                        matched += [r.logical_id for r, tags in candidates
                                    if all(tags.get(k) == v or (v == "*" and k in tags) for k, v in term["tags"].items())]
                    elif "id" in term:
                        target = self._resolve_id(term["id"])
                        if target is not None:
                            matched.append(target)
                ok = bool(matched)
                yield Verdict(
                    step="EC2NodeClass", subject=f"{name}.{field_name}", check="selector", ok=ok,
                    detail=(f"matches {sorted(set(matched))}" if ok else
                            f"{nc['spec'].get(field_name)} matches no resource that carries it at deploy time "
                            "(a CDK tag on an imported construct never reaches AWS; EKS does not copy cluster tags "
                            "onto its security group): the node class never turns Ready and Karpenter launches nothing"))

    @staticmethod
    def _tags(res) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in res.properties.get("Tags", []) if isinstance(t.get("Value"), str)}

    def _resolve_id(self, placeholder: str) -> str | None:
        m = re.fullmatch(r"\$\{output:([^/]+)/([^}]+)\}", placeholder)
        if m:
            value = self.graph.output_source(m.group(1), m.group(2))
            if isinstance(value, dict) and "Fn::GetAtt" in value:
                logical_id, attr = value["Fn::GetAtt"]
                stack = self.graph.stack_of_name(m.group(1))
                res = self.graph.resources.get((stack, logical_id))
                if res and (res.type, attr) in {("AWS::EKS::Cluster", "ClusterSecurityGroupId"),
                                                ("AWS::EC2::SecurityGroup", "GroupId"), ("AWS::EC2::Subnet", "SubnetId")}:
                    return f"{logical_id}.{attr}"
            return None
        m = re.fullmatch(r"\$\{([A-Za-z0-9]+)\.(ClusterSecurityGroupId|GroupId|SubnetId)\}", placeholder)
        if m:
            return f"{m.group(1)}.{m.group(2)}"
        return placeholder if re.fullmatch(r"(sg|subnet)-[0-9a-f]+", placeholder) else None

    def _check_chart_sources(self) -> Iterable[Verdict]:
        """Each Helm release names a chart the kubectl handler can fetch. For OCI sources the handler runs
        `helm pull <Repository> --version <Version>` and ignores `Chart` (aws-cdk-lib 2.273.0, aws-eks-v2
        kubectl handler helm/__init__.py, get_oci_cmd / get_chart_from_oci): the reference must end in the chart."""
        for name, res in self.graph.assembly.helm_releases().items():
            repo, chart = res.properties.get("Repository") or "", res.properties.get("Chart")
            if not repo.startswith("oci://"):
                continue
            ok = repo.rstrip("/").rpartition("/")[2] == chart
            yield Verdict(self.graph.label((res.stack, res.logical_id)), f"Helm release {name}", "chart source", ok,
                          f"helm pull {repo} --version {res.properties.get('Version')}"
                          + ("" if ok else f": that reference is not the chart {chart!r}, the pull fails and the "
                                           "stack rolls back"))

    # Helm values that name a StorageClass for a PVC the release (or its spawner) creates: (chart, path).
    STORAGE_CLASS_VALUES = (("jupyterhub", ("singleuser", "storage", "dynamic", "storageClass")),
                            ("jupyterhub", ("hub", "db", "pvc", "storageClassName")))

    def _check_storage_classes(self) -> Iterable[Verdict]:
        """A claim whose StorageClass does not exist stays Pending forever: the hub never starts (its database)
        or no notebook spawns (its home). Each class a release names is applied before the release."""
        classes = {o["metadata"]["name"]: key for key, o in iter_kube_objects(self.graph, ["StorageClass"])}
        for name, res in self.graph.assembly.helm_releases().items():
            key = (res.stack, res.logical_id)
            for chart, path in self.STORAGE_CLASS_VALUES:
                if res.properties.get("Chart") != chart:
                    continue
                value: Any = res.values
                for part in path:
                    value = value.get(part) if isinstance(value, dict) else None
                if not value:
                    continue
                source = classes.get(value)
                ok = source is not None and source in self.graph.ancestors(key)
                yield Verdict(self.graph.label(key), f"{name} {'.'.join(path)}", "storage class", ok,
                              f"StorageClass {value!r} " + ("applied before the release" if ok else
                              "is not applied before the release: its claims stay Pending" if source else
                              "does not exist: its claims stay Pending"))

    def _check_create_conflicts(self) -> Iterable[Verdict]:
        """The kubectl handler creates a manifest's objects with `kubectl create` unless the resource says
        Overwrite (aws-cdk-lib 2.273.0 kubectl handler, apply/__init__.py): an object another resource applied
        first (or may have, with no order between them) makes the create fail with AlreadyExists."""
        def identity(obj: dict[str, Any]) -> tuple[str, str, str]:
            meta = obj.get("metadata", {})
            return obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")

        owners: dict[tuple[str, str, str], list[Key]] = {}
        for res in self.graph.assembly.manifests():
            for obj in res.objects:
                owners.setdefault(identity(obj), []).append((res.stack, res.logical_id))
        for res in self.graph.assembly.helm_releases().values():
            if res.properties.get("CreateNamespace"):
                owners.setdefault(("Namespace", "", res.properties["Namespace"]), []).append((res.stack, res.logical_id))
        for ident, keys in owners.items():
            if len(keys) < 2:
                continue
            for key in keys:
                props = self.graph.resources[key].properties
                if self.graph.resources[key].type != MANIFEST_TYPE or str(props.get("Overwrite", "false")).lower() == "true":
                    continue
                others = [k for k in keys if k != key and key not in self.graph.ancestors(k)]
                yield Verdict(self.graph.label(key), f"{ident[0]} {'/'.join(x for x in ident[1:] if x)}",
                              "created once", not others,
                              "no other resource applies it before" if not others else
                              f"also applied by {', '.join(self.graph.label(k) for k in others)} before or "
                              "concurrently: `kubectl create` fails with AlreadyExists (set overwrite)")

    def _check_node_groups(self) -> Iterable[Verdict]:
        """A node group waits for its nodes to be Ready: Cilium must be able to network them with what precedes it."""
        agent = self._named(CILIUM_CHART, CILIUM_AGENT)
        operator = self._named(CILIUM_CHART, CILIUM_OPERATOR)
        pia = next((w for w in self.workloads if w.origin == f"EKS add-on {POD_IDENTITY_AGENT}"), None)
        for key, nodes in self.nodegroups:
            scope = self.graph.ancestors(key)
            problems = self.cilium_problems(scope, nodes[0]) if nodes else ["no nodes"]
            if operator is not None and agent is not None and agent.creator in scope:
                # The operator must run on nodes that are not Ready yet (they turn Ready only once it has
                # given them pod addresses): they carry the node lifecycle controller's not-ready taints.
                booting = [Node(n.name, n.pool, n.instance_type, n.labels, n.taints + NOT_READY_TAINTS, n.max_pods)
                           for n in nodes]
                sched, _ = self._schedule_on(operator, booting)
                problems += [f"cilium-operator: {p}" for p in sched + self._admission_problems(operator, scope | {key})]
            if pia is not None and nodes and nodes[0].blocking_taints(pia.tolerations):
                problems.append("the Pod Identity agent does not tolerate the node group's taints")
            yield Verdict(step=self.graph.label(key), subject=f"node group {nodes[0].pool if nodes else key[1]}",
                          check="nodes Ready", ok=not problems,
                          detail="; ".join(problems) if problems else
                          f"{len(nodes)} x {nodes[0].instance_type}: Cilium networks them (operator credentialed)")

    def _check_workloads(self) -> Iterable[Verdict]:
        g = self.graph
        for w in self.workloads:
            waits = w.waits or g.resources[w.creator].type == "AWS::EKS::Addon" and not w.daemonset
            scope = g.before(w.creator) if waits else g.everything
            subject = f"{w.namespace}/{w.name}"
            step = g.label(w.creator)
            adm = self._admission_problems(w, scope)
            yield Verdict(step, subject, "admitted", not adm, "; ".join(adm) or
                          f"Pod Security {admission.namespace_level(self.namespaces.get(w.namespace, (None, {}))[1])!r}")
            if not w.daemonset:
                yield from self._placement_verdicts(w, scope, step, subject, waits)
            cred = self._credential_problems(w, scope)
            if (w.aws_apis and not w.node_role_credentials) or (w.namespace, w.service_account) in self.associations:
                yield Verdict(step, subject, "credentialed", not cred, "; ".join(cred) or
                              f"Pod Identity for {w.namespace}/{w.service_account}")

    def _placement_verdicts(self, w: Workload, scope: frozenset[Key], step: str, subject: str,
                            waits: bool) -> Iterable[Verdict]:
        sched, where = self._schedule_problems(w, scope)
        yield Verdict(step, subject, "schedulable", not sched, "; ".join(sched) or
                      f"on {where} ({w.requests[0]}m, {w.requests[1]}Mi){' - the step waits for it' if waits else ''}")
        if where and not w.host_network:
            net = self.cilium_problems(scope, self._node_for(where))
            yield Verdict(step, subject, "networked", not net, "; ".join(net) or "Cilium ready on its node")

    def idle_placement(self) -> IdlePlacement:
        """Place every pod that runs at idle, in deploy order: system nodes first, else a Karpenter node."""
        nodes = [Node(n.name, n.pool, n.instance_type, n.labels, n.taints, n.max_pods) for _, ns in self.nodegroups for n in ns]
        result = IdlePlacement(nodes=nodes)
        idle = [w for w in self.workloads if w.idle and not w.transient]
        order = {k: i for i, k in enumerate(self.graph.order())}
        idle.sort(key=lambda w: (not w.daemonset, order.get(w.creator, 0)))
        for w in idle:
            cpu, mem = w.requests
            if w.daemonset:
                for n in nodes:
                    if not n.eligible(w.tolerations, w.node_selector, w.node_affinity):
                        n.placed.append((f"{w.namespace}/{w.name}", cpu, mem))
                continue
            used_nodes: set[str] = set()
            for i in range(w.replicas or 1):
                candidates = [n for n in nodes + result.karpenter_nodes
                              if not n.eligible(w.tolerations, w.node_selector, w.node_affinity)
                              and n.free[0] >= cpu and n.free[1] >= mem
                              and not (w.anti_affinity_per_node and n.name in used_nodes)]
                if candidates:
                    target = max(candidates, key=lambda n: (not n.karpenter, n.free))
                else:
                    pools = [p for p in self.pools if not p.node(0).eligible(w.tolerations, w.node_selector, w.node_affinity)]
                    if not pools:
                        eligible = [n for n in nodes if not n.eligible(w.tolerations, w.node_selector, w.node_affinity)]
                        room = ", ".join(f"{n.name} {n.free[0]}m/{n.free[1]}Mi" for n in eligible) or "none"
                        result.unplaced.append(f"{w.namespace}/{w.name} (requests {cpu}m/{mem}Mi; free on the "
                                               f"nodes it may use: {room})")
                        continue
                    target = pools[0].node(len(result.karpenter_nodes))
                    target.placed.append(("(daemonsets)", *self._daemonset_requests(target)))
                    result.karpenter_nodes.append(target)
                target.placed.append((f"{w.namespace}/{w.name}", cpu, mem))
                used_nodes.add(target.name)
        return result

    def _daemonset_requests(self, node: Node) -> tuple[int, int]:
        ds = [w for w in self.workloads if w.daemonset and w.idle and not node.eligible(w.tolerations, w.node_selector, w.node_affinity)]
        return sum(w.requests[0] for w in ds), sum(w.requests[1] for w in ds)

    def _check_idle(self, placement: IdlePlacement) -> Iterable[Verdict]:
        for name in placement.unplaced:
            yield Verdict("idle", name.split(" ")[0], "idle placement", False,
                          f"runs at idle but no node has room left for it: {name}")
        for node in placement.karpenter_nodes:
            pods = [p for p, _, _ in node.placed if p != "(daemonsets)"]
            explicit = [p for p in pods if any(
                k in (next((w.node_selector for w in self.workloads if f"{w.namespace}/{w.name}" == p), {}))
                for k in POOL_SELECTOR_KEYS)]
            stray = [p for p in pods if p not in explicit]
            yield Verdict("idle", f"Karpenter node {node.name}", "idle placement", not stray,
                          (f"kept alive at idle for {stray}: they run at idle with no placement on the system nodes "
                           "(no toleration of their taint), so the idle cost printed is not what a user pays")
                          if stray else f"placed there on purpose: {explicit}")
        for node in placement.nodes:
            (ac, am), (fc, fm) = node.allocatable, node.free
            ok = fc >= MIN_HEADROOM * ac and fm >= MIN_HEADROOM * am
            yield Verdict("idle", f"system node {node.name}", "headroom", ok,
                          f"{fc}m of {ac}m CPU ({fc / ac:.0%}) and {fm}Mi of {am}Mi memory ({fm / am:.0%}) free once "
                          f"everything that runs at idle is placed (at least {MIN_HEADROOM:.0%} of each on every "
                          f"node, for a rolling update or a bootstrap Job)"
                          + ("" if ok else "; it holds " + ", ".join(p for p, _, _ in node.placed)))

    # ------------------------------------------------------------------ clients and flows

    def _find(self, namespace: str | None, labels: Mapping[str, str]) -> Workload | None:
        return next((w for w in self.workloads if (namespace is None or w.namespace == namespace)
                     and all(w.labels.get(k) == v for k, v in labels.items())), None)

    def services(self) -> dict[tuple[str, str], tuple[dict[str, str], set[int]]]:
        """(namespace, name) -> (selector, ports): our Services and those KubeRay creates per RayCluster."""
        out: dict[tuple[str, str], tuple[dict[str, str], set[int]]] = {}
        for _, svc in iter_kube_objects(self.graph, ["Service"]):
            meta = svc["metadata"]
            out[(meta.get("namespace", "default"), meta["name"])] = (
                dict(svc["spec"].get("selector") or {}), {p["port"] for p in svc["spec"].get("ports", [])})
        # KubeRay 1.7 creates <RayCluster>-head-svc selecting the head, with the head container's ports
        # (ray-project/kuberay@v1.7.0: ray-operator/controllers/ray/common/service.go).
        for _, rc in iter_kube_objects(self.graph, ["RayCluster"]):
            name, ns = rc["metadata"]["name"], rc["metadata"].get("namespace", "default")
            head = self._find(ns, {RAY_CLUSTER_LABEL: name, RAY_NODE_TYPE_LABEL: "head"})
            out[(ns, f"{name}-head-svc")] = ({RAY_CLUSTER_LABEL: name, RAY_NODE_TYPE_LABEL: "head"},
                                             head.ports() if head else set())
        return out

    def hub_team_addresses(self) -> dict[str, str]:
        """The Ray address per team that the hub's ``ray-teams`` extraConfig gives a team's notebooks (none
        without teams)."""
        out: dict[str, str] = {}
        for res in self.graph.assembly.helm_releases().values():
            if res.properties.get("Chart") != "jupyterhub":
                continue
            code = ((res.values.get("hub") or {}).get("extraConfig") or {}).get("ray-teams", "")
            m = re.search(r"^_DF_TEAMS = _df_json\.loads\((.+)\)$", code, re.M)
            if m:
                teams = json.loads(ast.literal_eval(m.group(1)))["teams"]
                out.update({name: team["address"] for name, team in teams.items()})
        return out

    def _check_clients(self) -> Iterable[Verdict]:
        """Every in-cluster URL a pod is given resolves to a Service that selects a pod listening on that port."""
        services = self.services()
        url = re.compile(r"^[a-z]+://([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)")
        for w in self.workloads:
            given = dict(w.env())
            if w.labels.get("component") == SINGLEUSER_LABELS["component"]:
                # With Ray teams the hub sets RAY_ADDRESS per team at spawn time (charts/jupyterhub_values.py).
                given.update({f"RAY_ADDRESS ({team})": address for team, address in self.hub_team_addresses().items()})
            for env_name, value in given.items():
                m = url.match(value) if isinstance(value, str) else None
                if not m:
                    continue
                name, ns, port = m.group(1), m.group(2), int(m.group(3))
                svc = services.get((ns, name))
                if svc is None:
                    problem = f"no Service {ns}/{name} is created"
                else:
                    target = self._find(ns, svc[0])
                    problem = ("its Service selects no pod" if target is None else
                               f"port {port} is not a port of the Service ({sorted(svc[1])})" if port not in svc[1] else "")
                yield Verdict(self.graph.label(w.creator), f"{w.namespace}/{w.name} {env_name}", "client",
                              not problem, problem or f"{value} -> Service {ns}/{name} -> pod listening on {port}")

    def required_flows(self) -> list[tuple[str, Workload | None, Any, int, str]]:
        """(name, source pod, destination pod or entity, port, protocol) the platform needs to work."""
        su = self._find(None, {"component": SINGLEUSER_LABELS["component"]})
        heads = [w for w in self.workloads if w.labels.get(RAY_NODE_TYPE_LABEL) == "head"]
        workers = [w for w in self.workloads if w.labels.get(RAY_NODE_TYPE_LABEL) == "worker"]
        head = heads[0] if heads else None
        flows: list[tuple[str, Workload | None, Any, int, str]] = []
        # Every Ray head is reached by the notebooks of its team (the hub labels them; charts/ray_teams.py), or by
        # every notebook for the shared cluster.
        for h in heads or [None]:
            member = su
            where = ""
            if h is not None and su is not None and h.namespace != ray_team_of(None).namespace:
                team = ray_team_of(h.namespace.removeprefix(ray_team_of(None).namespace + "-"))
                member = dataclasses.replace(su, labels={**su.labels, **team.notebook_label})
                where = f" ({team.name})"
            flows += [(f"notebook -> Ray Jobs API{where}", member, h, 8265, "TCP"),
                      (f"notebook -> Ray client{where}", member, h, 10001, "TCP")]
        flows += [
            ("notebook -> DNS", su, self._find("kube-system", {"k8s-app": "kube-dns"}), 53, "UDP"),
            ("hub -> Kubernetes API", self._find(None, {"component": "hub"}), "kube-apiserver", 443, "TCP"),
            ("KubeRay operator -> Ray head", self._find(None, {"app.kubernetes.io/name": "kuberay-operator"}), head, 8265, "TCP"),
            ("Karpenter -> AWS APIs", next(iter(self._by_origin(KARPENTER_CHART)), None), "world", 443, "TCP"),
            ("Cilium operator -> EC2 API", self._named(CILIUM_CHART, CILIUM_OPERATOR), "world", 443, "TCP"),
        ]
        # The log shipper (charts/log_shipping.py): names, its AWS credentials from the agent on its node (the host
        # entity under Cilium), and CloudWatch Logs through the NAT gateway.
        shipper = next(iter(self._by_origin(LOG_SHIPPER_CHART)), None)
        dns = self._find("kube-system", {"k8s-app": "kube-dns"})
        flows += [
            ("Fluent Bit -> DNS", shipper, dns, 53, "UDP"),
            ("Fluent Bit -> Pod Identity agent", shipper, "host", 80, "TCP"),
            ("Fluent Bit -> CloudWatch Logs", shipper, "world", 443, "TCP"),
        ]
        for worker in workers:
            own_head = next((h for h in heads if h.namespace == worker.namespace), head)
            where = f"{worker.namespace}/{worker.name}"
            flows += [
                (f"Ray {where} -> head GCS", worker, own_head, 6379, "TCP"),
                (f"Ray head -> {where}", own_head, worker, 10002, "TCP"),
                # What a job needs outside the cluster (charts/ray_egress.py): names, credentials, checkpoints,
                # runtime_env pip installs.
                (f"Ray {where} -> DNS", worker, dns, 53, "UDP"),
                (f"Ray {where} -> Pod Identity agent", worker, "host", 80, "TCP"),
                (f"Ray {where} -> S3", worker, netpol.Endpoint.world("s3.amazonaws.com"), 443, "TCP"),
                (f"Ray {where} -> PyPI", worker, netpol.Endpoint.world("files.pythonhosted.org"), 443, "TCP"),
            ]
        for h in heads:
            # The autoscaler sidecar patches the RayCluster.
            flows.append((f"Ray head {h.namespace}/{h.name} -> Kubernetes API", h, "kube-apiserver", 443, "TCP"))
        return flows

    def network_policies(self) -> list[dict[str, Any]]:
        """Every policy that limits pod traffic: NetworkPolicies, CiliumNetworkPolicies (translated) and the ones
        z2jh renders from the hub's values."""
        policies = [o for _, o in iter_kube_objects(self.graph, ["NetworkPolicy"])]
        policies += [netpol.cilium_policy(o) for _, o in iter_kube_objects(self.graph, ["CiliumNetworkPolicy"])]
        for res in self.graph.assembly.helm_releases().values():
            if res.properties.get("Chart") == "jupyterhub":
                policies += netpol.z2jh_policies(res.values, res.properties.get("Namespace", "default"))
        return policies

    def _check_flows(self) -> Iterable[Verdict]:
        policies = self.network_policies()
        def endpoint(x):
            if isinstance(x, netpol.Endpoint):
                return x
            return netpol.Endpoint(entity=x) if isinstance(x, str) else netpol.Endpoint.pod(x.namespace, x.labels)
        for name, src, dst, port, proto in self.required_flows():
            if src is None or dst is None:
                yield Verdict("network", name, "flow", False, "one end of the flow is not deployed")
                continue
            if src.host_network:
                yield Verdict("network", name, "flow", True, "host network: not subject to pod policies")
                continue
            ok, why = netpol.flow_allowed(policies, endpoint(src), endpoint(dst), port, proto)
            yield Verdict("network", name, "flow", ok, f"{proto} {port}: {why}")

    def _check_disruption(self) -> Iterable[Verdict]:
        """Interactive pods (notebook servers, the Ray head) on Karpenter nodes carry karpenter.sh/do-not-disrupt:
        otherwise consolidation or expiry moves them and the user's kernel or every running job dies."""
        interactive = [w for w in self.workloads if w.labels.get("component") == SINGLEUSER_LABELS["component"]
                       or w.labels.get(RAY_NODE_TYPE_LABEL) == "head"]
        for w in interactive:
            _, where = self._schedule_problems(w, self.graph.everything)
            if not where.startswith("karpenter:"):
                yield Verdict("disruption", f"{w.namespace}/{w.name}", "disruption", True,
                              f"on {where or 'no node'}: Karpenter does not disrupt it")
                continue
            ok = w.annotations.get(DO_NOT_DISRUPT) == "true"
            yield Verdict("disruption", f"{w.namespace}/{w.name}", "disruption", ok,
                          f"on Karpenter pool {where.split(':', 1)[1]}: "
                          + ("annotated karpenter.sh/do-not-disrupt" if ok else
                             "no karpenter.sh/do-not-disrupt annotation: consolidation or expiry may evict it"))

    def run(self) -> list[Verdict]:
        out = [Verdict("read", p, "table", False, p) for p in self.read_problems]
        out += list(self._check_chart_sources())
        out += self.selector_verdicts
        out += list(self._check_storage_classes())
        out += list(self._check_create_conflicts())
        out += list(self._check_node_groups())
        out += list(self._check_workloads())
        out += list(self._check_clients())
        out += list(self._check_flows())
        out += list(self._check_disruption())
        out += list(self._check_idle(self.idle_placement()))
        return out
