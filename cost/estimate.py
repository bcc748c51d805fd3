"""What the synthesized platform costs per hour: idle, at its ceiling, and with the alternatives that matter.

Everything is read from the synthesized assembly (templates, NodePool manifests, the RayCluster
and the JupyterHub values), never from the config, so the estimate prices what would really be
deployed. Prices come from ``cost/prices.yaml``.

* **idle**: what runs with no notebook and no job: EKS control planes, NAT gateways, managed node
  groups at their desired size, the node that hosts the Ray head and the hub when they are on a
  Karpenter pool, load balancers, interface endpoints and KMS keys.
* **observability** (when the templates hold it): the metrics release (Prometheus, Grafana, kube-state-metrics and
  the operator) is an idle line at $0 while its pods are pinned to the system nodes (their requests are shown);
  Prometheus's volume is priced per gp3 GB-month from its claim size in the release values; CloudWatch alarms per
  alarm metric-month (a metric-math alarm is billed per metric it reads) and the custom metrics of the templates'
  log metric filters per metric-month, both at list price (the account's free tier may cover a few). The SNS
  topic's e-mails are per use ($2.00 per 100,000 beyond the free tier, aws.amazon.com/sns/pricing) and in no total.
* **logs** (per use, never in the idle total): CloudWatch Logs' price per GB ingested and per GB-month stored in
  the price region, the retention of the log groups the log shipper writes to, and what one GB shipped costs over
  that retention. The shipper itself (a Fluent Bit DaemonSet) is an idle line at $0: it adds requests on nodes that
  run anyway, and a DaemonSet never makes Karpenter launch a node (the first-boot model checks it fits).
* **ceiling**: the most the platform can cost per hour: idle plus every Karpenter NodePool filled to
  its CPU limit, priced on-demand and with the assumed Spot discount (pools that allow Spot). The
  per-pool lines are what each pool adds on top of idle; both ceiling totals include idle.

An instance type that ``prices.yaml`` records as ``null`` for a region is not offered there: pools
skip it, and a managed node group that asks for it fails with a :class:`PriceError` that says so.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from tools.render import Assembly

PRICES = Path(__file__).resolve().parent / "prices.yaml"
METRICS_NODES_METADATA = "dynamic-factory:nodes-for-metrics"  # stacks/cluster_stack.py sets it (tests check they agree)
HOURS_PER_MONTH = 730
# z2jh's hub and proxy set no requests by default; what they use when idle, for packing only.
HUB_REQUEST = (0.3, 1.0)  # (vCPU, GiB): hub + proxy + user scheduler
AUTOSCALER_REQUEST = (0.5, 0.5)  # the Ray head's autoscaler sidecar (added by KubeRay)
ALLOCATABLE = 0.85  # share of a node's memory pods can request
POOL_LABEL = "dynamic-factory/pool"


class PriceError(KeyError):
    pass


@dataclass(frozen=True)
class Line:
    item: str
    count: float
    unit_hourly: float
    note: str = ""

    @property
    def hourly(self) -> float:
        return self.count * self.unit_hourly


@dataclass
class Estimate:
    region: str
    idle: list[Line] = field(default_factory=list)
    ceiling: list[Line] = field(default_factory=list)  # what each pool adds to idle, on-demand prices
    ceiling_spot: list[Line] = field(default_factory=list)  # what each pool adds to idle, Spot where allowed
    alternatives: list[Line] = field(default_factory=list)  # change to the idle figure
    logs: "LogPricing | None" = None  # priced per GB, not per hour: outside every total

    @property
    def idle_hourly(self) -> float:
        return sum(line.hourly for line in self.idle)

    @property
    def ceiling_on_demand_hourly(self) -> float:
        """Idle plus every pool at its limit, on-demand prices (idle included)."""
        return self.idle_hourly + sum(line.hourly for line in self.ceiling)

    @property
    def ceiling_spot_hourly(self) -> float:
        """Idle plus every pool at its limit, Spot where the pool allows it (idle included)."""
        return self.idle_hourly + sum(line.hourly for line in self.ceiling_spot)


class PriceTable:
    """One region's prices from ``prices.yaml``.

    ``instances`` maps an instance type to its on-demand hourly price, or to ``null`` when the type
    is not offered in that region (the YAML says why in a comment). A type missing altogether is a
    gap in the table, reported as such.
    """

    def __init__(self, path: Path = PRICES, region: str = "us-east-1"):
        data = yaml.safe_load(path.read_text())
        if region not in data["regions"]:
            raise PriceError(f"no prices for region {region!r} in {path.name} (have: {sorted(data['regions'])})")
        self.path = path
        self.region = region
        self.data = data
        self.table = data["regions"][region]
        self.spot_discount = float(data["spot_discount"]["value"])

    def service(self, name: str) -> float:
        try:
            return float(self.table["services"][name]["value"])
        except KeyError:
            raise PriceError(f"no price for {name!r} in {self.region} ({self.path.name})") from None

    def offered(self, instance_type: str) -> bool:
        """False only when the table records the type as not offered in this region (``null``)."""
        return self.table["instances"].get(instance_type, 0) is not None

    def instance(self, instance_type: str) -> float:
        instances = self.table["instances"]
        if instance_type not in instances:
            raise PriceError(f"no price for instance type {instance_type!r} in {self.region} ({self.path.name})")
        if instances[instance_type] is None:
            raise PriceError(f"instance type {instance_type!r} is not offered in {self.region} "
                             f"({self.path.name} records it as null): choose another type or price region")
        return float(instances[instance_type])

    def has(self, instance_type: str) -> bool:
        """A price is known: listed and offered."""
        return self.table["instances"].get(instance_type) is not None


# --------------------------------------------------------------------------------------------- parsing


def cpu_quantity(value: Any) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_gib(value: Any) -> float:
    match = re.match(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$", str(value))
    if not match:
        raise ValueError(f"unreadable memory quantity {value!r}")
    number, unit = float(match.group(1)), match.group(2) or ""
    factor = {"": 1 / 2**30, "Ki": 1 / 2**20, "Mi": 1 / 2**10, "Gi": 1, "Ti": 2**10,
              "K": 1e3 / 2**30, "M": 1e6 / 2**30, "G": 1e9 / 2**30, "T": 1e12 / 2**30}[unit]
    return number * factor


@dataclass(frozen=True)
class Pool:
    name: str
    families: tuple[str, ...]
    sizes: tuple[str, ...]
    spot: bool
    cpu_limit: float

    @classmethod
    def from_manifest(cls, obj: dict) -> "Pool":
        reqs = {r["key"]: r for r in obj["spec"]["template"]["spec"].get("requirements", [])}
        values = lambda key: tuple(reqs.get(key, {}).get("values", ()))  # noqa: E731
        return cls(
            name=obj["metadata"]["name"],
            families=values("karpenter.k8s.aws/instance-family"),
            sizes=values("karpenter.k8s.aws/instance-size"),
            spot="spot" in values("karpenter.sh/capacity-type"),
            cpu_limit=cpu_quantity(obj["spec"].get("limits", {}).get("cpu", 0)),
        )

    def types(self) -> list[str]:
        return [f"{f}.{s}" for f in self.families for s in self.sizes]


def _instance_shape(instance_type: str) -> tuple[int, float]:
    from charts.karpenter_nodes import INSTANCE_TYPES

    info = INSTANCE_TYPES[instance_type]
    return info.vcpus, info.memory_gib


def cheapest_fitting(pool: Pool, prices: PriceTable, cpu: float, mem: float) -> str | None:
    fitting = []
    for t in pool.types():
        vcpus, memory = _instance_shape(t)
        if cpu < vcpus and mem <= memory * ALLOCATABLE and prices.has(t):
            fitting.append((prices.instance(t), t))
    return min(fitting)[1] if fitting else None


def cheapest_per_vcpu(pool: Pool, prices: PriceTable) -> tuple[str, float]:
    """The pool's cheapest vCPU among the types offered in the region (types not offered are skipped)."""
    options = [(prices.instance(t) / _instance_shape(t)[0], t) for t in pool.types() if prices.offered(t)]
    if not options:
        raise PriceError(f"none of pool {pool.name!r}'s instance types {pool.types()} is offered in {prices.region}")
    per_vcpu, instance_type = min(options)
    return instance_type, per_vcpu


