"""`make cost`: print the cost estimate of the synthesized platform (python -m cost [cdk.out]).

It prices the configuration that was synthesized (cdk.json plus any -c override), which app.py
records in ``<cdk.out>/platform-config.json``, never cdk.json itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cost.estimate import PriceTable, estimate, render
from tools.render import Assembly


def main(argv: list[str]) -> int:
    outdir = Path(argv[0] if argv else "cdk.out")
    stage = outdir / "assembly-DynamicFactory"
    config_file = outdir / "platform-config.json"
    if not stage.exists() or not config_file.exists():
        print(f"no synthesized platform in {outdir}: run `make synth` (or `make cost`, which synthesizes) first",
              file=sys.stderr)
        return 1
    region = json.loads(config_file.read_text())["cost"]["price_region"]
    print(render(estimate(Assembly(stage), PriceTable(region=region))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
