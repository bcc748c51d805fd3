"""Benchmark: the validation job on Ray Train vs. plain single-process XGBoost at equal cores.

    python -m jobs.bench [--rows 100000 --features 20 --rounds 50 --workers 2 --cpus-per-worker 1]

Like with like: the same data (the job's synthetic set and split), the same booster parameters,
the same rounds and the same matrix type (``--matrix``, the job's default unless given: the
workers build that type too).
Plain XGBoost gets ``nthread = workers x cpus-per-worker``; Ray Train gets ``workers`` workers of
``cpus-per-worker`` CPUs each, with the job's evaluation and checkpointing every k rounds.
"Boosting" is the matrix build plus ``xgboost.train`` on both sides (``hist`` sketches its
quantiles in one or the other, depending on the matrix type); for Ray it is rank 0's, inside the
worker, evaluation and checkpoints every k rounds included. Reports both ratios (Ray fit wall time /
plain, Ray boosting / plain), Ray's fixed start-up (``ray.init`` and the wall time of a 1-round
job) and both metrics. Informational only: nothing asserts on these timings, and on a shared
machine they move with its load (the first line says what it was).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from typing import Optional, Sequence

from jobs.config import MATRICES, MAX_RAY_TEMP_DIR_CHARS, JobConfig, xgboost_params
from jobs.data import DataSpec, load_shard
from jobs.metrics import logloss, roc_auc


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    d = JobConfig()
    p = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=d.data.rows)
    p.add_argument("--features", type=int, default=d.data.features)
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--cpus-per-worker", type=int, default=d.cpus_per_worker)
    p.add_argument("--seed", type=int, default=d.data.seed)
    p.add_argument("--matrix", choices=MATRICES, default=d.matrix,
                   help="XGBoost matrix type, on both sides")
    p.add_argument("--plain-repeat", type=int, default=3,
                   help="plain XGBoost runs; the fastest counts")
    p.add_argument("--ray-repeat", type=int, default=1,
                   help="full Ray runs; the fastest counts")
    p.add_argument("--ray-temp-dir", default=None,
                   help=f"temp dir of the embedded Ray (<= {MAX_RAY_TEMP_DIR_CHARS} chars)")
    a = p.parse_args(argv)
    for flag in ("rows", "features", "rounds", "checkpoint_every", "workers", "cpus_per_worker",
                 "plain_repeat", "ray_repeat"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    if a.ray_temp_dir and len(a.ray_temp_dir) > MAX_RAY_TEMP_DIR_CHARS:
        p.error(f"--ray-temp-dir must be at most {MAX_RAY_TEMP_DIR_CHARS} characters")
    return a


def plain_xgboost(cfg: JobConfig, repeat: int = 1):
    """Single process, ``total_cpus`` threads: best of ``repeat`` (matrix build + training)."""
    import xgboost as xgb

    def build(x, y):
        if cfg.matrix == "quantile":
            return xgb.QuantileDMatrix(x, label=y, nthread=cfg.total_cpus)
        return xgb.DMatrix(x, label=y, nthread=cfg.total_cpus)

    t0 = time.monotonic()
    x, y = load_shard(cfg.data, "train")
    xv, yv = load_shard(cfg.data, "validation")
    load_s = time.monotonic() - t0
    params = xgboost_params(cfg, nthread=cfg.total_cpus)
    best = None
    for _ in range(repeat):  # best of N: the machine may be shared
        t1 = time.monotonic()
        dtrain = build(x, y)
        t2 = time.monotonic()
        booster = xgb.train(params, dtrain, num_boost_round=cfg.rounds)
        t3 = time.monotonic()
        if best is None or t3 - t1 < best[0] + best[1]:
            best = (t2 - t1, t3 - t2)
    prob = booster.predict(xgb.DMatrix(xv))
    return {"load_s": load_s, "matrix_s": best[0], "train_s": best[1],
            "total_s": best[0] + best[1], "auc": roc_auc(yv, prob),
            "logloss": logloss(yv, prob), "rounds": booster.num_boosted_rounds()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    storage = tempfile.mkdtemp(prefix="df-bench-")
    cfg = JobConfig(
        data=DataSpec(rows=a.rows, features=a.features, seed=a.seed),
        workers=a.workers, cpus_per_worker=a.cpus_per_worker, rounds=a.rounds,
        checkpoint_every=min(a.checkpoint_every, a.rounds), storage_path=storage,
        ray_temp_dir=a.ray_temp_dir, num_cpus=a.workers * a.cpus_per_worker, min_auc=None,
        matrix=a.matrix,
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"benchmark: {a.rows:,} rows x {a.features} features, {a.rounds} rounds, "
          f"{cfg.total_cpus} CPUs ({a.workers} Ray workers x {a.cpus_per_worker} CPU "
          f"vs. 1 process x {cfg.total_cpus} threads), {cfg.matrix} on both sides; "
          f"machine: {os.cpu_count()} CPUs, load {load:.2f}", flush=True)

    plain = plain_xgboost(cfg, repeat=a.plain_repeat)
    print(f"plain XGBoost : {plain['total_s']:.2f} s ({plain['matrix_s']:.2f} s matrix + "
          f"{plain['train_s']:.2f} s training, best of {a.plain_repeat}; +{plain['load_s']:.2f} s "
          f"data), AUC {plain['auc']:.4f}", flush=True)

    from jobs import train
    from jobs.xgboost_validation import evaluate
    import ray

    try:
        t0 = time.monotonic()
        train.init_ray(cfg)
        init_s = time.monotonic() - t0
        one = train.fit(dataclasses.replace(cfg, rounds=1, checkpoint_every=1), run_name="bench-1")
        runs = [train.fit(cfg, run_name=f"bench-full-{i}") for i in range(a.ray_repeat)]
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    full = min(runs, key=lambda r: r["fit_seconds"])
    auc, loss, _ = evaluate(full["booster"], cfg)
    fit_s = full["fit_seconds"]
    w = full["worker"]
    matrix_s = float(w.get("matrix_seconds", float("nan")))
    train_s = float(w.get("boost_seconds", float("nan")))
    checkpoint_s = float(w.get("checkpoint_seconds", float("nan")))
    boost_s = matrix_s + train_s

    rows = [
        (f"plain XGBoost, matrix + training (best of {a.plain_repeat})", plain["total_s"]),
        ("Ray job, trainer.fit() wall time" + (f" (best of {a.ray_repeat})" if a.ray_repeat > 1 else ""),
         fit_s),
        ("Ray job, boosting in the workers (matrix + training)", boost_s),
        ("  of which matrix build", matrix_s),
        ("  of which evaluation + checkpoints + reports", checkpoint_s),
        ("Ray start-up: ray.init()", init_s),
        ("Ray start-up: 1-round job (fit wall time)", one["fit_seconds"]),
    ]
    print("\n=== XGBoost: Ray Train vs. single process, equal cores ===")
    for name, seconds in rows:
        print(f"{name:<56} {seconds:8.2f} s")
    print(f"{'ratio Ray fit / plain':<56} {fit_s / plain['total_s']:8.2f} x")
    print(f"{'ratio Ray boosting / plain':<56} {boost_s / plain['total_s']:8.2f} x")
    print(f"{'Ray overhead in the full run (fit - boosting)':<56} {fit_s - boost_s:8.2f} s")
    print(f"{'validation AUC plain / Ray':<56} {plain['auc']:.4f} / {auc:.4f}")
    print(f"{'validation logloss plain / Ray':<56} {plain['logloss']:.4f} / {loss:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
