"""The README's voluntary-disruption table says what the synthesized NodePools and pods really do."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"


def readme_rows() -> dict[str, dict[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Voluntary disruption", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = {"consolidateAfter": cells[1], "expireAfter": cells[2],
                                         "terminationGracePeriod": cells[3], "budget": cells[4],
                                         "protected": cells[5]}
    return rows


def node_pools(synth) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in synth.assembly.kube_objects() if o.get("kind") == "NodePool"}


def test_every_pool_of_the_platform_is_in_the_table_with_its_settings(platform, variant):
    rows = readme_rows()
    pools = {**node_pools(platform), **node_pools(variant)}
    assert set(rows) == set(pools)
    for name, pool in pools.items():
        disruption = pool["spec"]["disruption"]
        assert rows[name]["consolidateAfter"] == disruption["consolidateAfter"], name
        spec = pool["spec"]["template"]["spec"]
        assert rows[name]["expireAfter"] == spec["expireAfter"], name
        assert rows[name]["terminationGracePeriod"] == spec.get("terminationGracePeriod", "none"), name
        assert [rows[name]["budget"]] == [b["nodes"] for b in disruption["budgets"]], name


def _ray_pods(synth) -> dict[str, dict]:
    pods = {}
    for cluster in (o for o in synth.assembly.kube_objects() if o.get("kind") == "RayCluster"):
        ns = cluster["metadata"]["namespace"]
        pods[f"{ns}/head"] = cluster["spec"]["headGroupSpec"]["template"]
        pods.update({f"{ns}/{g['groupName']}": g["template"] for g in cluster["spec"]["workerGroupSpecs"]})
    return pods


def test_the_pods_the_table_calls_protected_carry_the_annotation(variant):
    """Ray head and every worker group; the notebooks' annotation is checked by the first-boot model."""
    for group, template in _ray_pods(variant).items():
        annotations = template.get("metadata", {}).get("annotations", {})
        assert annotations.get(DO_NOT_DISRUPT) == "true", group
    assert re.search(r"notebook servers", readme_rows()["on-demand"]["protected"])


def test_no_pool_strands_protected_pods_on_an_expiring_node(platform, variant):
    """Expiry is forceful: a pool whose nodes expire must bound the drain with terminationGracePeriod, or a
    do-not-disrupt pod keeps a half-drained node forever (Karpenter 1.14 disruption docs)."""
    pools = {**node_pools(platform), **node_pools(variant)}
    for name, pool in pools.items():
        spec = pool["spec"]["template"]["spec"]
        assert spec["expireAfter"] == "Never" or spec.get("terminationGracePeriod"), name
