#!/usr/bin/env python3
"""Entry point: load and validate the config, build the platform stage, synthesize."""

from __future__ import annotations

import os
import sys

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


def check_budget(assembly_dir: str, config) -> list[str]:
    """The cost guardrail: the idle (and ceiling) estimate of the synthesized stage against the budget."""
    from pathlib import Path

    from cost.estimate import PriceTable, budget_problems, estimate
    from tools.render import Assembly

    est = estimate(Assembly(Path(assembly_dir) / f"assembly-{STAGE_ID}"), PriceTable(region=config.cost.price_region))
    return budget_problems(est, config.cost.max_idle_usd_per_hour, config.cost.max_ceiling_usd_per_hour)


def check_first_boot(assembly_dir: str) -> list[str]:
    """The first-boot model (tools/boot) over the synthesized stage: what would not come up on a real deploy."""
    from pathlib import Path

    from tools.boot.model import BootModel

    verdicts = BootModel(Path(assembly_dir) / f"assembly-{STAGE_ID}").run()
    return [f"[{v.step}] {v.check} {v.subject}: {v.detail}" for v in verdicts if not v.ok]


def main() -> int:
    app = cdk.App()
    try:
        stage, _ = build_app(app)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    assembly = app.synth()
    problems = check_budget(assembly.directory, stage.config)
    if problems:
        print("error: the platform is over its cost budget (see `make cost`):\n"
              + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 2
    problems = check_first_boot(assembly.directory)
    if problems:
        print("error: this configuration would not boot (details: `python -m tools.boot cdk.out/assembly-"
              f"{STAGE_ID}`):\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
