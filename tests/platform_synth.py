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


def feature_flags() -> dict[str, Any]:
    """cdk.json's context without the platform config: for tests that synthesize single constructs."""
    context = cdk_json_context()
    context.pop(config_mod.CONTEXT_KEY, None)
    return context


def model_context() -> dict[str, Any]:
    """What the suite synthesizes: cdk.json's feature flags and the config model's defaults (an empty
    ``platform``). Users and the pipeline commit their own settings in cdk.json's ``platform``; they never reach
    the suite, except in the one test that checks the committed file synthesizes."""
    context = feature_flags()
    context[config_mod.CONTEXT_KEY] = {}
    return context


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
    """The model's defaults with ``overrides`` (dotted ``platform.`` paths), synthesized like `cdk synth`."""
    context = model_context()
    # The CDK CLI turns on construct-path metadata; tests map findings back to constructs with it.
    context["aws:cdk:enable-path-metadata"] = True
    cfg = config_mod.build_config(context.pop(config_mod.CONTEXT_KEY), overrides or {})
    app = cdk.App(outdir=str(outdir), context=context)
    stage = PlatformStage(app, "DynamicFactory", config=cfg)
    _synth(app, outdir)
    return SynthesizedPlatform(config=cfg, stage=stage, outdir=outdir)


def _synth(app: cdk.App, outdir: Path) -> None:
    """app.synth(), turning a cdk-nag failure into the list of unacknowledged findings."""
    try:
        app.synth()
    except RuntimeError as err:
        if "ValidationFailed" not in str(err):
            raise
        lines = "\n".join(f"  {path}: {finding}" for path, finding in nag.findings(outdir))
        raise AssertionError(f"cdk-nag findings without an acknowledgement:\n{lines}") from None


PIPELINE_OVERRIDES = {
    "platform.pipeline.enabled": True,
    "platform.pipeline.connection_arn":
        "arn:aws:codeconnections:eu-west-1:111122223333:connection/0f2c9f6e-1b2a-4c3d-9e8f-0123456789ab",
    "platform.pipeline.repository": "acme/dynamic-factory",
    "platform.pipeline.branch": "main",
    "platform.pipeline.account": "111122223333",
    "platform.pipeline.region": "eu-west-1",
    "platform.pipeline.stages": [
        {"name": "staging", "account": "111122223333", "region": "eu-west-1"},
        {"name": "prod", "account": "444455556666", "region": "eu-west-1", "approval": True},
    ],
}


@dataclass
class SynthesizedPipeline:
    app_stage: PlatformStage
    pipeline: Any
    outdir: Path

    @cached_property
    def template(self) -> dict[str, Any]:
        return json.loads((self.outdir / "Pipeline.template.json").read_text())

    @cached_property
    def stages(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Templates of each pipeline stage: {stage name: {stack id: template}}."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for assembly_dir in self.outdir.glob("assembly-Pipeline-*"):
            name = assembly_dir.name.removeprefix("assembly-Pipeline-")
            manifest = json.loads((assembly_dir / "manifest.json").read_text())
            for artifact in manifest["artifacts"].values():
                if artifact.get("type") == "aws:cloudformation:stack":
                    stack_id = artifact["displayName"].split("/")[-1]
                    template = json.loads((assembly_dir / artifact["properties"]["templateFile"]).read_text())
                    out.setdefault(name, {})[stack_id] = template
        return out


def synth_pipeline(outdir: Path, overrides: Mapping[str, Any] | None = None) -> SynthesizedPipeline:
    """Synthesize the app with the delivery pipeline enabled, through app.build_app like `cdk synth`."""
    import app as app_module

    context = model_context()
    context["aws:cdk:enable-path-metadata"] = True
    context.update(PIPELINE_OVERRIDES)
    context.update(overrides or {})
    app = cdk.App(outdir=str(outdir), context=context)
    stage, pipeline = app_module.build_app(app)
    _synth(app, outdir)
    return SynthesizedPipeline(app_stage=stage, pipeline=pipeline, outdir=outdir)
