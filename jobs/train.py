"""The Ray Train part: per-worker training loop, trainer construction, driver-side run.

Ray Train 2.60 runs "Train V2" by default (``RAY_TRAIN_V2_ENABLED`` defaults to on), so
``ray.train.xgboost.XGBoostTrainer`` takes a ``train_loop_per_worker`` and ``fit()`` raises
``TrainingFailedError`` once ``FailureConfig.max_failures`` restarts are used up.

CPU and GPU runs share every line here; the device only changes the plan: ``use_gpu`` and one
``GPU`` per worker in the ScalingConfig, and XGBoost's ``device`` (``cuda``) in the booster
parameters (``tree_method`` stays ``hist``). Ray Train gives each GPU worker its own
CUDA_VISIBLE_DEVICES (the ``ScalingConfig.use_gpu`` docs: "1 per worker"; the XGBoost backend does
not share devices, ray/train/backend.py ``share_cuda_visible_devices = False``).

Output: one progress line per checkpoint (from the rank-0 worker) and nothing else from Ray in a
normal run; ``init_ray``, ``QuietXGBoostConfig`` and ``_EmbeddedRayXGBoostTrainer`` say which
lines they remove and why.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Dict, List, Optional

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
from ray.train.xgboost import XGBoostConfig, XGBoostTrainer

from jobs.config import (
    GPU_WORKERS_ENV,
    LOCAL_HEALTH_CHECK_INTERVAL_S,
    JobConfig,
    choose_device,
    device_problem,
    parse_flag,
    resources_per_worker,
    worker_xgboost_device,
    xgboost_params,
)
from jobs.data import DataSpec, load_shard
from jobs.metrics import parse_eval_message

MODEL_FILENAME = "model.ubj"
META_FILENAME = "meta.json"
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# Set for embedded local runs only (nothing there gets preempted; polling fast is cheap).
LOCAL_TRAIN_ENV = {HEALTH_CHECK_ENV: LOCAL_HEALTH_CHECK_INTERVAL_S, PREEMPTION_WATCHER_ENV: "0"}
LOG_PREFIX = "[xgboost-validation]"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
COLOR_PREFIX_ENV = "RAY_COLOR_PREFIX"


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
        self.checkpoint_seconds = 0.0  # evaluation + checkpoint + report, summed

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
        t = time.monotonic()
        try:
            self._evaluate_checkpoint_and_report(model, done)
        finally:
            self.checkpoint_seconds += time.monotonic() - t

    def _evaluate_checkpoint_and_report(self, model: xgb.Booster, done: int) -> None:
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


def _gpu_ids() -> List[str]:
    return [str(i) for i in ray.get_gpu_ids()]


def _by_rank(value: int, rank: int, world: int) -> List[int]:
    """Every worker's ``value`` (an int >= -1), gathered with one XGBoost all-reduce."""
    mine = np.zeros(world, dtype=np.int64)
    mine[rank] = value + 1
    return [int(v) - 1 for v in xgb.collective.allreduce(mine, xgb.collective.Op.SUM)]


def _single_id(text: Optional[str]) -> int:
    """``"3"`` -> 3; unset, empty, a list or a UUID -> -1."""
    return int(text) if text and text.strip().isdigit() else -1


