"""The XGBoost-on-Ray notebook and its helper module ``notebooks/ray_submit.py`` (no Ray, no network)."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
import types

import nbformat
import pytest

import versions
from tests.platform_synth import ROOT

NOTEBOOK = ROOT / "notebooks" / "xgboost_on_ray.ipynb"
JOBS_DIR = ROOT / "jobs"


@pytest.fixture(scope="module")
def rs():
    spec = importlib.util.spec_from_file_location("ray_submit", ROOT / "notebooks" / "ray_submit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ray_submit"] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("ray_submit", None)


# -- the notebook ---------------------------------------------------------------------------------------


def _strip_magics(source: str) -> str:
    """IPython magics / shell escapes -> ``pass`` (keeps line numbers and indentation)."""
    return "\n".join(re.sub(r"^(\s*)[%!].*$", r"\1pass", line) for line in source.splitlines())


def test_notebook_is_valid_nbformat_v4():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["language"] == "python"


def test_every_code_cell_compiles():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for i, cell in enumerate(code):
        compile(_strip_magics(cell.source), f"<cell {i}>", "exec")


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_uses_the_helper_and_never_a_literal_token():
    text = NOTEBOOK.read_text()
    assert "import ray_submit" in text and "run_validation" in text and "plot_metric" in text
    assert "Bearer" not in text and not re.search(r"RAY_AUTH_TOKEN\s*=", text)


def test_magic_stripping_keeps_code_compilable():
    src = "%matplotlib inline\nif True:\n    !pip list\nx = 1"
    compile(_strip_magics(src), "<t>", "exec")


# -- ray_submit: connection -----------------------------------------------------------------------------


def test_versions_agree_with_the_platform(rs):
    assert rs.RAY_VERSION == versions.RAY_VERSION


@pytest.mark.parametrize("env", [{}, {"RAY_ADDRESS": ""}, {"RAY_ADDRESS": "   "}])
def test_missing_ray_address_is_a_clear_error(rs, env):
    with pytest.raises(rs.RaySubmitError, match="RAY_ADDRESS is not set"):
        rs.ray_address(env)


def test_ray_address_must_be_the_jobs_api(rs):
    assert rs.ray_address({"RAY_ADDRESS": "http://ray-head-svc.ray.svc.cluster.local:8265/"}) == \
        "http://ray-head-svc.ray.svc.cluster.local:8265"
    with pytest.raises(rs.RaySubmitError, match="http"):
        rs.ray_address({"RAY_ADDRESS": "ray://ray-head-svc.ray.svc.cluster.local:10001"})


def test_auth_header_from_the_token_env(rs):
    assert rs.auth_headers({"RAY_AUTH_TOKEN": "abc123"}) == {"Authorization": "Bearer abc123"}
    assert rs.auth_headers({}) == {}
    with pytest.raises(rs.RaySubmitError, match="neither RAY_AUTH_TOKEN nor the file"):
        rs.auth_headers({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ""})


def test_auth_header_from_the_mounted_token_file(rs, tmp_path):
    """The platform mounts the Secret as a file and sets RAY_AUTH_TOKEN_PATH (charts/jupyterhub_values.py)."""
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    assert rs.auth_headers(env) == {"Authorization": "Bearer from-the-file"}
    # The variable wins over the file, as in Ray's own loader.
    assert rs.auth_headers({**env, "RAY_AUTH_TOKEN": "from-env"}) == {"Authorization": "Bearer from-env"}
    with pytest.raises(rs.RaySubmitError, match="cannot read the Ray token"):
        rs.auth_headers({**env, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})
    token_file.write_text("")
    with pytest.raises(rs.RaySubmitError, match="neither RAY_AUTH_TOKEN nor the file"):
        rs.auth_headers(env)


def test_make_client_passes_address_and_token_header(rs):
    calls = []

    def fake_client(address, headers=None):
        calls.append((address, headers))
        return "client"

    env = {"RAY_ADDRESS": "http://head:8265", "RAY_AUTH_TOKEN": "t0k", "RAY_AUTH_MODE": "token"}
    assert rs.make_client(env, client_cls=fake_client) == "client"
    assert calls == [("http://head:8265", {"Authorization": "Bearer t0k"})]
    with pytest.raises(rs.RaySubmitError):
        rs.make_client({}, client_cls=fake_client)


# -- ray_submit: job ------------------------------------------------------------------------------------


def test_entrypoint_string(rs):
    entry = rs.build_entrypoint(3, 100_000, 40, ["--checkpoint-every", "10", "--storage-path", "s3://b/p q"])
    assert entry.startswith("python -m jobs.xgboost_validation --workers 3 --rows 100000 --rounds 40")
    assert shlex.split(entry)[-1] == "s3://b/p q"
    for bad in ((0, 1, 1), (1, -5, 1), (1, 1, True), (1.5, 1, 1)):
        with pytest.raises(ValueError):
            rs.build_entrypoint(*bad)
    with pytest.raises(ValueError, match="sequence"):
        rs.build_entrypoint(1, 1, 1, "--rounds 3")


def test_entrypoint_is_accepted_by_the_job_cli(rs):
    jobs_config = pytest.importorskip("jobs.config")
    argv = shlex.split(rs.build_entrypoint(2, 1000, 5, ["--checkpoint-every", "2"]))[3:]
    cfg = jobs_config.config_from_args(jobs_config.build_parser().parse_args(argv))
    assert (cfg.workers, cfg.data.rows, cfg.rounds, cfg.checkpoint_every) == (2, 1000, 5, 2)


def test_runtime_env_is_empty_by_default_the_ray_image_has_the_job(rs):
    assert rs.build_runtime_env() == {}


def test_runtime_env_carries_the_extras_asked_for(rs, tmp_path):
    env = rs.build_runtime_env({"PYTHONUNBUFFERED": "1"}, pip=["rich==13.9.4"], working_dir=tmp_path)
    assert env == {"env_vars": {"PYTHONUNBUFFERED": "1"}, "working_dir": str(tmp_path),
                   "pip": {"packages": ["rich==13.9.4"], "pip_check": False}}
    json.dumps(env)  # Ray sends it as JSON
    with pytest.raises(ValueError, match="strings"):
        rs.build_runtime_env({"N": 1})


def test_ship_jobs_uploads_the_jobs_package_only(rs):
    """Modified job code: this checkout's jobs/ travels as a py_modules entry, never the whole repository."""
    env = rs.build_runtime_env(ship_jobs=True, jobs_dir=JOBS_DIR)
    assert env == {"py_modules": [str(JOBS_DIR.resolve())]}
    assert rs.build_runtime_env(ship_jobs=True)["py_modules"] == [str(JOBS_DIR.resolve())]  # found by itself


