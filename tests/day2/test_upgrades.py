"""Day 2: a Kubernetes upgrade in place, 1.35 -> 1.36, as the pair of templates CloudFormation would apply.

The baseline is the session's default configuration (1.35); the upgrade is the same configuration with only
``cluster.kubernetes_version`` changed, synthesized once per session. Whether a changed property updates in
place or replaces its resource is read from CloudFormation's own resource schemas (``createOnlyProperties``,
shipped with cfn-lint); the order of the updates from the templates' dependencies, which CloudFormation
follows for updates as it does for creation.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import cfnlint
import pytest

import versions
from tests.platform_synth import SynthesizedPlatform, synth_platform

BEFORE, AFTER = "1.35", "1.36"
SCHEMAS = Path(cfnlint.__file__).parent / "data" / "schemas"
EKS_TYPES = ("AWS::EKS::Cluster", "AWS::EKS::Nodegroup", "AWS::EKS::Addon")


@pytest.fixture(scope="session")
def upgraded(tmp_path_factory) -> SynthesizedPlatform:
    """The model's defaults with Kubernetes 1.36: the one upgrade step from the default 1.35."""
    return synth_platform(tmp_path_factory.mktemp("cdk-upgraded"), {"platform.cluster.kubernetes_version": AFTER})


@cache
def create_only(type_: str) -> frozenset[str]:
    """Top-level create-only properties of a resource type (cfn-lint's copy of the CloudFormation schema)."""
    digest = json.loads((SCHEMAS / "providers" / "us-east-1.json").read_text())[type_]
    schema = json.loads((SCHEMAS / "resources" / f"{digest}.json").read_text())
    return frozenset(p.split("/")[2] for p in schema.get("createOnlyProperties", []))


def _changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, set[str]]:
    """Logical id -> properties that differ, for resources in both templates."""
    out = {}
    for logical_id, res in after["Resources"].items():
        old = before["Resources"].get(logical_id)
        if old is None:
            continue
        old_props, new_props = old.get("Properties", {}), res.get("Properties", {})
        paths = {p for p in {*old_props, *new_props} if old_props.get(p) != new_props.get(p)}
        if paths:
            out[logical_id] = paths
    return out


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return {value["Ref"]}
        if set(value) == {"Fn::GetAtt"}:
            target = value["Fn::GetAtt"]
            return {target[0] if isinstance(target, list) else target.split(".")[0]}
        return {r for v in value.values() for r in _refs(v)}
    if isinstance(value, list):
        return {r for v in value for r in _refs(v)}
    return set()


def _after_all_of(template: dict[str, Any], logical_id: str) -> set[str]:
    """Every resource that CloudFormation creates and updates before ``logical_id`` (DependsOn, Ref, GetAtt)."""
    resources = template["Resources"]
    seen: set[str] = set()
    todo = [logical_id]
    while todo:
        res = resources[todo.pop()]
        depends = res.get("DependsOn", [])
        for dep in ({depends} if isinstance(depends, str) else set(depends)) | _refs(res.get("Properties", {})):
            if dep in resources and dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _one(template: dict[str, Any], type_: str, **props) -> str:
    ids = [k for k, v in template["Resources"].items()
           if v["Type"] == type_ and all(v["Properties"].get(p) == x for p, x in props.items())]
    assert len(ids) == 1, (type_, props, ids)
    return ids[0]


def test_control_plane_nodes_and_addons_all_move_to_the_new_version(platform, upgraded):
    """The defect: node group and add-ons stayed on 1.35, and EKS refuses 1.36 -> 1.37 until the nodes match."""
    before, after = platform.config.model_dump(), upgraded.config.model_dump()
    assert (before["cluster"].pop("kubernetes_version"), after["cluster"].pop("kubernetes_version")) == (BEFORE, AFTER)
    assert before == after, "the pair must differ in the Kubernetes version only"
    for synth, minor in ((platform, BEFORE), (upgraded, AFTER)):
        tpl = synth.template_json("Cluster")
        cluster = tpl["Resources"][_one(tpl, "AWS::EKS::Cluster")]["Properties"]
        nodegroup = tpl["Resources"][_one(tpl, "AWS::EKS::Nodegroup")]["Properties"]
        assert (cluster["Version"], nodegroup.get("Version")) == (minor, minor)
        addons = {r["Properties"]["AddonName"]: r["Properties"].get("AddonVersion")
                  for r in tpl["Resources"].values() if r["Type"] == "AWS::EKS::Addon"}
        assert addons == {name: versions.EKS_ADDONS[name][minor] for name in versions.EKS_ADDONS}
    moved = {name for name, pins in versions.EKS_ADDONS.items() if pins[BEFORE] != pins[AFTER]}
    assert moved, "no add-on build differs between the minors: this pair would not exercise an add-on update"


def test_every_eks_resource_is_updated_in_place(platform, upgraded):
    """Cluster, node group and add-ons change only properties that are not create-only: nothing is replaced."""
    before, after = platform.template_json("Cluster"), upgraded.template_json("Cluster")
    changed = _changed(before, after)
    eks = {lid: paths for lid, paths in changed.items() if after["Resources"][lid]["Type"] in EKS_TYPES}
    assert {after["Resources"][lid]["Type"] for lid in eks} == set(EKS_TYPES)
    for logical_id, paths in eks.items():
        type_ = after["Resources"][logical_id]["Type"]
        assert not paths & create_only(type_), f"{logical_id} ({type_}) would be replaced: {sorted(paths)}"
    # Only the kubectl layer is replaced (layer versions are immutable; the handler takes the new one).
    replaced = {after["Resources"][lid]["Type"] for lid, paths in changed.items()
                if paths & create_only(after["Resources"][lid]["Type"])}
    assert replaced == {"AWS::Lambda::LayerVersion"}


def test_node_group_version_changes_alone(platform, upgraded):
    """CloudFormation refuses "Version and ReleaseVersion updates ... combined with other updates"."""
    before, after = platform.template_json("Cluster"), upgraded.template_json("Cluster")
    nodegroup = _one(after, "AWS::EKS::Nodegroup")
    assert _changed(before, after)[nodegroup] == {"Version"}
    assert {"Version", "ReleaseVersion"}.isdisjoint(create_only("AWS::EKS::Nodegroup"))


def test_updates_run_control_plane_then_nodes_then_addons(platform, upgraded):
    after = upgraded.template_json("Cluster")
    changed = _changed(platform.template_json("Cluster"), after)
    cluster = _one(after, "AWS::EKS::Cluster")
    nodegroup = _one(after, "AWS::EKS::Nodegroup")
    assert {cluster, nodegroup} <= set(changed)
    assert cluster in _after_all_of(after, nodegroup)
    for name in versions.EKS_ADDONS:
        addon = _one(after, "AWS::EKS::Addon", AddonName=name)
        assert cluster in _after_all_of(after, addon), name
        if name != "eks-pod-identity-agent":
            # Add-ons with Deployments need schedulable nodes; the agent (a DaemonSet) comes before the
            # nodes at creation (tests/unit/test_cluster.py), so on an upgrade it moves before them too.
            assert nodegroup in _after_all_of(after, addon), name
    moved = [_one(after, "AWS::EKS::Addon", AddonName=name) for name, pins in versions.EKS_ADDONS.items()
             if pins[BEFORE] != pins[AFTER]]
    assert moved and all(addon in changed and nodegroup in _after_all_of(after, addon) for addon in moved)
