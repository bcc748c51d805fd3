"""Snapshot of every synthesized stack (syrupy), with asset hashes masked.

Update deliberately with `.venv/bin/python -m pytest tests/snapshot --snapshot-update` and review the diff.
"""

from __future__ import annotations

import json
import re

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

STACKS = ["Network", "Cluster", "Karpenter", "Observability", "Ray", "JupyterHub"]
_ASSET_HASH = re.compile(r"[0-9a-f]{64}")


def masked(template: dict) -> dict:
    return json.loads(_ASSET_HASH.sub("<asset-hash>", json.dumps(template, sort_keys=True)))


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("stack_id", STACKS)
def test_default_stack_snapshot(platform, snapshot_json, stack_id):
    assert masked(platform.template_json(stack_id)) == snapshot_json


@pytest.mark.parametrize("stack_id", STACKS)
def test_variant_stack_snapshot(variant, snapshot_json, stack_id):
    assert masked(variant.template_json(stack_id)) == snapshot_json


def test_every_stack_has_a_snapshot(platform):
    assert [s.node.id for s in platform.stage.stacks] == STACKS
