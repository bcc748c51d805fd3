"""Submit the XGBoost validation job to the platform's Ray cluster from a notebook.

    from ray_submit import run_validation, plot_metric
    result = run_validation(workers=2, rows=100_000, rounds=50)
    plot_metric(result.progress, "validation-auc")

Everything the JupyterHub single-user server needs is in its environment (set by the z2jh values,
``charts/jupyterhub_values.py``):

* ``RAY_ADDRESS``: the Ray Jobs API of the head, ``http://ray-head-svc.ray.svc.cluster.local:8265``.
* ``RAY_AUTH_TOKEN_PATH`` (+ ``RAY_AUTH_MODE=token``): Ray's token authentication; the file is the Kubernetes
  Secret ``ray-auth-token`` mounted read-only, so the token is not in the environment. ``RAY_AUTH_TOKEN`` (the
  token itself) is honoured first, as Ray does. Sent as ``Authorization: Bearer <token>``.
* ``DF_RAY_GPU_WORKERS`` (``1``/``0``): whether the RayCluster has a GPU worker group. When set, the job is
  submitted with ``--device cuda`` (or ``cpu``); unset, the job runs on its default (CPU).

The job and its pinned dependencies are in the cluster's Ray image (``jobs`` at /opt/dynamic-factory/jobs,
``images/ray/``), so a submission carries only what its caller asks for in ``runtime_env``: ``env_vars``,
extra ``pip`` packages, a ``working_dir``, and, with ``ship_jobs=True``, this checkout's ``jobs/`` package
(``py_modules``, ahead of the image's copy) to run modified job code. The entrypoint runs on the head,
which advertises no CPUs; it asks for none, and Ray Train schedules the workers on the worker groups.

In the notebook image this module and ``jobs/`` are importable from any directory (``PYTHONPATH``, see
``images/notebook/Dockerfile``); in a clone, open the notebook from ``notebooks/``.

Only ``make_client`` and ``plot_metric`` import Ray / matplotlib; the rest is plain Python, unit-tested
without a cluster (``tests/unit/test_notebook.py``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence


def _import_job_submit():
    """``jobs.submit``: importable in the notebook image (PYTHONPATH) or found beside this file in a clone."""
    try:
        from jobs import submit
    except ImportError:
        root = Path(__file__).resolve().parent.parent
        if (root / "jobs" / "submit.py").is_file():
            sys.path.insert(0, str(root))
        from jobs import submit
    return submit


_job_submit = _import_job_submit()

# The pins live once, in jobs/requirements.txt (checked against versions.py by the tests).
RAY_VERSION = _job_submit.pinned_ray_version()

JOB_MODULE = "jobs.xgboost_validation"
ADDRESS_ENV = "RAY_ADDRESS"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
# Set by the platform's JupyterHub values: "1" when the RayCluster has a GPU worker group, "0" when not.
GPU_WORKERS_ENV = "DF_RAY_GPU_WORKERS"
DEVICES = ("cpu", "cuda", "auto")
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})
# The job prints its summary as the last stdout line: a JSON object, optionally after this prefix.
SUMMARY_PREFIX = "XGBOOST_VALIDATION_SUMMARY "
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})

# "[xgboost-validation] round 10/50 validation-auc=0.9123 validation-logloss=0.3456 (1.2 s)", possibly
# prefixed by Ray's "(RayTrainWorker pid=..., ip=...)" when it comes from a worker.
_PROGRESS_RE = re.compile(
    r"round (?P<round>\d+)/(?P<total>\d+)\s+(?P<metrics>(?:[\w.-]+=[-+\w.]+\s*)+)"
)
_METRIC_RE = re.compile(r"(?P<name>[\w.-]+)=(?P<value>[-+\w.]+)")


class RaySubmitError(RuntimeError):
    """The job could not be submitted or did not produce a summary."""


# --------------------------------------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------------------------------------


def ray_address(env: Optional[Mapping[str, str]] = None) -> str:
    """The Jobs API address from ``RAY_ADDRESS``; a clear error when it is missing."""
    env = os.environ if env is None else env
    address = (env.get(ADDRESS_ENV) or "").strip()
    if not address:
        raise RaySubmitError(
            f"{ADDRESS_ENV} is not set. On the platform's JupyterHub every server has it "
            "(http://ray-head-svc.ray.svc.cluster.local:8265); elsewhere, port-forward the head "
            "(kubectl -n ray port-forward svc/ray-head-svc 8265) and set "
            f"{ADDRESS_ENV}=http://127.0.0.1:8265"
        )
    if not re.match(r"^https?://[^/\s]+(:\d+)?/?$", address):
        raise RaySubmitError(f"{ADDRESS_ENV}={address!r}: the Jobs API needs an http(s)://host:port address")
    return address.rstrip("/")


def auth_headers(env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` from ``RAY_AUTH_TOKEN``, else from the file ``RAY_AUTH_TOKEN_PATH``
    names (Ray 2.60's own order); ``{}`` when token auth is off."""
    env = os.environ if env is None else env
    token = (env.get(TOKEN_ENV) or "").strip()
    path = (env.get(TOKEN_PATH_ENV) or "").strip()
    if not token and path:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise RaySubmitError(f"{TOKEN_PATH_ENV}={path}: cannot read the Ray token ({exc.strerror}): the Secret "
                                 "ray-auth-token is missing in the jupyterhub namespace, or the server predates "
                                 "it (restart it)") from None
    if token:
        return _job_submit.auth_headers(token)
    if (env.get(AUTH_MODE_ENV) or "").strip().lower() == "token":
        raise RaySubmitError(f"{AUTH_MODE_ENV}=token but neither {TOKEN_ENV} nor the file {TOKEN_PATH_ENV} names "
                             "holds a token: the Secret ray-auth-token is missing in the jupyterhub namespace, or "
                             "the server predates it (restart it)")
    return {}


