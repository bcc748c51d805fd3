"""The example notebook, executed as a user of the platform runs it: a real kernel, the notebook image's
file layout, and a Ray head with token authentication behind the Jobs API.

* The image layouts come from the Dockerfiles themselves: the ``COPY`` lines of ``images/notebook/Dockerfile``
  and of ``images/ray/Dockerfile`` are replayed into temporary roots (``/opt/dynamic-factory/...`` ->
  ``<tmp>/rootfs/opt/dynamic-factory/...``) and their ``ENV PYTHONPATH`` is mapped the same way. The kernel
  starts in an empty "home", not in ``notebooks/``, so ``import ray_submit`` and ``import jobs`` can only work
  through that layout, as on the cluster; the Ray head gets the Ray image's ``PYTHONPATH``, so the job runs
  from the image's copy of ``jobs`` with nothing uploaded, as on the platform.
* The Ray head is ``ray start --head --block`` (as on the RayCluster), in its own process group, with
  ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN``; every port it would otherwise take by default is a free one,
  its output goes to a log file, and it is stopped (SIGTERM, drain off) when this module ends: one Ray at a
  time, never next to ``tests/jobs/test_job_local_ray.py``'s.
* The kernel gets what ``charts/jupyterhub_values.py`` gives a user's server (``RAY_ADDRESS``, ``RAY_AUTH_MODE``,
  ``RAY_AUTH_TOKEN_PATH`` naming a read-only file that holds the token, ``DF_RAY_GPU_WORKERS=0``: no GPU group here) plus the notebook's documented knobs for a
  small, offline run: ``DF_NOTEBOOK_*`` (job size, poll interval) and ``RAY_JOB_STORAGE_PATH``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("ray")
pytest.importorskip("xgboost")

from jobs.config import LOCAL_HEALTH_CHECK_INTERVAL_S  # noqa: E402
from tests.platform_synth import ROOT  # noqa: E402

DOCKERFILE = ROOT / "images" / "notebook" / "Dockerfile"
RAY_DOCKERFILE = ROOT / "images" / "ray" / "Dockerfile"
NOTEBOOK = ROOT / "notebooks" / "xgboost_on_ray.ipynb"
# What the image build leaves out of the context (stacks/jupyterhub_stack.py, notebook_image_asset).
BUILD_CONTEXT_IGNORE = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
VENV_BIN = Path(sys.executable).parent

# jobs.train.LOCAL_TRAIN_ENV, which the job applies only to an embedded Ray; given to the head here so that
# the job's Train controller and workers inherit it (importing jobs.train would load Ray Train into pytest).
LOCAL_TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": LOCAL_HEALTH_CHECK_INTERVAL_S,
                   "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
TOKEN = "df-test-" + os.urandom(16).hex()
# A small job: the notebook reads these (its parameters cell) instead of its platform-sized defaults.
JOB_SIZE = {"DF_NOTEBOOK_WORKERS": "2", "DF_NOTEBOOK_ROWS": "20000", "DF_NOTEBOOK_ROUNDS": "10",
            "DF_NOTEBOOK_CHECKPOINT_EVERY": "5", "DF_NOTEBOOK_POLL_S": "0.5"}
RAY_START_TIMEOUT_S = 90
CELL_TIMEOUT_S = 240


# --------------------------------------------------------------------------------------------------------
# The image, from its Dockerfile
# --------------------------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` per instruction: comments dropped, ``\\`` continuations joined."""
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, args = full.partition(" ")
            instructions.append((word.upper(), args.strip()))
    return instructions


