"""The first-boot model of each synthesized configuration, run once per test session for every module here."""

from __future__ import annotations

import pytest

from tools.boot.model import BootModel, Verdict


@pytest.fixture(scope="session")
def boot(platform) -> BootModel:
    return BootModel(platform.outdir)


@pytest.fixture(scope="session")
def boot_verdicts(boot) -> list[Verdict]:
    return boot.run()


@pytest.fixture(scope="session")
def variant_boot(variant) -> BootModel:
    return BootModel(variant.outdir)


@pytest.fixture(scope="session")
def variant_verdicts(variant_boot) -> list[Verdict]:
    return variant_boot.run()
