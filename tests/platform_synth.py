"""Synthesize a platform configuration in-process, the way the CDK CLI would."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import aws_cdk as cdk
from aws_cdk.assertions import Template

import config as config_mod
from compliance import nag
from stages import PlatformStage
from tools.render import Assembly

ROOT = Path(__file__).resolve().parent.parent


def cdk_json_context() -> dict[str, Any]:
    """cdk.json's context (feature flags + platform). ``cdk.App()`` alone does not read it."""
    return json.loads((ROOT / "cdk.json").read_text())["context"]


@dataclass
class SynthesizedPlatform:
    config: config_mod.PlatformConfig
    stage: PlatformStage
    outdir: Path

    @cached_property
    def assembly(self) -> Assembly:
        return Assembly(self.outdir)

    @cached_property
    def templates(self) -> dict[str, Template]:
        """assertions.Template per stack, keyed by the stack's construct id (Network, Cluster, ...)."""
        return {stack.node.id: Template.from_stack(stack) for stack in self.stage.stacks}

    def template_json(self, stack_id: str) -> dict[str, Any]:
        return self.templates[stack_id].to_json()


def synth_platform(outdir: Path, overrides: Mapping[str, Any] | None = None) -> SynthesizedPlatform:
    context = cdk_json_context()
    # The CDK CLI turns on construct-path metadata; tests map findings back to constructs with it.
    context["aws:cdk:enable-path-metadata"] = True
    cfg = config_mod.build_config(context.pop(config_mod.CONTEXT_KEY), overrides or {})
    app = cdk.App(
        outdir=str(outdir),
        context=context,
        # The built-in CloudFormation validation costs seconds and memory per synth;
        # cfn-lint (tests/policy) covers the same ground. `cdk synth` keeps it on.
        builtin_cloud_formation_validation=False,
    )
    stage = PlatformStage(app, "DynamicFactory", config=cfg)
    try:
        app.synth()
    except RuntimeError as err:
        if "ValidationFailed" not in str(err):
            raise
        lines = "\n".join(f"  {path}: {finding}" for path, finding in nag.findings(outdir))
        raise AssertionError(f"cdk-nag findings without an acknowledgement:\n{lines}") from None
    return SynthesizedPlatform(config=cfg, stage=stage, outdir=outdir)