# --------------------------------------------------------------------------------------------- the estimate


def _resources(assembly: Assembly, type_: str) -> list[dict]:
    return [res for _, _, res in assembly.resources(type_)]


def _long_lived_pods(assembly: Assembly) -> list[tuple[str, str, float, float]]:
    """(what, pool, vCPU, GiB) of the Ray head and the JupyterHub core."""
    pods = []
    for obj in assembly.kube_objects():
        if obj["kind"] == "RayCluster":
            spec = obj["spec"]["headGroupSpec"]["template"]["spec"]
            cpu = sum(cpu_quantity(c["resources"]["requests"]["cpu"]) for c in spec["containers"]) + AUTOSCALER_REQUEST[0]
            mem = sum(memory_gib(c["resources"]["requests"]["memory"]) for c in spec["containers"]) + AUTOSCALER_REQUEST[1]
            ns = obj["metadata"].get("namespace", "ray")
            what = "Ray head" if ns == "ray" else f"Ray head ({ns})"  # one per team (charts/ray_teams.py)
            pods.append((what, spec.get("nodeSelector", {}).get(POOL_LABEL, "?"), cpu, mem))
    hub = assembly.helm_releases().get("jupyterhub")
    if hub is not None:
        pods.append(("JupyterHub hub + proxy", hub.values["hub"].get("nodeSelector", {}).get(POOL_LABEL, "?"), *HUB_REQUEST))
    return pods


