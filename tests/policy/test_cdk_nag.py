"""cdk-nag (AwsSolutions) runs inside every PlatformStage; each acknowledgement is needed and explained.

The session fixtures already synthesize with the plugin on, so any unacknowledged finding
fails every test with the list of findings. These tests prove the gate is real.
"""

from __future__ import annotations

import pytest

from compliance import nag
from tests.platform_synth import synth_platform

STAGE = "DynamicFactory/"


@pytest.fixture(scope="module")
def unacknowledged(tmp_path_factory):
    """Findings of the default and variant configs with every acknowledgement removed."""
    found: set[tuple[str, str]] = set()
    original = nag.ACKNOWLEDGEMENTS
    try:
        nag.ACKNOWLEDGEMENTS = ()
        for overrides in ({}, {"platform.cluster.admin_principal_arns": ["arn:aws:iam::111122223333:role/A"]}):
            outdir = tmp_path_factory.mktemp("nag")
            with pytest.raises(AssertionError, match="cdk-nag findings"):
                synth_platform(outdir, overrides)
            found |= {(path.removeprefix(STAGE), finding) for path, finding in nag.findings(outdir)}
    finally:
        nag.ACKNOWLEDGEMENTS = original
    return found


def test_the_gate_fails_synth_on_unacknowledged_findings(unacknowledged):
    assert ("Cluster/SystemNodeRole/Resource",
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonEKSWorkerNodePolicy]") in unacknowledged


def test_every_acknowledgement_answers_a_real_finding(unacknowledged):
    acknowledged = {(a.path, a.finding) for a in nag.ACKNOWLEDGEMENTS}
    stale = acknowledged - unacknowledged
    assert not stale, f"acknowledgements that match no finding (remove them): {sorted(stale)}"


def test_every_finding_is_acknowledged(unacknowledged):
    acknowledged = {(a.path, a.finding) for a in nag.ACKNOWLEDGEMENTS}
    assert unacknowledged - acknowledged == set()


def test_default_and_variant_synthesize_with_no_open_findings(platform, variant):
    assert nag.findings(platform.outdir) == []
    assert nag.findings(variant.outdir) == []


def test_acknowledgements_have_specific_reasons():
    for ack in nag.ACKNOWLEDGEMENTS:
        assert len(ack.reason) >= 40, f"{ack.finding} on {ack.path}: reason too thin: {ack.reason!r}"
        assert "[" in ack.finding or ack.finding.count("-") == 1


def test_guarantees_are_fixed_never_acknowledged():
    for ack in nag.ACKNOWLEDGEMENTS:
        assert ack.finding.split("[")[0] not in nag.NEVER_ACKNOWLEDGED, ack
    with pytest.raises(ValueError, match="must be fixed"):
        nag.enable(
            __import__("aws_cdk").Stage(__import__("aws_cdk").App(), "S"),
            (nag.Acknowledgement("X", "AwsSolutions-EKS1", "an open endpoint is never acceptable here"),),
        )
