"""Cost as code: the estimate comes from the synthesized templates, the budget is enforced at synth."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from charts import karpenter_nodes as kn
from cost.estimate import PRICES, PriceTable, budget_problems, estimate, render
from tests.platform_synth import ROOT, model_context, synth_platform
from tools.render import Assembly


def _estimate(synth):
    return estimate(Assembly(next(synth.outdir.glob("assembly-*"))), PriceTable())


@pytest.fixture(scope="module")
def default_estimate(platform):
    return _estimate(platform)


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


def test_price_table_has_source_and_date_for_every_entry():
    data = yaml.safe_load(PRICES.read_text())
    assert data["spot_discount"]["source"] and data["spot_discount"]["date"]
    for region, table in data["regions"].items():
        for name, entry in table["services"].items():
            assert entry["source"].startswith("https://") and entry["date"], (region, name)
        assert table["instances_source"].startswith("https://") and table["instances_date"]


def test_every_instance_type_the_config_can_choose_has_a_price():
    prices = PriceTable()
    missing = [t for t, info in kn.INSTANCE_TYPES.items() if not prices.has(t)]
    assert missing == []
