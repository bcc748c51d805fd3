"""Command-line arguments of the validation job, validated into one frozen ``JobConfig``.

No Ray import here: ``--help`` and argument errors are instant, and the logic is unit-tested
without a cluster.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from typing import Dict, List, Optional, Sequence

from jobs.data import FILE_FORMATS, SYNTHETIC, DataSpec, split_counts

LOCAL = "local"
# Ray puts Unix sockets under <temp dir>/session_<date>_<pid>/sockets/...; Linux caps a socket
# path at 107 bytes, which leaves roughly this much for the temp dir itself.
MAX_RAY_TEMP_DIR_CHARS = 50
DEFAULT_STORAGE_PATH = os.path.join(tempfile.gettempdir(), "dynamic-factory", "ray-results")
# On the platform's RayCluster every Ray container carries the checkpoint bucket's URI in this
# variable (charts/raycluster.py); a job submitted there checkpoints to S3 without being told.
CHECKPOINT_ENV = "DF_CHECKPOINT_URI"
# Controller poll interval for embedded local runs (Ray's default is 2 s per poll).
LOCAL_HEALTH_CHECK_INTERVAL_S = "0.2"

# Where boosting runs. "auto" asks the cluster (see ``choose_device``); the platform passes the
# answer it knows at synth time instead: the validation runner adds ``--device cuda`` when the
# RayCluster has a GPU worker group, and the JupyterHub servers carry GPU_WORKERS_ENV.
DEVICES = ("cpu", "cuda", "auto")
GPU_WORKERS_ENV = "DF_RAY_GPU_WORKERS"
# XGBoost's input matrix. ``hist`` needs quantile cuts of every feature: a DMatrix keeps a copy of
# the rows and sketches them inside the first round, a QuantileDMatrix sketches them while it is
# built and keeps only the binned data. Boosting from a QuantileDMatrix is faster, building it is
# slower: measured here (400k x 20 rows, 1 thread, 50 rounds; best of 4 on a shared 2-CPU machine)
# DMatrix 0.13 s build + 3.65 s train = 3.78 s, QuantileDMatrix 2.11 s + 2.59 s = 4.71 s. So the
# job builds a DMatrix by default; QuantileDMatrix saves memory (no copy of the rows).
MATRICES = ("dmatrix", "quantile")
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


class JobConfigError(ValueError):
    """Every problem with the arguments, one per line: ``--flag: value: what is allowed``."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("invalid arguments:\n  " + "\n  ".join(self.problems))


@dataclasses.dataclass(frozen=True)
class DrillConfig:
    """Fault drill: SIGKILL training worker ``rank`` once it finishes ``after_round`` rounds."""

    rank: int
    after_round: int


@dataclasses.dataclass(frozen=True)
class JobConfig:
    data: DataSpec = DataSpec()
    workers: int = 2
    cpus_per_worker: int = 1
    rounds: int = 50
    checkpoint_every: int = 10
    max_depth: int = 6
    learning_rate: float = 0.1
    max_failures: int = 3
    keep_checkpoints: int = 2
    storage_path: str = DEFAULT_STORAGE_PATH
    run_name: Optional[str] = None
    address: Optional[str] = None  # None/"local" = embedded local Ray
    num_cpus: Optional[int] = None  # embedded local Ray only
    num_gpus: Optional[int] = None  # embedded local Ray only (None: Ray detects them)
    ray_temp_dir: Optional[str] = None  # embedded local Ray only
    min_auc: Optional[float] = 0.8
    max_logloss: Optional[float] = None
    summary_json: Optional[str] = None
    drill: Optional[DrillConfig] = None
    # "cpu", "cuda" or "auto" (resolved by the driver once Ray is up, before the trainer exists).
    device: str = "cpu"
    matrix: str = "dmatrix"  # one of MATRICES
    # Testing only: the XGBoost device the workers really use, whatever ``device`` planned. Lets a
    # CPU-only machine run the GPU plan (GPU resources, use_gpu, device selection) end to end.
    xgboost_device_override: Optional[str] = None

    @property
    def is_local(self) -> bool:
        return self.address in (None, "", LOCAL)

    @property
    def total_cpus(self) -> int:
        return self.workers * self.cpus_per_worker

    def local_num_cpus(self) -> int:
        """CPUs the embedded Ray advertises: enough for the workers, at least the machine's."""
        if self.num_cpus is not None:
            return self.num_cpus
        return max(self.total_cpus, os.cpu_count() or 1)


