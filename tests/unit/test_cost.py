"""Cost as code: the estimate comes from the synthesized templates, the budget is enforced at synth."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from datetime import date

import pytest
import yaml

from charts import karpenter_nodes as kn
from cost.estimate import (HOURS_PER_MONTH, PRICES, Pool, PriceError, PriceTable, alarm_metrics, budget_problems,
                           cheapest_per_vcpu, estimate, memory_gib, render)
from tests.platform_synth import ROOT, model_context, synth_platform
from tools.render import Assembly


def _estimate(synth):
    return estimate(Assembly(next(synth.outdir.glob("assembly-*"))), PriceTable())


def _price_data() -> dict:
    return yaml.safe_load(PRICES.read_text())


REGIONS = sorted(_price_data()["regions"])
OTHER_REGIONS = [region for region in REGIONS if region != "us-east-1"]


@pytest.fixture(scope="module")
def default_assembly(platform):
    return Assembly(next(platform.outdir.glob("assembly-*")))


@pytest.fixture(scope="module")
def default_estimate(default_assembly):
    return estimate(default_assembly, PriceTable())


@pytest.fixture(scope="module")
def without_observability(tmp_path_factory):
    """The default platform with ``observability.enabled=false`` (no metrics, no alarms): one more synth, about 4 s
    after the session's first (17 s alone)."""
    synth = synth_platform(tmp_path_factory.mktemp("cost-obs-off"), {"platform.observability.enabled": False})
    assert not synth.config.observability.enabled
    return Assembly(next(synth.outdir.glob("assembly-*")))


@pytest.fixture(scope="module")
def bigger(tmp_path_factory):
    """One more system node and one more NAT gateway than the default, nothing else changed."""
    return _estimate(synth_platform(tmp_path_factory.mktemp("cost"), {
        "platform.cluster.system_nodes.desired_size": 4,
        "platform.cluster.system_nodes.min_size": 3,
        "platform.cluster.system_nodes.max_size": 4,
        "platform.network.nat_gateways": 2,
    }))


def test_default_idles_within_forty_cents_with_observability_and_thirty_without(default_estimate,
                                                                                 without_observability):
    """Issue #14's acceptance, in us-east-1 (the default price region), read from the estimates."""
    assert PriceTable().region == "us-east-1"
    assert any(line.item.startswith("metrics (") for line in default_estimate.idle)
    assert default_estimate.idle_hourly <= 0.40
    off = estimate(without_observability, PriceTable())
    assert not any(line.item.startswith(("metrics", "Prometheus", "CloudWatch")) for line in off.idle)
    assert off.idle_hourly <= 0.30


def test_the_metrics_node_metadata_key_is_the_cluster_stacks():
    from stacks.cluster_stack import METRICS_NODES_METADATA
    from cost.estimate import METRICS_NODES_METADATA as read

    assert read == METRICS_NODES_METADATA


def test_idle_follows_system_nodes_and_nat_gateways_by_the_table_price(default_estimate, bigger):
    prices = PriceTable()
    expected = prices.instance("t3a.large") + prices.service("nat_gateway_hour")
    assert bigger.idle_hourly - default_estimate.idle_hourly == pytest.approx(expected)


def test_idle_lines_name_what_runs(default_estimate):
    items = " | ".join(line.item for line in default_estimate.idle)
    for what in ("EKS control plane", "NAT gateway", "system nodes (t3a.large)", "Ray head", "KMS keys",
                 "metrics (Prometheus, Grafana, kube-state-metrics, operator;", "Prometheus volume (gp3"):
        assert what in items


def test_head_on_a_karpenter_pool_adds_a_node(variant):
    est = _estimate(variant)
    head = [line for line in est.idle if line.item.startswith("Ray head")]
    assert head and head[0].count == 1 and "on-demand pool" in head[0].item


