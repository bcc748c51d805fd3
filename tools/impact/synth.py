"""Synthesize the app in-process, the way `npx cdk synth -c key=value` would, without the heavy gates.

The context is what the CDK CLI hands the app: ``cdk.context.json`` under ``cdk.json``'s ``context`` under
the ``-c`` assignments (each split at its first ``=``, the value kept as text for ``config.load_from_context``
to read as JSON where it parses; ``aws:`` keys are refused; an argument without ``=`` is ignored with a
warning). The budget and first-boot gates of ``app.main`` are not run, and by default neither is cdk-nag:
none of them changes a template, and ``make synth`` runs them all. Assets are not staged either.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

ROOT = Path(__file__).resolve().parents[2]


class ContextError(ValueError):
    pass


def parse_context(assignments: list[str], warn=lambda msg: print(f"warning: {msg}", file=sys.stderr)) -> dict[str, str]:
    """``-c key=value`` arguments as the CDK CLI parses them."""
    context: dict[str, str] = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep:
            warn(f"Context argument is not an assignment (key=value): {assignment}")
            continue
        if key.startswith("aws:") and len(key) > 4:
            raise ContextError(f"User-provided context cannot use keys prefixed with 'aws:', but {key} was provided.")
        context[key] = value
    return context


def project_context(root: Path = ROOT) -> dict[str, Any]:
    """The context the CLI reads from the project: cdk.context.json, overridden by cdk.json's ``context``."""
    context: dict[str, Any] = {}
    cached = root / "cdk.context.json"
    if cached.exists():
        context.update(json.loads(cached.read_text()))
    context.update(json.loads((root / "cdk.json").read_text()).get("context", {}))
    return context


@contextlib.contextmanager
def _without_nag() -> Iterator[None]:
    from compliance import nag

    enable = nag.enable
    nag.enable = lambda *args, **kwargs: None
    try:
        yield
    finally:
        nag.enable = enable


def synthesize(outdir: str | Path, context: Mapping[str, Any], *, run_nag: bool = False) -> Path:
    """Build the app through ``app.build_app`` with ``context`` and synthesize it into ``outdir``.

    Raises ``config.ConfigError`` for an invalid configuration.
    """
    import aws_cdk as cdk

    import app as app_module

    # Assets are not copied into the assembly (~57 MB of kubectl and AWS CLI layers per synth): their hashes,
    # which is all a template holds of them, are computed the same either way.
    context = {**context, "aws:cdk:enable-path-metadata": True, "aws:cdk:disable-asset-staging": True}
    cdk_app = cdk.App(outdir=str(outdir), context=context)
    with contextlib.nullcontext() if run_nag else _without_nag():
        app_module.build_app(cdk_app)
    cdk_app.synth()
    return Path(outdir)
