#!/usr/bin/env python3
"""Entry point: load and validate the config, build the platform stage, synthesize."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402

from config import ConfigError, load_from_context  # noqa: E402

STAGE_ID = "DynamicFactory"


def build_app(app: cdk.App):
    """Validate the config found in ``app``'s context and add the platform (and pipeline) to ``app``.

    The directly deployable stage is always there (``npx cdk deploy --all``); the delivery
    pipeline is added only when ``pipeline.enabled`` is true, so the default synth needs no
    AWS account.
    """
    from stages import PlatformStage

    config = load_from_context(app.node.get_all_context())
    stage = PlatformStage(app, STAGE_ID, config=config)
    if not config.pipeline.enabled:
        return stage, None

    from compliance import nag
    from stacks.pipeline_stack import DeploymentTarget, PipelineStack

    pipe_cfg = config.pipeline
    pipeline = PipelineStack(
        app,
        "Pipeline",
        stack_name=f"{config.cluster.name}-pipeline",
        env=cdk.Environment(account=pipe_cfg.account, region=pipe_cfg.region),
        connection_arn=pipe_cfg.connection_arn,
        repository=pipe_cfg.repository,
        branch=pipe_cfg.branch,
        cluster_name=config.cluster.name,
        targets=[DeploymentTarget(s.name, s.account, s.region, s.approval) for s in pipe_cfg.stages],
        stage_factory=lambda scope, sid, env: PlatformStage(
            scope, sid, config=config, env=env, pipeline_account=pipe_cfg.account
        ),
    )
    nag.enable(pipeline, nag.pipeline_acknowledgements(pipeline, pipeline.pipeline.pipeline.artifact_bucket))
    return stage, pipeline


ROOT = Path(__file__).resolve().parent
# The effective configuration of a synthesis (cdk.json plus every -c override), written beside the
# assembly so `make cost` and the summary price and describe what was synthesized, not cdk.json.
CONFIG_FILE = "platform-config.json"


def check_budget(assembly_dir: str, config) -> list[str]:
    """The cost guardrail: the idle (and ceiling) estimate of the synthesized stage against the budget."""
    from cost.estimate import budget_problems

    est = stage_estimate(assembly_dir, config.cost.price_region)
    return budget_problems(est, config.idle_budget, config.cost.max_ceiling_usd_per_hour)


def stage_estimate(assembly_dir: str | Path, price_region: str):
    from cost.estimate import PriceTable, estimate
    from tools.render import Assembly

    return estimate(Assembly(Path(assembly_dir) / f"assembly-{STAGE_ID}"), PriceTable(region=price_region))


def check_first_boot(assembly_dir: str) -> list[str]:
    """The first-boot model (tools/boot) over the synthesized stage: what would not come up on a real deploy."""
    from tools.boot.model import BootModel

    verdicts = BootModel(Path(assembly_dir) / f"assembly-{STAGE_ID}").run()
    return [f"[{v.step}] {v.check} {v.subject}: {v.detail}" for v in verdicts if not v.ok]


def dist_dir(assembly_dir: Path) -> Path | None:
    """Where the rendered manifests go: ``dist/`` for the project's own ``cdk.out`` (every CLI command),
    nowhere for any other output directory (tests, tools), so those never overwrite what a user reviews."""
    return ROOT / "dist" if assembly_dir.resolve() == (ROOT / "cdk.out").resolve() else None


def main() -> int:
    app = cdk.App()
    try:
        stage, _ = build_app(app)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    assembly = app.synth()
    outdir = Path(assembly.directory)
    config = stage.config
    (outdir / CONFIG_FILE).write_text(json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")

    from cost.estimate import PriceError, budget_problems
    from tools.boot.model import BootModel
    from tools.summary import print_summary

    try:
        est = stage_estimate(outdir, config.cost.price_region)
    except PriceError as err:
        print(f"error: cost.price_region: {err.args[0]}", file=sys.stderr)
        return 2
    model = BootModel(outdir / f"assembly-{STAGE_ID}")
    # Every synthesis says what it built (the CLI's included): a -c override shows here and in dist/.
    verdicts = print_summary(outdir, dist_dir(outdir), estimate=est, model=model)
    problems = budget_problems(est, config.idle_budget, config.cost.max_ceiling_usd_per_hour)
    if problems:
        print("error: the platform is over its cost budget (the breakdown: `make cost`, with the same CTX):\n"
              + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 2
    failed = [v for v in verdicts if not v.ok]
    if failed:
        print("error: this configuration would not boot (details: `python -m tools.boot cdk.out/assembly-"
              f"{STAGE_ID}`):\n" + "\n".join(f"  - [{v.step}] {v.check} {v.subject}: {v.detail}" for v in failed),
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
