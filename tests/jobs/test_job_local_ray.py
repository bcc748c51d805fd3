"""The validation job on an embedded local Ray: a smoke run, a worker-kill drill, a Parquet input,
and the GPU plan run end to end.

One local Ray serves the module (starting one takes seconds). Its temp dir must stay short:
Ray's Unix sockets live below it and Linux limits a socket path to 107 bytes. It declares two GPUs
(``--num-gpus 2``; Ray takes declared resources at their word): CPU runs never ask for them, and the
GPU run below gets them.
"""

import dataclasses
import json
import os
import shutil
import tempfile

import pytest

ray = pytest.importorskip("ray")
xgb = pytest.importorskip("xgboost")

from jobs import train  # noqa: E402
from jobs.config import MAX_RAY_TEMP_DIR_CHARS, build_parser, config_from_args  # noqa: E402
from jobs.xgboost_validation import main, run  # noqa: E402

ROUNDS = 30
EVERY = 10
KILL_AFTER = 15
# Small, but enough rows for a stable metric: the undisturbed AUC is ~0.86.
COMMON = ["--workers", "2", "--cpus-per-worker", "1", "--rows", "20000", "--features", "10",
          "--rounds", str(ROUNDS), "--checkpoint-every", str(EVERY), "--min-auc", "0.8"]


def job_config(storage, *extra):
    return config_from_args(build_parser().parse_args(
        COMMON + ["--storage-path", str(storage), "--address", "local", *extra]))


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    temp_dir = str(tmp_path_factory.mktemp("ray"))
    fallback = None
    if len(temp_dir) > MAX_RAY_TEMP_DIR_CHARS:
        temp_dir = fallback = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    assert not ray.is_initialized(), "another test left Ray running"
    with pytest.MonkeyPatch.context() as mp:
        # The job sets these for local runs; set them here so they are undone afterwards.
        for key, value in train.LOCAL_TRAIN_ENV.items():
            mp.setenv(key, value)
        started = train.init_ray(job_config(tmp_path_factory.mktemp("unused"),
                                            "--ray-temp-dir", temp_dir, "--num-cpus", "2",
                                            "--num-gpus", "2"))
        assert started
        try:
            yield temp_dir
        finally:
            ray.shutdown()
            if fallback:
                shutil.rmtree(fallback, ignore_errors=True)


@pytest.fixture(scope="module")
def baseline(local_ray, tmp_path_factory):
    """An undisturbed run through the CLI entry point (Ray already up: it is reused)."""
    storage = tmp_path_factory.mktemp("storage-smoke")
    summary_path = storage / "summary.json"
    code = main(COMMON + ["--storage-path", str(storage), "--address", "local",
                          "--run-name", "smoke", "--summary-json", str(summary_path)])
    return code, json.loads(summary_path.read_text()), storage


def checkpoint_rounds(checkpoint_dir):
    booster = xgb.Booster()
    booster.load_model(os.path.join(checkpoint_dir, train.MODEL_FILENAME))
    with open(os.path.join(checkpoint_dir, train.META_FILENAME)) as f:
        meta = json.load(f)
    return booster.num_boosted_rounds(), meta["rounds"]


def test_smoke_run_passes_and_leaves_a_full_checkpoint(baseline):
    code, summary, storage = baseline
    assert code == 0
    assert summary["status"] == "passed"
    assert 0.8 <= summary["auc"] < 0.95
    assert summary["rounds"] == ROUNDS and summary["workers"] == 2
    assert (summary["train_rows"], summary["validation_rows"]) == (16000, 4000)
    assert summary["resumed_from_round"] == 0
    assert summary["device"] == "cpu"  # the declared GPUs are not used unless asked for

    run_dir = storage / "smoke"
    final = run_dir / f"checkpoint_round_{ROUNDS:06d}"
    assert summary["checkpoint_path"] == str(final)
    assert checkpoint_rounds(final) == (ROUNDS, ROUNDS)
    # --keep-checkpoints 2 (default): the last two periodic checkpoints remain.
    kept = sorted(p.name for p in run_dir.glob("checkpoint_round_*"))
    assert kept == [f"checkpoint_round_{r:06d}" for r in (ROUNDS - EVERY, ROUNDS)]
    assert checkpoint_rounds(run_dir / kept[0]) == (ROUNDS - EVERY, ROUNDS - EVERY)