def image_layout(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The Dockerfile's ``COPY`` pairs ``(source in the build context, absolute image path)`` and the final
    ``PYTHONPATH`` entries (``$PYTHONPATH`` / ``${PYTHONPATH}`` expanded from earlier ``ENV`` lines)."""
    copies: list[tuple[str, str]] = []
    env: dict[str, str] = {}
    for word, args in dockerfile_instructions(text):
        if word == "COPY":
            if args.startswith("["):
                parts = json.loads(args)
            else:
                parts = [p for p in shlex.split(args) if not p.startswith("--")]
            if any(p.startswith("--from") for p in shlex.split(args)):
                continue  # from another stage, not from the build context
            *sources, dest = parts
            assert sources and dest.startswith("/"), f"COPY {args!r}: expected sources and an absolute destination"
            for source in sources:
                copies.append((source, dest))
        elif word == "ENV":
            parts = shlex.split(args)
            pairs = [p.partition("=") for p in parts]
            if all(sep for _, sep, _ in pairs):
                assignments = [(k, v) for k, _, v in pairs]
            else:  # legacy form: ENV KEY value with spaces
                assignments = [(parts[0], " ".join(parts[1:]))]
            for key, value in assignments:
                env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
    pythonpath = [p for p in env.get("PYTHONPATH", "").split(":") if p]
    return copies, pythonpath


def in_root(root: Path, image_path: str) -> Path:
    """An absolute path of the image, inside the temporary root."""
    return root / image_path.lstrip("/")


def lay_out_image(root: Path, copies) -> None:
    """Replay the COPY lines (build context = repository root, as the CDK asset builds it)."""
    for source, dest in copies:
        src = ROOT / source
        assert src.exists(), f"COPY {source}: not in the build context ({ROOT})"
        target = in_root(root, dest)
        if src.is_dir():
            shutil.copytree(src, target, ignore=BUILD_CONTEXT_IGNORE, dirs_exist_ok=True)
        else:
            if dest.endswith("/"):
                target = target / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


class Image(NamedTuple):
    root: Path  # the image's "/"
    copies: list[tuple[str, str]]  # (build-context source, image path)
    pythonpath: list[str]  # the image's PYTHONPATH entries
    mapped: list[str]  # the same, inside root

    def copied_to(self, source: str) -> Path:
        (dest,) = [d for s, d in self.copies if s.rstrip("/") == source]
        return in_root(self.root, dest)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    copies, pythonpath = image_layout(DOCKERFILE.read_text())
    root = tmp_path_factory.mktemp("image") / "rootfs"
    lay_out_image(root, copies)
    return Image(root, copies, pythonpath, [str(in_root(root, p)) for p in pythonpath])


@pytest.fixture(scope="module")
def ray_image(tmp_path_factory) -> Image:
    """The Ray image's layout: where the job's code sits and the PYTHONPATH that makes ``jobs`` importable."""
    copies, pythonpath = image_layout(RAY_DOCKERFILE.read_text())
    root = tmp_path_factory.mktemp("ray-image") / "rootfs"
    lay_out_image(root, copies)
    return Image(root, copies, pythonpath, [str(in_root(root, p)) for p in pythonpath])


@pytest.fixture(scope="module")
def user_home(tmp_path_factory):
    """A user's home: empty, nothing of the repository in it, no ~/.ray/auth_token."""
    home = tmp_path_factory.mktemp("home") / "jovyan"
    home.mkdir()
    return home


def base_env(home: Path, pythonpath: list[str]) -> dict[str, str]:
    """A clean environment (nothing inherited from pytest). The venv's Python comes first on PATH: it is the
    kernel's and, on the head, the one that runs the job's ``python -m jobs.xgboost_validation``."""
    return {
        "PATH": os.pathsep.join([str(VENV_BIN), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(pythonpath),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def test_the_dockerfile_layout_is_what_the_notebook_needs(image):
    assert (image.copied_to("jobs") / "submit.py").is_file(), image.copies
    assert (image.copied_to("notebooks") / "ray_submit.py").is_file(), image.copies
    assert image.pythonpath, "the Dockerfile sets no PYTHONPATH"


def import_in_image(home, pythonpath, code):
    return subprocess.run([sys.executable, "-c", code], cwd=home, env=base_env(home, pythonpath),
                          capture_output=True, text=True, timeout=60)


def test_the_first_cell_imports_resolve_through_the_image_layout_from_a_home(image, user_home):
    proc = import_in_image(user_home, image.mapped,
                           "import ray_submit, jobs; print(ray_submit.__file__); print(jobs.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(image.copied_to("notebooks") / "ray_submit.py"),
                                   str(image.copied_to("jobs") / "__init__.py")]  # not the repository's


def test_the_ray_image_carries_the_job(ray_image, user_home):
    """What lets submissions send no code: ``jobs`` importable through the Ray image's PYTHONPATH."""
    assert (ray_image.copied_to("jobs") / "xgboost_validation.py").is_file(), ray_image.copies
    proc = import_in_image(user_home, ray_image.mapped, "import jobs.xgboost_validation as j; print(j.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(ray_image.copied_to("jobs") / "xgboost_validation.py")


def test_without_the_notebooks_dir_on_pythonpath_the_first_cell_fails(image, user_home):
    """The defect this file was written for: PYTHONPATH with only the directory that holds ``jobs/``."""
    jobs_parent = str(image.copied_to("jobs").parent)
    assert jobs_parent in image.mapped, image.pythonpath
    proc = import_in_image(user_home, [jobs_parent], "import ray_submit")
    assert proc.returncode != 0
    assert "ModuleNotFoundError: No module named 'ray_submit'" in proc.stderr


# --------------------------------------------------------------------------------------------------------
# A Ray head with token auth
# --------------------------------------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def http(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class RayHead:
    """``ray start --head --block`` with token auth, 2 CPUs and a small object store, in its own process
    group; ``wait_ready()`` returns once its Jobs API answers (the kernel starts meanwhile)."""

    def __init__(self, base: Path, pythonpath: list[str]):
        self.base = base
        # Always short: Unix socket paths below it are capped at 107 bytes, and with the dashboard the longest
        # (<temp>/session_<date>_<time>_<pid>/sockets/dash_MetricsHead) leaves ~39 characters, fewer than
        # jobs.config.MAX_RAY_TEMP_DIR_CHARS (the job's embedded Ray runs without a dashboard).
        self.temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        home = base / "home"  # no ~/.ray/auth_token: the token comes from the environment only
        home.mkdir()
        gcs, dashboard, client_server, agent = free_ports(4)  # the ports Ray would take by default
        self.url, self.token = f"http://127.0.0.1:{dashboard}", TOKEN
        env = {**base_env(home, pythonpath), **LOCAL_TRAIN_ENV,
               "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN,
               "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # SIGTERM stops at once (no drain wait)
               "RAY_USAGE_STATS_ENABLED": "0"}
        cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
               "--port", str(gcs), "--ray-client-server-port", str(client_server),
               "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
               "--dashboard-agent-listen-port", str(agent), "--include-dashboard", "true",
               "--num-cpus", "2", "--object-store-memory", str(100 * 1024 ** 2),
               "--temp-dir", self.temp_dir, "--disable-usage-stats"]
        self.log = base / "ray-start.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self._ready = False

    def wait_ready(self, timeout_s: float = RAY_START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._ready:
            assert self.proc.poll() is None, f"ray start exited {self.proc.returncode}:\n{tail(self.log)}"
            with contextlib.suppress(OSError):
                self._ready = http(f"{self.url}/api/jobs/", self.token)[0] == 200
            if not self._ready:
                assert time.monotonic() < deadline, f"no Jobs API at {self.url} after {timeout_s} s:\n{tail(self.log)}"
                time.sleep(0.3)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # whatever of ours is left in its process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory, ray_image):
    head = RayHead(tmp_path_factory.mktemp("ray-head"), ray_image.mapped)
    try:
        yield head
    finally:
        head.stop()


# --------------------------------------------------------------------------------------------------------
# The notebook, executed
# --------------------------------------------------------------------------------------------------------


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.fixture(scope="module")
def executed(image, user_home, ray_head, tmp_path_factory):
    """``(executed notebook, error or None)``: every cell run in a fresh ipykernel."""
    # The token as the platform hands it over: the Secret mounted as a file readable by the server's group.
    token_file = tmp_path_factory.mktemp("ray-auth") / "token"
    token_file.write_text(ray_head.token)
    token_file.chmod(0o440)
    env = {**base_env(user_home, image.mapped), **JOB_SIZE,
           # What charts/jupyterhub_values.py gives every user's server ...
           "RAY_ADDRESS": ray_head.url, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file),
           "DF_RAY_GPU_WORKERS": "0",
           # ... and the local-run switch the notebook documents.
           "RAY_JOB_STORAGE_PATH": str(tmp_path_factory.mktemp("ray-results")),
           # A quieter kernel log (debugger and jupyter_core warnings).
           "PYDEVD_DISABLE_FILE_VALIDATION": "1", "JUPYTER_PLATFORM_DIRS": "1"}
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(user_home)}},  # the kernel's cwd
                                     on_notebook_start=lambda notebook: ray_head.wait_ready())
    kernel_log = tmp_path_factory.mktemp("kernel") / "kernel.log"
    error = None
    with open(kernel_log, "wb") as out:
        try:
            client.execute(env=env, stdout=out, stderr=subprocess.STDOUT)
        except nbclient.exceptions.CellExecutionError as e:
            printed = "".join(stream_text(c) for c in nb.cells if c.cell_type == "code")
            error = f"{e}\n--- printed (end) ---\n{printed[-3000:]}\n--- kernel log ---\n{tail(kernel_log)}"
    return nb, error


def code_cell(nb, marker: str):
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    return cell


def test_every_cell_runs_without_error(executed):
    nb, error = executed
    assert error is None, error
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None, cell.source
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.source


def test_the_first_cell_found_the_image_layout_and_the_token(executed, image):
    nb, _ = executed
    out = stream_text(code_cell(nb, "import ray_submit"))
    assert "token auth   : on" in out
    assert f"jobs package : {image.copied_to('jobs')}\n" in out
    assert "GPU workers  : no (DF_RAY_GPU_WORKERS)" in out
    assert "WARNING" not in out  # the kernel's Ray is the pinned one


def submitted_job(nb) -> tuple[str, str]:
    """``(job id, final status)`` as the run cell prints them last."""
    out = stream_text(code_cell(nb, "run_validation("))
    found = re.findall(r"^(raysubmit_\w+) ([A-Z]+)$", out, re.M)
    assert found, out[-2000:]
    return found[-1]


def test_the_job_went_through_the_jobs_api_with_the_token(executed, ray_head):
    nb, _ = executed
    url, token = ray_head.url, ray_head.token
    job_id, status_in_notebook = submitted_job(nb)
    assert status_in_notebook == "SUCCEEDED"

    # Token auth is really on: no token is refused, a wrong one too.
    assert http(f"{url}/api/jobs/")[0] == 401
    assert http(f"{url}/api/jobs/", "not-the-token")[0] == 403

    status, body = http(f"{url}/api/jobs/{job_id}", token)
    assert status == 200, body
    job = json.loads(body)
    assert job["status"] == "SUCCEEDED", job
    assert job["metadata"].get("submitted-from") == "jupyterhub"  # ray_submit.run_validation's
    assert shlex.split(job["entrypoint"])[:11] == [
        "python", "-m", "jobs.xgboost_validation", "--workers", JOB_SIZE["DF_NOTEBOOK_WORKERS"],
        "--rows", JOB_SIZE["DF_NOTEBOOK_ROWS"], "--rounds", JOB_SIZE["DF_NOTEBOOK_ROUNDS"],
        "--device", "cpu"]  # from DF_RAY_GPU_WORKERS=0
    # The code and its pins come from the Ray image: nothing uploaded, nothing installed.
    assert not job.get("runtime_env"), job.get("runtime_env")


def test_the_job_passed(executed):
    nb, _ = executed
    out = stream_text(code_cell(nb, "json.dumps(result.summary"))
    summary_text, _, verdict = out.rpartition("}\n")
    summary = json.loads(summary_text + "}")
    assert verdict.startswith("PASSED - validation AUC"), out
    assert summary["status"] == "passed", summary
    assert summary["rows"] == int(JOB_SIZE["DF_NOTEBOOK_ROWS"])
    assert summary["rounds"] == int(JOB_SIZE["DF_NOTEBOOK_ROUNDS"])
    assert summary["workers"] == int(JOB_SIZE["DF_NOTEBOOK_WORKERS"])
    assert summary["auc"] >= 0.8
    # The job's progress lines came back through the Jobs API logs (one per checkpoint) ...
    run_out = stream_text(code_cell(nb, "run_validation("))
    assert re.search(r"round 10/10 validation-auc=", run_out), run_out[-2000:]
    assert len(re.findall(r"\] round \d+/10 ", run_out)) == 10 // int(JOB_SIZE["DF_NOTEBOOK_CHECKPOINT_EVERY"])
    # ... without Ray's noise: the job log is a file, so no colour codes either.
    for noise in ("\x1b[", "Failed to query Ray Train Controller", "Token authentication is enabled",
                  " got rank "):
        assert noise not in run_out, noise
