"""Data for the validation job: a deterministic synthetic problem or a Parquet/CSV table.

Pure numpy/pyarrow: no Ray, no XGBoost. Every function is deterministic for its arguments, so
each Ray Train worker can load *its own shard* without a central data service, a restarted
worker gets exactly the rows its predecessor had, and the driver can rebuild the full
validation split to score the final model.

Synthetic data
    Rows are produced in fixed-size blocks; block ``b`` draws from
    ``SeedSequence(seed, spawn_key=(1, b))``. A row therefore depends only on ``(seed, row
    index)``, never on how many workers there are or which slice is asked for. The label is a
    Bernoulli draw from a logistic model with linear, interaction and non-linear terms, so the
    Bayes-optimal AUC is high but clearly below 1 and the metric means something.

Split
    Synthetic rows are i.i.d., so the *last* ``round(rows * validation_fraction)`` rows are the
    validation split. File rows may be ordered (by time, by label...), so for files a seeded
    permutation chooses the validation rows. Each split is cut into ``world_size`` contiguous,
    near-equal shards (``numpy.array_split`` boundaries).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, Optional, Tuple

import numpy as np

SYNTHETIC = "synthetic"
BLOCK_ROWS = 8192
FILE_FORMATS = ("parquet", "csv")
SPLITS = ("train", "validation")

Split = Literal["train", "validation"]


class DataError(ValueError):
    """The input data cannot be used (missing label, non-numeric features, bad labels...)."""


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where the rows come from and how they are split. Plain values: it travels to workers."""

    source: str = SYNTHETIC  # "synthetic" or a path/URI (local, s3://...) of a file or directory
    rows: int = 100_000  # synthetic only
    features: int = 20  # synthetic only
    seed: int = 42
    validation_fraction: float = 0.2
    label_column: str = "label"  # files only
    file_format: Optional[str] = None  # files only; None = from the suffix

    @property
    def is_synthetic(self) -> bool:
        return self.source == SYNTHETIC

    def resolved_format(self) -> str:
        """``parquet`` or ``csv`` for a file source (from ``file_format`` or the suffix)."""
        if self.file_format:
            return self.file_format
        return infer_format(self.source)


def infer_format(path: str) -> str:
    lowered = path.lower().rstrip("/")
    if lowered.endswith((".csv", ".csv.gz")):
        return "csv"
    # Parquet is the default for directories/prefixes and *.parquet / *.pq files.
    return "parquet"


# --------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------


def split_counts(n_rows: int, validation_fraction: float) -> Tuple[int, int]:
    """``(n_train, n_validation)``; both at least 1. Raises DataError when impossible."""
    if n_rows < 2:
        raise DataError(f"need at least 2 rows to split into train and validation, got {n_rows}")
    n_val = math.floor(n_rows * validation_fraction + 0.5)  # round half up, not to even
    n_val = min(max(n_val, 1), n_rows - 1)
    return n_rows - n_val, n_val


def shard_bounds(n: int, rank: int, world_size: int) -> Tuple[int, int]:
    """``[start, stop)`` of shard ``rank`` when ``n`` items are cut into ``world_size`` shards.

    Same boundaries as ``numpy.array_split``: the first ``n % world_size`` shards get one extra.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def split_row_range(n_rows: int, validation_fraction: float, split: Split) -> Tuple[int, int]:
    """Row range of a split for synthetic data: train first, validation last."""
    n_train, _ = split_counts(n_rows, validation_fraction)
    if split == "train":
        return 0, n_train
    if split == "validation":
        return n_train, n_rows
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def split_indices(n_rows: int, validation_fraction: float, seed: int, split: Split) -> np.ndarray:
    """Sorted row indices of a split for file data (a seeded permutation picks validation)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    _, n_val = split_counts(n_rows, validation_fraction)
    perm = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,))).permutation(n_rows)
    chosen = perm[:n_val] if split == "validation" else perm[n_val:]
    return np.sort(chosen)


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------


