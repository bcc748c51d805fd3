"""What ``python -m jobs.xgboost_validation`` prints, captured from a real run on an embedded Ray.

The job runs as a user runs it (``make job``), in a subprocess whose output is a pipe, not a terminal,
and with none of the variables the job sets for itself (RAY_AUTH_MODE, RAY_COLOR_PREFIX) inherited.
Every line must be the job's own: the start line, one progress line per checkpoint, the summary block
and the JSON summary last. Ray's lines that used to come with it, and why they are gone, are in
``jobs/train.py`` (``init_ray``, ``QuietXGBoostConfig``, ``_EmbeddedRayXGBoostTrainer``).
"""

from __future__ import annotations

import json
import os
import re
import warnings
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("xgboost")

ROOT = Path(__file__).resolve().parents[2]

ROUNDS, EVERY = 10, 5
# The lines this test was written against (Ray 2.60, XGBoost 3.2), for the failure message.
KNOWN_NOISE = ("Failed to query Ray Train Controller actor state", "Token authentication is enabled",
               " got rank ", "\x1b[")
SUMMARY_KEYS = ("data", "rows", "workers", "rounds", "time", "throughput", "validation", "threshold",
                "checkpoint", "result")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``(exit code, combined stdout + stderr)`` of one small job."""
    home = tmp_path_factory.mktemp("home")  # Ray writes the local cluster's token under ~/.ray
    storage = tmp_path_factory.mktemp("storage")
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live below it
    drop = {"RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_COLOR_PREFIX",
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "DF_CHECKPOINT_URI"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
    cmd = [sys.executable, "-m", "jobs.xgboost_validation", "--workers", "2", "--rows", "20000",
           "--features", "10", "--rounds", str(ROUNDS), "--checkpoint-every", str(EVERY),
           "--storage-path", str(storage), "--ray-temp-dir", temp_dir, "--num-cpus", "2"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return proc.returncode, proc.stdout


def test_the_run_passes(run):
    code, out = run
    assert code == 0, out[-3000:]


def test_no_colour_codes_when_the_output_is_not_a_terminal(run):
    _, out = run
    assert "\x1b" not in out, [line for line in out.splitlines() if "\x1b" in line][:5]


def test_none_of_ray_s_noise(run):
    _, out = run
    found = {noise: [line for line in out.splitlines() if noise in line][:2] for noise in KNOWN_NOISE}
    assert not any(found.values()), found


def test_every_line_is_the_job_s_own(run):
    """Start line, one progress line per checkpoint, the summary block, the JSON summary last."""
    _, out = run
    lines = out.splitlines()
    assert lines, "no output"
    assert lines[0].startswith("[xgboost-validation] embedded local Ray: ") and "device cpu" in lines[0], lines[0]
    progress = [line for line in lines if re.match(
        r"^\(RayTrainWorker pid=\d+\) \[xgboost-validation\] round \d+/\d+ validation-auc=", line)]
    assert [re.search(r"round (\d+)/", p).group(1) for p in progress] == [str(r) for r in range(EVERY, ROUNDS + 1, EVERY)]
    start = lines.index("=== XGBoost-on-Ray validation summary ===")
    block = lines[start + 1:-1]
    assert [line.split(":")[0].strip() for line in block] == list(SUMMARY_KEYS), block
    assert json.loads(lines[-1])["status"] == "passed"
    unexpected = _without_ray_transients([line for line in lines[1:start] if line not in progress])
    assert unexpected == [], unexpected


# Ray Train 2.60's controller waits 5 s for the autoscaling coordinator actor's first answer
# (ray/train/v2/_internal/execution/scaling_policy/autoscaling_coordinator_client.py,
# AUTOSCALING_REQUESTS_GET_TIMEOUT_S) and logs a traceback it calls "safe to ignore" when a slow machine starts
# that actor later; nothing the job prints or controls.
_RAY_TRANSIENT = re.compile(r"^\(TrainController pid=(\d+)\) Failed to send resource request for train-")


def _without_ray_transients(lines: list[str]) -> list[str]:
    out, owner = [], None
    for line in lines:
        m = _RAY_TRANSIENT.match(line)
        if m:
            owner = f"(TrainController pid={m.group(1)}) "
            warnings.warn("Ray Train's transient 'Failed to send resource request' (a slow machine) was skipped")
            continue
        if owner and line.startswith(owner) and not line.startswith(owner + "["):
            continue  # the traceback of that message
        owner = None
        out.append(line)
    return out
