"""Supply chain of the Ray image: every Python package it installs is pinned, with hashes, to the platform's versions.

images/ray/lock.sh writes one lock per XGBoost distribution (images/ray/requirements-<distribution>.txt) from
jobs/requirements.txt; the Dockerfile installs the lock of its XGBOOST_PACKAGE build argument with
``--require-hashes --only-binary=:all:`` (pip's secure installs). The distributions come from the synthesized image
assets, the pins from versions.py and jobs/requirements.txt; requirements are parsed by ``packaging`` (PEP 508).
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import versions
from tests.platform_synth import ROOT

RAY_DIR = ROOT / "images" / "ray"
DOCKERFILE = RAY_DIR / "Dockerfile"
JOB_REQUIREMENTS = ROOT / "jobs" / "requirements.txt"
DISTRIBUTIONS = ("xgboost-cpu", "xgboost")  # stacks/ray_stack.py: the CPU image and the GPU (CUDA) image
ARCHITECTURES = ("x86_64", "aarch64")


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    hashes: tuple[str, ...]
    options: tuple[str, ...]  # anything else on the line

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def version(self) -> str | None:
        spec = list(self.requirement.specifier)
        return spec[0].version if len(spec) == 1 and spec[0].operator == "==" else None


def lock_path(distribution: str) -> Path:
    return RAY_DIR / f"requirements-{distribution}.txt"


def logical_lines(text: str) -> list[str]:
    """Requirement-file lines: comments dropped, backslash continuations joined."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            out.append(line)
    return out


def parse_lock(path: Path) -> list[Pin]:
    pins = []
    for line in logical_lines(path.read_text()):
        words = shlex.split(line)
        options = tuple(w for w in words[1:] if not w.startswith("--hash="))
        hashes = tuple(w.removeprefix("--hash=") for w in words[1:] if w.startswith("--hash="))
        pins.append(Pin(Requirement(words[0]), hashes, options))
    return pins


def job_pins() -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, logical_lines(JOB_REQUIREMENTS.read_text()))}


def expected_top_level(distribution: str) -> dict[str, str]:
    """What the image asks for: the job's pins with ``xgboost`` replaced by ``distribution`` (same version)."""
    pins = {name: str(next(iter(r.specifier)).version) for name, r in job_pins().items()}
    pins[canonicalize_name(distribution)] = pins.pop("xgboost")
    return pins


@pytest.fixture(scope="module", params=DISTRIBUTIONS)
def lock(request) -> tuple[str, list[Pin]]:
    path = lock_path(request.param)
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: run `bash images/ray/lock.sh`"
    return request.param, parse_lock(path)


def test_every_requirement_is_pinned_exactly_and_carries_sha256_hashes(lock):
    distribution, pins = lock
    assert pins, distribution
    for pin in pins:
        assert pin.version is not None and not pin.requirement.url, f"{distribution}: {pin.requirement} is not `==`"
        assert not pin.requirement.extras, f"{distribution}: {pin.requirement}: extras pull unlisted packages"
        assert pin.hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), pin.requirement
        assert not pin.options, f"{distribution}: {pin.requirement}: unexpected options {pin.options}"
    names = [pin.name for pin in pins]
    assert len(names) == len(set(names)), f"{distribution}: a package is pinned twice"


def test_no_line_points_pip_at_another_index_or_file(lock):
    """Index, find-links, editable and nested-file options would bypass the pins or the hashes."""
    distribution, _ = lock
    for line in logical_lines(lock_path(distribution).read_text()):
        assert not line.startswith("-"), f"{distribution}: option line {line!r}"


def test_the_lock_pins_exactly_the_platforms_versions(lock):
    distribution, pins = lock
    locked = {pin.name: pin.version for pin in pins}
    for name, version in expected_top_level(distribution).items():
        assert locked.get(name) == version, f"{distribution}: {name} locked at {locked.get(name)}, wanted {version}"
    assert locked["ray"] == versions.RAY_VERSION
    assert locked[canonicalize_name(distribution)] == versions.XGBOOST_VERSION
    # One XGBoost distribution per image: the other one would shadow the `xgboost` module.
    other = next(d for d in DISTRIBUTIONS if d != distribution)
    assert canonicalize_name(other) not in locked


def test_the_lock_was_resolved_for_the_images_python(lock):
    distribution, _ = lock
    header = lock_path(distribution).read_text().splitlines()[:3]
    assert any(f"with Python {versions.RAY_PYTHON_VERSION}" in line for line in header), header


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_lock_holds_every_dependency_of_what_it_pins(lock, arch):
    """The dependency closure on linux/<arch>, Python 3.11, read from the packages' own metadata (Requires-Dist)
    where this environment has the pinned version installed; pip's --require-hashes enforces the rest at build."""
    distribution, pins = lock
    locked = {pin.name: pin.version for pin in pins}
    environment = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": arch,
                   "python_version": versions.RAY_PYTHON_VERSION}
    roots = {canonicalize_name(r.name): set(r.extras) for r in job_pins().values()}
    roots[canonicalize_name(distribution)] = roots.pop("xgboost")
    missing, checked, queue, seen = [], 0, list(roots.items()), set()
    while queue:
        name, extras = queue.pop()
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != locked.get(name):
            continue  # another version here: its metadata says nothing about the pinned one
        checked += 1
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = any(req.marker is None or Marker(str(req.marker)).evaluate({**environment, "extra": e})
                         for e in (extras or {""}))
            if not wanted:
                continue
            dep = canonicalize_name(req.name)
            if dep not in locked:
                missing.append(f"{name} {dist.version} needs {req}")
            else:
                queue.append((dep, set(req.extras)))
    assert checked >= len(roots), f"{distribution}: too few pinned versions installed here to check ({checked})"
    assert not missing, f"{distribution} on {arch}: " + "; ".join(sorted(set(missing)))


def _run_instructions(text: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", text)
    return [line.strip()[4:] for line in joined.splitlines() if line.strip().upper().startswith("RUN ")]


def test_the_dockerfile_installs_only_from_a_lock_with_hashes_and_wheels():
    text = DOCKERFILE.read_text()
    installs = [cmd for run in _run_instructions(text) for cmd in run.split("&&") if re.search(r"\bpip3? install\b", cmd)]
    assert installs, "the Dockerfile installs no Python packages"
    for cmd in installs:
        words = shlex.split(cmd)
        assert "--require-hashes" in words and "--only-binary=:all:" in words, cmd
        files = [words[i + 1] for i, w in enumerate(words) if w == "-r"]
        assert files == ["/tmp/locks/requirements-${XGBOOST_PACKAGE}.txt"], cmd
        assert [w for w in words[2:] if not w.startswith("-") and w not in files] == [], f"unpinned packages: {cmd}"
    copies = [line for line in text.splitlines() if line.startswith("COPY ") and "/tmp/locks/" in line]
    assert copies and all(f"images/ray/requirements-{d}.txt" in copies[0] for d in DISTRIBUTIONS), copies


def test_every_distribution_an_image_asset_builds_has_a_lock(any_platform):
    """The build arguments as synthesized (what `cdk deploy` hands to docker build)."""
    built = set()
    for path in any_platform.outdir.rglob("*.assets.json"):
        for asset in json.loads(path.read_text()).get("dockerImages", {}).values():
            source = asset["source"]
            if source.get("dockerFile") == "images/ray/Dockerfile":
                built.add(source["dockerBuildArgs"]["XGBOOST_PACKAGE"])
    assert built and built <= set(DISTRIBUTIONS), built
    for distribution in built:
        assert lock_path(distribution).is_file(), distribution