def train_loop_per_worker(config: Dict[str, Any]) -> Dict[str, Any]:
    """Runs in every Ray Train worker, inside XGBoost's collective (rabit) context."""
    t0 = time.monotonic()
    _quiet_report_log()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    planned = config.get("device", "cpu")
    gpu_ids = _gpu_ids()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    device = worker_xgboost_device(planned, gpu_ids, visible)
    xgb_device = config.get("device_override") or device
    params = dict(config["params"], device=xgb_device)

    spec = DataSpec(**config["data"])
    x, y = load_shard(spec, "train", rank, world)
    xv, yv = load_shard(spec, "validation", rank, world)
    load_s = time.monotonic() - t0
    # The matrix type decides where the quantile sketch of ``hist`` happens (jobs/config.py
    # MATRICES): in the QuantileDMatrix's construction, or in the first round of a DMatrix. In a
    # collective either way merges the sketch across workers. The validation matrix of a
    # QuantileDMatrix reuses the training cuts (ref=dtrain), as XGBoost requires for evaluation.
    t_matrix = time.monotonic()
    nthread = params["nthread"]
    if config.get("matrix", "dmatrix") == "quantile":
        dtrain = xgb.QuantileDMatrix(x, label=y, nthread=nthread)
        dval = xgb.QuantileDMatrix(xv, label=yv, ref=dtrain, nthread=nthread)
    else:
        dtrain = xgb.DMatrix(x, label=y, nthread=nthread)
        dval = xgb.DMatrix(xv, label=yv, nthread=nthread)
    matrix_s = time.monotonic() - t_matrix
    del x, xv

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
        params, dtrain, num_boost_round=total - start_round, xgb_model=booster,
        callbacks=[callback], verbose_eval=False,
    )
    boost_s = time.monotonic() - t_boost
    if booster.num_boosted_rounds() != total:
        raise RuntimeError(f"booster has {booster.num_boosted_rounds()} rounds, expected {total}")
    train_rows = int(xgb.collective.allreduce(np.array([len(y)], dtype=np.int64),
                                              xgb.collective.Op.SUM)[0])
    gpu_ids_by_rank = _by_rank(_single_id(gpu_ids[0] if gpu_ids else None), rank, world)
    visible_by_rank = _by_rank(_single_id(visible), rank, world)
    # The return value of rank 0 becomes Result.return_value.
    return {"rank": rank, "world_size": world, "start_round": start_round,
            "final_round": booster.num_boosted_rounds(), "train_rows": train_rows,
            "load_seconds": load_s, "matrix_seconds": matrix_s, "boost_seconds": boost_s,
            "checkpoint_seconds": callback.checkpoint_seconds, "pid": os.getpid(),
            "planned_device": planned, "device": device, "xgboost_device": xgb_device,
            "gpu_ids_by_rank": gpu_ids_by_rank, "visible_devices_by_rank": visible_by_rank,
            "last_metrics": callback.last_metrics}


# XGBoost's collective logs "[hh:mm:ss] Task <id> got rank <n>" when it starts, at console level
# (printed whatever the verbosity). XGBoost's Python package routes native log lines through
# Python (xgboost/core.py ``_log_callback``), but the C++ side keeps that callback per thread, and
# Ray Train runs the training function in a thread of its own (``ThreadRunner``): there the line
# goes straight to the worker's stderr, which Ray forwards to the driver. One line per worker per
# attempt, before our loop even starts.
_COLLECTIVE_START = re.compile(r"Task \S+ got rank \d+\s*$")


def _xgboost_log(message: bytes) -> None:
    if _COLLECTIVE_START.search(message.decode(errors="replace")):
        return
    xgb.core._log_callback(message)  # XGBoost's own: WARNING -> warnings.warn, else print


# Module level: the native side keeps a raw pointer, so the ctypes function must never be freed.
_XGBOOST_LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(_xgboost_log)


def _route_xgboost_logs_in_this_thread() -> None:
    """Register the log callback for the current thread (XGBoost's C API XGBRegisterLogCallback)."""
    try:
        lib = xgb.core._LIB
        lib.XGBRegisterLogCallback(_XGBOOST_LOG_CALLBACK)
    except AttributeError:  # moved in a later XGBoost: the start-up line comes back, nothing else
        pass


class QuietXGBoostConfig(XGBoostConfig):
    """Ray's XGBoost backend (rabit), with XGBoost's native log lines routed in the training thread.

    Ray enters XGBoost's ``CommunicatorContext`` around our training function
    (``XGBoostConfig.train_func_context``), in the training thread; this registers XGBoost's log
    callback for that thread first, so native lines behave as in the main thread (warnings stay
    warnings), minus the collective's start-up line.
    """

    @property
    def train_func_context(self):
        parent = super().train_func_context

        @contextmanager
        def routed_logs():
            _route_xgboost_logs_in_this_thread()
            with parent():
                yield

        return routed_logs


# --------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------


