"""The Cilium Helm values validate against the chart's own values.schema.json, strictly."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from tests.platform_synth import ROOT
from tests.support.k8s_schema import strict_schema

SCHEMA_PATH = ROOT / "schemas" / "cilium" / "values.schema.json"


# Label maps whose schema Cilium generates from the default values (only `kubernetes.io/os` listed): any
# label is valid there, so strictness must not apply to them.
FREE_FORM_MAPS = ("nodeSelector",)


def _open_free_form_maps(node):
    if isinstance(node, dict):
        for name, child in (node.get("properties") or {}).items():
            if name in FREE_FORM_MAPS and isinstance(child, dict):
                child.pop("additionalProperties", None)
            _open_free_form_maps(child)
        for value in node.values():
            if isinstance(value, (dict, list)) and value is not node.get("properties"):
                _open_free_form_maps(value)
    elif isinstance(node, list):
        for child in node:
            _open_free_form_maps(child)


@pytest.fixture(scope="module")
def validator():
    # The upstream schema accepts unknown keys; made strict, a misspelt value fails here
    # instead of being silently ignored by Helm.
    schema = strict_schema(json.loads(SCHEMA_PATH.read_text()))
    _open_free_form_maps(schema)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_helm_itself_accepts_the_values(any_platform):
    """Helm validates values against the chart's schema as published (not made strict) at install."""
    upstream = jsonschema.Draft7Validator(json.loads(SCHEMA_PATH.read_text()))
    values = any_platform.assembly.helm_releases()["cilium"].values
    assert _errors(upstream, values) == []


def _errors(validator, values):
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


def test_cilium_values_match_the_upstream_schema(any_platform, validator):
    values = any_platform.assembly.helm_releases()["cilium"].values
    assert _errors(validator, values) == []


def test_strict_schema_rejects_an_unknown_key(platform, validator):
    values = copy.deepcopy(platform.assembly.helm_releases()["cilium"].values)
    values["eni"]["enable"] = True  # typo of "enabled"
    assert any("enable" in e for e in _errors(validator, values))
    values = copy.deepcopy(platform.assembly.helm_releases()["cilium"].values)
    values["operator"]["nodeSelectors"] = {}  # typo next to a free-form map
    assert any("nodeSelectors" in e for e in _errors(validator, values))


def test_schema_rejects_a_wrong_type(platform, validator):
    values = copy.deepcopy(platform.assembly.helm_releases()["cilium"].values)
    values["k8sServicePort"] = [443]
    assert _errors(validator, values)
