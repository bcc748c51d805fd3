"""The Ray Train part: per-worker training loop, trainer construction, driver-side run.

Ray Train 2.60 runs "Train V2" by default (``RAY_TRAIN_V2_ENABLED`` defaults to on), so
``ray.train.xgboost.XGBoostTrainer`` takes a ``train_loop_per_worker`` and ``fit()`` raises
``TrainingFailedError`` once ``FailureConfig.max_failures`` restarts are used up.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from typing import Any, Dict, Optional

import numpy as np
import xgboost as xgb

import ray
import ray.train
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.xgboost import XGBoostTrainer

from jobs.config import LOCAL_HEALTH_CHECK_INTERVAL_S, JobConfig, xgboost_params
from jobs.data import DataSpec, load_shard
from jobs.metrics import parse_eval_message

MODEL_FILENAME = "model.ubj"
META_FILENAME = "meta.json"
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# Set for embedded local runs only (nothing there gets preempted; polling fast is cheap).
LOCAL_TRAIN_ENV = {HEALTH_CHECK_ENV: LOCAL_HEALTH_CHECK_INTERVAL_S, PREEMPTION_WATCHER_ENV: "0"}
LOG_PREFIX = "[xgboost-validation]"


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------


def load_booster(checkpoint: Checkpoint) -> xgb.Booster:
    with checkpoint.as_directory() as path:
        booster = xgb.Booster()
        booster.load_model(os.path.join(path, MODEL_FILENAME))
        return booster


class CheckpointEveryK(xgb.callback.TrainingCallback):
    """Evaluate, checkpoint and report to Ray Train every ``every`` rounds and at the end.

    Replaces ``ray.train.xgboost.RayTrainReportCallback``, which calls ``ray.train.report``
    after *every* round; each report is a barrier through the Train controller (~2 s here).
    Round numbers are global (``Booster.num_boosted_rounds()``): XGBoost restarts its
    ``epoch`` counter at 0 when it continues a loaded booster.
    """

    def __init__(self, *, total_rounds: int, every: int, dval: xgb.DMatrix, start_round: int,
                 t0: float, drill=None, drill_rank: int = -1, drill_after: int = 0):
        self.total_rounds = total_rounds
        self.every = every
        self.dval = dval
        self.start_round = start_round
        self.t0 = t0
        self.rank = ray.train.get_context().get_world_rank()
        self.drill = drill
        self.drill_rank = drill_rank
        self.drill_after = drill_after
        self.last_metrics: Dict[str, float] = {}

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log) -> bool:
        done = model.num_boosted_rounds()
        if (self.drill is not None and self.rank == self.drill_rank and self.start_round == 0
                and done >= self.drill_after):
            ctx = ray.get_runtime_context()
            # Blocks until the drill has SIGKILLed this process (it never returns then).
            ray.get(self.drill.progress.remote(self.rank, done, self.start_round, os.getpid(),
                                               ctx.get_node_id()))
            self.drill = None
        if done % self.every == 0 or done == self.total_rounds:
            self._checkpoint_and_report(model, done)
        return False

    def _checkpoint_and_report(self, model: xgb.Booster, done: int) -> None:
        # A collective: every worker evaluates its validation shard, XGBoost all-reduces.
        metrics = parse_eval_message(model.eval_set([(self.dval, "validation")], done - 1))
        metrics.update(round=done, elapsed_s=round(time.monotonic() - self.t0, 3))
        self.last_metrics = metrics
        if self.rank == 0:
            print(f"{LOG_PREFIX} round {done}/{self.total_rounds} "
                  f"validation-auc={metrics.get('validation-auc', float('nan')):.4f} "
                  f"validation-logloss={metrics.get('validation-logloss', float('nan')):.4f} "
                  f"({metrics['elapsed_s']:.1f} s)", file=sys.__stdout__, flush=True)
        name = f"checkpoint_round_{done:06d}"
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if self.rank == 0:  # one copy of the model; the others only join the barrier
                model.save_model(os.path.join(tmp, MODEL_FILENAME))
                with open(os.path.join(tmp, META_FILENAME), "w") as f:
                    json.dump({"rounds": done, "metrics": metrics}, f)
                checkpoint = Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


def _quiet_report_log() -> None:
    """Silence Ray Train's per-report INFO line ("Reporting training result ...").

    Ray 2.60 names that module's logger with ``__file__`` instead of ``__name__``, so it is
    outside the ``ray.train`` logger tree and ``LoggingConfig(log_level=...)`` misses it.
    """
    try:
        from ray.train.v2._internal.execution import context as train_context_module
    except ImportError:  # internal module moved: keep the noise, never fail the job over it
        return
    logging.getLogger(train_context_module.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: Dict[str, Any]) -> Dict[str, Any]:
    """Runs in every Ray Train worker, inside XGBoost's collective (rabit) context."""
    t0 = time.monotonic()
    _quiet_report_log()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    spec = DataSpec(**config["data"])
    x, y = load_shard(spec, "train", rank, world)
    xv, yv = load_shard(spec, "validation", rank, world)
    dtrain = xgb.DMatrix(x, label=y)
    dval = xgb.DMatrix(xv, label=yv)
    load_s = time.monotonic() - t0

    booster: Optional[xgb.Booster] = None
    start_round = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        booster = load_booster(checkpoint)
        start_round = booster.num_boosted_rounds()
        if rank == 0:
            print(f"{LOG_PREFIX} resuming from checkpoint at round {start_round}",
                  file=sys.__stdout__, flush=True)
    total = config["rounds"]
    if start_round > total:
        raise RuntimeError(f"checkpoint has {start_round} rounds, more than the {total} requested")

    drill = config.get("drill")
    callback = CheckpointEveryK(
        total_rounds=total, every=config["checkpoint_every"], dval=dval, start_round=start_round,
        t0=t0, drill=drill, drill_rank=config.get("drill_rank", -1),
        drill_after=config.get("drill_after", 0),
    )
    t_boost = time.monotonic()
    booster = xgb.train(
        config["params"], dtrain, num_boost_round=total - start_round, xgb_model=booster,
        callbacks=[callback], verbose_eval=False,
    )
    boost_s = time.monotonic() - t_boost
    if booster.num_boosted_rounds() != total:
        raise RuntimeError(f"booster has {booster.num_boosted_rounds()} rounds, expected {total}")
    train_rows = int(xgb.collective.allreduce(np.array([len(y)], dtype=np.int64),
                                              xgb.collective.Op.SUM)[0])
    # The return value of rank 0 becomes Result.return_value.
    return {"rank": rank, "world_size": world, "start_round": start_round,
            "final_round": booster.num_boosted_rounds(), "train_rows": train_rows,
            "load_seconds": load_s, "boost_seconds": boost_s, "pid": os.getpid(),
            "last_metrics": callback.last_metrics}