def _true_model(features: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    n_informative = max(2, features // 2)
    weights = np.zeros(features)
    weights[:n_informative] = rng.normal(0.0, 1.0, n_informative)
    return weights / math.sqrt(n_informative) * 2.5


def _synthetic_block(block: int, features: int, seed: int, weights: np.ndarray):
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, block)))
    x = rng.standard_normal((BLOCK_ROWS, features), dtype=np.float32)
    u = rng.random(BLOCK_ROWS)
    xd = x.astype(np.float64)
    logit = xd @ weights + xd[:, 0] * xd[:, 1] + np.sin(2.0 * xd[:, 1]) - 0.25
    y = (u < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return x, y


def synthetic_rows(start: int, stop: int, features: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Rows ``[start, stop)`` of the synthetic data set for ``(features, seed)``."""
    if features < 2:
        raise DataError(f"synthetic data needs at least 2 features, got {features}")
    if not 0 <= start <= stop:
        raise ValueError(f"bad row range [{start}, {stop})")
    weights = _true_model(features, seed)
    xs, ys = [], []
    for block in range(start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS + 1 if stop > start else 0):
        x, y = _synthetic_block(block, features, seed, weights)
        lo = max(start - block * BLOCK_ROWS, 0)
        hi = min(stop - block * BLOCK_ROWS, BLOCK_ROWS)
        xs.append(x[lo:hi])
        ys.append(y[lo:hi])
    if not xs:
        return np.empty((0, features), np.float32), np.empty(0, np.float32)
    return np.concatenate(xs), np.concatenate(ys)


# --------------------------------------------------------------------------------------------
# Files (Parquet / CSV; local paths or URIs such as s3://bucket/prefix)
# --------------------------------------------------------------------------------------------


def _dataset(spec: DataSpec):
    import pyarrow.dataset as pads

    fmt = spec.resolved_format()
    if fmt not in FILE_FORMATS:
        raise DataError(f"file format must be one of {FILE_FORMATS}, got {fmt!r}")
    try:
        return pads.dataset(spec.source, format=fmt)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"cannot open {fmt} data at {spec.source!r}: {exc}") from exc


def count_rows(spec: DataSpec) -> int:
    """Total number of rows of the source (synthetic: ``spec.rows``)."""
    if spec.is_synthetic:
        return spec.rows
    return _dataset(spec).count_rows()


def check_schema(schema, label_column: str) -> Tuple[str, ...]:
    """Feature column names of an Arrow schema; DataError unless label + numeric features."""
    import pyarrow.types as pat

    names = list(schema.names)
    if label_column not in names:
        raise DataError(f"label column {label_column!r} not found; columns are {names}")
    feature_names = [n for n in names if n != label_column]
    if not feature_names:
        raise DataError("no feature columns besides the label")

    def numeric(t):
        return pat.is_integer(t) or pat.is_floating(t) or pat.is_boolean(t)

    bad = [f"{n} ({schema.field(n).type})" for n in feature_names if not numeric(schema.field(n).type)]
    if bad:
        raise DataError(f"feature columns must be numeric; not numeric: {', '.join(bad)}")
    return tuple(feature_names)


def check_source(spec: DataSpec) -> int:
    """Fail fast, before any Ray worker starts: the source opens and its schema fits.

    Returns the number of rows (synthetic: ``spec.rows``). Reads metadata only.
    """
    if spec.is_synthetic:
        return spec.rows
    dataset = _dataset(spec)
    check_schema(dataset.schema, spec.label_column)
    n = dataset.count_rows()
    split_counts(n, spec.validation_fraction)
    return n


def table_to_xy(table, label_column: str) -> Tuple[np.ndarray, np.ndarray, Tuple[str, ...]]:
    """Split an Arrow table into float32 features, a 0/1 label and the feature names."""
    feature_names = list(check_schema(table.schema, label_column))
    x = np.column_stack(
        [table.column(n).to_numpy(zero_copy_only=False).astype(np.float32) for n in feature_names]
    )
    y = table.column(label_column).to_numpy(zero_copy_only=False).astype(np.float64)
    if np.isnan(y).any():
        raise DataError(f"label column {label_column!r} has missing values")
    values = np.unique(y)
    if not np.isin(values, (0.0, 1.0)).all():
        raise DataError(
            f"label column {label_column!r} must be binary 0/1; found values {values[:10].tolist()}"
        )
    return x, y.astype(np.float32), tuple(feature_names)


def read_table_xy(spec: DataSpec) -> Tuple[np.ndarray, np.ndarray]:
    """All rows of a file source as ``(X, y)``, in file order."""
    table = _dataset(spec).to_table()
    x, y, _ = table_to_xy(table, spec.label_column)
    return x, y


# --------------------------------------------------------------------------------------------
# The one entry point workers, the driver and the benchmark use
# --------------------------------------------------------------------------------------------


def load_shard(
    spec: DataSpec, split: Split, rank: int = 0, world_size: int = 1
) -> Tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of shard ``rank`` of ``world_size`` of a split. ``(0, 1)`` is the whole split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if spec.is_synthetic:
        lo, hi = split_row_range(spec.rows, spec.validation_fraction, split)
        s, e = shard_bounds(hi - lo, rank, world_size)
        return synthetic_rows(lo + s, lo + e, spec.features, spec.seed)
    # Files: every worker reads the table and keeps its rows. Fine for the validation job's
    # sizes; a very large input would want one file (or row group) range per worker instead.
    x, y = read_table_xy(spec)
    idx = split_indices(len(y), spec.validation_fraction, spec.seed, split)
    s, e = shard_bounds(len(idx), rank, world_size)
    mine = idx[s:e]
    return x[mine], y[mine]