def _load_balancers(assembly: Assembly) -> int:
    count = sum(1 for o in assembly.kube_objects() if o["kind"] == "Service" and o.get("spec", {}).get("type") == "LoadBalancer")
    for release in assembly.helm_releases().values():
        if release.values.get("proxy", {}).get("service", {}).get("type") == "LoadBalancer":
            count += 1
    return count


@dataclass(frozen=True)
class LogPricing:
    """CloudWatch Logs for the shipped logs: prices of the region and the groups' retention (from the templates)."""

    ingest_per_gb: float
    storage_per_gb_month: float
    groups: tuple[tuple[str, int | None], ...]  # (log group name, retention in days; None = never expires)

    @property
    def retention_days(self) -> int | None:
        days = {d for _, d in self.groups}
        return days.pop() if len(days) == 1 else None

    def per_gb_shipped(self) -> float:
        """One GB ingested and kept for the retention (GB-months of 30 days; AWS bills storage on compressed
        bytes, so this is an upper bound)."""
        days = max((d for _, d in self.groups if d is not None), default=0)
        return self.ingest_per_gb + self.storage_per_gb_month * days / 30


LOG_SHIPPER_RELEASE = "fluent-bit"


def _shipped_log_groups(assembly: Assembly) -> list[tuple[str, int | None]]:
    """The groups the log shipper's outputs name (its Helm values), with their RetentionInDays in the templates."""
    release = assembly.helm_releases().get(LOG_SHIPPER_RELEASE)
    if release is None:
        return []
    outputs = release.values.get("config", {}).get("outputs", "")
    names = sorted(set(re.findall(r"^\s*log_group_name\s+(\S+)\s*$", outputs, re.M)))
    retention = {res["Properties"]["LogGroupName"]: res["Properties"].get("RetentionInDays")
                 for res in _resources(assembly, "AWS::Logs::LogGroup")
                 if isinstance(res["Properties"].get("LogGroupName"), str)}  # others' names are often tokens
    return [(name, retention.get(name)) for name in names]


