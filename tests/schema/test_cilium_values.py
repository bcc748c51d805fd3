"""The Cilium Helm values validate against the chart's own values.schema.json, strictly."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from tests.platform_synth import ROOT
from tests.support.k8s_schema import strict_schema

SCHEMA_PATH = ROOT / "schemas" / "cilium" / "values.schema.json"


@pytest.fixture(scope="module")
def validator():
    # The upstream schema accepts unknown keys; made strict, a misspelt value fails here
    # instead of being silently ignored by Helm.
    schema = strict_schema(json.loads(SCHEMA_PATH.read_text()))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(validator, values):
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


def test_cilium_values_match_the_upstream_schema(any_platform, validator):
    values = any_platform.assembly.helm_releases()["cilium"].values
    assert _errors(validator, values) == []


def test_strict_schema_rejects_an_unknown_key(platform, validator):
    values = copy.deepcopy(platform.assembly.helm_releases()["cilium"].values)
    values["eni"]["enable"] = True  # typo of "enabled"
    assert any("enable" in e for e in _errors(validator, values))


def test_schema_rejects_a_wrong_type(platform, validator):
    values = copy.deepcopy(platform.assembly.helm_releases()["cilium"].values)
    values["k8sServicePort"] = [443]
    assert _errors(validator, values)
