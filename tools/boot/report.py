"""Human-readable summaries of the first-boot model (for ``make synth`` and the CLI)."""

from __future__ import annotations

from collections import Counter

from tools.boot.model import BootModel


def headroom_lines(model: BootModel) -> list[str]:
    placement = model.idle_placement()
    ac, am, uc, um = placement.totals()
    if not placement.nodes:
        return ["System nodes: none"]
    first = placement.nodes[0]
    lines = [f"System nodes at idle: {len(placement.nodes)} x {first.instance_type}, "
             f"requests {uc}m of {ac}m CPU and {um}Mi of {am}Mi memory allocatable; "
             f"headroom {ac - uc}m CPU ({(ac - uc) / ac:.0%}), {am - um}Mi memory ({(am - um) / am:.0%})"]
    for node in placement.nodes:
        (nc, nm), (fc, fm) = node.allocatable, node.free
        lines.append(f"  {node.name}: {fc}m CPU ({fc / nc:.0%}) and {fm}Mi ({fm / nm:.0%}) free; "
                     + ", ".join(p for p, c, m in node.placed if c or m))
    pods = Counter(p for n in placement.nodes for p, _, _ in n.placed)
    lines.append("  runs there: " + ", ".join(f"{p}" + (f" x{c}" if c > 1 else "") for p, c in sorted(pods.items())))
    for node in placement.karpenter_nodes:
        lines.append(f"  Karpenter node kept at idle: {node.pool} ({node.instance_type}) for "
                     + ", ".join(p for p, _, _ in node.placed if p != "(daemonsets)"))
    return lines
