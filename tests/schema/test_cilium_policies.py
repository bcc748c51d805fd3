"""Every CiliumNetworkPolicy the platform writes, strictly valid against the vendored CiliumNetworkPolicy CRD
(schemas/cilium/ciliumnetworkpolicies.yaml; where it comes from: schemas/PROVENANCE.md): the Ray egress
allow-lists (charts/ray_egress.py) and the log shipper's Pod Identity rule (charts/network_policies.py).

Strict as the API server's field validation is (tests/support/k8s_schema.py): an unknown or misspelt field fails,
as do values outside the CRD's enums and patterns. The CRD's CEL rules, if it has any, are evaluated too
(tests/support/cel_rules.py).
"""

from __future__ import annotations

import ipaddress
import pathlib
from typing import Any

import pytest

from charts.network_policies import log_shipper_network_policies
from charts.ray_egress import ray_egress_policies
from tests.support.cel_rules import CrdCelRules
from tests.support.k8s_schema import CrdValidator

CRD = pathlib.Path(__file__).resolve().parents[2] / "schemas" / "cilium" / "ciliumnetworkpolicies.yaml"


def _cilium(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "CiliumNetworkPolicy"]


POLICIES: dict[str, dict[str, Any]] = {
    f"{variant}/{p['metadata']['name']}": p
    for variant, objects in (
        ("ray", ray_egress_policies("ray", "ray", region="eu-west-1")),
        ("ray-team-any-region", ray_egress_policies("ray-team-a", "ray", region=None,
                                                    extra_fqdns=["github.com", "*.githubusercontent.com"])),
        ("log-shipper", log_shipper_network_policies("logging", {"app.kubernetes.io/name": "fluent-bit"})),
    )
    for p in _cilium(objects)
}


@pytest.fixture(scope="module")
def validator() -> CrdValidator:
    return CrdValidator.from_files([CRD], version="v2")


def test_every_writer_is_covered():
    assert {k.split("/", 1)[0] for k in POLICIES} == {"ray", "ray-team-any-region", "log-shipper"}
    assert len([k for k in POLICIES if k.startswith("ray/")]) == 4


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_valid_against_the_crd(validator, name):
    assert validator.errors(POLICIES[name]) == []


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_cel_rules_of_the_crd_pass(name):
    rules = CrdCelRules.load(CRD, version="v2")
    assert rules.unsupported_rules() == [] and rules.unreachable_rules() == []
    report = rules.evaluate(POLICIES[name])
    assert report.ok, report.failure_text()


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_cidrs_are_networks(name):
    """The CRD's ``format: cidr`` is not enforced by a JSON-schema validator: check the CIDRs here."""
    for rule in POLICIES[name]["spec"].get("egress", []):
        for cidr in rule.get("toCIDR", []):
            assert str(ipaddress.ip_network(cidr)) == cidr


@pytest.mark.parametrize("mutate", [
    lambda p: p["spec"]["egress"][0].update(toFQDN=[{"matchName": "pypi.org"}]),  # misspelt field
    lambda p: p["spec"]["egress"][0].update(toEntities=["everything"]),  # not an entity
    lambda p: p["spec"].pop("endpointSelector"),  # a rule must select something
], ids=["misspelt-field", "unknown-entity", "no-selector"])
def test_the_schema_is_strict(validator, mutate):
    import copy

    policy = copy.deepcopy(POLICIES["ray/ray-egress-cluster"])
    mutate(policy)
    assert validator.errors(policy) != []