def xgboost_params(cfg: JobConfig, nthread: int, device: Optional[str] = None) -> Dict:
    """The booster parameters; shared by the Ray job and the single-process benchmark.

    ``device`` is XGBoost's (2.0+) device parameter: ``cpu``, ``cuda`` or ``cuda:<ordinal>``;
    default: the config's device when it is already decided, else ``cpu``. ``tree_method`` stays
    ``hist`` on both: with ``device=cuda`` XGBoost runs the same histogram algorithm on the GPU.
    """
    if device is None:
        device = cfg.device if cfg.device in ("cpu", "cuda") else "cpu"
    return {
        "objective": "binary:logistic",
        "eval_metric": ["logloss", "auc"],
        "tree_method": "hist",
        "device": device,
        "max_depth": cfg.max_depth,
        "eta": cfg.learning_rate,
        "nthread": nthread,
        "seed": cfg.data.seed,
        "verbosity": 1,
    }


def parse_flag(name: str, value: Optional[str]) -> Optional[bool]:
    """``1/true/yes/on`` -> True, ``0/false/no/off`` -> False, unset or empty -> None."""
    if value is None or not value.strip():
        return None
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{name}={value!r}: use 1/true/yes/on or 0/false/no/off")


def choose_device(requested: str, *, local: bool, gpu_workers: Optional[bool] = None,
                  cluster_gpus: float = 0, configured_gpus: Optional[float] = None,
                  xgboost_has_cuda: bool = False) -> str:
    """``cpu`` or ``cuda`` for ``requested`` in DEVICES. Pure: the caller gathers the facts.

    ``auto`` on a cluster: ``cuda`` when the platform says it has a GPU worker group
    (``gpu_workers``, from GPU_WORKERS_ENV; it wins when set), else when the cluster has GPUs now
    (``cluster_gpus``) or its autoscaler may start nodes with GPUs (``configured_gpus``; None when the
    autoscaler did not publish its node groups). On an embedded local Ray the platform's variable
    says nothing about this machine: ``cuda`` only with local GPUs and an XGBoost built with CUDA
    (``xgboost-cpu`` is not).
    """
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {requested!r}")
    if requested != "auto":
        return requested
    if local:
        return "cuda" if cluster_gpus > 0 and xgboost_has_cuda else "cpu"
    if gpu_workers is not None:
        return "cuda" if gpu_workers else "cpu"
    return "cuda" if cluster_gpus > 0 or (configured_gpus or 0) > 0 else "cpu"


def device_problem(device: str, *, local: bool, cluster_gpus: float,
                   configured_gpus: Optional[float]) -> Optional[str]:
    """Why a ``cuda`` run could never be scheduled (Ray Train would wait for GPUs forever), or None."""
    if device != "cuda" or cluster_gpus > 0:
        return None
    if local:
        return ("--device cuda: the embedded local Ray has no GPU (ray.init found none; "
                "--num-gpus declares them)")
    if configured_gpus is not None and configured_gpus <= 0:
        return ("--device cuda: the cluster has no GPU now and its autoscaler has no node group "
                "with GPUs (is the RayCluster's gpu worker group enabled?)")
    return None  # GPU nodes may still come: the autoscaler starts them on demand


def resources_per_worker(cfg: JobConfig, device: str) -> Dict[str, float]:
    """Ray resources of one training worker: its CPUs, plus one GPU when boosting on CUDA.

    One GPU per worker: XGBoost drives one device per process, so a node with N GPUs hosts N
    workers. Ray Train then sets each worker's CUDA_VISIBLE_DEVICES to its own GPU.
    """
    resources: Dict[str, float] = {"CPU": cfg.cpus_per_worker}
    if device == "cuda":
        resources["GPU"] = 1
    return resources


