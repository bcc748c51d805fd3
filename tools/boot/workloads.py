"""The pods each deploy step starts, read from the synthesized assembly.

* Our own manifests (``Custom::AWSCDK-EKS-KubernetesResource``): Deployments, DaemonSets, StatefulSets,
  Jobs and Pods as rendered, and the pods KubeRay creates for each RayCluster (head with the autoscaler
  sidecar, worker groups at ``minReplicas``).
* Helm releases and EKS add-ons: the reviewed table ``upstream_pods.yaml`` (one entry per workload of the
  chart at the pinned version, each naming the upstream file it was read from), merged with our values
  or add-on configuration.
* The JupyterHub single-user server, built from the z2jh ``singleuser`` values as KubeSpawner builds it.

Also the Services and the Prometheus monitors (ServiceMonitor / PodMonitor) the assembly creates: ours from the
manifests, the charts' own (and the ones their operators create) from the table's ``services`` and ``monitors``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from tools.boot.deploy import DeployGraph, Key
from tools.render import HELM_TYPE, MANIFEST_TYPE, KubeResource, chart_asset_folder

TABLE = Path(__file__).with_name("upstream_pods.yaml")

# KubeRay's own labels on the pods it creates, and the head Service it creates per RayCluster
# (ray-project/kuberay@v1.7.0: ray-operator/controllers/ray/utils/constant.go, common/pod.go, common/service.go).
RAY_CLUSTER_LABEL = "ray.io/cluster"
RAY_NODE_TYPE_LABEL = "ray.io/node-type"
RAY_GROUP_LABEL = "ray.io/group"
# labelPod also sets ray.io/is-ray-node=yes and ray.io/identifier=<cluster>-<head|worker> on every pod, and KubeRay
# adds a container port `metrics` (8080, `ray start --metrics-export-port`) to the Ray container when it has none
# (ray-project/kuberay@00ac1468627670617957f441eb2752e5f380162c: ray-operator/controllers/ray/common/pod.go,
# labelPod, DefaultHeadPodTemplate / DefaultWorkerPodTemplate; read at that old commit, not at v1.7.0).
RAY_NODE_LABEL = "ray.io/is-ray-node"
RAY_ID_LABEL = "ray.io/identifier"
RAY_DEFAULT_METRICS_PORT = {"name": "metrics", "containerPort": 8080, "protocol": "TCP"}
# z2jh labels on single-user servers (zero-to-jupyterhub-k8s@4.4.0: jupyterhub/files/hub/jupyterhub_config.py,
# KubeSpawner's common labels + component=singleuser-server).
SINGLEUSER_LABELS = {"app": "jupyterhub", "component": "singleuser-server", "hub.jupyter.org/network-access-hub": "true"}
# z2jh 4.4.0's init container for singleuser.cloudMetadata.blockWithIptables (jupyterhub_config.py): root,
# privileged, NET_ADMIN, running iptables.
Z2JH_BLOCK_METADATA_INIT = {
    "name": "block-cloud-metadata",
    "securityContext": {"runAsUser": 0, "privileged": True, "capabilities": {"add": ["NET_ADMIN"]}},
}

_POD_KINDS = ("Deployment", "DaemonSet", "StatefulSet", "Job", "ReplicaSet", "Pod")


@dataclass
class Workload:
    """One kind of pod: ``replicas`` copies (None: one per matching node, a DaemonSet)."""

    name: str
    namespace: str
    origin: str  # where it comes from, for people
    creator: Key  # the CloudFormation resource whose creation starts it
    pod_spec: dict[str, Any]  # enough of a PodSpec for admission and scheduling
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    replicas: int | None = 1
    aws_apis: tuple[str, ...] = ()
    node_role_credentials: bool = False  # calls AWS with the node's instance role, not through Pod Identity
    idle: bool = True  # still runs when no work is queued
    transient: bool = False  # Jobs and Helm hooks: run to completion during the deploy
    waits: bool = False  # its creator waits for it to be Ready
    source: str = ""  # the upstream file an entry of the table was read from
    notes: str = ""
    anti_affinity_per_node: bool = False
    advertises: tuple[str, ...] = ()  # extended resources its pods make nodes advertise (a device plugin)
    requests: tuple[int, int] = (0, 0)  # millicores, MiB (summed over containers)
    role: str = ""  # table `role`: prometheus, grafana, operator, kube-state-metrics
    claims: tuple[dict[str, Any], ...] = ()  # {name, storage_class (None: the default class), size}
    urls: tuple[tuple[str, str], ...] = ()  # (what, in-cluster URL) the chart configures the pod to call
    api_server: bool = False  # calls the Kubernetes API
    monitor_selector: dict[str, str] | None = None  # (a Prometheus) labels a monitor needs to be scraped
    facts: dict[str, Any] = field(default_factory=dict)  # table `facts`, read from values (e.g. Grafana's sidecar)

    @property
    def daemonset(self) -> bool:
        return self.replicas is None

    @property
    def service_account(self) -> str:
        return self.pod_spec.get("serviceAccountName") or "default"

    @property
    def host_network(self) -> bool:
        return bool(self.pod_spec.get("hostNetwork"))

    @property
    def tolerations(self) -> list[dict[str, Any]]:
        return list(self.pod_spec.get("tolerations") or [])

    @property
    def node_selector(self) -> dict[str, str]:
        return dict(self.pod_spec.get("nodeSelector") or {})

    @property
    def node_affinity(self) -> list[dict[str, Any]]:
        """The required node affinity's terms (any one must match), or [] for none."""
        required = ((self.pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution") or {}
        return list(required.get("nodeSelectorTerms") or [])

    def extended_resources(self) -> set[str]:
        """Extended resources it requests (``nvidia.com/gpu`` ...): some node agent must advertise them."""
        out = set()
        for c in self.pod_spec.get("containers", []):
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                out |= {k for k in (res.get(part) or {}) if "/" in k}
        return out

    def ports(self) -> set[int]:
        return {p["containerPort"] for c in self.pod_spec.get("containers", []) for p in c.get("ports", [])
                if isinstance(p.get("containerPort"), int)}

    def named_ports(self) -> dict[str, int]:
        """Container port name -> number over the regular containers (what a PodMonitor's ``port`` and a
        Service's named ``targetPort`` refer to)."""
        return {p["name"]: p["containerPort"] for c in self.pod_spec.get("containers", []) for p in c.get("ports", [])
                if p.get("name") and isinstance(p.get("containerPort"), int)}

    def env(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for c in self.pod_spec.get("containers", []):
            for e in c.get("env", []) or []:
                out[e["name"]] = e.get("value", e.get("valueFrom"))
        return out


# ------------------------------------------------------------------------------------------ quantities


def cpu_millicores(value: Any) -> int:
    if value in (None, ""):
        return 0
    text = str(value)
    if text.endswith("m"):
        return int(float(text[:-1]))
    return int(round(float(text) * 1000))


_MEM_UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024, "K": 1000 / 1024 / 1024,
              "M": 1000 * 1000 / 1024 / 1024, "G": 1000 ** 3 / 1024 / 1024}


def memory_mib(value: Any) -> int:
    if value in (None, ""):
        return 0
    text = str(value)
    for unit in sorted(_MEM_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return int(round(float(text[: -len(unit)]) * _MEM_UNITS[unit]))
    return int(round(float(text) / 1024 / 1024))


def pod_requests(spec: Mapping[str, Any]) -> tuple[int, int]:
    """Effective requests of a pod: the sum over containers, or the largest init container if larger."""
    def one(c: Mapping[str, Any]) -> tuple[int, int]:
        res = c.get("resources") or {}
        req = {**(res.get("limits") or {}), **(res.get("requests") or {})}  # limits default the requests
        return cpu_millicores(req.get("cpu")), memory_mib(req.get("memory"))
    main = [one(c) for c in spec.get("containers", [])]
    init = [one(c) for c in spec.get("initContainers", []) or []]
    cpu = max([sum(c for c, _ in main), *(c for c, _ in init)] or [0])
    mem = max([sum(m for _, m in main), *(m for _, m in init)] or [0])
    return cpu, mem


# ------------------------------------------------------------------------------------------ our manifests


def _from_object(obj: Mapping[str, Any], res: KubeResource, creator: Key) -> list[Workload]:
    kind = obj.get("kind")
    meta = obj.get("metadata", {})
    ns = meta.get("namespace", "default")
    if kind in _POD_KINDS:
        template = obj if kind == "Pod" else obj["spec"]["template"]
        spec = template.get("spec", {})
        replicas = None if kind == "DaemonSet" else (obj.get("spec", {}).get("replicas", 1) if kind != "Job" else 1)
        return [Workload(
            name=meta["name"], namespace=ns, origin=f"manifest {kind}/{meta['name']}", creator=creator,
            pod_spec=spec, labels=dict(template.get("metadata", {}).get("labels", {})),
            annotations=dict(template.get("metadata", {}).get("annotations", {})), replicas=replicas,
            idle=kind != "Job", transient=kind == "Job", requests=pod_requests(spec),
        )]
    if kind == "RayCluster":
        return _ray_pods(obj, creator)
    return []


def _ray_pods(obj: Mapping[str, Any], creator: Key) -> list[Workload]:
    """The pods KubeRay creates for a RayCluster: the head (plus the in-tree autoscaler sidecar) and workers."""
    meta, spec = obj["metadata"], obj["spec"]
    name, ns = meta["name"], meta.get("namespace", "default")
    head_tpl = spec["headGroupSpec"]["template"]
    head_spec = json.loads(json.dumps(head_tpl["spec"]))
    if spec.get("enableInTreeAutoscaling"):
        opts = spec.get("autoscalerOptions", {})
        head_spec["containers"].append({
            "name": "autoscaler", "resources": opts.get("resources", {}),
            "securityContext": opts.get("securityContext", {}),
        })
    _add_default_metrics_port(head_spec)
    out = [Workload(
        name=f"{name}-head", namespace=ns, origin=f"RayCluster/{name} head (created by KubeRay)", creator=creator,
        pod_spec=head_spec, labels={**head_tpl.get("metadata", {}).get("labels", {}), RAY_CLUSTER_LABEL: name,
                                    RAY_NODE_TYPE_LABEL: "head", RAY_GROUP_LABEL: "headgroup",
                                    RAY_NODE_LABEL: "yes", RAY_ID_LABEL: f"{name}-head"},
        annotations=dict(head_tpl.get("metadata", {}).get("annotations", {})), requests=pod_requests(head_spec),
    )]
    for group in spec.get("workerGroupSpecs", []):
        tpl = group["template"]
        worker_spec = json.loads(json.dumps(tpl["spec"]))
        _add_default_metrics_port(worker_spec)
        minimum = int(group.get("minReplicas", 0))
        out.append(Workload(
            name=f"{name}-{group['groupName']}-worker", namespace=ns,
            origin=f"RayCluster/{name} worker group {group['groupName']} (0..{group.get('maxReplicas')})",
            creator=creator, pod_spec=worker_spec, replicas=max(minimum, 1), idle=minimum > 0,
            labels={**tpl.get("metadata", {}).get("labels", {}), RAY_CLUSTER_LABEL: name,
                    RAY_NODE_TYPE_LABEL: "worker", RAY_GROUP_LABEL: group["groupName"],
                    RAY_NODE_LABEL: "yes", RAY_ID_LABEL: f"{name}-worker"},
            requests=pod_requests(worker_spec),
        ))
    return out


def _add_default_metrics_port(spec: dict[str, Any]) -> None:
    """KubeRay's `metrics` port on the Ray container (the first) unless the template declares one."""
    containers = spec.get("containers") or []
    if containers and not any(p.get("name") == "metrics" for p in containers[0].get("ports") or []):
        containers[0]["ports"] = [*(containers[0].get("ports") or []), dict(RAY_DEFAULT_METRICS_PORT)]


# ------------------------------------------------------------------------------------------ the upstream table


def load_table(path: Path = TABLE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _lookup(values: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def resolve(spec: Any, values: Mapping[str, Any]) -> Any:
    """A table field: a literal, or ``{value: dotted.path, default: X}`` read from our values."""
    if isinstance(spec, Mapping) and "value" in spec and set(spec) <= {"value", "default"}:
        found, value = _lookup(values, spec["value"])
        return value if found and value is not None else spec.get("default")
    return spec


def resolve_deep(spec: Any, values: Mapping[str, Any]) -> Any:
    """``resolve`` at every level of a table structure (lists and maps of fields, some read from values)."""
    if isinstance(spec, Mapping) and "value" in spec and set(spec) <= {"value", "default"}:
        return resolve(spec, values)
    if isinstance(spec, Mapping):
        return {k: resolve_deep(v, values) for k, v in spec.items()}
    if isinstance(spec, list):
        return [resolve_deep(v, values) for v in spec]
    return spec


def condition(spec: Any, values: Mapping[str, Any]) -> bool:
    """A table ``enabled`` condition: a literal, ``{value, default}`` (truthy), ``{value, default, in: [...]}``,
    ``{all: [conditions]}`` or ``{any: [conditions]}``."""
    if isinstance(spec, Mapping) and "all" in spec:
        return all(condition(c, values) for c in spec["all"])
    if isinstance(spec, Mapping) and "any" in spec:
        return any(condition(c, values) for c in spec["any"])
    if isinstance(spec, Mapping) and "in" in spec:
        return resolve({k: spec[k] for k in ("value", "default") if k in spec}, values) in spec["in"]
    return bool(resolve(spec, values))


def _security_to_spec(sec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod-level fields, container securityContext) for a table entry's ``security`` facts."""
    ctx: dict[str, Any] = {}
    if sec.get("privileged"):
        ctx["privileged"] = True
    if sec.get("run_as_non_root") is not None:
        ctx["runAsNonRoot"] = sec["run_as_non_root"]
    if sec.get("run_as_user") is not None:
        ctx["runAsUser"] = sec["run_as_user"]
    caps: dict[str, Any] = {}
    if sec.get("capabilities_add"):
        caps["add"] = list(sec["capabilities_add"])
    if sec.get("capabilities_drop_all"):
        caps["drop"] = ["ALL"]
    if caps:
        ctx["capabilities"] = caps
    if sec.get("allow_privilege_escalation") is not None:
        ctx["allowPrivilegeEscalation"] = sec["allow_privilege_escalation"]
    if sec.get("seccomp"):
        ctx["seccompProfile"] = {"type": sec["seccomp"]}
    pod: dict[str, Any] = {}
    if sec.get("host_path"):
        pod["volumes"] = [{"name": "host", "hostPath": {"path": "/"}}]
    if sec.get("host_pid"):
        pod["hostPID"] = True
    return pod, ctx


def _ports(specs: Any, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A table ``ports`` list as container ports (the enabled ones)."""
    out = []
    for p in specs or []:
        if not condition(p.get("enabled", True), values):
            continue
        port = resolve(p.get("port"), values)
        out.append({"name": resolve(p.get("name"), values), "containerPort": int(port), "protocol": p.get("protocol", "TCP")})
    return out


def _containers(specs: Any, values: Mapping[str, Any], sec: Mapping[str, Any], ctx: Mapping[str, Any],
                prefix: str) -> list[dict[str, Any]]:
    """A table ``containers`` / ``init_containers`` list as container specs (the enabled ones)."""
    out = []
    for i, c in enumerate(specs or []):
        if not condition(c.get("enabled", True), values):
            continue
        own = ctx if "security" not in c else _security_to_spec({**sec, **resolve_deep(c["security"], values)})[1]
        container: dict[str, Any] = {"name": c.get("name", f"{prefix}{i}"),
                                     "resources": {"requests": dict(resolve(c.get("requests"), values) or {})},
                                     "securityContext": dict(own)}
        ports = _ports(c.get("ports"), values)
        if ports:
            container["ports"] = ports
        out.append(container)
    return out


def _from_table(entry: Mapping[str, Any], values: Mapping[str, Any], *, namespace: str, origin: str,
                creator: Key, waits: bool) -> Workload | None:
    if not condition(entry.get("enabled", True), values):
        return None
    sec = {k: resolve(v, values) for k, v in (entry.get("security") or {}).items()}
    pod_fields, ctx = _security_to_spec(sec)
    host_ports = sec.get("host_ports") or []
    if entry.get("containers"):
        containers = _containers(entry["containers"], values, sec, ctx, "c")
        init_containers = _containers(entry.get("init_containers"), values, sec, ctx, "init")
        if init_containers:
            pod_fields["initContainers"] = init_containers
    else:
        requests = [resolve(r, values) or {} for r in entry.get("requests") or []]
        containers = [{"name": f"c{i}", "resources": {"requests": dict(r)}, "securityContext": ctx}
                      for i, r in enumerate(requests or [{}])]
        init = resolve(entry.get("init_requests"), values)
        if init:
            pod_fields["initContainers"] = [{"name": "init", "resources": {"requests": dict(init)}}]
        ports = _ports(entry.get("ports"), values)
        if ports:
            containers[0]["ports"] = ports
    if host_ports:
        declared = containers[0].setdefault("ports", [])
        for p in host_ports:
            match = next((q for q in declared if q["containerPort"] == p), None)
            if match is None:
                declared.append({"containerPort": p, "hostPort": p})
            else:
                match["hostPort"] = p
    volume_types = resolve(entry.get("volume_types"), values) or []
    if volume_types:
        pod_fields["volumes"] = [*pod_fields.get("volumes", []),
                                 *({"name": f"{kind}-{i}", kind: {}} for i, kind in enumerate(volume_types))]
    spec: dict[str, Any] = {
        "serviceAccountName": resolve(entry.get("service_account"), values),
        "hostNetwork": bool(resolve(entry.get("host_network", False), values)),
        # extra_tolerations: what the chart's template always adds to the configurable ones.
        "tolerations": [*(resolve(entry.get("tolerations"), values) or []),
                        *(resolve(entry.get("extra_tolerations"), values) or [])],
        "nodeSelector": resolve(entry.get("node_selector"), values) or {},
        "affinity": resolve(entry.get("affinity"), values) or {},
        "containers": containers,
        **pod_fields,
    }
    kind = entry.get("kind", "Deployment")
    replicas = None if kind == "DaemonSet" else int(resolve(entry.get("replicas", 1), values) or 0)
    if replicas == 0:
        return None
    hook = bool(entry.get("hook"))
    affinity_note = str(entry.get("notes", ""))
    claims = tuple({"name": c.get("name"), "storage_class": resolve(c.get("storage_class"), values),
                    "size": resolve(c.get("size"), values)}
                   for c in entry.get("claims") or [] if condition(c.get("enabled", True), values))
    urls = tuple((u.get("name", "url"), str(resolve(u.get("url"), values)))
                 for u in entry.get("urls") or [] if condition(u.get("enabled", True), values))
    selector = resolve(entry.get("monitor_selector"), values)
    return Workload(
        name=entry["name"], namespace=namespace, origin=origin, creator=creator, pod_spec=spec,
        labels=dict(resolve_deep(entry.get("labels"), values) or {}), replicas=replicas,
        aws_apis=tuple(entry.get("aws_apis") or ()), node_role_credentials=entry.get("credentials") == "node-role",
        idle=bool(entry.get("idle", True)) and not hook,
        transient=hook or kind == "Job", waits=waits and not hook and bool(entry.get("helm_waits", True)),
        source=str(entry.get("source", "")),
        notes=affinity_note,
        anti_affinity_per_node="anti-affinity" in affinity_note.lower() and "required" in affinity_note.lower(),
        advertises=tuple(entry.get("advertises") or ()),
        requests=pod_requests(spec), role=str(entry.get("role", "")), claims=claims, urls=urls,
        api_server=bool(entry.get("api_server")), monitor_selector=dict(selector) if selector is not None else None,
        facts=dict(resolve_deep(entry.get("facts"), values) or {}),
    )


# ------------------------------------------------------------------------------------------ z2jh single-user


def singleuser_pod(values: Mapping[str, Any], namespace: str = "jupyterhub") -> dict[str, Any]:
    """The single-user server Pod that KubeSpawner builds from the z2jh values, limited to the fields these values
    set: identity and privilege, image, placement, environment, labels and annotations, and the resources of the
    first profile (else z2jh's ``singleuser.cpu``/``memory`` guarantees; memory defaults to 1G). Used by the
    first-boot model and by the checkov gate, so both judge the same notebook server."""
    su = values.get("singleuser", {})
    profile = (su.get("profileList") or [{}])[0].get("kubespawner_override", {})
    ctx = {"runAsUser": su.get("uid", 1000), "allowPrivilegeEscalation": su.get("allowPrivilegeEscalation", False),
           **values.get("hub", {}).get("config", {}).get("KubeSpawner", {}).get("container_security_context", {})}
    env = [{"name": k, "value": v} if isinstance(v, str) else {"name": k, **v} for k, v in su.get("extraEnv", {}).items()]
    requests = {"cpu": profile.get("cpu_guarantee", su.get("cpu", {}).get("guarantee")),
                "memory": profile.get("mem_guarantee", su.get("memory", {}).get("guarantee", "1G"))}
    limits = {"cpu": profile.get("cpu_limit", su.get("cpu", {}).get("limit")),
              "memory": profile.get("mem_limit", su.get("memory", {}).get("limit"))}
    resources = {part: {k: str(v) for k, v in amounts.items() if v}
                 for part, amounts in (("requests", requests), ("limits", limits))}
    image = su.get("image", {})
    container: dict[str, Any] = {
        "name": "notebook", "securityContext": ctx, "env": env, "ports": [{"containerPort": 8888}],
        "resources": {part: amounts for part, amounts in resources.items() if amounts},
    }
    if image.get("name"):
        container["image"] = f"{image['name']}:{image.get('tag', 'latest')}"
    spec: dict[str, Any] = {
        "securityContext": {"fsGroup": su.get("fsGid"), **su.get("extraPodConfig", {}).get("securityContext", {})},
        "containers": [container],
        "nodeSelector": su.get("nodeSelector", {}),
        "tolerations": su.get("extraTolerations", []),
        "automountServiceAccountToken": False,
    }
    if su.get("cloudMetadata", {}).get("blockWithIptables", True):
        spec["initContainers"] = [Z2JH_BLOCK_METADATA_INIT]
    metadata = {"name": "jupyter-user", "namespace": namespace, "labels": dict(SINGLEUSER_LABELS)}
    if su.get("extraAnnotations"):
        metadata["annotations"] = dict(su["extraAnnotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


# ------------------------------------------------------------------------------------------ everything


def collect(graph: DeployGraph, table: Mapping[str, Any] | None = None) -> tuple[list[Workload], list[str]]:
    """Every workload the assembly starts, and the problems met while reading (unknown charts...)."""
    table = table if table is not None else load_table()
    problems: list[str] = []
    out: list[Workload] = []
    for res in graph.assembly.kube_resources():
        key = (res.stack, res.logical_id)
        if res.kind == "manifest":
            for obj in res.objects:
                out.extend(_from_object(obj, res, key))
            continue
        chart = res.properties.get("Chart")
        if chart is None and res.properties.get("ChartAssetURL"):
            problems += _local_chart_problems(graph, res, table)
            continue
        entry = table.get("releases", {}).get(chart)
        if entry is None:
            problems.append(f"Helm release {res.release!r} (chart {chart}) has no entry in {TABLE.name}: its pods are unknown")
            continue
        if str(entry.get("version")) != str(res.properties.get("Version")):
            problems.append(f"{TABLE.name} describes {chart} {entry.get('version')}, the release pins "
                            f"{res.properties.get('Version')}: review the table for the new version")
        if entry.get("release") and entry["release"] != res.release:
            problems.append(f"{TABLE.name} names the objects of {chart} for release {entry['release']!r}, the release is "
                            f"{res.release!r}: its pods' and Services' names differ, review the table")
        values = res.values
        waits = bool(res.properties.get("Wait"))
        for w in entry.get("workloads", []):
            wl = _from_table(w, values, namespace=res.properties.get("Namespace", "default"),
                             origin=f"helm {chart} {res.properties.get('Version')}", creator=key, waits=waits)
            if wl:
                out.append(wl)
        if chart == "jupyterhub":
            pod = singleuser_pod(values, res.properties.get("Namespace", "default"))
            out.append(Workload(
                name="jupyter-<user>", namespace=pod["metadata"]["namespace"],
                origin="z2jh single-user server (spawned by the hub per user)", creator=key, pod_spec=pod["spec"],
                labels=pod["metadata"]["labels"], idle=False, requests=pod_requests(pod["spec"]),
                annotations=pod["metadata"].get("annotations", {}),
            ))
    for addon in graph.find("AWS::EKS::Addon"):
        name = addon.properties["AddonName"]
        entry = table.get("addons", {}).get(name)
        if entry is None:
            problems.append(f"EKS add-on {name!r} has no entry in {TABLE.name}: its pods are unknown")
            continue
        raw = addon.properties.get("ConfigurationValues")
        config = json.loads(raw) if isinstance(raw, str) else {}
        for w in entry.get("workloads", []):
            wl = _from_table(w, config, namespace=w.get("namespace", "kube-system"), origin=f"EKS add-on {name}",
                             creator=addon.key, waits=True)
            if wl:
                out.append(wl)
    return out, problems


# ------------------------------------------------------------------------------------------ our charts as assets

_POD_KINDS_ALL = (*_POD_KINDS, "CronJob")


def local_chart_objects(graph: DeployGraph, res: KubeResource) -> list[dict[str, Any]] | None:
    """The objects a chart of ours packaged as a CDK asset (a HelmChart with ``ChartAssetURL``) renders, read from
    the asset folder of the assembly; None when this copy of the assembly has no asset folders. Lines holding a
    template action (``{{ .Files.Get ... }}``: the data) are left out, the objects' kinds and metadata stay."""
    folder = chart_asset_folder(graph.assembly, res)
    if folder is None:
        return None
    objects: list[dict[str, Any]] = []
    for path in sorted(folder.rglob("templates/*.y*ml")):
        text = "\n".join(line for line in path.read_text().splitlines() if "{{" not in line)
        objects += [o for o in yaml.safe_load_all(text) if isinstance(o, dict)]
    return objects


def _local_chart_problems(graph: DeployGraph, res: KubeResource, table: Mapping[str, Any]) -> list[str]:
    entry = (table.get("local_charts") or {}).get(res.release)
    if entry is None:
        return [f"Helm release {res.release!r} (a chart asset of ours) has no entry in {TABLE.name} local_charts: its "
                "pods are unknown"]
    objects = local_chart_objects(graph, res)
    starts = sorted({o.get("kind") for o in objects or [] if o.get("kind") in _POD_KINDS_ALL})
    if starts and not entry.get("workloads"):
        return [f"Helm release {res.release!r} renders {starts}, but {TABLE.name} says it starts no pod: review it"]
    return []


# ------------------------------------------------------------------------------------------ Services and monitors


@dataclass(frozen=True)
class ServicePort:
    name: str | None
    port: int
    target: int | str  # a number, or the name of a container port of the selected pods


@dataclass
class Service:
    namespace: str
    name: str
    labels: dict[str, str]
    selector: dict[str, str] | None  # None: no selector, its endpoints are kept by a controller (``endpoints``)
    ports: tuple[ServicePort, ...]
    origin: str
    creator: Key | None = None
    endpoints: str | None = None  # "nodes": every node's address (the operator's kubelet Service)

    def port(self, ref: int | str) -> ServicePort | None:
        """The port a client (a number) or a ServiceMonitor endpoint (a name) refers to."""
        return next((p for p in self.ports if (p.name == ref if isinstance(ref, str) else p.port == ref)), None)


@dataclass
class Monitor:
    """A PodMonitor or ServiceMonitor: what it selects and which ports of it Prometheus scrapes."""

    kind: str  # PodMonitor | ServiceMonitor
    namespace: str
    name: str
    labels: dict[str, str]
    namespaces: tuple[str, ...] | None  # where it selects (None: every namespace)
    selector: dict[str, Any]  # a label selector: matchLabels / matchExpressions
    endpoints: tuple[int | str, ...]  # port names (or numbers): a pod's container ports / a Service's ports
    origin: str
    creator: Key | None = None

    @property
    def subject(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def _service_from_object(obj: Mapping[str, Any], key: Key) -> Service:
    meta, spec = obj["metadata"], obj.get("spec", {})
    ports = tuple(ServicePort(p.get("name"), int(p["port"]), p.get("targetPort", p["port"])) for p in spec.get("ports", []))
    return Service(namespace=meta.get("namespace", "default"), name=meta["name"], labels=dict(meta.get("labels") or {}),
                   selector=dict(spec["selector"]) if spec.get("selector") else None, ports=ports,
                   origin=f"manifest Service/{meta['name']}", creator=key)


def _monitor_from_object(obj: Mapping[str, Any], key: Key) -> Monitor:
    meta, spec = obj["metadata"], obj.get("spec", {})
    namespace = meta.get("namespace", "default")
    ns_selector = spec.get("namespaceSelector") or {}
    namespaces = None if ns_selector.get("any") else tuple(ns_selector.get("matchNames") or (namespace,))
    entries = spec.get("podMetricsEndpoints" if obj["kind"] == "PodMonitor" else "endpoints") or []
    endpoints = tuple(e.get("port") or e.get("portNumber") or e.get("targetPort") for e in entries)
    return Monitor(kind=obj["kind"], namespace=namespace, name=meta["name"], labels=dict(meta.get("labels") or {}),
                   namespaces=namespaces, selector=dict(spec.get("selector") or {}), endpoints=endpoints,
                   origin=f"manifest {obj['kind']}/{meta['name']}", creator=key)


def collect_services_and_monitors(graph: DeployGraph, table: Mapping[str, Any] | None = None
                                  ) -> tuple[list[Service], list[Monitor]]:
    """The Services and the monitors of our manifests, and those the table says each Helm release (or its
    operator) creates with our values."""
    table = table if table is not None else load_table()
    services: list[Service] = []
    monitors: list[Monitor] = []
    for res in graph.assembly.manifests():
        key = (res.stack, res.logical_id)
        for obj in res.objects:
            if obj.get("kind") == "Service":
                services.append(_service_from_object(obj, key))
            elif obj.get("kind") in ("PodMonitor", "ServiceMonitor"):
                monitors.append(_monitor_from_object(obj, key))
    for res in graph.assembly.kube_resources():
        if res.kind == "manifest":
            continue
        chart = res.properties.get("Chart")
        entry = table.get("releases", {}).get(chart) or {}
        values, key = res.values, (res.stack, res.logical_id)
        release_ns = res.properties.get("Namespace", "default")
        origin = f"helm {chart} {res.properties.get('Version')}"
        for s in entry.get("services") or []:
            if not condition(s.get("enabled", True), values):
                continue
            ports = tuple(ServicePort(resolve(p.get("name"), values), int(resolve(p["port"], values)),
                                      resolve(p.get("target", p["port"]), values))
                          for p in s.get("ports") or [] if condition(p.get("enabled", True), values))
            selector = resolve_deep(s.get("selector"), values)
            services.append(Service(
                namespace=resolve(s.get("namespace"), values) or release_ns, name=s["name"],
                labels=dict(resolve_deep(s.get("labels"), values) or {}),
                selector=dict(selector) if selector else None, ports=ports, origin=origin, creator=key,
                endpoints=s.get("endpoints")))
        for m in entry.get("monitors") or []:
            if not condition(m.get("enabled", True), values):
                continue
            namespaces = m.get("namespaces")
            monitors.append(Monitor(
                kind=m.get("kind", "ServiceMonitor"), namespace=resolve(m.get("namespace"), values) or release_ns,
                name=m["name"], labels=dict(resolve_deep(m.get("labels"), values) or {}),
                namespaces=None if namespaces is None else tuple(resolve_deep(namespaces, values)),
                selector={"matchLabels": dict(resolve_deep(m.get("selector"), values) or {})},
                endpoints=tuple(resolve_deep(m.get("endpoints"), values) or ()), origin=origin, creator=key))
    return services, monitors


def iter_kube_objects(graph: DeployGraph, kinds: Iterable[str]) -> Iterable[tuple[Key, dict[str, Any]]]:
    kinds = set(kinds)
    for res in graph.assembly.manifests():
        for obj in res.objects:
            if obj.get("kind") in kinds:
                yield (res.stack, res.logical_id), obj


__all__ = ["Workload", "Service", "ServicePort", "Monitor", "collect", "collect_services_and_monitors",
           "local_chart_objects",
           "iter_kube_objects", "load_table", "resolve", "resolve_deep", "condition", "singleuser_pod", "pod_requests",
           "cpu_millicores", "memory_mib", "HELM_TYPE", "MANIFEST_TYPE"]