@pytest.mark.parametrize("value,expected", [(None, None), ("", None), ("1", True), ("true", True),
                                            ("0", False), ("off", False), (" FALSE ", False)])
def test_gpu_workers_switch_values(rs, value, expected):
    env = {} if value is None else {rs.GPU_WORKERS_ENV: value}
    assert rs.gpu_workers(env) is expected
    assert rs.default_device(env) == {None: None, True: "cuda", False: "cpu"}[expected]


def test_gpu_workers_switch_refuses_other_values(rs):
    with pytest.raises(rs.RaySubmitError, match="DF_RAY_GPU_WORKERS='maybe'"):
        rs.gpu_workers({rs.GPU_WORKERS_ENV: "maybe"})


def test_the_gpu_switch_has_the_name_the_job_reads(rs):
    jobs_config = pytest.importorskip("jobs.config")
    assert rs.GPU_WORKERS_ENV == jobs_config.GPU_WORKERS_ENV
    assert rs.DEVICES == jobs_config.DEVICES


def test_device_reaches_the_entrypoint_once(rs):
    entry = rs.build_entrypoint(2, 1000, 5, ["--checkpoint-every", "5"], device="cuda")
    assert shlex.split(entry)[3:] == ["--workers", "2", "--rows", "1000", "--rounds", "5", "--device", "cuda",
                                      "--checkpoint-every", "5"]
    assert "--device" not in rs.build_entrypoint(2, 1000, 5)  # unset: the job's default (cpu)
    with pytest.raises(ValueError, match="once"):
        rs.build_entrypoint(2, 1000, 5, ["--device", "cpu"], device="cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        rs.build_entrypoint(2, 1000, 5, device="tpu")


def _run_parameters_cell(rs, environ):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and "WORKERS =" in c.source]
    namespace = {"os": types.SimpleNamespace(environ=environ), "ray_submit": rs, "print": lambda *a: None}
    exec(compile(cell.source, "<parameters>", "exec"), namespace)
    return namespace


