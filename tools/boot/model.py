"""The first-boot model: play the deploy of a synthesized platform and judge every pod at its step.

For each pod a step starts: **admitted** (its namespace exists and its Pod Security level admits it),
**schedulable** (a node that exists at that step, or a Karpenter pool that can launch one, takes its
tolerations, selector and requests), **networked** (Cilium can give the node pod addresses: agent
scheduled there, operator running with EC2 credentials) and **credentialed** (its Pod Identity association
and the agent exist before it). Also: every resource that waits for pods (node groups, add-ons, Helm
releases with ``wait``) can be satisfied by what comes before it; every EC2NodeClass selector resolves to
resources that really carry the tag or id at deploy time; clients' Service addresses resolve to a pod that declares
the Service's target port; every PodMonitor / ServiceMonitor is selected by the Prometheus and selects pods (or
Services of pods) that declare the ports it scrapes; claims name an existing, encrypted StorageClass; the network
policies allow the flows the platform needs (clients, scrapes, the API server) and refuse the ones into and out of
the monitoring namespace that nothing needs; what runs at idle fits on the system nodes with headroom.
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
from tools.boot.workloads import (RAY_CLUSTER_LABEL, RAY_NODE_TYPE_LABEL, SINGLEUSER_LABELS, Monitor, Service,
                                  ServicePort, Workload, collect, collect_services_and_monitors, condition,
                                  iter_kube_objects, load_table, local_chart_objects)
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


EBS_CSI_ADDON = "aws-ebs-csi-driver"
EBS_CSI_PROVISIONER = "ebs.csi.aws.com"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
# Host-network pods and kubelets are reached as Cilium entities: the node the scraper runs on is `host`, any other
# node `remote-node` (Cilium docs, "Layer 3 Examples: Entities Based"); a scrape of every node needs both.
NODE_ENTITIES = ("host", "remote-node")
# An in-cluster URL: <service>.<namespace>[.svc[.cluster.local]][:port]. A pod environment value counts as one only
# when it spells `.svc` and the port (anything else may be an outside name); the URLs a chart renders for in-cluster
# use (the table's `urls`, the hub's services) always do, and need neither.
_URL = re.compile(r"^(?P<scheme>[a-z]+)://(?P<name>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)(?P<svc>\.svc(?:\.cluster\.local)?)?"
                  r"(?::(?P<port>\d+))?(?:[/?#]|$)")
# A pod that belongs to no platform component, for the isolation checks.
STRANGER = netpol.Endpoint.pod("default", {"app": "stranger"})


@dataclass
class Client:
    """An in-cluster URL a pod is configured to call, resolved through the Services to a pod and a port."""

    workload: Workload
    what: str
    url: str
    service: Service | None = None
    port: ServicePort | None = None
    target: Workload | None = None
    target_port: int | None = None
    problem: str = ""


@dataclass
class ScrapeTarget:
    """One port of one pod (or of every node) that a monitor makes Prometheus scrape."""

    monitor: Monitor
    port_name: str
    port: int
    workload: Workload | None = None  # None: the nodes (a selector-less Service's node endpoints)
    via: str = ""  # the Service, for a ServiceMonitor

    @property
    def where(self) -> str:
        return "every node" if self.workload is None else f"{self.workload.namespace}/{self.workload.name}"

    @property
    def on_nodes(self) -> bool:
        return self.workload is None or self.workload.host_network


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
        self.table = table if table is not None else load_table()
        self.workloads, self.read_problems = collect(self.graph, self.table)
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
        services, self.monitors = collect_services_and_monitors(g, self.table)
        self.service_list: list[Service] = services + self._kuberay_services()

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

    def _check_claims(self) -> Iterable[Verdict]:
        """Each PersistentVolumeClaim a chart's pod mounts (table ``claims``) gets a volume: its StorageClass (or the
        default class) exists before the pod's release, encrypts (EBS CSI ``encrypted: "true"``), and its
        provisioner runs (the EBS CSI add-on comes first)."""
        classes = {o["metadata"]["name"]: (key, o) for key, o in iter_kube_objects(self.graph, ["StorageClass"])}
        defaults = sorted(n for n, (_, o) in classes.items()
                          if (o["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true")
        csi = [a.key for a in self.graph.find("AWS::EKS::Addon", lambda r: r.properties.get("AddonName") == EBS_CSI_ADDON)]
        for w in self.workloads:
            before = self.graph.ancestors(w.creator)
            for claim in w.claims:
                name = claim.get("storage_class") or (defaults[0] if len(defaults) == 1 else None)
                how = f"StorageClass {name!r}" + ("" if claim.get("storage_class") else " (the default class)")
                problems = []
                if name is None:
                    problems.append(f"names no StorageClass and the cluster has {len(defaults)} default classes "
                                    f"({defaults}): the claim stays Pending")
                elif name not in classes:
                    problems.append(f"{how} does not exist: the claim stays Pending")
                else:
                    key, obj = classes[name]
                    if key not in before:
                        problems.append(f"{how} is not applied before {w.creator[1]}: the claim may stay Pending")
                    provisioner = obj.get("provisioner")
                    params = obj.get("parameters") or {}
                    if provisioner != EBS_CSI_PROVISIONER:
                        problems.append(f"{how} uses provisioner {provisioner!r}: not known to encrypt")
                    else:
                        if str(params.get("encrypted", "false")).lower() != "true":
                            problems.append(f"{how} does not set encrypted: \"true\": the EBS volume is not encrypted")
                        if not any(k in before for k in csi):
                            problems.append(f"the EBS CSI driver add-on is not installed before {w.creator[1]}: nothing "
                                            "provisions the volume")
                yield Verdict(self.graph.label(w.creator), f"{w.namespace}/{w.name} claim {claim.get('name')}",
                              "storage class", not problems, "; ".join(problems) or
                              f"{how}: {classes[name][1].get('provisioner')}, encrypted"
                              + (f" (kmsKeyId {(classes[name][1].get('parameters') or {}).get('kmsKeyId')})"
                                 if (classes[name][1].get("parameters") or {}).get("kmsKeyId") else
                                 " with the account's default EBS key (no kmsKeyId)")
                              + f", applied before the release; {claim.get('size') or 'size unset'}")

    def _check_release_values(self) -> Iterable[Verdict]:
        """The table's ``value_checks``: value combinations a chart renders but that cannot work."""
        for name, res in self.graph.assembly.helm_releases().items():
            entry = self.table.get("releases", {}).get(res.properties.get("Chart")) or {}
            for check in entry.get("value_checks") or []:
                bad = condition(check["fail_when"], res.values)
                yield Verdict(self.graph.label((res.stack, res.logical_id)), f"Helm release {name}: {check['name']}",
                              "values", not bad, " ".join(str(check["message"]).split()) if bad else "consistent")

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
            yield Verdict(step, subject, "admitted", not adm, "; ".join(adm) or self._admission_detail(w))
            if not w.daemonset:
                yield from self._placement_verdicts(w, scope, step, subject, waits)
            cred = self._credential_problems(w, scope)
            if (w.aws_apis and not w.node_role_credentials) or (w.namespace, w.service_account) in self.associations:
                yield Verdict(step, subject, "credentialed", not cred, "; ".join(cred) or
                              f"Pod Identity for {w.namespace}/{w.service_account}")

    def _admission_detail(self, w: Workload) -> str:
        """The enforced level, and what the namespace's warn / audit levels (if stricter) would say of the pod."""
        ns_obj = self.namespaces.get(w.namespace, (None, {}))[1]
        enforce = admission.namespace_level(ns_obj)
        detail = f"Pod Security {enforce!r}"
        stricter: dict[str, list[str]] = {}
        for mode in ("warn", "audit"):
            level = admission.namespace_level(ns_obj, mode)
            if admission.LEVELS.index(level) > admission.LEVELS.index(enforce):
                stricter.setdefault(level, []).append(mode)
        for level, modes in stricter.items():
            bad = admission.violations(level, w.pod_spec)
            detail += (f"; {'/'.join(modes)} {level!r}: " + ("admits it too" if not bad else
                       "would flag " + ", ".join(bad) + " (warning only, the pod is admitted)"))
        return detail

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

    def _kuberay_services(self) -> list[Service]:
        """KubeRay 1.7 creates <RayCluster>-head-svc selecting the head, with the head container's ports
        (ray-project/kuberay@v1.7.0: ray-operator/controllers/ray/common/service.go)."""
        out = []
        for key, rc in iter_kube_objects(self.graph, ["RayCluster"]):
            name, ns = rc["metadata"]["name"], rc["metadata"].get("namespace", "default")
            head = self._find(ns, {RAY_CLUSTER_LABEL: name, RAY_NODE_TYPE_LABEL: "head"})
            named = {v: k for k, v in head.named_ports().items()} if head else {}
            ports = tuple(ServicePort(named.get(p), p, p) for p in sorted(head.ports())) if head else ()
            selector = {RAY_CLUSTER_LABEL: name, RAY_NODE_TYPE_LABEL: "head"}
            out.append(Service(namespace=ns, name=f"{name}-head-svc", labels=dict(selector), selector=selector,
                               ports=ports, origin=f"RayCluster/{name} (created by KubeRay)", creator=key))
        return out

    def services(self) -> dict[tuple[str, str], tuple[dict[str, str], set[int]]]:
        """(namespace, name) -> (selector, ports): our Services, those KubeRay creates per RayCluster and those the
        Helm releases (or their operators) create (the table's ``services``)."""
        return {(s.namespace, s.name): (dict(s.selector or {}), {p.port for p in s.ports}) for s in self.service_list}

    def _service(self, namespace: str, name: str) -> Service | None:
        return next((s for s in self.service_list if s.namespace == namespace and s.name == name), None)

    def _pods(self, namespaces: Iterable[str] | None, selector: Mapping[str, Any]) -> list[Workload]:
        """The long-running pods in ``namespaces`` (None: any) a label selector selects."""
        spaces = None if namespaces is None else set(namespaces)
        return [w for w in self.workloads if not w.transient and (spaces is None or w.namespace in spaces)
                and netpol._matches(selector, w.labels)]

    @staticmethod
    def _target_port(pod: Workload, target: int | str) -> int | None:
        """The container port a Service's targetPort names (a name, or a number the pod declares)."""
        if isinstance(target, str) and not target.isdigit():
            return pod.named_ports().get(target)
        return int(target) if int(target) in pod.ports() else None

    def _resolve(self, w: Workload, what: str, url: str, strict: bool) -> Client | None:
        m = _URL.match(url)
        if not m or (strict and (not m.group("svc") or not m.group("port"))):
            return None
        name, ns = m.group("name"), m.group("ns")
        port = int(m.group("port") or (443 if m.group("scheme") == "https" else 80))
        client = Client(w, what, url)
        svc = self._service(ns, name)
        if svc is None:
            client.problem = f"no Service {ns}/{name} is created"
            return client
        client.service, client.port = svc, svc.port(port)
        if client.port is None:
            client.problem = f"port {port} is not a port of Service {ns}/{name} ({sorted(p.port for p in svc.ports)})"
            return client
        pods = self._pods([ns], {"matchLabels": svc.selector}) if svc.selector else []
        if not pods:
            client.problem = f"Service {ns}/{name} selects no pod"
            return client
        client.target = pods[0]
        client.target_port = self._target_port(pods[0], client.port.target)
        if client.target_port is None:
            client.problem = (f"Service {ns}/{name} port {port} targets {client.port.target!r}, which "
                              f"{pods[0].namespace}/{pods[0].name} does not declare ({pods[0].named_ports()})")
        return client

    def client_urls(self, w: Workload) -> list[tuple[str, str, bool]]:
        """(what, URL, strict) the pod is configured to call: its environment (and, for a notebook, the address
        the hub gives each team), the URLs its chart renders (table ``urls``) and, for the hub's proxy, the URL
        of each hub service it routes /services/<name>/ to."""
        out = [(name, v, True) for name, v in w.env().items() if isinstance(v, str)]
        if w.labels.get("component") == SINGLEUSER_LABELS["component"]:
            # With Ray teams the hub sets RAY_ADDRESS per team at spawn time (charts/jupyterhub_values.py).
            out += [(f"RAY_ADDRESS ({team})", a, True) for team, a in self.hub_team_addresses().items()]
        out += [(what, url, False) for what, url in w.urls]
        if w.labels.get("component") == "proxy" and w.origin.startswith("helm jupyterhub "):
            for res in self.graph.assembly.helm_releases().values():
                if res.properties.get("Chart") == "jupyterhub" and (res.stack, res.logical_id) == w.creator:
                    for name, svc in sorted(((res.values.get("hub") or {}).get("services") or {}).items()):
                        if isinstance(svc, Mapping) and svc.get("url"):
                            out.append((f"hub service {name} (/services/{name}/)", svc["url"], False))
        return out

    @cached_property
    def clients(self) -> list[Client]:
        out = []
        for w in self.workloads:
            for what, url, strict in self.client_urls(w):
                client = self._resolve(w, what, url, strict)
                if client is not None:
                    out.append(client)
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
        """Every in-cluster URL a pod is given resolves to a Service whose port targets a port the selected pod
        declares."""
        for c in self.clients:
            w = c.workload
            detail = c.problem or (f"{c.url} -> Service {c.service.namespace}/{c.service.name}:{c.port.port} -> "
                                   f"{c.target.namespace}/{c.target.name} listening on {c.target_port}")
            yield Verdict(self.graph.label(w.creator), f"{w.namespace}/{w.name} {c.what}", "client", not c.problem, detail)

    # ------------------------------------------------------------------ metrics: monitors and scrape targets

    @cached_property
    def prometheus(self) -> Workload | None:
        return next((w for w in self.workloads if w.role == "prometheus"), None)

    def _by_role(self, role: str) -> Workload | None:
        return next((w for w in self.workloads if w.role == role), None)

    def scrape_targets(self, m: Monitor) -> tuple[list[ScrapeTarget], list[str]]:
        """What a monitor makes Prometheus scrape, and why some of it cannot be (a selector that matches nothing,
        a port no selected pod or Service declares)."""
        targets: list[ScrapeTarget] = []
        problems: list[str] = []
        where = "every namespace" if m.namespaces is None else f"namespaces {list(m.namespaces)}"
        selector = m.selector.get("matchLabels") or m.selector
        if m.kind == "PodMonitor":
            pods = self._pods(m.namespaces, m.selector)
            if not pods:
                return [], [f"its selector {selector} matches no pod in {where}: Prometheus scrapes nothing"]
            empty = sorted(set(m.namespaces or ()) - {p.namespace for p in pods})
            if empty:
                problems.append(f"its selector {selector} matches no pod in namespaces {empty}")
            for port in m.endpoints:
                for pod in pods:
                    number = pod.named_ports().get(port) if isinstance(port, str) else (port if port in pod.ports() else None)
                    if number is None:
                        problems.append(f"{pod.namespace}/{pod.name} declares no container port {port!r} "
                                        f"(its ports: {pod.named_ports() or 'none'})")
                    else:
                        targets.append(ScrapeTarget(m, str(port), number, pod))
            return targets, problems
        spaces = None if m.namespaces is None else set(m.namespaces)
        services = [s for s in self.service_list if (spaces is None or s.namespace in spaces)
                    and netpol._matches(m.selector, s.labels)]
        if not services:
            return [], [f"its selector {selector} matches no Service in {where}: Prometheus scrapes nothing"]
        for svc in services:
            for port in m.endpoints:
                sp = svc.port(port)
                if sp is None:
                    problems.append(f"Service {svc.namespace}/{svc.name} has no port {port!r} "
                                    f"(its ports: {[p.name or p.port for p in svc.ports]})")
                    continue
                via = f"Service {svc.namespace}/{svc.name}"
                if svc.endpoints == "nodes":
                    targets.append(ScrapeTarget(m, str(port), int(sp.target), None, via))
                    continue
                pods = self._pods([svc.namespace], {"matchLabels": svc.selector}) if svc.selector else []
                if not pods:
                    problems.append(f"{via} selects no pod")
                for pod in pods:
                    number = self._target_port(pod, sp.target)
                    if number is None:
                        problems.append(f"{via} port {port!r} targets {sp.target!r}, which {pod.namespace}/{pod.name} "
                                        f"does not declare (its ports: {pod.named_ports() or 'none'})")
                    else:
                        targets.append(ScrapeTarget(m, str(port), number, pod, via))
        return targets, problems

    def _check_monitors(self) -> Iterable[Verdict]:
        """Each PodMonitor / ServiceMonitor is one the Prometheus selects, and resolves to pods (or nodes) that declare
        the ports it names: a monitor that matches nothing is a dashboard that stays empty."""
        prom = self.prometheus
        if self.monitors and prom is None:
            yield Verdict("monitors", "Prometheus", "scrape target", False,
                          f"{len(self.monitors)} monitors exist but no Prometheus runs to scrape them")
        for m in self.monitors:
            step = self.graph.label(m.creator) if m.creator else "monitors"
            if prom is not None and prom.monitor_selector is not None:
                missing = {k: v for k, v in prom.monitor_selector.items() if m.labels.get(k) != v}
                if missing:
                    yield Verdict(step, m.subject, "scrape target", False,
                                  f"the Prometheus ({prom.namespace}/{prom.name}) selects monitors labelled "
                                  f"{prom.monitor_selector}; this one lacks {missing}: it is never scraped")
                    continue
            if m.creator is not None and self.graph.resources[m.creator].type == MANIFEST_TYPE:
                provider = self.crd_providers().get(m.kind)
                if provider is None or provider not in self.graph.ancestors(m.creator):
                    yield Verdict(step, m.subject, "scrape target", False,
                                  f"no release installing the {m.kind} CRD is applied before {m.creator[1]}"
                                  + (f" ({provider[1]} is not an ancestor)" if provider else "")
                                  + f": kubectl fails with 'no matches for kind {m.kind}' and the stack rolls back")
                    continue
            targets, problems = self.scrape_targets(m)
            ok = bool(targets) and not problems
            found = ", ".join(sorted({f"{t.where} {t.port_name}->{t.port}" for t in targets}))
            yield Verdict(step, m.subject, "scrape target", ok,
                          ("; ".join(problems) + (f" (resolved: {found})" if found else "")) if not ok else
                          f"scrapes {found}")

    def _check_dashboards(self) -> Iterable[Verdict]:
        """Every ConfigMap labelled for Grafana's dashboard sidecar (ours, and those our chart assets render) is one
        the sidecar loads: the label value it filters on, in a namespace it searches."""
        grafana = self._by_role("grafana")
        sidecar = (grafana.facts.get("dashboard_sidecar") if grafana else None) or {}
        if not sidecar:
            return
        label, value = sidecar.get("label"), sidecar.get("label_value")
        spaces = sidecar.get("namespaces")
        spaces = [spaces] if isinstance(spaces, str) else list(spaces or [grafana.namespace])
        spaces = [s.strip() for item in spaces for s in str(item).split(",")]
        maps: list[tuple[Key, dict[str, Any]]] = list(iter_kube_objects(self.graph, ["ConfigMap", "Secret"]))
        for res in self.graph.assembly.helm_releases().values():
            if res.properties.get("ChartAssetURL"):
                maps += [((res.stack, res.logical_id), o) for o in local_chart_objects(self.graph, res) or []
                         if o.get("kind") in ("ConfigMap", "Secret")]
        for key, obj in maps:
            meta = obj.get("metadata") or {}
            labels = meta.get("labels") or {}
            if label not in labels:
                continue
            ns = meta.get("namespace", "default")
            problems = []
            if not sidecar.get("enabled"):
                problems.append("Grafana's dashboard sidecar is off: nothing loads it")
            if value not in (None, "") and str(labels[label]) != str(value):
                problems.append(f"label {label}={labels[label]!r}, the sidecar loads {label}={value!r} only")
            if "ALL" not in spaces and ns not in spaces:
                problems.append(f"in namespace {ns!r}, the sidecar searches {spaces} only")
            yield Verdict(self.graph.label(key), f"{obj.get('kind')} {ns}/{meta.get('name')}", "dashboard",
                          not problems, "; ".join(problems) or
                          f"loaded by {grafana.namespace}/{grafana.name}'s sidecar ({label}={labels[label]!r} in {ns})")

    def crd_providers(self) -> dict[str, Key]:
        """Custom resource kind -> the Helm release that installs its CRD (table ``provides_kinds``)."""
        out: dict[str, Key] = {}
        for res in self.graph.assembly.helm_releases().values():
            spec = (self.table.get("releases", {}).get(res.properties.get("Chart")) or {}).get("provides_kinds")
            if spec and condition(spec.get("enabled", True), res.values):
                out.update({kind: (res.stack, res.logical_id) for kind in spec.get("kinds", [])})
        return out

    def metrics_flows(self) -> list[tuple[str, Workload | None, Any, int, str]]:
        """The flows scraping and the metrics stack need: Prometheus to every scrape target (host-network pods and
        kubelets as the `host` and `remote-node` entities), to the API server (service discovery) and DNS; the
        operator, kube-state-metrics and Grafana's sidecars to the API server."""
        prom = self.prometheus
        if prom is None:
            return []
        flows: list[tuple[str, Workload | None, Any, int, str]] = []
        seen: set[tuple[Any, int]] = set()
        for m in self.monitors:
            for t in self.scrape_targets(m)[0]:
                if t.on_nodes:
                    for entity in NODE_ENTITIES:
                        if (entity, t.port) not in seen:
                            seen.add((entity, t.port))
                            flows.append((f"Prometheus -> {t.where} {t.port_name} ({m.subject}) as {entity}",
                                          prom, entity, t.port, "TCP"))
                elif ((t.workload.namespace, t.workload.name), t.port) not in seen:
                    seen.add(((t.workload.namespace, t.workload.name), t.port))
                    flows.append((f"Prometheus -> {t.where} {t.port_name} ({m.subject})", prom, t.workload, t.port, "TCP"))
        dns = self._find("kube-system", {"k8s-app": "kube-dns"})
        for w in self.workloads:
            if w.role and not w.transient:
                flows.append((f"{w.role} {w.namespace}/{w.name} -> DNS", w, dns, 53, "UDP"))
            if w.role and w.api_server and not w.transient:
                flows.append((f"{w.role} {w.namespace}/{w.name} -> Kubernetes API", w, "kube-apiserver", 443, "TCP"))
        return flows

    def client_flows(self) -> list[tuple[str, Workload | None, Any, int, str]]:
        """Each resolved client URL as a flow from its pod to the pod behind the Service (the notebook's own are
        in required_flows, with its team's label)."""
        return [(f"{c.workload.namespace}/{c.workload.name} {c.what} -> {c.service.namespace}/{c.service.name}",
                 c.workload, c.target, c.target_port, "TCP")
                for c in self.clients if not c.problem
                and c.workload.labels.get("component") != SINGLEUSER_LABELS["component"]]

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
        return flows + self.client_flows() + self.metrics_flows()

    def forbidden_flows(self) -> list[tuple[str, netpol.Endpoint, netpol.Endpoint, int, str]]:
        """Flows into and out of the metrics stack that nothing needs and the policies must refuse: into
        Prometheus, Grafana, kube-state-metrics and the operator from a notebook, a Ray worker or head, the hub,
        its proxy and a pod of any other namespace; out of Prometheus to what it does not scrape (the hub, the
        notebooks, the Ray APIs, the internet, IMDS) and out of Grafana to anything but Prometheus. A flow that
        required_flows lists (a client, a scrape) is never forbidden."""
        stack = [w for w in self.workloads if w.role and not w.transient]
        if not stack:
            return []
        def ep(w: Workload) -> netpol.Endpoint:
            return netpol.Endpoint.pod(w.namespace, w.labels)
        required = set()
        for _, src, dst, port, proto in self.required_flows():
            if isinstance(src, Workload) and isinstance(dst, Workload):
                required.add(((src.namespace, src.name), (dst.namespace, dst.name), port, proto))
        su = self._find(None, {"component": SINGLEUSER_LABELS["component"]})
        heads = [w for w in self.workloads if w.labels.get(RAY_NODE_TYPE_LABEL) == "head"]
        workers = [w for w in self.workloads if w.labels.get(RAY_NODE_TYPE_LABEL) == "worker"]
        sources: list[tuple[str, Workload | None, netpol.Endpoint]] = []
        if su is not None:
            sources.append(("notebook", su, ep(su)))
            for team in {ray_team_of(h.namespace.removeprefix(ray_team_of(None).namespace + "-"))
                         for h in heads if h.namespace != ray_team_of(None).namespace}:
                sources.append((f"notebook ({team.name})", su,
                                netpol.Endpoint.pod(su.namespace, {**su.labels, **team.notebook_label})))
        seen_ns: set[str] = set()
        for w in workers + heads:
            kind = "Ray worker" if w in workers else "Ray head"
            if (kind, w.namespace) not in seen_ns:
                seen_ns.add((kind, w.namespace))
                sources.append((f"{kind} {w.namespace}/{w.name}", w, ep(w)))
        for component in ("hub", "proxy"):
            w = self._find(None, {"component": component})
            if w is not None:
                sources.append((f"the {component}", w, ep(w)))
        sources.append(("a pod in namespace default", None, STRANGER))
        out: list[tuple[str, netpol.Endpoint, netpol.Endpoint, int, str]] = []
        for dst in stack:
            for port in sorted(dst.ports()):
                for what, src, src_ep in sources:
                    if src is not None and ((src.namespace, src.name), (dst.namespace, dst.name), port, "TCP") in required:
                        continue
                    out.append((f"{what} -> {dst.role} {dst.namespace}/{dst.name}:{port}", src_ep, ep(dst), port, "TCP"))
        prom, grafana = self.prometheus, self._by_role("grafana")
        probes: list[tuple[str, Any, int]] = []
        for component, port in (("hub", 8081), ("proxy", 8001)):
            w = self._find(None, {"component": component})
            if w is not None:
                probes.append((f"the {component}", w, port))
        if su is not None:
            probes.append(("a notebook", su, 8888))
        for h in heads:
            probes += [(f"Ray head {h.namespace}/{h.name} (Jobs API)", h, 8265),
                       (f"Ray head {h.namespace}/{h.name} (GCS)", h, 6379),
                       (f"Ray head {h.namespace}/{h.name} (Ray client)", h, 10001)]
        for w in workers[:1]:
            probes.append((f"Ray worker {w.namespace}/{w.name} (worker ports)", w, 10002))
        kuberay = self._find(None, {"app.kubernetes.io/name": "kuberay-operator"})
        if kuberay is not None:
            probes.append(("the KubeRay operator", kuberay, 8080))
        probes += [("the internet", netpol.Endpoint.world("example.org"), 443),
                   ("an internet address", netpol.Endpoint.world(), 443),
                   ("IMDS", netpol.Endpoint.world(address="169.254.169.254"), 80),
                   ("a VPC address", netpol.Endpoint.world(address="10.0.200.10"), 5432)]
        for src in (prom, grafana):
            if src is None:
                continue
            for what, dst, port in probes:
                if isinstance(dst, Workload):
                    if ((src.namespace, src.name), (dst.namespace, dst.name), port, "TCP") in required:
                        continue
                    dst = ep(dst)
                out.append((f"{src.role} -> {what}:{port}", ep(src), dst, port, "TCP"))
        return out

    def _check_isolation(self) -> Iterable[Verdict]:
        policies = self.network_policies()
        for name, src, dst, port, proto in self.forbidden_flows():
            allowed, why = netpol.flow_allowed(policies, src, dst, port, proto)
            yield Verdict("network", name, "isolated", not allowed,
                          f"{proto} {port}: " + ("refused (" + why.replace(" and none allows it", "") + ")" if not allowed
                                                 else "ALLOWED, though nothing needs it: a policy is too wide"))

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
        out += list(self._check_claims())
        out += list(self._check_release_values())
        out += list(self._check_create_conflicts())
        out += list(self._check_node_groups())
        out += list(self._check_workloads())
        out += list(self._check_clients())
        out += list(self._check_monitors())
        out += list(self._check_dashboards())
        out += list(self._check_flows())
        out += list(self._check_isolation())
        out += list(self._check_disruption())
        out += list(self._check_idle(self.idle_placement()))
        return out