def test_ceiling_prices_every_pool_at_its_limit_with_spot_discount(default_estimate):
    assert {line.item.split()[0] for line in default_estimate.ceiling} == {"spot", "on-demand"}
    spot = next(line for line in default_estimate.ceiling if line.item.startswith("spot"))
    spot_discounted = next(line for line in default_estimate.ceiling_spot if line.item.startswith("spot"))
    assert spot.count == 256
    assert spot_discounted.hourly == pytest.approx(spot.hourly * (1 - PriceTable().spot_discount))
    assert default_estimate.ceiling_spot_hourly < default_estimate.ceiling_on_demand_hourly


def test_alternatives_price_the_choices(default_estimate):
    nat = next(line for line in default_estimate.alternatives if "NAT" in line.item)
    assert nat.hourly == pytest.approx(PriceTable().service("nat_gateway_hour"))
    assert "idle total" in render(default_estimate)


def test_budget_guard_names_both_figures(default_estimate):
    (problem,) = budget_problems(default_estimate, max_idle=0.10, max_ceiling=None)
    assert "cost.max_idle_usd_per_hour" in problem and "$0.1000/h" in problem
    assert f"${default_estimate.idle_hourly:.4f}/h" in problem
    assert budget_problems(default_estimate, max_idle=0.40, max_ceiling=None) == []
    assert budget_problems(default_estimate, max_idle=None, max_ceiling=1.0)


def test_synth_refuses_a_platform_over_budget(tmp_path):
    ctx = model_context()
    ctx["platform.cost.max_idle_usd_per_hour"] = "0.2"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(CDK_CONTEXT_JSON=json.dumps(ctx), CDK_OUTDIR=str(tmp_path), CDK_VALIDATION="false")
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "cost.max_idle_usd_per_hour" in result.stderr and "$0.2000/h" in result.stderr
    assert "Traceback" not in result.stderr


def test_ceiling_section_says_its_totals_include_idle_and_adds_up(default_estimate):
    est = default_estimate
    assert est.ceiling_on_demand_hourly == pytest.approx(est.idle_hourly + sum(line.hourly for line in est.ceiling))
    assert est.ceiling_spot_hourly == pytest.approx(est.idle_hourly + sum(line.hourly for line in est.ceiling_spot))
    text = render(est)
    section = text[text.index("Ceiling"):text.index("Alternatives")]
    assert "on top of idle" not in section and "include idle" in section.splitlines()[0]
    idle_row = next(row for row in section.splitlines() if "idle total (above)" in row)
    assert idle_row.count(f"${est.idle_hourly:,.4f}/h") == 2  # the first term of both columns
    total_row = next(row for row in section.splitlines() if "ceiling total (idle included)" in row)
    assert f"${est.ceiling_on_demand_hourly:,.2f}/h" in total_row and f"${est.ceiling_spot_hourly:,.2f}/h" in total_row


# ------------------------------------------------------------------------------------- the price table


def test_price_table_has_source_and_date_for_every_entry():
    data = _price_data()
    assert data["spot_discount"]["source"] and date.fromisoformat(data["spot_discount"]["date"])
    for region, table in data["regions"].items():
        for name, entry in table["services"].items():
            assert entry["source"].startswith("https://"), (region, name)
            assert date.fromisoformat(entry["date"]), (region, name)
        assert table["instances_source"].startswith("https://"), region
        assert date.fromisoformat(table["instances_date"]), region


@pytest.mark.parametrize("region", REGIONS)
def test_every_priced_region_prices_every_service(region):
    data = _price_data()
    services = data["regions"][region]["services"]
    assert sorted(services) == sorted(data["regions"]["us-east-1"]["services"])
    assert all(isinstance(entry["value"], (int, float)) and entry["value"] > 0 for entry in services.values())