def _log_shipper_line(assembly: Assembly) -> Line | None:
    """The shipper's share of the idle nodes: one pod per system node, $0 (it only adds requests there)."""
    release = assembly.helm_releases().get(LOG_SHIPPER_RELEASE)
    if release is None:
        return None
    requests = (release.values.get("resources") or {}).get("requests") or {}
    nodes = sum(int(ng["Properties"]["ScalingConfig"]["DesiredSize"]) for ng in _resources(assembly, "AWS::EKS::Nodegroup"))
    what = f"{requests.get('cpu', '0')} CPU, {requests.get('memory', '0')} each"
    return Line(f"log shipper (Fluent Bit, {what})", nodes, 0.0, "on the system nodes, which run anyway")


# --------------------------------------------------------------------------------------------- observability

METRICS_RELEASE = "kube-prometheus-stack"  # charts/metrics.py RELEASE


def _dig(values: dict, *path: str) -> Any:
    for key in path:
        values = values.get(key) if isinstance(values, dict) else None
    return values


def _requests(resources: Any) -> tuple[float, float]:
    """(vCPU, GiB) a container's ``resources.requests`` ask for (0 where unset)."""
    req = (resources or {}).get("requests") or {}
    return cpu_quantity(req.get("cpu", 0)), memory_gib(req.get("memory", 0))


def _metrics_components(values: dict) -> list[tuple[str, int, float, float, dict]]:
    """(component, pods, vCPU, GiB per pod, node selector) of what the release runs, from its values.

    The chart's defaults are not read: a component must be switched on in the values (``enabled: true``) and its
    requests set there (charts/metrics.py sets both); one with no requests counts 0 here, and the boot model checks
    that what runs fits.
    """
    out = []
    spec = _dig(values, "prometheus", "prometheusSpec") or {}
    reloader = _requests(_dig(values, "prometheusOperator", "prometheusConfigReloader", "resources"))
    if _dig(values, "prometheus", "enabled"):
        cpu, mem = _requests(spec.get("resources"))  # + the operator's config-reloader sidecar in the same pod
        out.append(("Prometheus", int(spec.get("replicas", 1)), cpu + reloader[0], mem + reloader[1],
                    spec.get("nodeSelector") or {}))
    grafana = values.get("grafana") or {}
    if grafana.get("enabled"):
        cpu, mem = _requests(grafana.get("resources"))
        sidecar = grafana.get("sidecar") or {}
        # One sidecar container per enabled watcher (dashboards, data sources, ...), each with sidecar.resources.
        watchers = sum(1 for v in sidecar.values() if isinstance(v, dict) and v.get("enabled"))
        s_cpu, s_mem = _requests(sidecar.get("resources"))
        out.append(("Grafana", int(grafana.get("replicas", 1)), cpu + watchers * s_cpu, mem + watchers * s_mem,
                    grafana.get("nodeSelector") or {}))
    if _dig(values, "kubeStateMetrics", "enabled"):
        ksm = values.get("kube-state-metrics") or {}
        out.append(("kube-state-metrics", int(ksm.get("replicas", 1)), *_requests(ksm.get("resources")),
                    ksm.get("nodeSelector") or {}))
    operator = values.get("prometheusOperator") or {}
    if operator.get("enabled"):
        out.append(("operator", 1, *_requests(operator.get("resources")), operator.get("nodeSelector") or {}))
    return out


def _quantity_text(cpu: float, mem_gib: float) -> str:
    return f"{cpu * 1000:g}m CPU, {mem_gib * 1024:g}Mi memory"


