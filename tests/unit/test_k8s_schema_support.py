"""The strict CRD validator in tests/support rejects what kubectl --validate=strict would reject."""

import copy
import pathlib

import pytest

from tests.support.k8s_schema import (
    CrdValidator,
    assert_valid_against_crd,
    load_crd,
    strict_schema,
    validate_against_crd,
)

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "schemas" / "karpenter"
NODEPOOL_CRD = SCHEMAS / "karpenter.sh_nodepools.yaml"
NODECLASS_CRD = SCHEMAS / "karpenter.k8s.aws_ec2nodeclasses.yaml"

VALID_NODEPOOL = {
    "apiVersion": "karpenter.sh/v1",
    "kind": "NodePool",
    "metadata": {"name": "example", "labels": {"app": "x"}},
    "spec": {
        "template": {
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                "requirements": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}],
            }
        },
        "limits": {"cpu": "100", "memory": "400Gi"},
    },
}


def _errors(obj):
    return validate_against_crd(obj, NODEPOOL_CRD)


def test_valid_manifest_passes():
    assert _errors(VALID_NODEPOOL) == []
    assert_valid_against_crd(VALID_NODEPOOL, NODEPOOL_CRD)


def test_unknown_nested_field_is_rejected_with_its_path():
    bad = copy.deepcopy(VALID_NODEPOOL)
    bad["spec"]["template"]["spec"]["nodeClassRef"]["nmae"] = "typo"
    errors = _errors(bad)
    assert len(errors) == 1, errors
    assert errors[0].startswith("spec.template.spec.nodeClassRef:")
    assert "nmae" in errors[0]


def test_unknown_field_inside_array_item_is_rejected():
    bad = copy.deepcopy(VALID_NODEPOOL)
    bad["spec"]["template"]["spec"]["requirements"][0]["vaules"] = ["x"]
    errors = _errors(bad)
    assert any(e.startswith("spec.template.spec.requirements[0]:") and "vaules" in e for e in errors), errors


def test_unknown_top_level_field_is_rejected():
    bad = copy.deepcopy(VALID_NODEPOOL)
    bad["specs"] = {}
    assert any(e.startswith("<root>:") and "specs" in e for e in _errors(bad))


def test_plain_crd_schema_alone_would_accept_the_typo():
    """Proves the strictness comes from our injection, not from the CRD (which never says so)."""
    import jsonschema

    raw = next(v for v in load_crd_raw(NODEPOOL_CRD)["spec"]["versions"] if v["name"] == "v1")
    lax = jsonschema.Draft4Validator(raw["schema"]["openAPIV3Schema"])
    bad = copy.deepcopy(VALID_NODEPOOL)
    bad["spec"]["template"]["spec"]["nodeClassRef"]["nmae"] = "typo"
    assert list(lax.iter_errors(bad)) == []
    assert _errors(bad) != []


def load_crd_raw(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_wrong_types_enums_and_patterns_are_reported():
    bad = copy.deepcopy(VALID_NODEPOOL)
    bad["spec"]["template"]["spec"]["requirements"][0]["operator"] = "Contains"
    bad["spec"]["weight"] = "high"
    bad["spec"]["limits"]["cpu"] = 0.5  # a float quantity: must be quoted
    errors = _errors(bad)
    assert any(e.startswith("spec.template.spec.requirements[0].operator:") for e in errors), errors
    assert any(e.startswith("spec.weight:") for e in errors), errors
    assert any(e.startswith("spec.limits.cpu:") for e in errors), errors


def test_required_fields_are_enforced():
    bad = copy.deepcopy(VALID_NODEPOOL)
    del bad["spec"]["template"]["spec"]["nodeClassRef"]
    assert any("nodeClassRef" in e and "required" in e for e in _errors(bad))


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda o: o.update(apiVersion="karpenter.sh/v1beta1"), "apiVersion"),
        (lambda o: o.update(kind="NodeClaim"), "kind"),
        (lambda o: o.pop("metadata"), "metadata"),
        (lambda o: o["metadata"].pop("name"), "metadata"),
        (lambda o: o["metadata"].update(name="Not_A_DNS_Name"), "metadata.name"),
        (lambda o: o["metadata"].update(lables={"a": "b"}), "metadata"),
        (lambda o: o["metadata"].update(labels={"a": 1}), "metadata.labels.a"),
        # NodePool is cluster-scoped: a namespace is an error, not silently dropped.
        (lambda o: o["metadata"].update(namespace="default"), "metadata"),
    ],
)
def test_envelope_and_metadata_are_checked(mutate, expected):
    bad = copy.deepcopy(VALID_NODEPOOL)
    mutate(bad)
    errors = _errors(bad)
    assert errors, "expected a validation error"
    assert any(e.startswith(expected) for e in errors), errors


def test_nullable_maps_to_null_type_and_preserve_unknown_fields_stays_open():
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "nullable": True},
            "open": {"type": "object", "properties": {"x": {"type": "string"}},
                     "x-kubernetes-preserve-unknown-fields": True},
            "closed": {"type": "object", "properties": {"x": {"type": "string"}}},
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    strict = strict_schema(schema)
    assert strict["properties"]["a"]["type"] == ["string", "null"]
    assert "additionalProperties" not in strict["properties"]["open"]
    assert strict["properties"]["closed"]["additionalProperties"] is False
    assert strict["properties"]["map"]["additionalProperties"] == {"type": "string"}
    assert strict["additionalProperties"] is False
    assert "nullable" not in strict["properties"]["a"]
    assert schema["properties"]["a"]["nullable"] is True  # input is not mutated


def test_validator_picks_crd_by_api_version_and_kind_and_caches():
    validator = CrdValidator.from_files([NODEPOOL_CRD, NODECLASS_CRD])
    assert validator.errors(VALID_NODEPOOL) == []
    unknown = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}}
    assert not validator.knows(unknown)
    assert validator.errors(unknown)[0].startswith("<root>: no CRD")
    assert load_crd(NODEPOOL_CRD) is load_crd(str(NODEPOOL_CRD))
    with pytest.raises(ValueError, match="v1beta1"):
        load_crd(NODEPOOL_CRD, version="v1beta1")