@pytest.mark.parametrize("region", REGIONS)
def test_every_priced_region_prices_every_instance_type_the_config_allows(region):
    """kn.INSTANCE_TYPES is every type a NodePool or the system node group may use (config.py checks against it).

    Each is listed: a positive hourly price, or null when AWS does not offer the type in the region.
    """
    instances = _price_data()["regions"][region]["instances"]
    assert sorted(set(kn.INSTANCE_TYPES) - set(instances)) == []
    assert sorted(set(instances) - set(kn.INSTANCE_TYPES)) == []  # a typo would price nothing
    unusable = {t: v for t, v in instances.items() if v is not None and not (isinstance(v, (int, float)) and v > 0)}
    assert unusable == {}


@pytest.mark.parametrize("region", REGIONS)
def test_the_default_platform_can_be_priced_in_every_region(region, default_assembly):
    est = estimate(default_assembly, PriceTable(region=region))
    assert est.region == region and est.idle_hourly > 0 and est.ceiling_spot_hourly > est.idle_hourly


def test_an_unknown_price_region_is_refused_with_the_known_ones():
    with pytest.raises(PriceError, match="have: .*us-east-1"):
        PriceTable(region="xx-nowhere-1")


# ------------------------------------------------------------------------------------- regions


@pytest.mark.parametrize("region", OTHER_REGIONS)
def test_a_regions_estimate_uses_that_regions_prices(region, default_assembly, default_estimate):
    prices, base = PriceTable(region=region), PriceTable()
    est = estimate(default_assembly, prices)
    nat = next(line for line in est.idle if line.item == "NAT gateway")
    assert nat.unit_hourly == prices.service("nat_gateway_hour")
    (nodes,) = [line for line in est.idle if line.item.startswith("system nodes")]
    node_type = nodes.item[nodes.item.index("(") + 1:-1]
    assert nodes.unit_hourly == prices.instance(node_type)
    differs = (any(prices.service(name) != base.service(name) for name in (
                   "nat_gateway_hour", "eks_cluster_hour", "kms_key_month", "gp3_gb_month",
                   "cloudwatch_alarm_metric_month", "cloudwatch_custom_metric_month"))
               or prices.instance(node_type) != base.instance(node_type))
    assert (est.idle_hourly != pytest.approx(default_estimate.idle_hourly)) == differs


def _price_file_with(tmp_path, region: str, change) -> PriceTable:
    """prices.yaml plus a made-up region: a copy of us-east-1 that `change` edits in place."""
    data = _price_data()
    data["regions"][region] = copy.deepcopy(data["regions"]["us-east-1"])
    change(data["regions"][region])
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(data))
    return PriceTable(path, region)


def test_estimate_follows_the_price_region(tmp_path, default_assembly, default_estimate):
    def dearer(table):
        for entry in table["services"].values():
            entry["value"] *= 1.25
        table["instances"] = {t: price * 1.25 for t, price in table["instances"].items()}

    est = estimate(default_assembly, _price_file_with(tmp_path, "xx-dear-1", dearer))
    assert est.region == "xx-dear-1"
    assert est.idle_hourly == pytest.approx(default_estimate.idle_hourly * 1.25)
    assert est.ceiling_on_demand_hourly == pytest.approx(default_estimate.ceiling_on_demand_hourly * 1.25)
    assert est.ceiling_spot_hourly == pytest.approx(default_estimate.ceiling_spot_hourly * 1.25)


def test_a_type_not_offered_in_a_region_is_skipped_by_pools_and_named_for_node_groups(tmp_path, default_assembly,
                                                                                       default_estimate):
    spot_line = next(line for line in default_estimate.ceiling if line.item.startswith("spot"))
    cheapest_family = spot_line.item.split("(")[1].split(".")[0]  # "... (c6a.2xlarge rate)"

    def without(table):
        for name in table["instances"]:
            if name.split(".")[0] == cheapest_family or name == "t3a.large":
                table["instances"][name] = None

    prices = _price_file_with(tmp_path, "xx-sparse-1", without)
    assert not prices.offered("t3a.large") and not prices.has("t3a.large") and prices.has("t3.large")
    with pytest.raises(PriceError, match="'t3a.large' is not offered in xx-sparse-1"):
        estimate(default_assembly, prices)  # the default system node group asks for t3a.large

    spot = next(Pool.from_manifest(o) for o in default_assembly.kube_objects()
                if o["kind"] == "NodePool" and o["metadata"]["name"] == "spot")
    instance_type, per_vcpu = cheapest_per_vcpu(spot, prices)
    assert not instance_type.startswith(cheapest_family + ".")
    assert per_vcpu >= spot_line.unit_hourly