def _metrics_lines(assembly: Assembly, prices: PriceTable, pools: dict[str, "Pool"]) -> list[Line]:
    """The metrics release's share of idle: $0 while its pods are pinned to the system nodes (labels of a managed
    node group), a node of the pool otherwise; and Prometheus's volume (gp3, claim size x replicas)."""
    release = assembly.helm_releases().get(METRICS_RELEASE)
    if release is None:
        return []
    values = release.values
    components = _metrics_components(values)
    group_labels = [ng["Properties"].get("Labels") or {} for ng in _resources(assembly, "AWS::EKS::Nodegroup")]
    on_system = lambda sel: bool(sel) and any(sel.items() <= labels.items() for labels in group_labels)  # noqa: E731
    lines = []
    system = [c for c in components if on_system(c[4])]
    if system:
        cpu = sum(pods * c for _, pods, c, _, _ in system)
        mem = sum(pods * m for _, pods, _, m, _ in system)
        names = ", ".join(name for name, *_ in system)
        lines.append(Line(f"metrics ({names}; {_quantity_text(cpu, mem)} requested)",
                          sum(pods for _, pods, *_ in system), 0.0, "on the system nodes, which run anyway"))
    by_pool: dict[str, list[tuple[str, int, float, float, dict]]] = {}
    for comp in components:
        if not on_system(comp[4]):
            by_pool.setdefault(comp[4].get(POOL_LABEL, ""), []).append(comp)
    for pool_name, comps in sorted(by_pool.items()):
        names = ", ".join(name for name, *_ in comps)
        cpu = sum(pods * c for _, pods, c, _, _ in comps)
        mem = sum(pods * m for _, pods, _, m, _ in comps)
        if pool_name not in pools:
            raise PriceError(f"metrics ({names}) are pinned neither to the system nodes nor to a NodePool: the "
                             "estimate cannot tell which node they keep running")
        instance_type = cheapest_fitting(pools[pool_name], prices, cpu, mem)
        if instance_type is None:
            raise PriceError(f"metrics ({names}) fit no instance type of pool {pool_name!r} that has a price")
        lines.append(Line(f"metrics node ({names}; {instance_type}, {pool_name} pool)", 1,
                          prices.instance(instance_type)))

    if _dig(values, "prometheus", "enabled"):
        spec = _dig(values, "prometheus", "prometheusSpec") or {}
        claim = _dig(spec, "storageSpec", "volumeClaimTemplate", "spec") or {}
        size = _dig(claim, "resources", "requests", "storage")
        if size is not None:
            volume_type = _storage_class_type(assembly, claim.get("storageClassName"))
            if volume_type != "gp3":
                raise PriceError(f"Prometheus's volume is EBS {volume_type!r} (StorageClass "
                                 f"{claim.get('storageClassName')!r}): prices.yaml prices gp3 only")
            gib = memory_gib(size)  # EBS bills the provisioned GiB as "GB-month"
            replicas = int(spec.get("replicas", 1))
            lines.append(Line(f"Prometheus volume (gp3, {size}{f' x {replicas}' if replicas != 1 else ''})",
                              gib * replicas, prices.service("gp3_gb_month") / HOURS_PER_MONTH, "GB-month / 730 h"))
    return lines


