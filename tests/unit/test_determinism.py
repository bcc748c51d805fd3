"""Synth is deterministic: a second synth of the same config gives identical templates."""

from __future__ import annotations

from tests.platform_synth import synth_platform


def test_two_synths_give_identical_templates(platform, tmp_path):
    again = synth_platform(tmp_path)
    for stack_id in [s.node.id for s in platform.stage.stacks]:
        assert again.template_json(stack_id) == platform.template_json(stack_id), stack_id