@pytest.mark.parametrize("observability", [True, False], ids=["observability-on", "observability-off"])
@pytest.mark.parametrize("region", sorted(yaml.safe_load(PRICES.read_text())["regions"]))
def test_the_default_budget_admits_the_default_platform_in_every_priced_region(platform, without_observability,
                                                                               region, observability):
    """A user who only sets cost.price_region to where they deploy must not be refused by the default budget,
    with metrics on or off, and the default budget must still refuse an extra always-on node (the Ray head on its
    own on-demand node). The lean budget is the lean idle rounded up to the cent, and metrics may add $0.10/h to it
    (prices.yaml's rule; in us-east-1 the issue's $0.30 and $0.40)."""
    from config import PlatformConfig, build_config, default_idle_budget

    assembly = (Assembly(platform.outdir / "assembly-DynamicFactory") if observability else without_observability)
    est = estimate(assembly, PriceTable(region=region))
    budget = default_idle_budget(region, observability=observability)
    cfg = build_config({}, {"platform.cost.price_region": region, "platform.observability.enabled": observability})
    assert isinstance(cfg, PlatformConfig) and cfg.idle_budget == budget  # what synth enforces
    assert budget_problems(est, budget, None) == []
    extra_node = next(line for line in est.alternatives if "own on-demand node" in line.item)
    assert est.idle_hourly + extra_node.hourly > budget
    lean = default_idle_budget(region, observability=False)
    if not observability:
        assert budget == math.ceil(round(est.idle_hourly * 100, 6)) / 100
    else:
        assert budget == pytest.approx(lean + 0.10)


# ------------------------------------------------------------------------------------- logs


def test_logs_are_priced_per_gb_for_the_shipped_groups(default_estimate, platform):
    from charts.log_shipping import karpenter_log_group_name, log_group_names

    logs = default_estimate.logs
    prices = PriceTable()
    assert logs.ingest_per_gb == prices.service("logs_ingest_gb") == 0.50
    assert logs.storage_per_gb_month == prices.service("logs_storage_gb_month") == 0.03
    name = platform.config.cluster.name
    # With observability on, Karpenter's lines are shipped too (its error alarm's metric filter reads them).
    karpenter = {karpenter_log_group_name(name)} if platform.config.observability.enabled else set()
    assert {group for group, _ in logs.groups} == set(log_group_names(name).values()) | karpenter
    assert {days for _, days in logs.groups} == {platform.config.logs.retention_days}
    assert logs.per_gb_shipped() == pytest.approx(0.50 + 0.03 * platform.config.logs.retention_days / 30)
    text = render(default_estimate)
    section = text[text.index("Logs of Ray jobs"):]
    assert "$0.5000 per GB" in section and "$0.0300 per GB-month" in section and "kept 30 days" in section


def test_the_log_shipper_adds_nothing_to_idle_while_it_fits_the_system_nodes(default_estimate):
    (shipper,) = [line for line in default_estimate.idle if line.item.startswith("log shipper")]
    assert shipper.count == 3 and shipper.hourly == 0 and "25m CPU, 64Mi" in shipper.item
    # The logs' per-GB prices are in no hourly total.
    assert default_estimate.idle_hourly == pytest.approx(sum(line.hourly for line in default_estimate.idle))
    assert default_estimate.idle_hourly <= 0.40


