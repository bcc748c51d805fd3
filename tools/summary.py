"""Print a short summary of a synthesized platform and write the rendered manifests.

app.py prints it after every synthesis (``make synth`` and any ``npx cdk`` command), so what a
``-c`` override changed shows at once. Usage on an existing assembly:
python -m tools.summary [cdk.out] [dist]
"""

from __future__ import annotations

import collections
import json
import shutil
import sys
from pathlib import Path

from tools.render import Assembly, write_rendered

HOURS_PER_MONTH = 730


def print_summary(outdir: Path, dist: Path | None, *, estimate=None, model=None) -> list:
    """Print the summary of the assembly in ``outdir``, write its manifests under ``dist`` (when given)
    and return the first-boot model's verdicts."""
    assembly = Assembly(outdir)
    outdir, dist = _shown(outdir), (_shown(dist) if dist is not None else None)
    if dist is not None:
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
        f"{name} {r.properties.get('Version') or '(local chart asset)'}" for name, r in sorted(releases.items())))
    objects = assembly.kube_objects()
    print(f"Kubernetes objects applied by CDK: {len(objects)}")
    pools = sorted((o["metadata"]["name"], o["spec"].get("limits", {}).get("cpu")) for o in objects
                   if o.get("kind") == "NodePool")
    if pools:
        print("Karpenter NodePools: " + ", ".join(f"{name} (up to {cpu} vCPU)" for name, cpu in pools))
    if dist is not None:
        print(f"Templates: {outdir}/   Rendered manifests and Helm values ({len(written)} files): {dist}/")
    else:
        print(f"Templates: {outdir}/")
    if estimate is not None:
        print(f"Cost ({estimate.region}): idle {_money(estimate.idle_hourly)}/h "
              f"({_money(estimate.idle_hourly * HOURS_PER_MONTH)}/month); every NodePool at its limit "
              f"{_money(estimate.ceiling_spot_hourly)}/h with Spot, {_money(estimate.ceiling_on_demand_hourly)}/h "
              "on-demand (breakdown: make cost)")
    return _first_boot(model if model is not None else _model(outdir))


def _shown(path: Path) -> Path:
    """A path as the user would type it: relative to the working directory when it lies below it."""
    try:
        return Path(path).resolve().relative_to(Path.cwd())
    except ValueError:
        return Path(path)


def _money(value: float) -> str:
    return f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"


def _model(outdir: Path):
    from tools.boot.model import BootModel

    return BootModel(outdir)


def _first_boot(model) -> list:
    """The first-boot model's verdict and the system nodes' headroom (details: python -m tools.boot)."""
    from tools.boot.report import headroom_lines

    verdicts = model.run()
    failed = [v for v in verdicts if not v.ok]
    for line in headroom_lines(model):
        print(line)
    print(f"First boot: {len(verdicts) - len(failed)} checks passed, {len(failed)} failed")
    return verdicts


def main(argv: list[str]) -> int:
    outdir = Path(argv[0] if argv else "cdk.out")
    dist = Path(argv[1] if len(argv) > 1 else "dist")
    if not Assembly(outdir).templates:
        print(f"no stacks found in {outdir}", file=sys.stderr)
        return 1
    estimate = None
    config_file = outdir / "platform-config.json"
    stage = outdir / "assembly-DynamicFactory"
    if config_file.exists() and stage.exists():
        from cost.estimate import PriceTable, estimate as estimate_of

        region = json.loads(config_file.read_text())["cost"]["price_region"]
        estimate = estimate_of(Assembly(stage), PriceTable(region=region))
    verdicts = print_summary(outdir, dist, estimate=estimate)
    return 1 if any(not v.ok for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