def test_parameters_cell_defaults_and_environment_overrides(rs):
    """Platform-sized by default; DF_NOTEBOOK_<NAME> for a small run (the notebook's behaviour test)."""
    ns = _run_parameters_cell(rs, {})
    assert (ns["WORKERS"], ns["ROWS"], ns["ROUNDS"], ns["CHECKPOINT_EVERY"], ns["POLL_S"]) == (2, 200_000, 50, 10, 3)
    assert ns["extra_args"] == ["--checkpoint-every", "10"]
    assert (ns["DEVICE"], ns["SHIP_JOBS"]) == (None, False)  # the job's default device, the image's code
    assert _run_parameters_cell(rs, {"DF_RAY_GPU_WORKERS": "1"})["DEVICE"] == "cuda"  # what the hub sets
    assert _run_parameters_cell(rs, {"DF_RAY_GPU_WORKERS": "1", "DF_NOTEBOOK_DEVICE": "cpu"})["DEVICE"] == "cpu"
    assert _run_parameters_cell(rs, {"DF_NOTEBOOK_SHIP_JOBS": "1"})["SHIP_JOBS"] is True
    ns = _run_parameters_cell(rs, {"DF_NOTEBOOK_WORKERS": "1", "DF_NOTEBOOK_ROWS": "2000", "DF_NOTEBOOK_ROUNDS": "4",
                                   "DF_NOTEBOOK_CHECKPOINT_EVERY": "2", "DF_NOTEBOOK_POLL_S": "0.5",
                                   "RAY_JOB_STORAGE_PATH": "s3://b/p"})
    assert (ns["WORKERS"], ns["ROWS"], ns["ROUNDS"], ns["POLL_S"]) == (1, 2000, 4, 0.5)
    assert ns["extra_args"] == ["--checkpoint-every", "2", "--storage-path", "s3://b/p"]


def test_runtime_env_refuses_a_wrong_directory(rs, tmp_path):
    with pytest.raises(rs.RaySubmitError, match="not the jobs package"):
        rs.build_runtime_env(ship_jobs=True, jobs_dir=tmp_path)
    fake = tmp_path / "notjobs"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "xgboost_validation.py").write_text("")
    with pytest.raises(rs.RaySubmitError, match="must be named 'jobs'"):
        rs.build_runtime_env(ship_jobs=True, jobs_dir=fake)


def test_find_jobs_dir_from_the_notebooks_folder(rs, tmp_path):
    assert rs.find_jobs_dir(ROOT / "notebooks") == JOBS_DIR.resolve()
    with pytest.raises(rs.RaySubmitError, match="no jobs/ package"):
        rs.find_jobs_dir(tmp_path)


# -- ray_submit: output ---------------------------------------------------------------------------------

SUMMARY = {"status": "passed", "auc": 0.91, "logloss": 0.33, "rounds": 20, "workers": 2, "exit_code": 0}
LOGS = "\n".join([
    "[xgboost-validation] embedded local Ray: 4 CPUs; 2 workers x 1 CPU, 20 rounds",
    "(RayTrainWorker pid=123, ip=10.0.1.5) [xgboost-validation] round 10/20 validation-auc=0.8811 "
    "validation-logloss=0.4012 (1.2 s)",
    "[xgboost-validation] round 20/20 validation-auc=0.9100 validation-logloss=0.3300 (2.5 s)",
    "=== XGBoost-on-Ray validation summary ===",
    "result        : PASSED",
    json.dumps(SUMMARY, sort_keys=True),
    "",
])