def _explicit_token_auth() -> None:
    """Ask for token auth explicitly before starting an embedded Ray.

    Ray 2.60 turns token auth on for every new local cluster when RAY_AUTH_MODE is unset, and logs
    a WARNING that suggests opting out (ray/_private/worker.py:1873 ->
    ray/_private/authentication/authentication_token_setup.py:109-118, message at :83-89). We want
    it on, so we say so: with the variable set Ray says nothing (:111-114). Ray reads its C++
    config when it is imported, so after setting the variable the config is re-read, as Ray's own
    default path does (:64-68). If that hook ever moves, Ray's default (same mode) applies.
    """
    if os.environ.get(AUTH_MODE_ENV) is not None:
        return
    os.environ[AUTH_MODE_ENV] = "token"
    try:
        from ray._raylet import Config

        Config.initialize("")
    except (ImportError, AttributeError):
        del os.environ[AUTH_MODE_ENV]


def _plain_prefixes_unless_terminal() -> None:
    """Colour only on a terminal.

    The driver prints each forwarded worker line as ``(RayTrainWorker pid=...) line`` with the prefix
    wrapped in ANSI colour codes whatever the output is, unless RAY_COLOR_PREFIX=0
    (ray/_private/worker.py:2389-2395). Read per line, so setting it now covers the whole run; a
    value the user set wins.
    """
    if COLOR_PREFIX_ENV in os.environ:
        return
    if not all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr)):
        os.environ[COLOR_PREFIX_ENV] = "0"


def init_ray(cfg: JobConfig) -> bool:
    """Start/connect Ray unless already initialised. Returns True if this call started it."""
    _plain_prefixes_unless_terminal()
    if ray.is_initialized():
        return False
    if cfg.is_local:
        _explicit_token_auth()
        kwargs: Dict[str, Any] = dict(
            address="local",  # never attach to some `ray start` cluster by accident
            num_cpus=cfg.local_num_cpus(),
            include_dashboard=False,
            log_to_driver=True,
            logging_level=logging.WARNING,  # Ray's INFO lines, in the driver and the workers
        )
        if cfg.num_gpus is not None:
            kwargs["num_gpus"] = cfg.num_gpus
        if cfg.ray_temp_dir:
            os.makedirs(cfg.ray_temp_dir, exist_ok=True)
            kwargs["_temp_dir"] = cfg.ray_temp_dir
        ray.init(**kwargs)
    else:
        # In a Ray Jobs API submission RAY_ADDRESS is set for us; ray.init(address) connects.
        # WARNING: no "Connecting to existing Ray cluster ..." INFO lines in the job's log.
        ray.init(address=cfg.address, log_to_driver=True, logging_level=logging.WARNING)
    return True


def _cluster_gpus() -> tuple:
    """``(GPUs in the cluster now, GPUs its autoscaler may add or None if unknown)``."""
    now = float(ray.cluster_resources().get("GPU", 0))
    configured = None
    try:  # autoscaler v2 publishes its node groups in the GCS (KubeRay does); private API
        from ray._private.state import state

        limits = state.get_max_resources_from_cluster_config()
        if limits is not None:
            configured = float(limits.get("GPU", 0))
    except Exception:  # noqa: BLE001 - only a hint for --device auto
        configured = None
    return now, configured


def plan_device(cfg: JobConfig) -> JobConfig:
    """``cfg`` with a decided device (``auto`` resolved); fails fast on a GPU run that can never
    be scheduled. Needs Ray to be initialised."""
    now, configured = _cluster_gpus()
    device = choose_device(
        cfg.device, local=cfg.is_local,
        gpu_workers=parse_flag(GPU_WORKERS_ENV, os.environ.get(GPU_WORKERS_ENV)),
        cluster_gpus=now, configured_gpus=configured,
        xgboost_has_cuda=bool(xgb.build_info().get("USE_CUDA")))
    problem = device_problem(device, local=cfg.is_local, cluster_gpus=now,
                             configured_gpus=configured)
    if problem:
        raise RuntimeError(problem)
    return dataclasses.replace(cfg, device=device)


