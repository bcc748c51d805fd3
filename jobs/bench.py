"""Benchmark: the validation job on Ray Train vs. plain single-process XGBoost at equal cores.

    python -m jobs.bench [--rows 100000 --features 20 --rounds 50 --workers 2 --cpus-per-worker 1]

Same data (the job's synthetic set and split), same booster parameters, same rounds. Plain
XGBoost gets ``nthread = workers x cpus-per-worker``; Ray Train gets ``workers`` workers of
``cpus-per-worker`` CPUs each, with the job's checkpointing. Reports both times, their ratio,
Ray's fixed start-up overhead (``ray.init`` and a 1-round run of the job) and both metrics.
Informational only: nothing asserts on these timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from typing import Optional, Sequence

from jobs.config import MAX_RAY_TEMP_DIR_CHARS, JobConfig, xgboost_params
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
    p.add_argument("--plain-repeat", type=int, default=3,
                   help="plain XGBoost runs; the fastest counts (Ray runs once: it is slow)")
    p.add_argument("--ray-temp-dir", default=None,
                   help=f"temp dir of the embedded Ray (<= {MAX_RAY_TEMP_DIR_CHARS} chars)")
    a = p.parse_args(argv)
    for flag in ("rows", "features", "rounds", "checkpoint_every", "workers", "cpus_per_worker",
                 "plain_repeat"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    if a.ray_temp_dir and len(a.ray_temp_dir) > MAX_RAY_TEMP_DIR_CHARS:
        p.error(f"--ray-temp-dir must be at most {MAX_RAY_TEMP_DIR_CHARS} characters")
    return a


def plain_xgboost(cfg: JobConfig, repeat: int = 1):
    import xgboost as xgb

    t0 = time.monotonic()
    x, y = load_shard(cfg.data, "train")
    xv, yv = load_shard(cfg.data, "validation")
    dtrain = xgb.DMatrix(x, label=y)
    load_s = time.monotonic() - t0
    times = []
    for _ in range(repeat):  # best of N: the machine may be shared
        t1 = time.monotonic()
        booster = xgb.train(xgboost_params(cfg, nthread=cfg.total_cpus), dtrain,
                            num_boost_round=cfg.rounds)
        times.append(time.monotonic() - t1)
    train_s = min(times)
    prob = booster.predict(xgb.DMatrix(xv))
    return {"load_s": load_s, "train_s": train_s, "auc": roc_auc(yv, prob),
            "logloss": logloss(yv, prob), "rounds": booster.num_boosted_rounds()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    storage = tempfile.mkdtemp(prefix="df-bench-")
    cfg = JobConfig(
        data=DataSpec(rows=a.rows, features=a.features, seed=a.seed),
        workers=a.workers, cpus_per_worker=a.cpus_per_worker, rounds=a.rounds,
        checkpoint_every=min(a.checkpoint_every, a.rounds), storage_path=storage,
        ray_temp_dir=a.ray_temp_dir, num_cpus=a.workers * a.cpus_per_worker, min_auc=None,
    )
    print(f"benchmark: {a.rows:,} rows x {a.features} features, {a.rounds} rounds, "
          f"{cfg.total_cpus} CPUs ({a.workers} Ray workers x {a.cpus_per_worker} CPU "
          f"vs. 1 process x {cfg.total_cpus} threads)", flush=True)

    plain = plain_xgboost(cfg, repeat=a.plain_repeat)
    print(f"plain XGBoost : {plain['train_s']:.2f} s training (best of {a.plain_repeat}) "
          f"(+{plain['load_s']:.2f} s data), AUC {plain['auc']:.4f}", flush=True)

    from jobs import train
    from jobs.xgboost_validation import evaluate
    import ray

    try:
        t0 = time.monotonic()
        train.init_ray(cfg)
        init_s = time.monotonic() - t0
        one = train.fit(dataclasses.replace(cfg, rounds=1, checkpoint_every=1), run_name="bench-1")
        full = train.fit(cfg, run_name="bench-full")
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    auc, loss, _ = evaluate(full["booster"], cfg)
    fit_s = full["fit_seconds"]
    boost_s = float(full["worker"].get("boost_seconds", float("nan")))

    rows = [
        (f"plain XGBoost, training (best of {a.plain_repeat})", plain["train_s"]),
        ("Ray job, trainer.fit() wall time", fit_s),
        ("Ray job, boosting inside the workers", boost_s),
        ("Ray start-up: ray.init()", init_s),
        ("Ray start-up: 1-round job (fit wall time)", one["fit_seconds"]),
    ]
    print("\n=== XGBoost: Ray Train vs. single process, equal cores ===")
    for name, seconds in rows:
        print(f"{name:<44} {seconds:8.2f} s")
    print(f"{'ratio Ray fit / plain':<44} {fit_s / plain['train_s']:8.2f} x")
    print(f"{'ratio Ray boosting / plain':<44} {boost_s / plain['train_s']:8.2f} x")
    print(f"{'Ray overhead in the full run (fit - boosting)':<44} {fit_s - boost_s:8.2f} s")
    print(f"{'validation AUC plain / Ray':<44} {plain['auc']:.4f} / {auc:.4f}")
    print(f"{'validation logloss plain / Ray':<44} {plain['logloss']:.4f} / {loss:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
