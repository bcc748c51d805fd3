"""Validation job: distributed XGBoost on Ray Train.

    python -m jobs.xgboost_validation --workers 2 --rows 100000 --rounds 50 \\
        --checkpoint-every 10 --storage-path s3://bucket/ray-results --min-auc 0.8

Without ``RAY_ADDRESS`` (or with ``--address local``) it starts an embedded local Ray; submitted
through the Ray Jobs API it runs on the cluster. ``--device cuda`` (or ``auto``) boosts on GPUs
through the same code. Output: one start line, one progress line per checkpoint (from the rank-0
worker, prefixed by Ray with ``(RayTrainWorker pid=...)``, coloured only on a terminal), then a
human summary and, as the very last stdout line, the summary as one JSON object (also written
to ``--summary-json``). Exit codes: 0 passed, 1 metric below/above threshold, 2 bad arguments,
3 training failed.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional, Sequence

from jobs.config import JobConfig, parse_config
from jobs.data import check_source, load_shard, split_counts
from jobs.metrics import (
    EXIT_TRAINING_FAILED,
    JobSummary,
    format_summary,
    logloss,
    roc_auc,
    threshold_failures,
)

LOG_PREFIX = "[xgboost-validation]"


def log(msg: str) -> None:
    print(f"{LOG_PREFIX} {msg}", flush=True)


def evaluate(booster, cfg: JobConfig):
    """Exact AUC and logloss of the final model on the whole validation split (driver side)."""
    import xgboost as xgb

    xv, yv = load_shard(cfg.data, "validation")
    # The driver scores on its CPU whatever the workers trained on (a GPU run's model would
    # otherwise ask for a device the driver may not have).
    booster.set_param({"device": "cpu"})
    prob = booster.predict(xgb.DMatrix(xv))
    return roc_auc(yv, prob), logloss(yv, prob), len(yv)


def run(cfg: JobConfig) -> JobSummary:
    """Train on Ray (starting an embedded Ray if needed), score, and summarise."""
    # Bad input is not worth Ray Train's restarts: check it before any worker starts.
    n_rows = check_source(cfg.data)
    from jobs import train  # Ray is imported only when a run really starts

    started_ray = train.init_ray(cfg)
    try:
        import ray

        requested = cfg.device
        cfg = train.plan_device(cfg)
        where = "embedded local Ray" if cfg.is_local and started_ray else (
            f"Ray at {cfg.address}" if cfg.address else "the current Ray")
        resources = ray.cluster_resources()
        per_worker = f"{cfg.cpus_per_worker} CPU" + (" + 1 GPU" if cfg.device == "cuda" else "")
        log(f"{where}: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs; "
            f"{cfg.workers} workers x {per_worker}, device {cfg.device}"
            + (f" (--device {requested})" if requested != cfg.device else "")
            + f", {cfg.rounds} rounds, checkpoint every {cfg.checkpoint_every} to {cfg.storage_path}")
        out = train.fit(cfg)
    finally:
        if started_ray:
            import ray

            ray.shutdown()

    booster = out["booster"]
    if booster.num_boosted_rounds() != cfg.rounds:
        raise RuntimeError(f"final model has {booster.num_boosted_rounds()} rounds, "
                           f"expected {cfg.rounds}")
    auc, loss, n_val = evaluate(booster, cfg)
    n_train, _ = split_counts(n_rows, cfg.data.validation_fraction)
    worker = out["worker"]
    return JobSummary(
        rows=n_rows,
        train_rows=int(worker.get("train_rows", n_train)),
        validation_rows=n_val,
        features=booster.num_features(),
        workers=cfg.workers,
        cpus_per_worker=cfg.cpus_per_worker,
        rounds=booster.num_boosted_rounds(),
        checkpoint_every=cfg.checkpoint_every,
        fit_seconds=out["fit_seconds"],
        boost_seconds=float(worker.get("boost_seconds", float("nan"))),
        matrix_seconds=float(worker.get("matrix_seconds", float("nan"))),
        checkpoint_seconds=float(worker.get("checkpoint_seconds", float("nan"))),
        device=out.get("device", cfg.device),
        auc=auc,
        logloss=loss,
        min_auc=cfg.min_auc,
        max_logloss=cfg.max_logloss,
        failures=threshold_failures(auc, loss, cfg.min_auc, cfg.max_logloss),
        resumed_from_round=int(worker.get("start_round", 0)),
        checkpoint_path=out["result"].checkpoint.path,
        run_name=out["run_name"],
        ray_address=cfg.address or "local",
        data_source=cfg.data.source,
        drill=out["drill"],
    )


def write_summary(summary: JobSummary, path: Optional[str]) -> None:
    if not path:
        return
    if "://" in path:
        import pyarrow.fs as pafs

        fs, p = pafs.FileSystem.from_uri(path)
        with fs.open_output_stream(p) as f:
            f.write(summary.to_json().encode() + b"\n")
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(summary.to_json() + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_config(argv)
    t0 = time.monotonic()
    try:
        summary = run(cfg)
    except Exception as exc:  # training failed for good (restarts exhausted, bad data...)
        log(f"FAILED after {time.monotonic() - t0:.1f} s: {type(exc).__name__}: {exc}")
        return EXIT_TRAINING_FAILED
    write_summary(summary, cfg.summary_json)
    print(format_summary(summary), flush=True)
    print(summary.to_json(), flush=True)  # last line: machine-readable
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