class _EmbeddedRayXGBoostTrainer(XGBoostTrainer):
    """The trainer for an embedded local Ray: Ray Train's defaults minus its PlacementGroupCleaner.

    Train V2 starts, for every run, a detached actor that asks the State API once a second whether
    the controller is still alive (ray/train/v2/_internal/callbacks/placement_group_callback.py:32,
    :61). The State API is served by the dashboard, which an embedded Ray here starts without (Ray
    then loads only its usage-stats module, ray/_private/services.py:1380-1385), so every query fails
    and logs "Failed to query Ray Train Controller actor state ..."
    (ray/train/v2/_internal/execution/controller/placement_group_cleaner.py:84-89), after a scan of
    the machine's processes for a GCS. That costs a process and steady CPU beside the workers and can
    never clean anything: an embedded Ray, placement groups included, ends with the driver.
    On a cluster the default trainer is used, cleaner included.
    """

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        try:
            from ray.train.v2._internal.callbacks.placement_group_callback import (
                PlacementGroupCleanerCallback,
            )
        except ImportError:  # moved in a later Ray: keep its defaults
            return callbacks
        return [c for c in callbacks if not isinstance(c, PlacementGroupCleanerCallback)]


def checkpoints_to_keep(cfg: JobConfig) -> Optional[int]:
    """Ray Train's ``num_to_keep``: none on S3, where the platform's checkpoint bucket lets jobs write but never
    delete (cdk_constructs/ray_storage.py; its lifecycle rules expire old checkpoints), so Ray's pruning would
    only log refused deletes; ``--keep-checkpoints`` (0 = all) for local storage."""
    if str(cfg.storage_path).startswith("s3://"):
        return None
    return cfg.keep_checkpoints or None


def build_trainer(cfg: JobConfig, run_name: str, drill=None) -> XGBoostTrainer:
    if cfg.device == "auto":
        cfg = plan_device(cfg)
    loop_config: Dict[str, Any] = {
        "data": _spec_dict(cfg.data),
        "rounds": cfg.rounds,
        "checkpoint_every": cfg.checkpoint_every,
        "params": xgboost_params(cfg, nthread=cfg.cpus_per_worker),
        "device": cfg.device,
        "device_override": cfg.xgboost_device_override,
        "matrix": cfg.matrix,
    }
    if cfg.is_local:
        # Train's controller polls its workers every 2 s by default; on a small local run that
        # is a large part of the wall time. Read when the trainer starts and propagated by
        # Ray Train to its controller and workers.
        for key, value in LOCAL_TRAIN_ENV.items():
            os.environ.setdefault(key, value)
    if drill is not None and cfg.drill is not None:
        loop_config.update(drill=drill, drill_rank=cfg.drill.rank, drill_after=cfg.drill.after_round)
    trainer_cls = _EmbeddedRayXGBoostTrainer if cfg.is_local else XGBoostTrainer
    return trainer_cls(
        train_loop_per_worker,
        train_loop_config=loop_config,
        xgboost_config=QuietXGBoostConfig(),
        scaling_config=ScalingConfig(
            num_workers=cfg.workers,
            use_gpu=cfg.device == "cuda",
            resources_per_worker=resources_per_worker(cfg, cfg.device),
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=cfg.storage_path,
            # Off (0) by default: without it one lost Spot worker fails the whole job.
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=checkpoints_to_keep(cfg)),
            # Train's INFO lines (one per report per worker) drown the job's own progress.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def _spec_dict(spec: DataSpec) -> Dict[str, Any]:
    return dataclasses.asdict(spec)


def default_run_name() -> str:
    return time.strftime("xgboost-validation-%Y%m%d-%H%M%S-") + f"{os.getpid()}"


def fit(cfg: JobConfig, run_name: Optional[str] = None) -> Dict[str, Any]:
    """Run the distributed training (Ray must be initialised). Returns a plain dict:

    ``result`` (Ray Train Result), ``booster`` (final model from the last checkpoint),
    ``fit_seconds``, ``worker`` (rank 0's return value), ``drill`` (drill report or None),
    ``run_name``, ``device`` (``cpu`` or ``cuda``: ``--device auto`` decided).
    """
    run_name = run_name or cfg.run_name or default_run_name()
    cfg = plan_device(cfg)
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
            "worker": result.return_value or {}, "drill": drill_report, "run_name": run_name,
            "device": cfg.device}