def test_summary_is_the_last_json_line(rs):
    assert rs.parse_summary(LOGS) == SUMMARY
    prefixed = LOGS + "\nXGBOOST_VALIDATION_SUMMARY " + json.dumps({**SUMMARY, "auc": 0.5}) + "\n"
    assert rs.parse_summary(prefixed)["auc"] == 0.5
    # Ray's own trailing lines after the summary do not hide it.
    assert rs.parse_summary(LOGS + "\nJob 'raysubmit_x' succeeded\n------\n") == SUMMARY


@pytest.mark.parametrize("logs", ["", "no json here", "{not json}", '{"unrelated": 1}'])
def test_missing_summary_raises(rs, logs):
    with pytest.raises(rs.RaySubmitError, match="no JSON summary"):
        rs.parse_summary(logs)


def test_summary_line_matches_the_jobs_own_format(rs):
    metrics = pytest.importorskip("jobs.metrics")
    s = metrics.JobSummary(rows=100, train_rows=80, validation_rows=20, features=5, workers=2,
                           cpus_per_worker=1, rounds=10, checkpoint_every=5, fit_seconds=1.0,
                           boost_seconds=0.5, auc=0.9, logloss=0.3)
    parsed = rs.parse_summary(metrics.format_summary(s) + "\n" + s.to_json() + "\n")
    assert parsed["auc"] == 0.9 and parsed["status"] == "passed"


def test_progress_parsing(rs):
    progress = rs.parse_progress(LOGS)
    assert [p["round"] for p in progress] == [10, 20]
    assert progress[0]["validation-auc"] == pytest.approx(0.8811)
    assert progress[1]["validation-logloss"] == pytest.approx(0.33)
    assert rs.parse_progress("round 5/10 validation-auc=nan")[0]["validation-auc"] != 0.5


def test_plot_metric(rs):
    progress = rs.parse_progress(LOGS)
    try:
        import matplotlib
    except ImportError:
        assert rs.plot_metric(progress) is None
        return
    matplotlib.use("Agg")
    ax = rs.plot_metric(progress, "validation-auc")
    assert list(ax.lines[0].get_xdata()) == [10, 20]
    assert rs.plot_metric(progress, "no-such-metric") is None


class FakeClient:
    def __init__(self, statuses, logs):
        self.statuses = list(statuses)
        self.logs = list(logs)
        self.submitted = []

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        return "raysubmit_test"

    def get_job_status(self, job_id):
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def get_job_logs(self, job_id):
        return self.logs.pop(0) if len(self.logs) > 1 else self.logs[0]


