"""SECURITY.md's reach tables are what the synthesized platform allows (issue #16): a notebook user's, a Ray job's,
the validation runner's and the pipeline's reach, computed by tools/security_tables.py from the default platform,
the variant (teams, a domain) and the pipeline app. Regenerate with DF_UPDATE_SECURITY_MD=1."""

from __future__ import annotations

import difflib
import os

import pytest

from tests.platform_synth import ROOT
from tools.boot.model import BootModel
from tools.security_tables import BEGIN, END, security_block, replace_block

SECURITY_MD = ROOT / "SECURITY.md"


@pytest.fixture(scope="module")
def block(platform, variant, pipeline_platform) -> str:
    shared_templates = {sid: platform.template_json(sid) for sid in platform.templates}
    return security_block(BootModel(platform.outdir), BootModel(variant.outdir), shared_templates,
                          pipeline_platform.stages["prod"], pipeline_platform.template)


def test_security_md_reach_tables_are_generated_from_the_synthesized_platform(block):
    text = SECURITY_MD.read_text()
    assert BEGIN in text and END in text, "SECURITY.md lost its reach-table markers"
    expected = replace_block(text, block)
    if os.environ.get("DF_UPDATE_SECURITY_MD") == "1":
        SECURITY_MD.write_text(expected)
        return
    diff = "\n".join(difflib.unified_diff(text.splitlines(), expected.splitlines(), lineterm="", n=0))
    assert text == expected, ("SECURITY.md's reach tables differ from the synthesized platform; regenerate with "
                              "DF_UPDATE_SECURITY_MD=1 .venv/bin/python -m pytest tests/policy/test_security_tables.py"
                              f"\n{diff}")


def _rows(block: str, heading: str) -> dict[str, list[str]]:
    section = block.split(f"### {heading}")[1].split("###")[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_the_tables_say_what_the_issue_demands(block):
    """The facts the tables exist to show, read back from the generated text."""
    notebook, ray = _rows(block, "A notebook user's reach"), _rows(block, "A Ray job's reach")
    # A notebook reaches its Ray head's Jobs API, never another team's, never GCS or the workers.
    assert notebook["their Ray head: Jobs API and dashboard"][1:] == ["yes", "yes"]
    assert notebook["another team's Ray head: Jobs API"][2] == "no"
    assert notebook["their Ray head: GCS"][1:] == ["no", "no"]
    # Without a domain no pod reaches the proxy (the admin account cannot be claimed through it).
    assert notebook["the proxy (the hub's web entry)"][1] == "no" and ray["the proxy (the hub's web entry)"][1] == "no"
    # A Ray job reaches S3 and PyPI, not the rest of the internet, the VPC, the hub, notebooks or Hubble.
    for target in ("any other internet address", "a VPC address outside the cluster (e.g. a database)",
                   "the hub's API", "another user's notebook server", "Hubble relay (every flow of the cluster)",
                   "another team's Ray head: Jobs API", "the Kubernetes API", "the instance metadata service (IMDS)"):
        assert "yes" not in ray[target][1:], target
    assert ray["S3 (checkpoints)"][1:] == ["yes", "yes"]
    holds = _rows(block, "What each pod holds")
    assert holds["Ray worker"][0] == "none" and holds["Ray head"][0].startswith("none in the Ray container")
    assert "no delete" in holds["Ray worker"][1] and "Delete" not in holds["Ray worker"][1]
