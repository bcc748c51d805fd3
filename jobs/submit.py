"""Submit the validation job to a Ray cluster through the Ray Jobs API, and (optionally) wait for it.

    RAY_AUTH_TOKEN=... python -m jobs.submit --address http://127.0.0.1:8265 --wait -- --rows 200000 --workers 4

The platform's Ray image already holds the job and everything it needs: the ``jobs`` package at
/opt/dynamic-factory/jobs on PYTHONPATH and the pins of ``jobs/requirements.txt`` (images/ray/).
A submission therefore sends only the entrypoint and a ``runtime_env`` with what its user asks
for, and nothing by default:

* ``--env KEY=VALUE`` (repeatable): environment variables of the job's driver and workers;
* ``--pip PACKAGE`` (repeatable): extra packages, which Ray installs per job in a virtualenv that
  still sees the image's packages (slower start-up: only for what the image lacks);
* ``--working-dir DIR``: a local directory uploaded as the job's working directory;
* ``--ship-jobs``: upload this checkout's ``jobs/`` package (``runtime_env.py_modules``) to run
  modified job code; it comes first on the workers' PYTHONPATH, ahead of the image's copy.

The Ray token (``RAY_AUTH_TOKEN``) is sent as a bearer token.

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


def runtime_env(env_vars: Optional[Mapping[str, str]] = None, *, pip: Sequence[str] = (),
                working_dir: Optional[str] = None, ship_jobs: bool = False,
                jobs_dir: Path = JOBS_DIR) -> dict[str, Any]:
    """The job's ``runtime_env``: only what was asked for (``{}`` by default).

    The cluster image carries the job and its pinned dependencies, so nothing needs to travel.
    ``env_vars``: environment of the job's processes. ``pip``: extra packages (pip requirement
    strings) installed for this job only. ``working_dir``: a local directory (or a remote URI Ray
    can fetch) uploaded as the job's working directory. ``ship_jobs``: upload ``jobs_dir`` (this
    checkout's ``jobs`` package) as a ``py_modules`` entry, to run modified job code instead of
    the image's; Ray puts it first on the workers' PYTHONPATH.
    """
    if isinstance(pip, str):
        raise ValueError("pip must be a sequence of requirement strings, not one string")
    env: dict[str, Any] = {}
    if ship_jobs:
        jobs_dir = Path(jobs_dir).resolve()
        if not (jobs_dir / "__init__.py").is_file() or not (jobs_dir / "xgboost_validation.py").is_file():
            raise ValueError(f"{jobs_dir} is not the jobs package (needs __init__.py and xgboost_validation.py)")
        env["py_modules"] = [str(jobs_dir)]
    if pip:
        # pip_check off: the image's own packages are not ours to police.
        env["pip"] = {"packages": [str(p) for p in pip], "pip_check": False}
    if working_dir:
        env["working_dir"] = str(working_dir)
    if env_vars:
        bad = [k for k, v in env_vars.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ValueError(f"env_vars must map strings to strings: {bad}")
        env["env_vars"] = dict(env_vars)
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
    g = parser.add_argument_group("runtime_env (nothing by default: the cluster image has the job and its pins)")
    g.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable of the job's processes (repeatable)")
    g.add_argument("--pip", action="append", default=[], metavar="PACKAGE",
                   help="extra package installed for this job only (repeatable)")
    g.add_argument("--working-dir", default=None, metavar="DIR", help="directory uploaded as the job's working dir")
    g.add_argument("--ship-jobs", action="store_true",
                   help="upload this checkout's jobs/ package to run modified job code (default: the image's)")
    parser.add_argument("job_args", nargs="*", help="arguments for python -m jobs.xgboost_validation (after --)")
    args = parser.parse_args(argv)
    if not args.address or not args.address.startswith(("http://", "https://")):
        parser.error(f"--address {args.address!r}: give the Ray Jobs API URL (http://host:8265), or set RAY_ADDRESS")
    if args.timeout <= 0:
        parser.error(f"--timeout {args.timeout}: must be a positive number of seconds")
    bad = [e for e in args.env if "=" not in e or not e.split("=", 1)[0]]
    if bad:
        parser.error(f"--env {bad[0]!r}: use KEY=VALUE")
    args.env_vars = dict(e.split("=", 1) for e in args.env)
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
    env: Optional[Mapping[str, Any]] = None,
) -> int:
    """Submit through ``client`` (a ray.job_submission.JobSubmissionClient) and return the exit status.

    ``env``: the ``runtime_env`` (see :func:`runtime_env`); none by default."""
    kwargs: dict[str, Any] = {"entrypoint": entrypoint(job_args)}
    if env:
        kwargs["runtime_env"] = dict(env)
    job_id = client.submit_job(**kwargs)
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

    try:
        env = runtime_env(args.env_vars, pip=args.pip, working_dir=args.working_dir, ship_jobs=args.ship_jobs)
    except ValueError as exc:
        print(f"python -m jobs.submit: {exc}", file=sys.stderr)
        return 2
    client = JobSubmissionClient(args.address, headers=auth_headers(os.environ.get("RAY_AUTH_TOKEN")))
    return submit_and_wait(client, args.job_args, wait=args.wait, timeout=args.timeout, env=env)


if __name__ == "__main__":
    sys.exit(main())