def make_client(env: Optional[Mapping[str, str]] = None, client_cls: Optional[Callable[..., Any]] = None):
    """A ``JobSubmissionClient`` for ``RAY_ADDRESS`` with the token header."""
    address = ray_address(env)
    headers = auth_headers(env)
    if client_cls is None:
        from ray.job_submission import JobSubmissionClient as client_cls  # noqa: N813
    return client_cls(address, headers=headers or None)


def check_local_ray_version(expected: str = RAY_VERSION) -> Optional[str]:
    """A warning text when the notebook's Ray differs from the cluster's, else None."""
    try:
        import ray
    except ImportError:
        return "Ray is not installed in this notebook image: pip install 'ray[default]==%s'" % expected
    if ray.__version__ != expected:
        return f"notebook Ray {ray.__version__} != cluster Ray {expected}: job submission may fail"
    return None


# --------------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------------


def find_jobs_dir(start: Optional[os.PathLike] = None) -> Path:
    """The ``jobs/`` package: in ``start`` (default: cwd) or its parents, else the importable one
    (the notebook image ships it under /opt/dynamic-factory)."""
    here = Path(start or Path.cwd()).resolve()
    if start is None:
        return Path(_job_submit.JOBS_DIR)
    for directory in (here, *here.parents):
        candidate = directory / "jobs"
        if (candidate / "xgboost_validation.py").is_file() and (candidate / "__init__.py").is_file():
            return candidate
    raise RaySubmitError(f"no jobs/ package (with xgboost_validation.py) in {here} or its parents: "
                         "open the notebook from a clone of the repository")


