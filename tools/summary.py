"""Print a short summary of a synthesized platform and write the rendered manifests.

Usage: python -m tools.summary [cdk.out] [dist]
"""

from __future__ import annotations

import collections
import shutil
import sys
from pathlib import Path

from tools.render import Assembly, write_rendered


def main(argv: list[str]) -> int:
    outdir = Path(argv[0] if argv else "cdk.out")
    dist = Path(argv[1] if len(argv) > 1 else "dist")
    assembly = Assembly(outdir)
    if not assembly.templates:
        print(f"no stacks found in {outdir}", file=sys.stderr)
        return 1
    if dist.exists():
        shutil.rmtree(dist)
    written = write_rendered(assembly, dist)

    print("Synthesized stacks:")
    total = 0
    for artifact_id, template in assembly.templates.items():
        resources = template.get("Resources", {})
        total += len(resources)
        kinds = collections.Counter(r["Type"].split("::")[1] if "::" in r["Type"] else r["Type"] for r in resources.values())
        top = ", ".join(f"{k} {n}" for k, n in kinds.most_common(4))
        print(f"  {assembly.stack_names[artifact_id]:<28} {len(resources):>4} resources  ({top}, ...)")
    releases = assembly.helm_releases()
    print(f"  {'total':<28} {total:>4} resources")
    print("Helm releases: " + ", ".join(
        f"{name} {r.properties.get('Version')}" for name, r in sorted(releases.items())))
    print(f"Kubernetes objects applied by CDK: {len(assembly.kube_objects())}")
    print(f"Templates: {outdir}/   Rendered manifests and Helm values ({len(written)} files): {dist}/")
    _first_boot(outdir)
    return 0


def _first_boot(outdir: Path) -> None:
    """The first-boot model's verdict and the system nodes' headroom (details: python -m tools.boot)."""
    from tools.boot.model import BootModel
    from tools.boot.report import headroom_lines

    model = BootModel(outdir)
    verdicts = model.run()
    failed = [v for v in verdicts if not v.ok]
    for line in headroom_lines(model):
        print(line)
    print(f"First boot: {len(verdicts) - len(failed)} checks passed, {len(failed)} failed"
          + (f" - see `python -m tools.boot {outdir}`" if failed else ""))
    for v in failed[:10]:
        print(f"  [{v.step}] {v.line()}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