def _storage_class_type(assembly: Assembly, name: str | None) -> str:
    """The EBS volume type a claim's StorageClass provisions (``parameters.type``; the EBS CSI driver's default is
    gp3). No name: the cluster's default StorageClass."""
    classes = [o for o in assembly.kube_objects() if o["kind"] == "StorageClass"]
    if name is None:
        classes = [c for c in classes
                   if c["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"]
    else:
        classes = [c for c in classes if c["metadata"]["name"] == name]
    if not classes:
        return "gp3" if name is None else f"unknown (no StorageClass {name!r} in the templates)"
    return (classes[0].get("parameters") or {}).get("type", "gp3")


def alarm_metrics(alarm: dict) -> tuple[int, bool]:
    """(metrics billed, high resolution) of one AWS::CloudWatch::Alarm: 1 for an alarm on one metric; for a
    metric-math alarm, each ``Metrics`` entry that reads a metric (``MetricStat``), expressions are free. High
    resolution: a period under 60 s."""
    props = alarm["Properties"]
    if "Metrics" in props:
        stats = [m["MetricStat"] for m in props["Metrics"] if "MetricStat" in m]
        if not stats:
            raise PriceError(f"alarm {props.get('AlarmName', '?')!r} reads no metric (a Metrics Insights query?): "
                             "prices.yaml has no price for it")
        return len(stats), any(int(s.get("Period", 60)) < 60 for s in stats)
    return 1, int(props.get("Period", 60)) < 60


def _alarm_lines(assembly: Assembly, prices: PriceTable) -> list[Line]:
    """CloudWatch alarms (per alarm metric-month) and the custom metrics log metric filters publish."""
    lines = []
    alarms = _resources(assembly, "AWS::CloudWatch::Alarm")
    if alarms:
        counted = [alarm_metrics(a) for a in alarms]
        if any(high for _, high in counted):
            raise PriceError("a high-resolution alarm (period under 60 s) is in the templates: prices.yaml prices "
                             "standard-resolution alarm metrics only")
        metrics = sum(n for n, _ in counted)
        lines.append(Line(f"CloudWatch alarm metrics ({len(alarms)} alarms, standard resolution)", metrics,
                          prices.service("cloudwatch_alarm_metric_month") / HOURS_PER_MONTH,
                          "per alarm metric-month / 730 h; SNS e-mails per use"))
    custom = set()
    dimensioned = False
    for res in _resources(assembly, "AWS::Logs::MetricFilter"):
        for t in res["Properties"].get("MetricTransformations", []):
            custom.add((json.dumps(t.get("MetricNamespace")), json.dumps(t.get("MetricName"))))
            dimensioned |= bool(t.get("Dimensions"))
    if custom:
        note = "per metric-month / 730 h, first-10,000 tier"
        if dimensioned:
            note += "; one metric per dimension value seen: at least"
        lines.append(Line("CloudWatch custom metrics (log metric filters)", len(custom),
                          prices.service("cloudwatch_custom_metric_month") / HOURS_PER_MONTH, note))
    return lines


def estimate(assembly: Assembly, prices: PriceTable) -> Estimate:
    est = Estimate(region=prices.region)
    clusters = len(_resources(assembly, "AWS::EKS::Cluster"))
    est.idle.append(Line("EKS control plane", clusters, prices.service("eks_cluster_hour")))
    nats = len(_resources(assembly, "AWS::EC2::NatGateway"))
    est.idle.append(Line("NAT gateway", nats, prices.service("nat_gateway_hour"), "plus data processed"))
    for ng in _resources(assembly, "AWS::EKS::Nodegroup"):
        props = ng["Properties"]
        instance_type = props["InstanceTypes"][0]
        unit = prices.instance(instance_type)
        if props.get("CapacityType") == "SPOT":
            unit *= 1 - prices.spot_discount
        est.idle.append(Line(f"system nodes ({instance_type})", props["ScalingConfig"]["DesiredSize"], unit))

    pools = {p.name: p for p in (Pool.from_manifest(o) for o in assembly.kube_objects() if o["kind"] == "NodePool")}
    by_pool: dict[str, list[tuple[str, float, float]]] = {}
    for what, pool, cpu, mem in _long_lived_pods(assembly):
        by_pool.setdefault(pool, []).append((what, cpu, mem))
    for pool_name, pods in sorted(by_pool.items()):
        names = " and ".join(p[0] for p in pods)
        if pool_name not in pools:
            est.idle.append(Line(f"{names} (on the system nodes)", 0, 0.0))
            continue
        instance_type = cheapest_fitting(pools[pool_name], prices, sum(p[1] for p in pods), sum(p[2] for p in pods))
        if instance_type is None:
            raise PriceError(f"{names} fit no instance type of pool {pool_name!r} that has a price")
        est.idle.append(Line(f"{names} node ({instance_type}, {pool_name} pool)", 1, prices.instance(instance_type)))

    lbs = _load_balancers(assembly)
    if lbs:
        est.idle.append(Line("Network Load Balancer (JupyterHub)", lbs, prices.service("nlb_hour"), "plus LCUs"))
    endpoints = [e for e in _resources(assembly, "AWS::EC2::VPCEndpoint") if e["Properties"].get("VpcEndpointType") == "Interface"]
    if endpoints:
        azs = sum(len(e["Properties"].get("SubnetIds", [])) for e in endpoints)
        est.idle.append(Line("interface endpoints (per AZ)", azs, prices.service("interface_endpoint_hour")))
    shipper = _log_shipper_line(assembly)
    if shipper is not None:
        est.idle.append(shipper)
    observability = _metrics_lines(assembly, prices, pools) + _alarm_lines(assembly, prices)
    est.idle += observability
    groups = _shipped_log_groups(assembly)
    if groups:
        est.logs = LogPricing(prices.service("logs_ingest_gb"), prices.service("logs_storage_gb_month"), tuple(groups))
    keys = len(_resources(assembly, "AWS::KMS::Key"))
    est.idle.append(Line("KMS keys", keys, prices.service("kms_key_month") / HOURS_PER_MONTH, "plus requests"))

    for name, pool in sorted(pools.items()):
        instance_type, per_vcpu = cheapest_per_vcpu(pool, prices)
        est.ceiling.append(Line(f"{name} pool at its {pool.cpu_limit:g}-vCPU limit ({instance_type} rate)", pool.cpu_limit, per_vcpu))
        spot_rate = per_vcpu * (1 - prices.spot_discount) if pool.spot else per_vcpu
        est.ceiling_spot.append(Line(f"{name} pool at its limit ({'Spot' if pool.spot else 'on-demand'})",
                                     pool.cpu_limit, spot_rate, "" if pool.spot else "on-demand only"))

    # Alternatives that move the idle line.
    azs = len({s["Properties"]["AvailabilityZone"] if isinstance(s["Properties"]["AvailabilityZone"], str)
               else json.dumps(s["Properties"]["AvailabilityZone"])
               for s in _resources(assembly, "AWS::EC2::Subnet")})
    if nats < azs:
        est.alternatives.append(Line(f"one NAT gateway per AZ ({azs} instead of {nats}): survives an AZ outage",
                                     azs - nats, prices.service("nat_gateway_hour")))
    elif nats > 1:
        est.alternatives.append(Line(f"a single NAT gateway instead of {nats}", -(nats - 1), prices.service("nat_gateway_hour")))
    if "on-demand" in pools and "system" in by_pool:
        pods = by_pool["system"]
        instance_type = cheapest_fitting(pools["on-demand"], prices, sum(p[1] for p in pods), sum(p[2] for p in pods))
        if instance_type:
            est.alternatives.append(Line(
                f"{' and '.join(p[0] for p in pods)} on their own on-demand node ({instance_type}) "
                "instead of the system nodes", 1, prices.instance(instance_type)))
    if METRICS_RELEASE in assembly.helm_releases():
        # What observability.enabled=false removes: the metrics release (its pods, a node if they need one, the
        # volume), the alarms and the metric filters' metrics (the platform creates them only with metrics on).
        saved = sum(line.hourly for line in observability)
        what = "no Prometheus, Grafana or CloudWatch alarms"
        for ng in _resources(assembly, "AWS::EKS::Nodegroup"):
            # The system nodes that are there for the metrics (stacks/cluster_stack.py METRICS_NODES_METADATA).
            extra = int((ng.get("Metadata") or {}).get(METRICS_NODES_METADATA, 0))
            if extra:
                saved += extra * prices.instance(ng["Properties"]["InstanceTypes"][0])
                what += f", {extra} system node{'s' if extra > 1 else ''} fewer"
        est.alternatives.append(Line(f"observability off ({what})", -1, saved))
    return est


# --------------------------------------------------------------------------------------------- output


def _money(value: float) -> str:
    return f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"


def render(est: Estimate) -> str:
    width = max(len(line.item) for line in est.idle + est.ceiling) + 2
    out = [f"Cost estimate ({est.region}, list prices from cost/prices.yaml)", "", "Idle (no notebook, no job):"]
    for line in est.idle:
        note = f"  ({line.note})" if line.note else ""
        out.append(f"  {line.item:<{width}} {line.count:>4g} x {_money(line.unit_hourly):>9}  = {_money(line.hourly):>9}/h{note}")
    out.append(f"  {'idle total':<{width}} {'':>4}   {'':>9}  = {_money(est.idle_hourly):>9}/h"
               f"  ({_money(est.idle_hourly * HOURS_PER_MONTH)}/month)")
    # Two columns, each adding up: idle, plus what every pool adds at its limit, equals the ceiling.
    blank = f"  {'':<{width}} {'':>4}   {'':>9}"
    out += ["", "Ceiling (idle plus every NodePool at its CPU limit; both totals include idle):",
            f"{blank}    {'on-demand':>11}  {'Spot allowed':>12}"]
    out.append(f"  {'idle total (above)':<{width}} {'':>4}   {'':>9}    {_money(est.idle_hourly):>9}/h  "
               f"{_money(est.idle_hourly):>10}/h")
    for on_demand, spot in zip(est.ceiling, est.ceiling_spot):
        note = f"  ({spot.note})" if spot.note else ""
        out.append(f"  {on_demand.item:<{width}} {on_demand.count:>4g} x {_money(on_demand.unit_hourly):>9}  "
                   f"+ {_money(on_demand.hourly):>9}/h  {_money(spot.hourly):>10}/h{note}")
    out.append(f"  {'ceiling total (idle included)':<{width}} {'':>4}   {'':>9}  = "
               f"{_money(est.ceiling_on_demand_hourly):>9}/h  {_money(est.ceiling_spot_hourly):>10}/h")
    if est.alternatives:
        out += ["", "Alternatives (change to the idle figure):"]
        for line in est.alternatives:
            out.append(f"  {line.item}")
            out.append(f"      {line.hourly:+.4f} $/h  -> idle {_money(est.idle_hourly + line.hourly)}/h")
    if est.logs is not None:
        logs = est.logs
        kept = {d for _, d in logs.groups}
        retention = (f"{logs.retention_days} days" if logs.retention_days is not None
                     else "never expire" if kept == {None} else "mixed retention")
        out += ["", "Logs of Ray jobs and JupyterHub (CloudWatch Logs, priced per use, in no total above):",
                f"  ingested                  {_money(logs.ingest_per_gb):>9} per GB",
                f"  stored                    {_money(logs.storage_per_gb_month):>9} per GB-month (billed on compressed size)",
                f"  log groups                {', '.join(name for name, _ in logs.groups)} (kept {retention})",
                f"  one GB shipped and kept   {_money(logs.per_gb_shipped()):>9} in all"]
    return "\n".join(out)


def budget_problems(est: Estimate, max_idle: float | None, max_ceiling: float | None) -> list[str]:
    problems = []
    if max_idle is not None and est.idle_hourly > max_idle + 1e-9:
        problems.append(f"cost.max_idle_usd_per_hour: the idle estimate is {_money(est.idle_hourly)}/h, "
                        f"above the budget of {_money(max_idle)}/h")
    if max_ceiling is not None and est.ceiling_spot_hourly > max_ceiling + 1e-9:
        problems.append(f"cost.max_ceiling_usd_per_hour: the ceiling estimate (idle plus every pool at its "
                        "limit, Spot where allowed) is "
                        f"{_money(est.ceiling_spot_hourly)}/h, above the budget of {_money(max_ceiling)}/h")
    return problems


def stage_assemblies(outdir: str | Path) -> Iterable[Path]:
    """Each deployable stage of a cloud assembly (the direct stage and any pipeline stages)."""
    return sorted(p for p in Path(outdir).glob("assembly-*") if p.is_dir())
