"""The validation job's data, argument, metric and summary logic, without Ray."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from jobs import data
from jobs.config import (
    MAX_RAY_TEMP_DIR_CHARS,
    JobConfigError,
    build_parser,
    config_from_args,
    parse_config,
    xgboost_params,
)
from jobs.data import DataError, DataSpec, load_shard
from jobs.metrics import (
    EXIT_METRIC_FAILED,
    EXIT_OK,
    JobSummary,
    format_summary,
    logloss,
    parse_eval_message,
    roc_auc,
    threshold_failures,
)


def cfg(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


def problems(*argv):
    with pytest.raises(JobConfigError) as exc:
        cfg(*argv)
    return exc.value.problems


# ------------------------------------------------------------------------------------ data


def test_synthetic_data_is_deterministic_for_a_seed():
    x1, y1 = data.synthetic_rows(0, 1000, 8, seed=7)
    x2, y2 = data.synthetic_rows(0, 1000, 8, seed=7)
    x3, _ = data.synthetic_rows(0, 1000, 8, seed=8)
    assert x1.shape == (1000, 8) and y1.shape == (1000,)
    assert x1.dtype == np.float32
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


def test_synthetic_rows_do_not_depend_on_the_slice_asked_for():
    whole_x, whole_y = data.synthetic_rows(0, 3 * data.BLOCK_ROWS, 5, seed=1)
    lo, hi = data.BLOCK_ROWS - 10, 2 * data.BLOCK_ROWS + 10  # crosses two block borders
    part_x, part_y = data.synthetic_rows(lo, hi, 5, seed=1)
    np.testing.assert_array_equal(part_x, whole_x[lo:hi])
    np.testing.assert_array_equal(part_y, whole_y[lo:hi])
    empty_x, empty_y = data.synthetic_rows(5, 5, 5, seed=1)
    assert empty_x.shape == (0, 5) and empty_y.shape == (0,)


def test_synthetic_labels_are_binary_balanced_and_carry_signal():
    x, y = data.synthetic_rows(0, 20000, 10, seed=42)
    assert set(np.unique(y)) == {0.0, 1.0}
    assert 0.3 < y.mean() < 0.7
    # The first informative feature alone already separates the classes somewhat ...
    weights = data._true_model(10, 42)
    assert roc_auc(y, x.astype(np.float64) @ weights) > 0.75
    # ... while an uninformative one does not.
    assert abs(roc_auc(y, x[:, -1]) - 0.5) < 0.03


@pytest.mark.parametrize("rows,fraction,expected", [
    (100, 0.2, (80, 20)), (10, 0.25, (7, 3)), (2, 0.01, (1, 1)), (2, 0.99, (1, 1)),
    (20000, 0.2, (16000, 4000)),
])
def test_split_counts(rows, fraction, expected):
    assert data.split_counts(rows, fraction) == expected


def test_split_counts_rejects_too_few_rows():
    with pytest.raises(DataError, match="at least 2 rows"):
        data.split_counts(1, 0.2)


@pytest.mark.parametrize("n,world", [(10, 3), (7, 7), (100, 4), (5, 8)])
def test_shards_partition_the_range_like_array_split(n, world):
    bounds = [data.shard_bounds(n, r, world) for r in range(world)]
    expected = [(int(a[0]), int(a[-1]) + 1) if len(a) else None
                for a in np.array_split(np.arange(n), world)]
    got = [(s, e) if e > s else None for s, e in bounds]
    assert got == expected
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(world - 1))


def test_shard_bounds_rejects_a_bad_rank():
    with pytest.raises(ValueError, match="rank 3"):
        data.shard_bounds(10, 3, 3)


def test_synthetic_shards_reassemble_the_splits_exactly():
    spec = DataSpec(rows=1003, features=4, seed=3, validation_fraction=0.2)
    n_train, n_val = data.split_counts(1003, 0.2)
    for split, n in (("train", n_train), ("validation", n_val)):
        whole_x, whole_y = load_shard(spec, split)
        assert len(whole_y) == n
        parts = [load_shard(spec, split, r, 3) for r in range(3)]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole_x)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), whole_y)
    all_x, _ = data.synthetic_rows(0, 1003, 4, 3)
    np.testing.assert_array_equal(load_shard(spec, "validation")[0], all_x[n_train:])


def _table(n=50):
    rng = np.random.default_rng(0)
    return pa.table({
        "f_int": pa.array(np.arange(n, dtype=np.int64)),
        "f_float": pa.array(rng.normal(size=n)),
        "label": pa.array((np.arange(n) % 2).astype(np.int64)),
    })


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_file_data_loads_and_splits_deterministically(tmp_path, fmt):
    table = _table(50)
    path = tmp_path / f"d.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)
    spec = DataSpec(source=str(path), seed=5, validation_fraction=0.2)
    assert spec.resolved_format() == fmt
    assert data.count_rows(spec) == 50
    tx, ty = load_shard(spec, "train")
    vx, vy = load_shard(spec, "validation")
    assert tx.shape == (40, 2) and vx.shape == (10, 2)
    assert tx.dtype == np.float32
    # The integer feature is the row index: train and validation are disjoint and complete.
    ids = np.concatenate([tx[:, 0], vx[:, 0]]).astype(int)
    assert sorted(ids.tolist()) == list(range(50))
    # Labels travel with their rows (label = row index % 2).
    np.testing.assert_array_equal(ty, tx[:, 0] % 2)
    # Same seed -> same split; another seed -> another split.
    np.testing.assert_array_equal(load_shard(spec, "validation")[0], vx)
    other = DataSpec(source=str(path), seed=6, validation_fraction=0.2)
    assert not np.array_equal(load_shard(other, "validation")[0], vx)
    # Shards of the train split reassemble it.
    parts = [load_shard(spec, "train", r, 2)[0] for r in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), tx)


def test_file_data_errors_are_clear(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": [0, 1]}), path)
    with pytest.raises(DataError, match="label column 'label' not found"):
        load_shard(DataSpec(source=str(path)), "train")
    pq.write_table(pa.table({"a": ["x", "y"], "label": [0, 1]}), path)
    with pytest.raises(DataError, match=r"not numeric: a \(string\)"):
        load_shard(DataSpec(source=str(path)), "train")
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "label": [0, 1, 2]}), path)
    with pytest.raises(DataError, match="must be binary 0/1"):
        load_shard(DataSpec(source=str(path)), "train")
    with pytest.raises(DataError, match="cannot open parquet data"):
        load_shard(DataSpec(source=str(tmp_path / "missing.parquet")), "train")


def test_check_source_fails_fast_on_the_schema(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(_table(20), path)
    assert data.check_source(DataSpec(source=str(path))) == 20
    assert data.check_source(DataSpec(rows=123)) == 123
    with pytest.raises(DataError, match="label column 'y' not found"):
        data.check_source(DataSpec(source=str(path), label_column="y"))
    pq.write_table(pa.table({"a": [1.0], "label": [1]}), path)
    with pytest.raises(DataError, match="at least 2 rows"):
        data.check_source(DataSpec(source=str(path)))


def test_main_exits_3_on_unusable_data_before_starting_ray(tmp_path, capsys):
    from jobs.xgboost_validation import main

    code = main(["--data", str(tmp_path / "missing.parquet"), "--storage-path", str(tmp_path)])
    assert code == 3
    assert "FAILED" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ args


def test_defaults_are_small_synthetic_and_fault_tolerant():
    c = cfg()
    assert c.data.is_synthetic and c.data.rows <= 200_000
    assert c.workers == 2 and c.cpus_per_worker == 1
    assert 1 <= c.checkpoint_every < c.rounds
    assert c.max_failures > 0
    assert c.min_auc is not None and c.is_local
    assert c.drill is None


def test_cli_values_reach_the_config(tmp_path):
    c = cfg("--workers", "3", "--rows", "5000", "--features", "7", "--rounds", "12",
            "--checkpoint-every", "4", "--storage-path", "rel/dir", "--min-auc", "0.7",
            "--seed", "9", "--drill-kill-after-round", "6", "--drill-kill-rank", "2")
    assert (c.workers, c.data.rows, c.data.features, c.rounds, c.checkpoint_every) == (
        3, 5000, 7, 12, 4)
    assert c.storage_path.startswith("/") and c.storage_path.endswith("rel/dir")
    assert c.min_auc == 0.7 and c.data.seed == 9
    assert (c.drill.rank, c.drill.after_round) == (2, 6)
    assert cfg("--storage-path", "s3://bucket/prefix").storage_path == "s3://bucket/prefix"
    assert cfg("--min-auc", "-1").min_auc is None


def test_address_selects_local_or_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cfg().is_local
    assert cfg("--address", "local").is_local
    remote = cfg("--address", "ray://head:10001")
    assert not remote.is_local and remote.address == "ray://head:10001"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert not cfg().is_local  # default comes from RAY_ADDRESS (set by the Ray Jobs API)


@pytest.mark.parametrize("argv,flag,reason", [
    (["--workers", "0"], "--workers", "must be >= 1"),
    (["--rounds", "0"], "--rounds", "must be >= 1"),
    (["--rounds", "10", "--checkpoint-every", "11"], "--checkpoint-every", "[1, --rounds=10]"),
    (["--checkpoint-every", "0"], "--checkpoint-every", "must be in"),
    (["--validation-fraction", "1.0"], "--validation-fraction", "(0, 1)"),
    (["--features", "1"], "--features", ">= 2"),
    (["--rows", "3", "--workers", "2"], "--rows", "every one of the 2 workers"),
    (["--min-auc", "1.5"], "--min-auc", "<= 1"),
    (["--max-failures", "-2"], "--max-failures", "-1 for unlimited"),
    (["--learning-rate", "0"], "--learning-rate", "(0, 1]"),
    (["--data", "x.parquet", "--rows", "10"], "--rows", "only applies to --data synthetic"),
    (["--label-column", "y"], "--label-column", "only applies to a --data path"),
    (["--address", "ray://h:10001", "--num-cpus", "4"], "--num-cpus", "embedded local Ray"),
    (["--address", "ray://h:10001", "--num-gpus", "1"], "--num-gpus", "embedded local Ray"),
    (["--num-gpus", "-1"], "--num-gpus", "must be >= 0"),
    (["--workers", "2", "--cpus-per-worker", "2", "--num-cpus", "3"], "--num-cpus", ">= --workers"),
    (["--ray-temp-dir", "/tmp/" + "x" * MAX_RAY_TEMP_DIR_CHARS], "--ray-temp-dir", "107 bytes"),
    (["--drill-kill-after-round", "5"], "--drill-kill-after-round", "--checkpoint-every (10) < N"),
    (["--drill-kill-after-round", "50"], "--drill-kill-after-round", "< --rounds (50)"),
    (["--drill-kill-after-round", "15", "--drill-kill-rank", "2"], "--drill-kill-rank", "[0, --workers=2)"),
    (["--drill-kill-after-round", "15", "--max-failures", "0"], "--max-failures", "at least one restart"),
])
def test_bad_arguments_name_the_flag_and_the_reason(argv, flag, reason):
    found = problems(*argv)
    assert any(p.startswith(flag + ":") and reason in p for p in found), found


def test_every_problem_is_reported_at_once():
    found = problems("--workers", "0", "--rounds", "0", "--features", "1")
    assert [p.split(":")[0] for p in found] == ["--workers", "--rounds", "--checkpoint-every",
                                                "--features"]


def test_parse_config_exits_2_with_the_problems(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_config(["--workers", "0"])
    assert exc.value.code == 2
    assert "--workers: 0: must be >= 1" in capsys.readouterr().err


def test_matrix_type_is_a_choice_defaulting_to_dmatrix(capsys):
    assert cfg().matrix == "dmatrix" and cfg("--matrix", "quantile").matrix == "quantile"
    with pytest.raises(SystemExit):
        cfg("--matrix", "sparse")
    assert "invalid choice: 'sparse'" in capsys.readouterr().err


def test_xgboost_params_follow_the_config():
    c = cfg("--max-depth", "4", "--learning-rate", "0.3", "--seed", "11")
    p = xgboost_params(c, nthread=3)
    assert p["objective"] == "binary:logistic" and p["tree_method"] == "hist"
    assert (p["max_depth"], p["eta"], p["nthread"], p["seed"]) == (4, 0.3, 3, 11)
    assert "auc" in p["eval_metric"]


def test_logic_modules_do_not_import_ray_or_cdk():
    code = ("import sys, jobs.config, jobs.data, jobs.metrics, jobs.xgboost_validation; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('ray', 'aws_cdk', 'cdk8s', 'constructs')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------ metrics


def _brute_force_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y * 0.7, 1)  # rounding creates ties
    assert roc_auc(y, s) == pytest.approx(_brute_force_auc(y, s))
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert np.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_logloss():
    assert logloss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))
    assert logloss([1, 0], [1.0, 0.0]) < 1e-12


def test_parse_eval_message():
    msg = "[49]\tvalidation-logloss:0.46405\tvalidation-auc:0.86716"
    assert parse_eval_message(msg) == {"validation-logloss": 0.46405, "validation-auc": 0.86716}
    with pytest.raises(ValueError, match="cannot parse"):
        parse_eval_message("[0]\tgarbage")


@pytest.mark.parametrize("auc,loss,min_auc,max_loss,n_failures", [
    (0.85, 0.4, 0.8, None, 0),
    (0.80, 0.4, 0.8, None, 0),  # the threshold itself passes
    (0.79, 0.4, 0.8, None, 1),
    (float("nan"), 0.4, 0.8, None, 1),  # a NaN metric never passes
    (0.85, 0.6, 0.8, 0.5, 1),
    (0.70, 0.6, 0.8, 0.5, 2),
    (0.10, 9.0, None, None, 0),  # no thresholds
])
def test_thresholds(auc, loss, min_auc, max_loss, n_failures):
    assert len(threshold_failures(auc, loss, min_auc, max_loss)) == n_failures


def _summary(**kw):
    base = dict(rows=1000, train_rows=800, validation_rows=200, features=20, workers=2,
                cpus_per_worker=1, rounds=50, checkpoint_every=10, fit_seconds=4.0,
                boost_seconds=2.0, auc=0.87, logloss=0.46, min_auc=0.8)
    base.update(kw)
    return JobSummary(**base)


def test_summary_exit_codes_follow_the_thresholds():
    ok = _summary(failures=threshold_failures(0.87, 0.46, 0.8, None))
    bad = _summary(auc=0.7, failures=threshold_failures(0.7, 0.46, 0.8, None))
    assert (ok.passed, ok.exit_code) == (True, EXIT_OK)
    assert (bad.passed, bad.exit_code) == (False, EXIT_METRIC_FAILED)
    assert "FAILED: validation AUC 0.7000 is below the minimum 0.8000" in format_summary(bad)


def test_summary_text_and_json():
    s = _summary(resumed_from_round=20, checkpoint_path="/x/checkpoint_round_000050",
                 drill={"kills": [{"rank": 1, "pid": 123, "round": 25}]})
    text = format_summary(s)
    for expected in ("1,000 (800 train / 200 validation), 20 features", "2 x 1 CPU",
                     "50 (checkpoint every 10; resumed from round 20)", "4.00 s fit",
                     "200 train rows/s", "AUC 0.8700, logloss 0.4600", "AUC >= 0.8",
                     "rank 1 pid 123 after round 25", "PASSED"):
        assert expected in text, expected
    d = json.loads(s.to_json())
    assert d["status"] == "passed" and d["exit_code"] == 0
    assert (d["rows"], d["workers"], d["rounds"]) == (1000, 2, 50)
    assert d["rows_per_second"] == 200.0
    assert d["row_rounds_per_second"] == 800 * 30 / 2.0  # only rounds boosted in this attempt
    assert d["auc"] == 0.87 and d["min_auc"] == 0.8 and d["max_logloss"] is None
    assert "\n" not in s.to_json()
    # non-finite numbers become null, so the line stays strict JSON
    assert json.loads(_summary(fit_seconds=0.0).to_json())["rows_per_second"] is None
    assert (d["device"], d["matrix_seconds"], d["checkpoint_seconds"]) == ("cpu", None, None)


def test_summary_says_where_the_time_went_and_on_which_device():
    s = _summary(device="cuda", matrix_seconds=0.5, checkpoint_seconds=0.25)
    text = format_summary(s)
    assert "2 x 1 CPU + 1 GPU (device cuda)" in text
    assert "2.00 s boosting (of which 0.25 s evaluating + checkpointing), 0.50 s building the matrix" in text
    assert json.loads(s.to_json())["device"] == "cuda"



def test_storage_path_defaults_to_the_cluster_checkpoint_uri(monkeypatch):
    from jobs import config as job_config

    monkeypatch.setenv(job_config.CHECKPOINT_ENV, "s3://ckpt-bucket/checkpoints")
    assert job_config.parse_config([]).storage_path == "s3://ckpt-bucket/checkpoints"
    monkeypatch.delenv(job_config.CHECKPOINT_ENV)
    assert job_config.parse_config([]).storage_path.startswith("/")


def test_checkpoints_are_never_pruned_on_s3_where_jobs_cannot_delete():
    """The platform's bucket refuses deletes (cdk_constructs/ray_storage.py): Ray's num_to_keep would only log
    refused deletes there; local storage keeps --keep-checkpoints."""
    from jobs import config as job_config
    from jobs.train import checkpoints_to_keep

    assert checkpoints_to_keep(job_config.parse_config(["--storage-path", "s3://bucket/ray/checkpoints"])) is None
    assert checkpoints_to_keep(job_config.parse_config(["--storage-path", "/tmp/x", "--keep-checkpoints", "2"])) == 2
    assert checkpoints_to_keep(job_config.parse_config(["--storage-path", "/tmp/x", "--keep-checkpoints", "0"])) is None