def test_run_validation_end_to_end_with_a_fake_client(rs):
    half = LOGS[: len(LOGS) // 2]
    client = FakeClient(["PENDING", "RUNNING", "SUCCEEDED"], ["", half, LOGS])
    printed = []
    result = rs.run_validation(workers=2, rows=1000, rounds=20, client=client, jobs_dir=JOBS_DIR,
                               sink=printed.append, poll_s=0)
    assert result.status == "SUCCEEDED" and result.passed
    assert result.summary == SUMMARY
    assert [p["round"] for p in result.progress] == [10, 20]
    (call,) = client.submitted
    assert call["entrypoint"].startswith("python -m jobs.xgboost_validation --workers 2 --rows 1000 --rounds 20")
    assert "runtime_env" not in call  # the Ray image has the job and its pins: nothing else travels
    assert "entrypoint_num_cpus" not in call  # the head advertises no CPUs
    assert "".join(printed[1:]).replace("\n", "") == LOGS.replace("\n", "")  # every log byte printed once


def test_run_validation_gpu_mode_and_extras(rs, monkeypatch):
    monkeypatch.setenv(rs.GPU_WORKERS_ENV, "1")
    client = FakeClient(["SUCCEEDED"], [LOGS])
    rs.run_validation(workers=2, rows=1000, rounds=20, client=client, sink=lambda _: None, poll_s=0,
                      env_vars={"A": "1"}, ship_jobs=True, jobs_dir=JOBS_DIR)
    (call,) = client.submitted
    assert "--device cuda" in call["entrypoint"]
    assert call["runtime_env"] == {"py_modules": [str(JOBS_DIR.resolve())], "env_vars": {"A": "1"}}
    client = FakeClient(["SUCCEEDED"], [LOGS])
    rs.run_validation(client=client, sink=lambda _: None, poll_s=0, device="cpu")  # an explicit device wins
    assert "--device cpu" in client.submitted[0]["entrypoint"]


def test_failed_job_without_summary(rs):
    client = FakeClient(["FAILED"], ["Traceback: boom\n"])
    with pytest.raises(rs.RaySubmitError, match="ended FAILED without a summary"):
        rs.run_validation(client=client, jobs_dir=JOBS_DIR, sink=lambda _: None, poll_s=0)


def test_follow_logs_timeout(rs):
    ticks = iter(range(100))
    client = FakeClient(["RUNNING"], [""])
    with pytest.raises(rs.RaySubmitError, match="still RUNNING"):
        rs.follow_logs(client, "j", sink=lambda _: None, poll_s=0, timeout_s=3, sleep=lambda _: None,
                       clock=lambda: next(ticks))


def test_status_enum_values_are_understood(rs):
    import enum

    class JobStatus(str, enum.Enum):
        SUCCEEDED = "SUCCEEDED"

    client = FakeClient([JobStatus.SUCCEEDED], [LOGS])
    status, _ = rs.follow_logs(client, "j", sink=lambda _: None, poll_s=0)
    assert status == "SUCCEEDED"


def test_follow_logs_prints_whole_lines_while_running(rs):
    client = FakeClient(["RUNNING", "RUNNING", "SUCCEEDED"], ["line 1\nline", "line 1\nline 2\npart", "line 1\nline 2\npartial end"])
    printed = []
    status, logs = rs.follow_logs(client, "j", sink=printed.append, poll_s=0)
    assert printed == ["line 1", "line 2", "partial end"]
    assert status == "SUCCEEDED" and logs.endswith("partial end")


def test_plot_metric_draws_rounds_against_values(rs, monkeypatch):
    import types

    drawn = {}

    class Axes:
        def plot(self, x, y, **kwargs):
            drawn["xy"] = (list(x), list(y))

        def __getattr__(self, name):  # set_xlabel, set_title, grid ...
            return lambda *a, **k: drawn.setdefault(name, a)

    pyplot = types.SimpleNamespace(subplots=lambda **kwargs: (None, Axes()))
    matplotlib = types.ModuleType("matplotlib")
    matplotlib.pyplot = pyplot
    monkeypatch.setitem(sys.modules, "matplotlib", matplotlib)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)
    ax = rs.plot_metric(rs.parse_progress(LOGS), "validation-logloss")
    assert isinstance(ax, Axes)
    assert drawn["xy"] == ([10, 20], [pytest.approx(0.4012), pytest.approx(0.33)])
    assert drawn["set_ylabel"] == ("validation-logloss",)


def test_helper_matches_the_installed_ray_api(rs):
    """Signatures and runtime_env schema of the pinned Ray (no cluster, no network)."""
    import inspect

    job_submission = pytest.importorskip("ray.job_submission")
    runtime_env_mod = pytest.importorskip("ray.runtime_env")
    init = inspect.signature(job_submission.JobSubmissionClient.__init__).parameters
    assert "headers" in init
    submit = inspect.signature(job_submission.JobSubmissionClient.submit_job).parameters
    assert {"entrypoint", "runtime_env", "metadata", "submission_id"} <= set(submit)
    env = runtime_env_mod.RuntimeEnv(**rs.build_runtime_env({"A": "1"}, pip=["rich"], ship_jobs=True,
                                                            jobs_dir=JOBS_DIR))
    assert env["pip"]["packages"] == ["rich"] and env["env_vars"] == {"A": "1"}
    assert env["py_modules"] == [str(JOBS_DIR.resolve())]
    assert {s.name for s in job_submission.JobStatus} >= rs.TERMINAL_STATUSES