def test_a_killed_worker_is_replaced_and_training_resumes_from_the_checkpoint(
        baseline, tmp_path):
    _, undisturbed, _ = baseline
    cfg = job_config(tmp_path, "--run-name", "drill", "--max-failures", "2",
                     "--drill-kill-after-round", str(KILL_AFTER), "--drill-kill-rank", "1")
    summary = run(cfg)

    # The kill really happened: rank 1's process was SIGKILLed after round 15 of its first
    # attempt, by a task in another process, and was confirmed gone.
    kills = summary.drill["kills"]
    assert len(kills) == 1
    kill = kills[0]
    assert (kill["rank"], kill["round"], kill["resumed_from"]) == (1, KILL_AFTER, 0)
    assert kill["confirmed"] and kill["killed_by_pid"] != kill["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(kill["pid"], 0)

    # Ray Train restarted the worker group, and the new group started from the round-10
    # checkpoint (the last one before the kill) instead of from scratch ...
    assert summary.resumed_from_round == EVERY
    # ... and still delivered exactly the requested number of rounds.
    assert summary.rounds == ROUNDS
    final = tmp_path / "drill" / f"checkpoint_round_{ROUNDS:06d}"
    assert checkpoint_rounds(final) == (ROUNDS, ROUNDS)
    assert summary.passed
    assert summary.auc == pytest.approx(undisturbed["auc"], abs=0.005)
    assert summary.logloss == pytest.approx(undisturbed["logloss"], abs=0.005)


def test_a_parquet_file_is_sharded_across_the_workers(local_ray, tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.data import synthetic_rows

    x, y = synthetic_rows(0, 4000, 5, seed=1)
    columns = {f"f{i}": x[:, i] for i in range(5)}
    columns["target"] = y.astype(np.int8)
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table(columns), path)
    cfg = config_from_args(build_parser().parse_args([
        "--data", str(path), "--label-column", "target", "--workers", "2", "--rounds", "5",
        "--checkpoint-every", "5", "--storage-path", str(tmp_path / "out"), "--address", "local",
        "--min-auc", "0.7", "--matrix", "quantile"]))  # the other matrix type, through the same loop
    summary = run(cfg)
    assert (summary.rows, summary.train_rows, summary.validation_rows) == (4000, 3200, 800)
    assert summary.features == 5 and summary.rounds == 5
    assert summary.passed, summary.failures


def test_the_gpu_code_path_runs_on_declared_gpus_with_xgboost_switched_to_cpu(local_ray, tmp_path):
    """The GPU run, end to end, on a machine without a GPU: what this proves and what it does not.

    Proved: with ``--device cuda`` the job asks Ray Train for ``use_gpu`` and one GPU per worker, Ray
    schedules the workers on the (declared) GPUs, gives each its own GPU id and CUDA_VISIBLE_DEVICES,
    and each worker derives XGBoost's ``device=cuda`` from them and trains, checkpoints and reports
    through the same code as a CPU run. Not proved: CUDA. ``xgboost_device_override`` swaps the device
    XGBoost really gets to ``cpu`` at the last step (xgboost-cpu has no CUDA), and nothing else.
    """
    cfg = dataclasses.replace(
        job_config(tmp_path, "--run-name", "gpu-plan", "--device", "cuda", "--rounds", "10",
                   "--checkpoint-every", "5"),
        xgboost_device_override="cpu")
    out = train.fit(cfg)
    worker = out["worker"]
    assert out["device"] == "cuda"
    assert (worker["planned_device"], worker["device"], worker["xgboost_device"]) == ("cuda", "cuda", "cpu")
    # One GPU each, a different one per worker, and that is all each worker can see.
    assert sorted(worker["gpu_ids_by_rank"]) == [0, 1]
    assert worker["visible_devices_by_rank"] == worker["gpu_ids_by_rank"]
    assert out["booster"].num_boosted_rounds() == 10
    assert worker["last_metrics"]["validation-auc"] > 0.8


def test_auto_stays_on_cpu_where_xgboost_has_no_cuda(local_ray, tmp_path):
    if xgb.build_info().get("USE_CUDA"):
        pytest.skip("this XGBoost is built with CUDA")
    planned = train.plan_device(job_config(tmp_path, "--device", "auto"))
    assert ray.cluster_resources().get("GPU") == 2 and planned.device == "cpu"
