"""python -m tools.impact [-c key=value ...] [--base key=value ...] [--assemblies BEFORE AFTER] [--json]

Synthesizes cdk.json's configuration (plus any --base assignments) and the same with the -c assignments,
compares the stage's templates and prints one row per changed resource. Exit status: 0 fine, 1 a stateful
resource would be replaced or a replacement would collide, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from tools.impact.synth import ContextError, parse_context, project_context, synthesize


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.impact", description=__doc__.split("\n\n")[1])
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                        help="the change, as for `cdk synth -c` (repeatable)")
    parser.add_argument("--base", action="append", default=[], metavar="KEY=VALUE",
                        help="also applied to the baseline (repeatable)")
    parser.add_argument("--assemblies", nargs=2, metavar=("BEFORE", "AFTER"),
                        help="compare two synthesized assemblies instead of synthesizing")
    parser.add_argument("--stage", default="DynamicFactory", help="stage whose assembly is compared")
    parser.add_argument("--region", help="region whose resource schemas are used (default: the stacks' or us-east-1)")
    parser.add_argument("--nag", action="store_true", help="run cdk-nag during synthesis too (slower)")
    parser.add_argument("--json", action="store_true", help="print the changes as JSON")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _args(argv)
    from config import ConfigError
    from tools.impact import errors, impact, render

    with tempfile.TemporaryDirectory(prefix="impact-") as tmp:
        if args.assemblies:
            before, after = (Path(p) for p in args.assemblies)
        else:
            try:
                base = {**project_context(), **parse_context(args.base)}
                changed = {**base, **parse_context(args.context)}
            except ContextError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            before, after = Path(tmp, "before"), Path(tmp, "after")
            for label, outdir, context in (("baseline", before, base), ("changed", after, changed)):
                try:
                    synthesize(outdir, context, run_nag=args.nag)
                except ConfigError as err:
                    print(f"error: the {label} configuration: {err}", file=sys.stderr)
                    return 2
        changes = impact(before, after, stage=args.stage, region=args.region)
    if args.json:
        print(json.dumps([dataclasses.asdict(c) | {"errors": c.errors} for c in changes], indent=2))
    else:
        print(render(changes))
    return 1 if errors(changes) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
