"""A -c override shows everywhere: the summary any synthesis prints, dist/, and `make cost`.

app.py records the effective configuration beside the assembly (platform-config.json); `python -m cost`
prices that, never cdk.json. Runs app.py as the CDK CLI does (CDK_CONTEXT_JSON, CDK_OUTDIR).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.platform_synth import model_context
from tools.summary import print_summary

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("cdk-gpu-override")
    context = model_context()
    context["platform.karpenter.gpu.enabled"] = "true"
    context["platform.cost.price_region"] = "eu-west-1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(CDK_CONTEXT_JSON=json.dumps(context), CDK_OUTDIR=str(outdir), CDK_VALIDATION="false")
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return outdir, result.stdout


def test_the_summary_of_any_synthesis_shows_the_override(gpu_run):
    _, stdout = gpu_run
    assert "gpu (up to 64 vCPU)" in stdout
    assert "nvidia-device-plugin 0.20.0" in stdout
    assert "Cost (eu-west-1): idle $" in stdout
    assert "First boot:" in stdout and ", 0 failed" in stdout


def test_the_effective_config_is_recorded_beside_the_assembly(gpu_run):
    outdir, _ = gpu_run
    recorded = json.loads((outdir / "platform-config.json").read_text())
    assert recorded["karpenter"]["gpu"]["enabled"] is True
    assert recorded["cost"]["price_region"] == "eu-west-1"


def test_make_cost_prices_what_was_synthesized(gpu_run):
    outdir, _ = gpu_run
    result = subprocess.run([sys.executable, "-m", "cost", str(outdir)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Cost estimate (eu-west-1" in result.stdout
    assert "gpu pool" in result.stdout


def test_dist_holds_the_gpu_pool(gpu_run, tmp_path, capsys):
    outdir, _ = gpu_run
    print_summary(outdir, tmp_path / "dist")
    manifests = "\n".join(p.read_text() for p in (tmp_path / "dist").glob("*/manifests/*.yaml"))
    assert "kind: NodePool\nmetadata:\n  name: gpu" in manifests
    # Deploy-time values read as placeholders, the notebook image's repository included.
    values = next((tmp_path / "dist").glob("*/helm/jupyterhub.values.yaml")).read_text()
    assert "${Fn::Sub}" not in values and "container-assets-${AWS::AccountId}-${AWS::Region}" in values


def test_cost_refuses_an_assembly_without_its_config(tmp_path):
    (tmp_path / "assembly-DynamicFactory").mkdir()
    result = subprocess.run([sys.executable, "-m", "cost", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "make synth" in result.stderr
