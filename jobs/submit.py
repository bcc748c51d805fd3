"""Submit the validation job to a Ray cluster through the Ray Jobs API, and (optionally) wait for it.

    RAY_AUTH_TOKEN=... python -m jobs.submit --address http://127.0.0.1:8265 --wait -- --rows 200000 --workers 4

The ``jobs`` package travels with the job (``runtime_env.py_modules``) and the job's Python
dependencies other than Ray are installed from the pins in ``jobs/requirements.txt``
(``runtime_env.pip``), so the cluster runs exactly the code and versions of this checkout on
the stock Ray image. The Ray token (``RAY_AUTH_TOKEN``) is sent as a bearer token.

Exit status with ``--wait``: 0 when the job succeeded (which includes meeting its metric),
1 when it failed or was stopped, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

JOBS_DIR = Path(__file__).resolve().parent
ENTRYPOINT_MODULE = "jobs.xgboost_validation"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def job_requirements(path: Path = JOBS_DIR / "requirements.txt") -> list[str]:
    """Pinned requirements the job needs on top of the Ray image (Ray itself comes with the image)."""
    reqs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.lower().startswith("ray"):
            if "==" not in line:
                raise ValueError(f"{path.name}: {line!r} is not pinned with ==")
            reqs.append(line)
    return reqs


def pinned_ray_version(path: Path = JOBS_DIR / "requirements.txt") -> str:
    """The Ray version the job is pinned to (and so the cluster and the notebook image)."""
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.lower().startswith("ray") and "==" in line:
            return line.split("==", 1)[1]
    raise ValueError(f"{path.name} pins no Ray version")


def runtime_env(extra_env: Optional[Mapping[str, str]] = None, *, jobs_dir: Path = JOBS_DIR,
                install_requirements: bool = True) -> dict[str, Any]:
    """Ship the ``jobs`` package and install its pinned dependencies on top of the Ray image.

    ``install_requirements=False`` leaves out ``pip``: for a Ray that already has the pinned
    dependencies (an embedded local Ray in tests), so that nothing is installed at submit time.
    """
    env: dict[str, Any] = {"py_modules": [str(Path(jobs_dir).resolve())]}
    if install_requirements:
        # pip_check off: the image's own packages are not ours to police.
        env["pip"] = {"packages": job_requirements(Path(jobs_dir) / "requirements.txt"), "pip_check": False}
    if extra_env:
        env["env_vars"] = dict(extra_env)
    return env


def entrypoint(job_args: Sequence[str]) -> str:
    return shlex.join(["python", "-m", ENTRYPOINT_MODULE, *job_args])


def auth_headers(token: Optional[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def last_json_line(logs: str) -> Optional[dict]:
    """The job's machine-readable summary: the last line of its output that is a JSON object."""
    for line in reversed(logs.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.submit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=os.environ.get("RAY_JOBS_ADDRESS") or os.environ.get("RAY_ADDRESS"),
                        help="Ray Jobs API URL, e.g. http://127.0.0.1:8265 (default: $RAY_ADDRESS)")
    parser.add_argument("--wait", action="store_true", help="wait for the job, print its logs, exit with its verdict")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds to wait at most (with --wait)")
    parser.add_argument("job_args", nargs="*", help="arguments for python -m jobs.xgboost_validation (after --)")
    args = parser.parse_args(argv)
    if not args.address or not args.address.startswith(("http://", "https://")):
        parser.error(f"--address {args.address!r}: give the Ray Jobs API URL (http://host:8265), or set RAY_ADDRESS")
    if args.timeout <= 0:
        parser.error(f"--timeout {args.timeout}: must be a positive number of seconds")
    return args


def submit_and_wait(
    client: Any,
    job_args: Sequence[str],
    *,
    wait: bool,
    timeout: int,
    poll_seconds: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    out=sys.stdout,
) -> int:
    """Submit through ``client`` (a ray.job_submission.JobSubmissionClient) and return the exit status."""
    job_id = client.submit_job(entrypoint=entrypoint(job_args), runtime_env=runtime_env())
    print(f"submitted {job_id}: {entrypoint(job_args)}", file=out, flush=True)
    if not wait:
        return 0
    waited = 0.0
    status = str(client.get_job_status(job_id)).split(".")[-1]
    while status not in TERMINAL and waited < timeout:
        sleep(poll_seconds)
        waited += poll_seconds
        status = str(client.get_job_status(job_id)).split(".")[-1]
    logs = client.get_job_logs(job_id)
    print(logs, file=out, flush=True)
    if status not in TERMINAL:
        print(f"{job_id}: still {status} after {timeout} s; stopping it", file=out)
        client.stop_job(job_id)
        return 1
    summary = last_json_line(logs)
    print(f"{job_id}: {status}" + (f"; summary: {json.dumps(summary)}" if summary else ""), file=out, flush=True)
    return 0 if status == "SUCCEEDED" else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(args.address, headers=auth_headers(os.environ.get("RAY_AUTH_TOKEN")))
    return submit_and_wait(client, args.job_args, wait=args.wait, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