@pytest.mark.parametrize("region", REGIONS)
def test_every_region_prices_logs_with_a_dated_source(region):
    services = _price_data()["regions"][region]["services"]
    for name in ("logs_ingest_gb", "logs_storage_gb_month"):
        assert services[name]["source"].startswith("https://") and date.fromisoformat(services[name]["date"])
    # Ingestion is the larger price everywhere (AWS: ~$0.50-0.76/GB against ~$0.03/GB-month).
    assert 0.4 <= services["logs_ingest_gb"]["value"] <= 1.0 and 0.02 <= services["logs_storage_gb_month"]["value"] <= 0.05


# ------------------------------------------------------------------------------------- observability (issue #14)


def _handmade(tmp_path, resources: dict) -> Assembly:
    """A one-stack assembly holding exactly ``resources`` (logical id -> resource)."""
    outdir = tmp_path / "assembly-Handmade"
    outdir.mkdir()
    (outdir / "Stack.template.json").write_text(json.dumps({"Resources": resources}))
    (outdir / "manifest.json").write_text(json.dumps({"version": "test", "artifacts": {
        "Stack": {"type": "aws:cloudformation:stack", "properties": {"templateFile": "Stack.template.json"}}}}))
    return Assembly(outdir)


def _alarm(metric: str, period: int = 300) -> dict:
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "MetricName": metric, "Namespace": "AWS/SQS", "Period": period, "Statistic": "Maximum",
        "Dimensions": [{"Name": "QueueName", "Value": "q"}], "EvaluationPeriods": 3, "Threshold": 1,
        "ComparisonOperator": "GreaterThanThreshold"}}


def _math_alarm(*metrics: str, period: int = 60) -> dict:
    """Like cdk_constructs/alarms.py's NodeGroupCapacityAlarm: one expression over ``metrics``."""
    stats = [{"Id": f"m{i}", "ReturnData": False, "MetricStat": {
        "Metric": {"MetricName": m, "Namespace": "AWS/AutoScaling",
                   "Dimensions": [{"Name": "AutoScalingGroupName", "Value": "eks-x"}]},
        "Period": period, "Stat": "Average"}} for i, m in enumerate(metrics)]
    expression = {"Id": "expr_1", "Expression": " - ".join(s["Id"] for s in stats), "ReturnData": True}
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "Metrics": [expression, *stats], "EvaluationPeriods": 10, "Threshold": 0,
        "ComparisonOperator": "GreaterThanThreshold"}}


def _metric_filter(name: str, namespace: str = "DynamicFactory/test") -> dict:
    return {"Type": "AWS::Logs::MetricFilter", "Properties": {
        "LogGroupName": "/dynamic-factory/karpenter", "FilterPattern": '{ $.level = "ERROR" }',
        "MetricTransformations": [{"MetricName": name, "MetricNamespace": namespace, "MetricValue": "1",
                                   "DefaultValue": 0}]}}


def _line(est, prefix: str):
    (line,) = [line for line in est.idle if line.item.startswith(prefix)]
    return line


def test_alarms_are_priced_per_metric_they_read(tmp_path):
    """Two alarms on one metric each and a metric-math alarm reading two metrics: 4 alarm metrics."""
    prices = PriceTable()
    est = estimate(_handmade(tmp_path, {
        "Age": _alarm("ApproximateAgeOfOldestMessage"), "Depth": _alarm("ApproximateNumberOfMessagesVisible"),
        "Capacity": _math_alarm("GroupDesiredCapacity", "GroupInServiceInstances")}), prices)
    line = _line(est, "CloudWatch alarm metrics")
    assert "3 alarms" in line.item and line.count == 4
    assert line.hourly == pytest.approx(4 * prices.service("cloudwatch_alarm_metric_month") / HOURS_PER_MONTH)
    assert line.hourly == pytest.approx(4 * 0.10 / 730)
    assert est.idle_hourly == pytest.approx(line.hourly)  # nothing else in this assembly costs anything


