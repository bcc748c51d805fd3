"""jobs.submit: what is sent to the Ray Jobs API, and how the verdict is read (no Ray, no network)."""

from __future__ import annotations

import io
import json
import re

import pytest

import versions
from jobs import submit


class FakeJobsApi:
    """Plays the Jobs API: the job runs for a few polls, then ends with ``final``."""

    def __init__(self, final="SUCCEEDED", polls_before_end=2, logs="training...\n"):
        self.final, self.remaining, self.logs = final, polls_before_end, logs
        self.submitted: list[dict] = []
        self.stopped: list[str] = []

    def submit_job(self, *, entrypoint, runtime_env=None):
        self.submitted.append({"entrypoint": entrypoint, "runtime_env": runtime_env})
        return "raysubmit_1"

    def get_job_status(self, job_id):
        if self.remaining > 0:
            self.remaining -= 1
            return "JobStatus.RUNNING"
        return f"JobStatus.{self.final}"

    def get_job_logs(self, job_id):
        return self.logs

    def stop_job(self, job_id):
        self.stopped.append(job_id)


def test_runtime_env_is_empty_by_default_the_image_has_the_job_and_its_pins():
    assert submit.runtime_env() == {}
    assert submit.pinned_ray_version() == versions.RAY_VERSION


def test_runtime_env_carries_only_the_extras_asked_for(tmp_path):
    env = submit.runtime_env({"A": "1"}, pip=["rich==13.9.4"], working_dir=str(tmp_path))
    assert env == {"env_vars": {"A": "1"}, "pip": {"packages": ["rich==13.9.4"], "pip_check": False},
                   "working_dir": str(tmp_path)}
    json.dumps(env)  # Ray sends it as JSON
    with pytest.raises(ValueError, match="sequence"):
        submit.runtime_env(pip="rich")
    with pytest.raises(ValueError, match="strings"):
        submit.runtime_env({"A": 1})


def test_ship_jobs_uploads_this_checkout_s_package_only_when_asked(tmp_path):
    env = submit.runtime_env(ship_jobs=True)
    assert env == {"py_modules": [str(submit.JOBS_DIR)]}
    with pytest.raises(ValueError, match="not the jobs package"):
        submit.runtime_env(ship_jobs=True, jobs_dir=tmp_path)


def test_cli_runtime_env_options(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    args = submit.parse_args(["--address", "http://h:8265", "--env", "A=1", "--env", "B=x=y", "--pip", "rich",
                              "--ship-jobs", "--", "--rows", "10"])
    assert args.env_vars == {"A": "1", "B": "x=y"} and args.pip == ["rich"] and args.ship_jobs
    assert args.job_args == ["--rows", "10"]
    plain = submit.parse_args(["--address", "http://h:8265", "--", "--rows", "10"])
    assert (plain.env_vars, plain.pip, plain.working_dir, plain.ship_jobs) == ({}, [], None, False)


def test_job_requirements_pin_the_same_ray_and_xgboost_as_versions():
    text = (submit.JOBS_DIR / "requirements.txt").read_text()
    assert re.search(rf"^ray\[[a-z,]+\]=={re.escape(versions.RAY_VERSION)}$", text, re.M)
    assert re.search(rf"^xgboost=={re.escape(versions.XGBOOST_VERSION)}$", text, re.M)


def test_unpinned_requirement_is_refused(tmp_path):
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("ray[default]==2.60.0\nxgboost>=3\n")
    with pytest.raises(ValueError, match="not pinned"):
        submit.job_requirements(reqs)


def test_entrypoint_quotes_arguments():
    assert submit.entrypoint(["--rows", "1000", "--run-name", "a b"]) == \
        "python -m jobs.xgboost_validation --rows 1000 --run-name 'a b'"


def test_token_becomes_a_bearer_header_only_when_present():
    assert submit.auth_headers("s3cr3t") == {"Authorization": "Bearer s3cr3t"}
    assert submit.auth_headers(None) == {} and submit.auth_headers("") == {}


def test_success_after_polling_returns_zero_and_prints_the_summary():
    summary = {"passed": True, "auc": 0.87}
    api = FakeJobsApi(logs="round 10\n" + json.dumps(summary) + "\n")
    out = io.StringIO()
    assert submit.submit_and_wait(api, ["--rows", "10"], wait=True, timeout=60, sleep=lambda s: None, out=out) == 0
    assert api.submitted[0]["entrypoint"].endswith("--rows 10")
    assert api.submitted[0]["runtime_env"] is None  # nothing travels by default
    assert '"auc": 0.87' in out.getvalue()


def test_extras_reach_the_submission():
    api = FakeJobsApi()
    env = submit.runtime_env({"A": "1"})
    submit.submit_and_wait(api, [], wait=False, timeout=10, out=io.StringIO(), env=env)
    assert api.submitted[0]["runtime_env"] == {"env_vars": {"A": "1"}}


def test_failed_job_returns_one():
    api = FakeJobsApi(final="FAILED")
    assert submit.submit_and_wait(api, [], wait=True, timeout=60, sleep=lambda s: None, out=io.StringIO()) == 1


def test_timeout_stops_the_job_and_fails():
    api = FakeJobsApi(polls_before_end=100)
    code = submit.submit_and_wait(api, [], wait=True, timeout=10, poll_seconds=5, sleep=lambda s: None, out=io.StringIO())
    assert code == 1 and api.stopped == ["raysubmit_1"]


def test_no_wait_returns_after_submitting():
    api = FakeJobsApi(polls_before_end=100)
    assert submit.submit_and_wait(api, [], wait=False, timeout=10, out=io.StringIO()) == 0
    assert api.remaining == 100


def test_last_json_line_skips_noise():
    assert submit.last_json_line('a\n{"x": 1}\nnot json {\n') == {"x": 1}
    assert submit.last_json_line("no summary here") is None


@pytest.mark.parametrize("argv,fragment", [
    (["--address", "ray-head:8265"], "http://host:8265"),
    (["--address", "http://h:8265", "--timeout", "0"], "positive"),
    (["--address", "http://h:8265", "--env", "NOVALUE"], "KEY=VALUE"),
])
def test_bad_arguments_exit_2(argv, fragment, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(SystemExit) as info:
        submit.parse_args(argv)
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err