# --------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------


def init_ray(cfg: JobConfig) -> bool:
    """Start/connect Ray unless already initialised. Returns True if this call started it."""
    if ray.is_initialized():
        return False
    if cfg.is_local:
        kwargs: Dict[str, Any] = dict(
            address="local",  # never attach to some `ray start` cluster by accident
            num_cpus=cfg.local_num_cpus(),
            include_dashboard=False,
            log_to_driver=True,
            logging_level=logging.WARNING,  # Ray's INFO lines, in the driver and the workers
        )
        if cfg.ray_temp_dir:
            os.makedirs(cfg.ray_temp_dir, exist_ok=True)
            kwargs["_temp_dir"] = cfg.ray_temp_dir
        ray.init(**kwargs)
    else:
        # In a Ray Jobs API submission RAY_ADDRESS is set for us; ray.init(address) connects.
        ray.init(address=cfg.address)
    return True


def build_trainer(cfg: JobConfig, run_name: str, drill=None) -> XGBoostTrainer:
    loop_config: Dict[str, Any] = {
        "data": _spec_dict(cfg.data),
        "rounds": cfg.rounds,
        "checkpoint_every": cfg.checkpoint_every,
        "params": xgboost_params(cfg, nthread=cfg.cpus_per_worker),
    }
    if cfg.is_local:
        # Train's controller polls its workers every 2 s by default; on a small local run that
        # is a large part of the wall time. Read when the trainer starts and propagated by
        # Ray Train to its controller and workers.
        for key, value in LOCAL_TRAIN_ENV.items():
            os.environ.setdefault(key, value)
    if drill is not None and cfg.drill is not None:
        loop_config.update(drill=drill, drill_rank=cfg.drill.rank, drill_after=cfg.drill.after_round)
    return XGBoostTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=cfg.workers, resources_per_worker={"CPU": cfg.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=cfg.storage_path,
            # Off (0) by default: without it one lost Spot worker fails the whole job.
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints or None),
            # Train's INFO lines (one per report per worker) drown the job's own progress.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def _spec_dict(spec: DataSpec) -> Dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(spec)


def default_run_name() -> str:
    return time.strftime("xgboost-validation-%Y%m%d-%H%M%S-") + f"{os.getpid()}"


def fit(cfg: JobConfig, run_name: Optional[str] = None) -> Dict[str, Any]:
    """Run the distributed training (Ray must be initialised). Returns a plain dict:

    ``result`` (Ray Train Result), ``booster`` (final model from the last checkpoint),
    ``fit_seconds``, ``worker`` (rank 0's return value), ``drill`` (drill report or None),
    ``run_name``.
    """
    run_name = run_name or cfg.run_name or default_run_name()
    drill = None
    if cfg.drill is not None:
        from jobs.drill import FaultDrill

        drill = FaultDrill.remote(cfg.drill.rank, cfg.drill.after_round)
    trainer = build_trainer(cfg, run_name, drill)
    t0 = time.monotonic()
    result = trainer.fit()
    fit_seconds = time.monotonic() - t0
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    booster = load_booster(result.checkpoint)
    drill_report = ray.get(drill.report.remote()) if drill is not None else None
    if drill is not None:
        ray.kill(drill)
    return {"result": result, "booster": booster, "fit_seconds": fit_seconds,
            "worker": result.return_value or {}, "drill": drill_report, "run_name": run_name}
