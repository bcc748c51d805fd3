"""Cost as code: the estimate comes from the synthesized templates, the budget is enforced at synth."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from datetime import date

import pytest
import yaml

from charts import karpenter_nodes as kn
from cost.estimate import PRICES, Pool, PriceError, PriceTable, budget_problems, cheapest_per_vcpu, estimate, render
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
def bigger(tmp_path_factory):
    """One more system node and one more NAT gateway than the default, nothing else changed."""
    return _estimate(synth_platform(tmp_path_factory.mktemp("cost"), {
        "platform.cluster.system_nodes.desired_size": 3,
        "platform.cluster.system_nodes.max_size": 3,
        "platform.network.nat_gateways": 2,
    }))


def test_default_idles_within_thirty_cents(default_estimate):
    assert default_estimate.idle_hourly <= 0.30


def test_idle_follows_system_nodes_and_nat_gateways_by_the_table_price(default_estimate, bigger):
    prices = PriceTable()
    expected = prices.instance("t3a.large") + prices.service("nat_gateway_hour")
    assert bigger.idle_hourly - default_estimate.idle_hourly == pytest.approx(expected)


def test_idle_lines_name_what_runs(default_estimate):
    items = " | ".join(line.item for line in default_estimate.idle)
    for what in ("EKS control plane", "NAT gateway", "system nodes (t3a.large)", "Ray head", "KMS keys"):
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
    assert budget_problems(default_estimate, max_idle=0.30, max_ceiling=None) == []
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
    differs = (prices.service("nat_gateway_hour") != base.service("nat_gateway_hour")
               or prices.service("eks_cluster_hour") != base.service("eks_cluster_hour")
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


@pytest.mark.parametrize("region", sorted(yaml.safe_load(PRICES.read_text())["regions"]))
def test_the_default_budget_admits_the_default_platform_in_every_priced_region(platform, region):
    """A user who only sets cost.price_region to where they deploy must not be refused by the default budget,
    and the default budget must still refuse an extra always-on node (the Ray head on its own on-demand node)."""
    from config import CostConfig

    est = estimate(Assembly(platform.outdir / "assembly-DynamicFactory"), PriceTable(region=region))
    budget = CostConfig().max_idle_usd_per_hour
    assert budget_problems(est, budget, None) == []
    extra_node = next(line for line in est.alternatives if "own on-demand node" in line.item)
    assert est.idle_hourly + extra_node.hourly > budget


# ------------------------------------------------------------------------------------- logs


def test_logs_are_priced_per_gb_for_the_shipped_groups(default_estimate, platform):
    from charts.log_shipping import log_group_names

    logs = default_estimate.logs
    prices = PriceTable()
    assert logs.ingest_per_gb == prices.service("logs_ingest_gb") == 0.50
    assert logs.storage_per_gb_month == prices.service("logs_storage_gb_month") == 0.03
    assert {name for name, _ in logs.groups} == set(log_group_names(platform.config.cluster.name).values())
    assert {days for _, days in logs.groups} == {platform.config.logs.retention_days}
    assert logs.per_gb_shipped() == pytest.approx(0.50 + 0.03 * platform.config.logs.retention_days / 30)
    text = render(default_estimate)
    section = text[text.index("Logs of Ray jobs"):]
    assert "$0.5000 per GB" in section and "$0.0300 per GB-month" in section and "kept 30 days" in section


def test_the_log_shipper_adds_nothing_to_idle_while_it_fits_the_system_nodes(default_estimate):
    (shipper,) = [line for line in default_estimate.idle if line.item.startswith("log shipper")]
    assert shipper.count == 2 and shipper.hourly == 0 and "25m CPU, 64Mi" in shipper.item
    # The logs' per-GB prices are in no hourly total.
    assert default_estimate.idle_hourly == pytest.approx(sum(line.hourly for line in default_estimate.idle))
    assert default_estimate.idle_hourly <= 0.30


@pytest.mark.parametrize("region", REGIONS)
def test_every_region_prices_logs_with_a_dated_source(region):
    services = _price_data()["regions"][region]["services"]
    for name in ("logs_ingest_gb", "logs_storage_gb_month"):
        assert services[name]["source"].startswith("https://") and date.fromisoformat(services[name]["date"])
    # Ingestion is the larger price everywhere (AWS: ~$0.50-0.76/GB against ~$0.03/GB-month).
    assert 0.4 <= services["logs_ingest_gb"]["value"] <= 1.0 and 0.02 <= services["logs_storage_gb_month"]["value"] <= 0.05
