"""Metrics, the pass/fail decision and the job summary. Pure numpy: no Ray, no XGBoost."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Dict, List, Optional

import numpy as np

# Exit codes of ``python -m jobs.xgboost_validation`` (argparse itself exits 2 on bad usage).
EXIT_OK = 0
EXIT_METRIC_FAILED = 1
EXIT_USAGE = 2
EXIT_TRAINING_FAILED = 3

SUMMARY_PREFIX = "XGBOOST_VALIDATION_SUMMARY "


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted as one half)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} != {s.shape[0]}")
    n_pos = float((y == 1).sum())
    n_neg = float((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty_like(s)
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def logloss(y_true, prob, eps: float = 1e-15) -> float:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.clip(np.asarray(prob, dtype=np.float64).ravel(), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def parse_eval_message(message: str) -> Dict[str, float]:
    """Parse XGBoost's ``Booster.eval_set`` string: ``"[9]\\tvalidation-auc:0.91\\t..."``."""
    out: Dict[str, float] = {}
    for part in message.strip().split("\t")[1:]:
        name, sep, value = part.rpartition(":")
        if not sep or not name:
            raise ValueError(f"cannot parse evaluation entry {part!r} in {message!r}")
        out[name] = float(value)
    return out


def threshold_failures(
    auc: float, loss: float, min_auc: Optional[float], max_logloss: Optional[float]
) -> List[str]:
    """Reasons the metric fails the validation thresholds (empty list = pass)."""
    failures = []
    if min_auc is not None and not (auc >= min_auc):  # NaN fails
        failures.append(f"validation AUC {auc:.4f} is below the minimum {min_auc:.4f}")
    if max_logloss is not None and not (loss <= max_logloss):
        failures.append(f"validation logloss {loss:.4f} is above the maximum {max_logloss:.4f}")
    return failures


@dataclasses.dataclass
class JobSummary:
    """What a run did and how well the model scores. ``to_json`` is the machine interface."""

    rows: int
    train_rows: int
    validation_rows: int
    features: int
    workers: int
    cpus_per_worker: int
    rounds: int
    checkpoint_every: int
    fit_seconds: float
    boost_seconds: float
    auc: float
    logloss: float
    min_auc: Optional[float] = None
    max_logloss: Optional[float] = None
    failures: List[str] = dataclasses.field(default_factory=list)
    resumed_from_round: int = 0
    checkpoint_path: Optional[str] = None
    run_name: Optional[str] = None
    ray_address: Optional[str] = None
    data_source: str = "synthetic"
    drill: Optional[Dict] = None  # fault-drill report (kills) when the drill ran
    # Rank 0's split of its time: building the QuantileDMatrix (sketch merged across workers),
    # and the part of ``boost_seconds`` spent evaluating, checkpointing and reporting.
    matrix_seconds: float = float("nan")
    checkpoint_seconds: float = float("nan")
    device: str = "cpu"  # where XGBoost boosted: cpu or cuda

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_METRIC_FAILED

    @property
    def rows_per_second(self) -> float:
        """Training rows per second of wall-clock ``trainer.fit()`` time."""
        return self.train_rows / self.fit_seconds if self.fit_seconds > 0 else float("nan")

    @property
    def row_rounds_per_second(self) -> float:
        """Training rows x boosting rounds per second of boosting time (inside the workers)."""
        if self.boost_seconds <= 0:
            return float("nan")
        return self.train_rows * max(self.rounds - self.resumed_from_round, 0) / self.boost_seconds

    def to_dict(self) -> Dict:
        d = dataclasses.asdict(self)
        d.update(
            status="passed" if self.passed else "failed",
            exit_code=self.exit_code,
            rows_per_second=self.rows_per_second,
            row_rounds_per_second=self.row_rounds_per_second,
        )
        return {k: _json_safe(v) for k, v in d.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, float):
        return round(value, 6)
    return value


def format_summary(s: JobSummary) -> str:
    """Human-readable summary block printed at the end of a run."""
    thresholds = []
    if s.min_auc is not None:
        thresholds.append(f"AUC >= {s.min_auc:g}")
    if s.max_logloss is not None:
        thresholds.append(f"logloss <= {s.max_logloss:g}")
    lines = [
        "=== XGBoost-on-Ray validation summary ===",
        f"data          : {s.data_source}",
        f"rows          : {s.rows:,} ({s.train_rows:,} train / {s.validation_rows:,} validation), "
        f"{s.features} features",
        f"workers       : {s.workers} x {s.cpus_per_worker} CPU"
        + (" + 1 GPU (device cuda)" if s.device == "cuda" else ""),
        f"rounds        : {s.rounds} (checkpoint every {s.checkpoint_every}"
        + (f"; resumed from round {s.resumed_from_round}" if s.resumed_from_round else "")
        + ")",
        f"time          : {s.fit_seconds:.2f} s fit, {s.boost_seconds:.2f} s boosting"
        + (f" (of which {s.checkpoint_seconds:.2f} s evaluating + checkpointing)"
           if math.isfinite(s.checkpoint_seconds) else "")
        + (f", {s.matrix_seconds:.2f} s building the matrix" if math.isfinite(s.matrix_seconds) else ""),
        f"throughput    : {s.rows_per_second:,.0f} train rows/s "
        f"({s.row_rounds_per_second:,.0f} row-rounds/s while boosting)",
        f"validation    : AUC {s.auc:.4f}, logloss {s.logloss:.4f}",
        f"threshold     : {', '.join(thresholds) if thresholds else 'none'}",
        f"checkpoint    : {s.checkpoint_path}",
    ]
    if s.drill is not None:
        kills = s.drill.get("kills", [])
        lines.append(
            f"fault drill   : {len(kills)} worker(s) killed"
            + "".join(f"; rank {k['rank']} pid {k['pid']} after round {k['round']}" for k in kills)
        )
    lines += [
        f"result        : {'PASSED' if s.passed else 'FAILED: ' + '; '.join(s.failures)}",
    ]
    return "\n".join(lines)