def test_a_metric_math_alarm_is_billed_per_metric_stat_not_per_expression():
    assert alarm_metrics(_math_alarm("A", "B")) == (2, False)
    assert alarm_metrics(_math_alarm("A", "B", "C")) == (3, False)
    assert alarm_metrics(_alarm("A")) == (1, False)
    assert alarm_metrics(_alarm("A", period=10)) == (1, True)


def test_a_high_resolution_alarm_is_refused_rather_than_priced_as_standard(tmp_path):
    with pytest.raises(PriceError, match="high-resolution"):
        estimate(_handmade(tmp_path, {"Fast": _alarm("X", period=10)}), PriceTable())


def test_metric_filters_are_priced_per_custom_metric(tmp_path):
    """Two filters publishing the same metric are one custom metric; a third metric is one more."""
    prices = PriceTable()
    est = estimate(_handmade(tmp_path, {
        "KarpenterErrors": _metric_filter("KarpenterErrors"), "KarpenterErrorsToo": _metric_filter("KarpenterErrors"),
        "RayErrors": _metric_filter("RayErrors")}), prices)
    line = _line(est, "CloudWatch custom metrics")
    assert line.count == 2
    assert line.hourly == pytest.approx(2 * prices.service("cloudwatch_custom_metric_month") / HOURS_PER_MONTH)
    assert line.hourly == pytest.approx(2 * 0.30 / 730)


def test_the_default_platforms_alarms_and_filters_are_priced_from_its_templates(default_assembly, default_estimate):
    """Whatever alarms the templates hold (issue #14 wires them in stages.py): one line each, counted here apart."""
    alarms = [res for _, _, res in default_assembly.resources("AWS::CloudWatch::Alarm")]
    metrics = sum(sum(1 for m in a["Properties"]["Metrics"] if "MetricStat" in m) if "Metrics" in a["Properties"]
                  else 1 for a in alarms)
    filters = {(t["MetricNamespace"], t["MetricName"])
               for _, _, res in default_assembly.resources("AWS::Logs::MetricFilter")
               for t in res["Properties"]["MetricTransformations"]}
    items = {line.item.split(" (")[0]: line for line in default_estimate.idle}
    if alarms:
        assert items["CloudWatch alarm metrics"].count == metrics
    else:
        assert "CloudWatch alarm metrics" not in items
    if filters:
        assert items["CloudWatch custom metrics"].count == len(filters)
    else:
        assert "CloudWatch custom metrics" not in items


