"""Container images built from this repository at deploy time (CDK ``DockerImageAsset``).

Synthesis only stages the build context; Docker is needed where the asset is published (`cdk deploy`, or the
pipeline's asset stage), never at synth or test time. The context is the repository root narrowed to the
directories the Dockerfile copies, so that nothing else (a virtualenv, `.git`, a developer's `.npmrc` or `.env`)
travels to ECR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_image_asset(scope: Construct, construct_id: str, *, dockerfile: str, context_dirs: Sequence[str],
                     build_args: Mapping[str, str]) -> ecr_assets.DockerImageAsset:
    """An amd64 image built from ``dockerfile`` (relative to the repository root) with only ``context_dirs``
    (top-level directories, e.g. ``images/ray`` counts as ``images`` narrowed to that subdirectory) in its
    build context."""
    # Last match wins: re-include each parent directory but none of its children, then the wanted directories.
    parents: list[str] = []
    for d in context_dirs:
        parts = Path(d).parts
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            parents += [f"!{parent}", f"{parent}/*"]
    keep = [*dict.fromkeys(parents)] + [p for d in context_dirs for p in (f"!{d}", f"!{d}/**")]
    return ecr_assets.DockerImageAsset(
        scope,
        construct_id,
        directory=str(REPO_ROOT),
        file=dockerfile,
        build_args=dict(build_args),
        exclude=["*", *keep, "**/__pycache__", "**/.ipynb_checkpoints",
                 # Dotfiles never travel: the last patterns win.
                 ".*", "**/.*"],
        platform=ecr_assets.Platform.LINUX_AMD64,
    )