def build_entrypoint(workers: int, rows: int, rounds: int, extra_args: Sequence[str] = (),
                     device: Optional[str] = None) -> str:
    """``python -m jobs.xgboost_validation --workers N --rows R --rounds K [--device D] [extra args]``,
    shell-quoted. ``device`` None leaves the job's default (cpu)."""
    for name, value in (("workers", workers), ("rows", rows), ("rounds", rounds)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(extra_args, str):
        raise ValueError("extra_args must be a sequence of arguments, not one string")
    args = ["--workers", str(workers), "--rows", str(rows), "--rounds", str(rounds)]
    if device is not None:
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if any(str(a) == "--device" or str(a).startswith("--device=") for a in extra_args):
            raise ValueError("give the device once: as device=..., not also in extra_args")
        args += ["--device", device]
    return _job_submit.entrypoint([*args, *map(str, extra_args)])


def gpu_workers(env: Optional[Mapping[str, str]] = None) -> Optional[bool]:
    """``DF_RAY_GPU_WORKERS``: True/False when the platform set it, None when unset."""
    env = os.environ if env is None else env
    raw = env.get(GPU_WORKERS_ENV)
    if raw is None or not raw.strip():
        return None
    value = raw.strip().lower()
    if value not in _TRUE | _FALSE:
        raise RaySubmitError(f"{GPU_WORKERS_ENV}={raw!r}: use 1 (the Ray cluster has a GPU worker group) or 0")
    return value in _TRUE


def default_device(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The job's ``--device`` from ``DF_RAY_GPU_WORKERS``: ``cuda``, ``cpu``, or None (unset: job default)."""
    has_gpus = gpu_workers(env)
    return None if has_gpus is None else ("cuda" if has_gpus else "cpu")


def build_runtime_env(env_vars: Optional[Mapping[str, str]] = None, *, pip: Sequence[str] = (),
                      working_dir: Optional[os.PathLike] = None, ship_jobs: bool = False,
                      jobs_dir: Optional[os.PathLike] = None) -> Dict[str, Any]:
    """The job's ``runtime_env``: empty unless asked (the cluster image has the job and its pins).

    ``env_vars``: environment of the job's processes. ``pip``: extra packages for this job only.
    ``working_dir``: a directory uploaded as the job's working directory. ``ship_jobs``: upload the
    ``jobs/`` package (``jobs_dir``, default :func:`find_jobs_dir`) to run modified job code.
    """
    if ship_jobs:
        jobs_dir = Path(jobs_dir) if jobs_dir is not None else find_jobs_dir()
        if not (jobs_dir / "__init__.py").is_file() or not (jobs_dir / "xgboost_validation.py").is_file():
            raise RaySubmitError(f"{jobs_dir} is not the jobs package (needs __init__.py and xgboost_validation.py)")
        if jobs_dir.name != "jobs":
            raise RaySubmitError(f"{jobs_dir}: the package directory must be named 'jobs' (the entrypoint "
                                 f"runs python -m {JOB_MODULE})")
    return _job_submit.runtime_env(env_vars, pip=list(pip), working_dir=str(working_dir) if working_dir else None,
                                   ship_jobs=ship_jobs, jobs_dir=jobs_dir or _job_submit.JOBS_DIR)


def submit(client, entrypoint: str, runtime_env: Optional[Mapping[str, Any]] = None,
           submission_id: Optional[str] = None, metadata: Optional[Mapping[str, str]] = None) -> str:
    """Submit; returns the submission id. No entrypoint resources: the driver runs on the head (0 CPUs).
    An empty ``runtime_env`` is not sent at all."""
    kwargs: Dict[str, Any] = {"entrypoint": entrypoint}
    if runtime_env:
        kwargs["runtime_env"] = dict(runtime_env)
    if submission_id:
        kwargs["submission_id"] = submission_id
    if metadata:
        kwargs["metadata"] = dict(metadata)
    return client.submit_job(**kwargs)


def _status_name(status: Any) -> str:
    return str(getattr(status, "value", status)).upper()


def follow_logs(client, job_id: str, sink: Callable[[str], None] = print, poll_s: float = 2.0,
                timeout_s: Optional[float] = None, sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> tuple[str, str]:
    """Print new log output until the job ends; returns ``(final status, full logs)``.

    Polls ``get_job_logs`` (synchronous: a notebook's running event loop rules out ``asyncio.run`` of
    ``tail_job_logs``). ``timeout_s`` stops following, not the job.
    """
    printed = 0
    start = clock()
    while True:
        status = _status_name(client.get_job_status(job_id))
        logs = client.get_job_logs(job_id) or ""
        terminal = status in TERMINAL_STATUSES
        # Whole lines only while the job runs (a line may still be growing); the rest at the end.
        end = len(logs) if terminal else logs.rfind("\n", printed) + 1
        if end > printed:
            sink(logs[printed:end].rstrip("\n"))
            printed = end
        if terminal:
            return status, logs
        if timeout_s is not None and clock() - start > timeout_s:
            raise RaySubmitError(f"job {job_id} still {status} after {timeout_s:g} s (it keeps running; "
                                 f"stop it with client.stop_job({job_id!r}))")
        sleep(poll_s)


# --------------------------------------------------------------------------------------------------------
# Output parsing
# --------------------------------------------------------------------------------------------------------


def parse_summary(logs: str) -> Dict[str, Any]:
    """The job's summary: the last log line that is a JSON object (optionally after ``SUMMARY_PREFIX``)."""
    for raw in reversed(logs.splitlines()):
        line = raw.strip()
        if line.startswith(SUMMARY_PREFIX):
            line = line[len(SUMMARY_PREFIX):].strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and ("status" in value or "auc" in value):
            return value
    raise RaySubmitError("no JSON summary line in the job's output (did the job fail before the end? "
                         "see the logs above)")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def parse_progress(logs: str) -> List[Dict[str, float]]:
    """Per-checkpoint metrics from the job's progress lines, one dict per round (last report wins)."""
    by_round: Dict[int, Dict[str, float]] = {}
    for line in logs.splitlines():
        m = _PROGRESS_RE.search(line)
        if not m:
            continue
        entry: Dict[str, float] = {"round": int(m.group("round")), "total": int(m.group("total"))}
        for metric in _METRIC_RE.finditer(m.group("metrics")):
            entry[metric.group("name")] = _number(metric.group("value"))
        by_round[entry["round"]] = entry
    return [by_round[r] for r in sorted(by_round)]


def plot_metric(progress: Sequence[Mapping[str, float]], metric: str = "validation-auc", ax=None):
    """Plot ``metric`` per round with matplotlib; returns the Axes, or None (with a note) without it."""
    points = [(p["round"], p[metric]) for p in progress if metric in p and not math.isnan(p[metric])]
    if not points:
        print(f"no {metric!r} values to plot", file=sys.stderr)
        return None
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; values per round: "
              + ", ".join(f"{r}: {v:.4f}" for r, v in points), file=sys.stderr)
        return None
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    rounds, values = zip(*points)
    ax.plot(rounds, values, marker="o")
    ax.set_xlabel("boosting round")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per round")
    ax.grid(True, alpha=0.3)
    return ax


# --------------------------------------------------------------------------------------------------------
# One call
# --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class JobResult:
    job_id: str
    status: str
    summary: Dict[str, Any]
    progress: List[Dict[str, float]]
    logs: str

    @property
    def passed(self) -> bool:
        return self.status == "SUCCEEDED" and self.summary.get("status", "passed") == "passed"


def run_validation(workers: int = 2, rows: int = 100_000, rounds: int = 50,
                   extra_args: Iterable[str] = (), client=None, jobs_dir: Optional[os.PathLike] = None,
                   sink: Callable[[str], None] = print, poll_s: float = 2.0,
                   timeout_s: Optional[float] = None, *, device: Optional[str] = None,
                   env_vars: Optional[Mapping[str, str]] = None, pip: Sequence[str] = (),
                   working_dir: Optional[os.PathLike] = None, ship_jobs: bool = False) -> JobResult:
    """Submit the validation job, follow its logs, and return its parsed summary and progress.

    ``device``: ``cpu``, ``cuda`` or ``auto`` (default: from ``DF_RAY_GPU_WORKERS``, else the job's own
    default, cpu). ``env_vars``, ``pip``, ``working_dir``, ``ship_jobs`` (with ``jobs_dir``): the
    ``runtime_env`` extras of :func:`build_runtime_env`; none by default.
    """
    if device is None:
        device = default_device()
    entrypoint = build_entrypoint(workers, rows, rounds, list(extra_args), device=device)
    runtime_env = build_runtime_env(env_vars, pip=pip, working_dir=working_dir, ship_jobs=ship_jobs,
                                    jobs_dir=jobs_dir)
    client = client or make_client()
    job_id = submit(client, entrypoint, runtime_env, metadata={"submitted-from": "jupyterhub"})
    sink(f"submitted {job_id}: {entrypoint}")
    status, logs = follow_logs(client, job_id, sink=sink, poll_s=poll_s, timeout_s=timeout_s)
    progress = parse_progress(logs)
    try:
        summary = parse_summary(logs)
    except RaySubmitError:
        if status == "SUCCEEDED":
            raise
        raise RaySubmitError(f"job {job_id} ended {status} without a summary; see the logs above") from None
    return JobResult(job_id=job_id, status=status, summary=summary, progress=progress, logs=logs)
