"""`make cost`: print the cost estimate of the synthesized platform (python -m cost [cdk.out])."""

from __future__ import annotations

import sys
from pathlib import Path

from cost.estimate import PriceTable, estimate, render
from tools.render import Assembly


def main(argv: list[str]) -> int:
    outdir = Path(argv[0] if argv else "cdk.out")
    stage = outdir / "assembly-DynamicFactory"
    if not stage.exists():
        print(f"no synthesized platform in {outdir}: run `make synth` first", file=sys.stderr)
        return 1
    import json

    region = json.loads((Path(__file__).resolve().parent.parent / "cdk.json").read_text())["context"]["platform"]
    region = region.get("cost", {}).get("price_region", "us-east-1")
    print(render(estimate(Assembly(stage), PriceTable(region=region))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