def worker_xgboost_device(planned: str, gpu_ids: Sequence, visible_devices: Optional[str]) -> str:
    """XGBoost's ``device`` inside one training worker, from what Ray gave that worker.

    Ray Train's XGBoost backend does not share CUDA_VISIBLE_DEVICES between the workers of a node
    (``Backend.share_cuda_visible_devices`` is False, ray/train/backend.py), so each worker sees only
    the GPU Ray assigned to it and ``cuda`` (its ordinal 0) is that GPU. If the variable lists more
    devices (TRAIN_ENABLE_SHARE_CUDA_VISIBLE_DEVICES=1), the worker's own GPU is picked by position.
    """
    if planned != "cuda":
        return "cpu"
    if not gpu_ids:
        raise RuntimeError("the run is planned on cuda but Ray assigned this worker no GPU")
    mine = str(gpu_ids[0])
    visible = [v.strip() for v in (visible_devices or "").split(",") if v.strip()]
    if len(visible) <= 1 or mine not in visible:
        return "cuda"
    return f"cuda:{visible.index(mine)}"


def build_parser(prog: str = "python -m jobs.xgboost_validation") -> argparse.ArgumentParser:
    d = JobConfig()
    p = argparse.ArgumentParser(
        prog=prog,
        description="Distributed XGBoost on Ray Train: the platform's validation job. Trains on "
        "a deterministic synthetic data set (or a Parquet/CSV path), checkpoints every k rounds, "
        "survives lost workers, and exits non-zero when the validation metric misses the "
        "threshold. Without RAY_ADDRESS (or with --address local) it starts an embedded Ray.",
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", default=SYNTHETIC, metavar="PATH",
                   help="'synthetic' (default) or a Parquet/CSV file or directory, local or s3://")
    g.add_argument("--data-format", choices=FILE_FORMATS, default=None,
                   help="format of --data (default: from the suffix; directories are parquet)")
    g.add_argument("--label-column", default=None, help="label column of --data (default: label)")
    g.add_argument("--rows", type=int, default=None, help=f"synthetic rows (default {d.data.rows})")
    g.add_argument("--features", type=int, default=None,
                   help=f"synthetic features (default {d.data.features})")
    g.add_argument("--seed", type=int, default=d.data.seed, help="data, split and booster seed")
    g.add_argument("--validation-fraction", type=float, default=d.data.validation_fraction)

    g = p.add_argument_group("training")
    g.add_argument("--workers", type=int, default=d.workers, help="Ray Train workers")
    g.add_argument("--cpus-per-worker", type=int, default=d.cpus_per_worker,
                   help="CPUs (and XGBoost threads) per worker")
    g.add_argument("--rounds", type=int, default=d.rounds, help="boosting rounds")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="checkpoint and report every k rounds (and at the end)")
    g.add_argument("--max-depth", type=int, default=d.max_depth)
    g.add_argument("--learning-rate", type=float, default=d.learning_rate)
    g.add_argument("--max-failures", type=int, default=d.max_failures,
                   help="worker-group restarts Ray Train may do (-1 = unlimited)")
    g.add_argument("--device", choices=DEVICES, default=d.device,
                   help="where XGBoost boosts: cpu (default), cuda (one GPU per worker, "
                        f"same code path), or auto (cuda when ${GPU_WORKERS_ENV} says the cluster has "
                        "a GPU worker group, else when the cluster has or may start GPU nodes)")
    g.add_argument("--matrix", choices=MATRICES, default=d.matrix,
                   help="XGBoost input: dmatrix (default: the fastest end to end here) or quantile "
                        "(QuantileDMatrix: less memory, slower to build, faster rounds)")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints,
                   help="checkpoints kept in a local storage path (0 = all); on s3:// every checkpoint is kept: "
                        "jobs cannot delete in the platform's bucket, its lifecycle rules expire them")
    g.add_argument("--storage-path", default=os.environ.get(CHECKPOINT_ENV) or d.storage_path,
                   help=f"run output and checkpoints: local dir or s3://bucket/prefix (default: ${CHECKPOINT_ENV} "
                        "when set, as on the platform's Ray cluster, else a local temp dir)")
    g.add_argument("--run-name", default=None,
                   help="Ray Train run name (default: unique per run); reuse a name with the "
                        "same --storage-path to resume an interrupted run")

    g = p.add_argument_group("ray")
    g.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                   help="Ray address (default: $RAY_ADDRESS; unset or 'local' = embedded Ray)")
    g.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the embedded Ray (default: max(workers x cpus, machine CPUs))")
    g.add_argument("--num-gpus", type=int, default=None,
                   help="GPUs of the embedded Ray (default: what Ray detects)")
    g.add_argument("--ray-temp-dir", default=None,
                   help=f"temp/session dir of the embedded Ray (<= {MAX_RAY_TEMP_DIR_CHARS} chars)")

    g = p.add_argument_group("validation")
    g.add_argument("--min-auc", type=float, default=d.min_auc,
                   help="fail (exit 1) below this validation AUC; negative disables")
    g.add_argument("--max-logloss", type=float, default=None,
                   help="fail (exit 1) above this validation logloss")
    g.add_argument("--summary-json", default=None, metavar="PATH",
                   help="also write the machine-readable summary to PATH")

    g = p.add_argument_group("fault drill")
    g.add_argument("--drill-kill-after-round", type=int, default=None, metavar="N",
                   help="SIGKILL one training worker (from outside, via a task on its node) "
                        "once it has boosted N rounds on its first attempt")
    g.add_argument("--drill-kill-rank", type=int, default=1,
                   help="world rank of the worker the drill kills (default 1)")
    return p


