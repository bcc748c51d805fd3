"""Write the validation runner's hash-pinned lock: deploy/validation-runner/requirements.txt.

The runner (cdk_constructs/validation_runner.py) installs its Python packages with
``pip install --require-hashes --no-deps --only-binary :all:``: every package pinned, every file checked
against a SHA-256 taken here. The lock is for the build's interpreter only, CodeBuild's standard:7.0 image
(Ubuntu 22.04, glibc 2.35, x86_64) with Python ``versions.RAY_PYTHON_VERSION``, so it carries one wheel per
package, the one pip picks there:

1. resolve ``requirements.in`` (next to the lock) with pip-tools' ``pip-compile --generate-hashes`` against
   PyPI (this machine's Python must be that minor version: markers are evaluated for it);
2. ``pip download --no-deps --only-binary :all:`` of that resolution for the build's platform tags (pip
   checks each download against the hashes of step 1);
3. hash each downloaded wheel and write ``name==version --hash=sha256:...``.

Run it from the repository root with an interpreter that has pip-tools (``pip install pip-tools``), with
network access to PyPI::

    python -m tools.lock_runner_requirements

The pure parts (wheel names, the lock's text) are tested offline (tests/policy/test_pipeline_reach.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import versions

# Plain Python only (it runs in a bare interpreter with pip-tools): the path is the runner's RUNNER_REQUIREMENTS,
# which a test checks.
REPO_ROOT = Path(__file__).resolve().parent.parent
LOCK = REPO_ROOT / "deploy" / "validation-runner" / "requirements.txt"
SOURCE = LOCK.with_suffix(".in")
INDEX = "https://pypi.org/simple"
# glibc of the build image (Ubuntu 22.04): pip there accepts manylinux_2_35 down to the oldest tags.
BUILD_GLIBC_MINOR = 35
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    sha256: str


def build_platforms(glibc_minor: int = BUILD_GLIBC_MINOR) -> list[str]:
    """pip's ``--platform`` tags for the build image, most specific first (pip's own order of preference)."""
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(glibc_minor, 16, -1)]
    return tags + ["manylinux2014_x86_64", "manylinux_2_12_x86_64", "manylinux2010_x86_64",
                   "manylinux_2_5_x86_64", "manylinux1_x86_64"]


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pin_of(wheel: Path) -> Pin:
    """name, version and SHA-256 of a wheel file (PEP 427 file name)."""
    match = _WHEEL.match(wheel.name)
    if not match:
        raise ValueError(f"{wheel.name} is not a wheel file name")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return Pin(normalize(match["name"]), match["version"], digest)


def render(pins: list[Pin], source: str) -> str:
    """The lock's text: a header saying what it is for, then one pin with its hash per package, by name."""
    header = (
        "# The validation runner's packages, hash-pinned (pip install --require-hashes --no-deps --only-binary :all:).\n"
        f"# Resolved from {source} for CPython {versions.RAY_PYTHON_VERSION} on linux x86_64 (CodeBuild standard:7.0,\n"
        f"# glibc 2.{BUILD_GLIBC_MINOR}), one wheel per package. Written by: python -m tools.lock_runner_requirements\n"
    )
    lines = [f"{p.name}=={p.version} \\\n    --hash=sha256:{p.sha256}\n" for p in sorted(pins, key=lambda p: p.name)]
    return header + "".join(lines)


def _run(args: list[str]) -> None:
    # The machine's own pip configuration (extra indexes, constraints) must not shape the lock: PyPI only.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    subprocess.run(args, check=True, env=env)


def lock() -> str:
    if sys.version_info[:2] != tuple(int(p) for p in versions.RAY_PYTHON_VERSION.split(".")):
        raise SystemExit(f"run this with Python {versions.RAY_PYTHON_VERSION} (markers are evaluated for it)")
    with tempfile.TemporaryDirectory() as tmp:
        resolved = Path(tmp) / "resolved.txt"
        _run([sys.executable, "-m", "piptools", "compile", "--quiet", "--generate-hashes", "--no-header",
              "--allow-unsafe", "--strip-extras", "--index-url", INDEX, "-o", str(resolved), str(SOURCE)])
        wheels = Path(tmp) / "wheels"
        platforms = [arg for tag in build_platforms() for arg in ("--platform", tag)]
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
              *platforms, "--python-version", versions.RAY_PYTHON_VERSION, "--implementation", "cp",
              "--index-url", INDEX, "-r", str(resolved), "-d", str(wheels)])
        pins = [pin_of(w) for w in sorted(wheels.glob("*.whl"))]
    return render(pins, SOURCE.relative_to(REPO_ROOT).as_posix())


def main() -> int:
    LOCK.write_text(lock())
    print(f"wrote {LOCK.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
