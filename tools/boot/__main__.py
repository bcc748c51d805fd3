"""Play the first boot of a synthesized platform and print a verdict per step and pod.

Usage: python -m tools.boot [cdk.out] [--all]   (exit status 1 when any check fails)
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from tools.boot.model import BootModel  # noqa: E402
from tools.boot.report import headroom_lines  # noqa: E402


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    show_all = "--all" in argv
    outdir = args[0] if args else "cdk.out"
    model = BootModel(outdir)
    verdicts = model.run()
    step = None
    for v in verdicts:
        if not show_all and v.ok:
            continue
        if v.step != step:
            print(f"\n[{v.step}]")
            step = v.step
        print("  " + v.line())
    failed = [v for v in verdicts if not v.ok]
    print()
    for line in headroom_lines(model):
        print(line)
    print(f"\nfirst boot: {len(verdicts) - len(failed)} checks passed, {len(failed)} failed"
          + ("" if show_all else " (--all prints the passing ones too)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
