"""cfn-lint over every synthesized template: zero errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Warnings that are CDK's own output, not ours, each with the reason it is ignored.
IGNORED_WARNINGS: dict[str, str] = {
    "W3005": "CDK's own Lambda handlers (kubectl provider, default-SG restriction) repeat a "
    "DependsOn on their role that a GetAtt already implies; harmless and not ours to change",
    "W3010": "availability zones are written out only when the user lists them in "
    "network.availability_zones (needed for a third AZ in an environment-agnostic synth)",
}

CFN_LINT = Path(sys.executable).parent / "cfn-lint"


def _templates(synth):
    return sorted(synth.outdir.glob("assembly-*/*.template.json"))


@pytest.mark.parametrize("which", ["platform", "variant"])
def test_cfn_lint_reports_no_errors(request, which):
    synth = request.getfixturevalue(which)
    files = _templates(synth)
    assert files
    cmd = [str(CFN_LINT), "--format", "json"]
    if IGNORED_WARNINGS:
        cmd += ["--ignore-checks", *IGNORED_WARNINGS]
    result = subprocess.run([*cmd, "--", *map(str, files)], capture_output=True, text=True, timeout=600)
    # Exit status is a bit mask of 2 (errors), 4 (warnings), 8 (informational); anything
    # else means cfn-lint itself failed, which must not pass as "no findings".
    assert result.returncode & ~0b1110 == 0, result.stderr[-3000:]
    findings = json.loads(result.stdout)
    errors = [f for f in findings if f["Level"] == "Error"]
    assert errors == [], json.dumps(errors, indent=1)[:4000]
    warnings = [f"{f['Rule']['Id']} {f['Location']['Path']}: {f['Message']}" for f in findings if f["Level"] == "Warning"]
    assert warnings == [], "\n".join(warnings)