def config_from_args(ns: argparse.Namespace) -> JobConfig:
    """Validate parsed arguments; raises JobConfigError listing every problem."""
    problems: List[str] = []

    def bad(flag, value, allowed):
        problems.append(f"{flag}: {value!r}: {allowed}")

    synthetic = ns.data == SYNTHETIC
    if not synthetic:
        for flag, value in (("--rows", ns.rows), ("--features", ns.features)):
            if value is not None:
                bad(flag, value, "only applies to --data synthetic")
    else:
        for flag, value in (("--data-format", ns.data_format), ("--label-column", ns.label_column)):
            if value is not None:
                bad(flag, value, "only applies to a --data path")
    defaults = DataSpec()
    rows = defaults.rows if ns.rows is None else ns.rows
    features = defaults.features if ns.features is None else ns.features

    if ns.workers < 1:
        bad("--workers", ns.workers, "must be >= 1")
    if ns.cpus_per_worker < 1:
        bad("--cpus-per-worker", ns.cpus_per_worker, "must be >= 1")
    if ns.rounds < 1:
        bad("--rounds", ns.rounds, "must be >= 1")
    if not 1 <= ns.checkpoint_every <= max(ns.rounds, 1):
        bad("--checkpoint-every", ns.checkpoint_every, f"must be in [1, --rounds={ns.rounds}]")
    if ns.max_depth < 1:
        bad("--max-depth", ns.max_depth, "must be >= 1")
    if not 0 < ns.learning_rate <= 1:
        bad("--learning-rate", ns.learning_rate, "must be in (0, 1]")
    if ns.max_failures < -1:
        bad("--max-failures", ns.max_failures, "must be >= 0, or -1 for unlimited")
    if ns.keep_checkpoints < 0:
        bad("--keep-checkpoints", ns.keep_checkpoints, "must be >= 0 (0 = keep all)")
    if not 0 < ns.validation_fraction < 1:
        bad("--validation-fraction", ns.validation_fraction, "must be in (0, 1)")
    if synthetic:
        if features < 2:
            bad("--features", features, "must be >= 2")
        elif 0 < ns.validation_fraction < 1 and ns.workers >= 1:
            if rows < 2 or min(split_counts(rows, ns.validation_fraction)) < ns.workers:
                bad("--rows", rows, f"too few: every one of the {ns.workers} workers needs at "
                                    "least one train and one validation row")
    if ns.min_auc is not None and ns.min_auc > 1:
        bad("--min-auc", ns.min_auc, "must be <= 1 (negative disables the check)")
    if ns.max_logloss is not None and ns.max_logloss <= 0:
        bad("--max-logloss", ns.max_logloss, "must be > 0")

    storage = ns.storage_path
    if not storage:
        bad("--storage-path", storage, "must be a local directory or a URI such as s3://bucket/p")
    elif "://" not in storage:
        storage = os.path.abspath(os.path.expanduser(storage))
    is_local = ns.address in (None, "", LOCAL)
    if not is_local:
        for flag, value in (("--num-cpus", ns.num_cpus), ("--num-gpus", ns.num_gpus),
                            ("--ray-temp-dir", ns.ray_temp_dir)):
            if value is not None:
                bad(flag, value, "only applies to the embedded local Ray (no --address)")
    if ns.num_cpus is not None and ns.num_cpus < ns.workers * ns.cpus_per_worker:
        bad("--num-cpus", ns.num_cpus,
            f"must be >= --workers x --cpus-per-worker = {ns.workers * ns.cpus_per_worker}")
    if ns.num_gpus is not None and ns.num_gpus < 0:
        bad("--num-gpus", ns.num_gpus, "must be >= 0")
    temp_dir = ns.ray_temp_dir
    if temp_dir is not None:
        temp_dir = os.path.abspath(os.path.expanduser(temp_dir))
        if len(temp_dir) > MAX_RAY_TEMP_DIR_CHARS:
            bad("--ray-temp-dir", temp_dir, f"must be at most {MAX_RAY_TEMP_DIR_CHARS} characters "
                "(Ray's Unix socket paths below it are limited to 107 bytes)")

    drill = None
    if ns.drill_kill_after_round is not None:
        n = ns.drill_kill_after_round
        if not ns.checkpoint_every < n < ns.rounds:
            bad("--drill-kill-after-round", n, "must be after the first checkpoint and before the "
                f"last round: --checkpoint-every ({ns.checkpoint_every}) < N < --rounds "
                f"({ns.rounds})")
        if ns.max_failures == 0:
            bad("--max-failures", 0, "must allow at least one restart when the drill kills a worker")
        if not 0 <= ns.drill_kill_rank < max(ns.workers, 1):
            bad("--drill-kill-rank", ns.drill_kill_rank, f"must be in [0, --workers={ns.workers})")
        drill = DrillConfig(rank=ns.drill_kill_rank, after_round=n)

    if problems:
        raise JobConfigError(problems)

    return JobConfig(
        data=DataSpec(
            source=ns.data,
            rows=rows,
            features=features,
            seed=ns.seed,
            validation_fraction=ns.validation_fraction,
            label_column=ns.label_column or defaults.label_column,
            file_format=ns.data_format,
        ),
        workers=ns.workers,
        cpus_per_worker=ns.cpus_per_worker,
        rounds=ns.rounds,
        checkpoint_every=ns.checkpoint_every,
        max_depth=ns.max_depth,
        learning_rate=ns.learning_rate,
        max_failures=ns.max_failures,
        keep_checkpoints=ns.keep_checkpoints,
        storage_path=storage,
        run_name=ns.run_name,
        address=None if is_local else ns.address,
        num_cpus=ns.num_cpus,
        num_gpus=ns.num_gpus,
        ray_temp_dir=temp_dir,
        min_auc=ns.min_auc if ns.min_auc is not None and ns.min_auc >= 0 else None,
        max_logloss=ns.max_logloss,
        summary_json=ns.summary_json,
        drill=drill,
        device=ns.device,
        matrix=ns.matrix,
    )


def parse_config(argv: Optional[Sequence[str]] = None) -> JobConfig:
    """argv -> JobConfig. Usage errors exit 2 through argparse, with every problem listed."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return config_from_args(ns)
    except JobConfigError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
