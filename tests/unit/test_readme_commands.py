"""Every `cdk deploy`/`cdk diff`/`cdk destroy` in the README, and the make targets that wrap them, select stacks.

The platform's stacks sit in the stage ``DynamicFactory``: ``cdk deploy --all`` selects only top-level
stacks, so it selects nothing, and the pipeline stack's id is ``Pipeline``, not its stack name. Each
selector is handed to the real CDK CLI (``cdk ls --app <assembly>``, which selects exactly as deploy does)
over the synthesized default app and the app with the pipeline.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CDK = ROOT / "node_modules" / ".bin" / "cdk"
COMMANDS = ("deploy", "diff", "destroy")
# Options of those commands that take a value (everything else starting with "-" is a flag).
VALUED_OPTIONS = {"-c", "--context", "--require-approval", "--app", "-a", "--profile", "--role-arn", "-o",
                  "--output", "--parameters", "--method", "-m", "--concurrency", "--toolkit-stack-name"}
_CDK_LINE = re.compile(r"\bnpx\s+cdk\s+(?:" + "|".join(COMMANDS) + r")\b[^`\n]*(?:\\\n[^`\n]*)*")


def readme_cdk_commands(text: str) -> list[list[str]]:
    """The argument lists (after ``cdk``) of every deploy/diff/destroy command written in the README."""
    commands = []
    for match in _CDK_LINE.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        if "#" in text[line_start:match.start()]:
            continue  # inside a shell comment: prose, not a command
        line = match.group(0).replace("\\\n", " ").split("#", 1)[0]
        commands.append(shlex.split(line)[2:])
    return commands


def selectors(args: list[str]) -> tuple[list[str], bool]:
    """(stack selectors, whether --all was given) of one command's arguments."""
    found, everything, skip = [], False, False
    for arg in args[1:]:
        if skip:
            skip = False
        elif arg == "--all":
            everything = True
        elif arg in VALUED_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            found.append(arg)
    return found, everything


@lru_cache(maxsize=None)
def cdk_ls(assembly: Path, selector: str) -> tuple[str, ...]:
    result = subprocess.run([str(CDK), "ls", "--app", str(assembly), selector], cwd=assembly.parent, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return tuple(line.split()[0] for line in result.stdout.splitlines() if line.strip())


def makefile_stacks() -> str:
    (value,) = re.findall(r"^STACKS\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    (selector,) = shlex.split(value)
    return selector


def test_the_readme_has_deploy_diff_and_destroy_commands():
    text = README.read_text()
    written = {args[0] for args in readme_cdk_commands(text)}
    assert "deploy" in written
    for target in COMMANDS:
        assert f"make {target}" in text, f"the README does not show `make {target}`"


@pytest.mark.parametrize("args", readme_cdk_commands(README.read_text()), ids=" ".join)
def test_each_readme_command_selects_stacks(args, platform, pipeline_platform):
    chosen, everything = selectors(args)
    assert not everything, ("`--all` selects only top-level stacks; the platform's stacks are in the "
                            "DynamicFactory stage: select them with 'DynamicFactory/*'")
    assert chosen, f"`cdk {' '.join(args)}` names no stack: with several stacks the CLI refuses it"
    for selector in chosen:
        matched = cdk_ls(platform.outdir, selector) + cdk_ls(pipeline_platform.outdir, selector)
        assert matched, f"`{selector}` selects no stack of the synthesized app (`cdk {' '.join(args)}`)"


def test_make_deploy_diff_and_destroy_select_exactly_the_platform(platform, pipeline_platform):
    makefile = (ROOT / "Makefile").read_text()
    for target in COMMANDS:
        assert re.search(rf"^{target}:.*\n\tnpx cdk {target} \$\(STACKS\) \$\(CTX\)", makefile, re.M), target
    stacks = {f"DynamicFactory/{s.node.id}" for s in platform.stage.stacks}
    assert set(cdk_ls(platform.outdir, makefile_stacks())) == stacks
    # With the pipeline on, `make deploy` still deploys the direct stage only, never the pipeline.
    assert set(cdk_ls(pipeline_platform.outdir, makefile_stacks())) == stacks


def test_the_selector_check_catches_what_the_issue_found(platform, pipeline_platform):
    """The README's old commands: `--all` and the pipeline's stack name select nothing."""
    assert selectors(["deploy", "--all", "-c", "x=y"]) == ([], True)
    assert cdk_ls(pipeline_platform.outdir, "dynamic-factory-pipeline") == ()
    assert cdk_ls(pipeline_platform.outdir, "Pipeline") == ("Pipeline",)