def test_prometheus_volume_is_its_claim_size_at_the_gp3_price(default_assembly, default_estimate, platform):
    values = default_assembly.helm_releases()["kube-prometheus-stack"].values
    spec = values["prometheus"]["prometheusSpec"]
    size = spec["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]
    gib = platform.config.observability.volume_gib
    assert memory_gib(size) == gib and spec.get("replicas", 1) == 1
    line = _line(default_estimate, "Prometheus volume")
    assert line.count == gib and "gp3" in line.item
    assert line.hourly == pytest.approx(gib * PriceTable().service("gp3_gb_month") / HOURS_PER_MONTH)
    assert line.hourly == pytest.approx(10 * 0.08 / 730)


def test_the_metrics_add_no_node_while_they_run_on_the_system_nodes(default_estimate):
    from charts import metrics as m

    def req(resources):
        return resources["requests"]

    containers = [m.PROMETHEUS_RESOURCES, m.RELOADER_RESOURCES, m.GRAFANA_RESOURCES, m.SIDECAR_RESOURCES,
                  m.SIDECAR_RESOURCES, m.KSM_RESOURCES, m.OPERATOR_RESOURCES]  # two Grafana sidecars: dashboards, data sources
    cpu = sum(int(req(c)["cpu"].rstrip("m")) for c in containers)
    mem = sum(int(req(c)["memory"].rstrip("Mi")) for c in containers)
    line = _line(default_estimate, "metrics (")
    assert line.item == (f"metrics (Prometheus, Grafana, kube-state-metrics, operator; {cpu}m CPU, {mem}Mi memory "
                         "requested)")
    assert line.count == 4 and line.hourly == 0 and "system nodes" in line.note


def test_metrics_pinned_to_a_karpenter_pool_keep_a_node_of_it(tmp_path, default_assembly):
    """Not the platform's placement, but the estimate must not call it free: a node of the pool, cheapest fitting."""
    from charts.metrics import MetricsValues

    pool_objects = [o for o in default_assembly.kube_objects() if o["kind"] in ("NodePool", "StorageClass")]
    (nodegroup_id, nodegroup), = [(lid, res) for _, lid, res in default_assembly.resources("AWS::EKS::Nodegroup")]
    values = MetricsValues(node_selector={"dynamic-factory/pool": "on-demand"},
                           tolerations=({"key": "dynamic-factory/pool", "operator": "Exists"},),
                           storage_class="gp3", volume_gib=20).to_values()
    # Without the cluster stack's metadata: here the metrics need no system node.
    nodegroup = {k: v for k, v in nodegroup.items() if k != "Metadata"}
    assembly = _handmade(tmp_path, {
        nodegroup_id: nodegroup,
        "Pools": {"Type": "Custom::AWSCDK-EKS-KubernetesResource", "Properties": {"Manifest": json.dumps(pool_objects)}},
        "Metrics": {"Type": "Custom::AWSCDK-EKS-HelmChart",
                    "Properties": {"Release": "kube-prometheus-stack", "Values": json.dumps(values)}}})
    prices = PriceTable()
    est = estimate(assembly, prices)
    node = _line(est, "metrics node (")
    instance_type = node.item.split("; ")[1].split(",")[0]
    assert node.count == 1 and node.unit_hourly == prices.instance(instance_type) > 0 and "on-demand pool" in node.item
    assert _line(est, "Prometheus volume").count == 20
    off = next(line for line in est.alternatives if line.item.startswith("observability off"))
    assert off.hourly == pytest.approx(-(node.hourly + _line(est, "Prometheus volume").hourly))


@pytest.mark.parametrize("region", REGIONS)
def test_observability_off_saves_what_the_synthesized_off_platform_does_not_pay(region, default_assembly,
                                                                               without_observability):
    """The alternative is computed from the metrics, volume and alarm lines of the assembly; turning the flag off and
    synthesizing again must land on exactly that idle."""
    prices = PriceTable(region=region)
    on, off = estimate(default_assembly, prices), estimate(without_observability, prices)
    (alternative,) = [line for line in on.alternatives if line.item.startswith("observability off")]
    assert alternative.hourly < 0
    assert on.idle_hourly + alternative.hourly == pytest.approx(off.idle_hourly)
    assert not any(line.item.startswith("observability off") for line in off.alternatives)
    text = render(on)
    assert "observability off (no Prometheus, Grafana or CloudWatch alarms, 1 system node fewer)" in text
    assert f"{alternative.hourly:+.4f} $/h  -> idle ${off.idle_hourly:,.4f}/h" in text


@pytest.mark.parametrize("region", REGIONS)
def test_every_region_prices_cloudwatch_alarms_and_custom_metrics_with_a_dated_source(region):
    services = _price_data()["regions"][region]["services"]
    for name in ("cloudwatch_alarm_metric_month", "cloudwatch_custom_metric_month"):
        assert services[name]["source"].startswith("https://aws.amazon.com/cloudwatch/pricing/")
        assert date.fromisoformat(services[name]["date"])
    # Standard-resolution alarm metric and first-tier custom metric: $0.10 and $0.30 a month in these regions.
    assert 0.05 <= services["cloudwatch_alarm_metric_month"]["value"] <= 0.2
    assert 0.2 <= services["cloudwatch_custom_metric_month"]["value"] <= 0.5
