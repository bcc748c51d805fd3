"""Strict validation of Kubernetes custom resources against their CRD's OpenAPI v3 schema.

Behaves like ``kubectl apply --validate=strict`` as far as a JSON-schema validator can:

* The schema is ``spec.versions[name==<version>].schema.openAPIV3Schema`` of the CRD file.
* ``nullable: true`` is mapped to ``type: [T, "null"]`` (Draft 4 has no ``nullable``).
* Every ``type: object`` node that has ``properties`` and neither ``additionalProperties`` nor
  ``x-kubernetes-preserve-unknown-fields: true`` gets ``additionalProperties: false`` (unknown keys are
  rejected, as the API server's strict field validation does; CRDs never say so themselves).
* ``apiVersion`` must be ``<group>/<served version>``, ``kind`` must be the CRD's kind.
* ``metadata`` (only ``type: object`` in CRDs) is checked against a small ObjectMeta schema: ``name`` is
  required and a DNS-1123 subdomain, ``labels``/``annotations`` are string maps, unknown keys are rejected,
  and ``namespace`` is forbidden for cluster-scoped kinds.

Not covered (documented limits of this approach): ``x-kubernetes-validations`` (CEL rules), ``format``
(int32, date-time, ...), and ``default`` values. Karpenter relies on CEL for e.g. restricted label keys, so the
charts validate those themselves.

Usage::

    errors = validate_against_crd(manifest, "schemas/karpenter/karpenter.sh_nodepools.yaml")
    assert not errors, "\\n".join(errors)

or, for many manifests against several CRDs, ``CrdValidator.from_files([...]).validate(manifest)``, which picks
the CRD by apiVersion/kind.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import jsonschema
import yaml

__all__ = [
    "CrdSchema",
    "CrdValidator",
    "load_crd",
    "strict_schema",
    "validate_against_crd",
    "assert_valid_against_crd",
]

# A DNS-1123 subdomain (metadata.name of most kinds, including all CRD instances).
_DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

# The writable subset of ObjectMeta a manifest may carry (server-populated fields such as uid or
# resourceVersion are allowed but not expected; anything else is a typo).
_OBJECT_META_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": _DNS1123_SUBDOMAIN},
    "generateName": {"type": "string"},
    "namespace": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": _DNS1123_LABEL},
    "labels": _STRING_MAP,
    "annotations": _STRING_MAP,
    "finalizers": {"type": "array", "items": {"type": "string"}},
    "ownerReferences": {"type": "array", "items": {"type": "object"}},
    "uid": {"type": "string"},
    "resourceVersion": {"type": "string"},
    "generation": {"type": "integer"},
    "creationTimestamp": {"type": ["string", "null"]},
    "deletionTimestamp": {"type": ["string", "null"]},
    "deletionGracePeriodSeconds": {"type": "integer"},
    "managedFields": {"type": "array"},
}


def _object_meta_schema(*, namespaced: bool) -> dict[str, Any]:
    props = dict(_OBJECT_META_PROPERTIES)
    if not namespaced:
        props.pop("namespace")
    return {
        "type": "object",
        "properties": props,
        "required": ["name"],
        "additionalProperties": False,
    }


_SCHEMA_CHILD_MAPS = ("properties", "patternProperties", "definitions")
_SCHEMA_CHILD_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_CHILD_SINGLE = ("not", "additionalItems")


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of an OpenAPI v3 structural schema made strict and Draft-4 compatible."""
    out = copy.deepcopy(dict(schema))
    _make_strict(out)
    return out


def _make_strict(node: Any) -> None:
    if not isinstance(node, dict):
        return
    if node.pop("nullable", False) is True and "type" in node:
        t = node["type"]
        types = list(t) if isinstance(t, list) else [t]
        if "null" not in types:
            types.append("null")
        node["type"] = types
    is_object = node.get("type") == "object" or (
        isinstance(node.get("type"), list) and "object" in node["type"]
    )
    if (
        is_object
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields", False)
    ):
        node["additionalProperties"] = False
    for key in _SCHEMA_CHILD_MAPS:
        for child in (node.get(key) or {}).values():
            _make_strict(child)
    for key in _SCHEMA_CHILD_LISTS:
        for child in node.get(key) or []:
            _make_strict(child)
    for key in _SCHEMA_CHILD_SINGLE:
        _make_strict(node.get(key))
    items = node.get("items")
    if isinstance(items, list):
        for child in items:
            _make_strict(child)
    else:
        _make_strict(items)
    _make_strict(node.get("additionalProperties"))


@dataclass(frozen=True)
class CrdSchema:
    """One served version of one CRD, ready to validate instances."""

    path: str
    group: str
    version: str
    kind: str
    namespaced: bool
    schema: dict[str, Any]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @functools.cached_property
    def _validator(self) -> jsonschema.Draft4Validator:
        return jsonschema.Draft4Validator(self.schema)

    def errors(self, obj: Any) -> list[str]:
        """All problems with ``obj`` as readable strings ``<path>: <message>``; empty when valid."""
        if not isinstance(obj, Mapping):
            return [f"<root>: expected a mapping (a Kubernetes object), got {type(obj).__name__}"]
        problems: list[str] = []
        if obj.get("apiVersion") != self.api_version:
            problems.append(
                f"apiVersion: {obj.get('apiVersion')!r} is not {self.api_version!r} (CRD {os.path.basename(self.path)})"
            )
        if obj.get("kind") != self.kind:
            problems.append(f"kind: {obj.get('kind')!r} is not {self.kind!r}")
        if "metadata" not in obj:
            problems.append("metadata: is required (with metadata.name)")
        for err in sorted(self._validator.iter_errors(obj), key=_error_sort_key):
            problems.append(f"{_format_path(err.absolute_path)}: {_short_message(err)}")
        return problems


def _error_sort_key(err: jsonschema.ValidationError) -> tuple:
    return tuple(str(p) for p in err.absolute_path), err.message


def _format_path(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def _short_message(err: jsonschema.ValidationError) -> str:
    msg = err.message
    if err.validator == "additionalProperties" and err.validator_value is False:
        return f"unknown field(s): {msg.split('(')[-1].rstrip(')')}" if "(" in msg else msg
    if len(msg) > 300:
        msg = msg[:297] + "..."
    return msg


@functools.lru_cache(maxsize=None)
def read_crd(path: str) -> dict[str, Any]:
    """A CRD file, parsed once per session. The KubeRay CRDs are ~1 MB each: libyaml's loader parses them about
    20x faster than the pure-Python one. Callers must not mutate the result."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader


@functools.lru_cache(maxsize=None)
def _load_crd_cached(path: str, version: str | None) -> CrdSchema:
    crd = read_crd(path)
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{path}: not a CustomResourceDefinition")
    spec = crd["spec"]
    versions = spec.get("versions") or []
    if version is None:
        storage = [v for v in versions if v.get("storage")]
        chosen = storage[0] if storage else (versions[0] if versions else None)
    else:
        chosen = next((v for v in versions if v.get("name") == version), None)
    if chosen is None:
        served = [v.get("name") for v in versions]
        raise ValueError(f"{path}: version {version!r} not in CRD versions {served}")
    if not chosen.get("served", True):
        raise ValueError(f"{path}: version {chosen['name']!r} is not served")
    raw = (chosen.get("schema") or {}).get("openAPIV3Schema")
    if raw is None:
        raise ValueError(f"{path}: version {chosen['name']!r} has no openAPIV3Schema")
    namespaced = spec.get("scope", "Namespaced") == "Namespaced"
    schema = strict_schema(raw)
    schema.setdefault("properties", {})["metadata"] = _object_meta_schema(namespaced=namespaced)
    required = list(schema.get("required") or [])
    for key in ("apiVersion", "kind", "metadata"):
        if key not in required:
            required.append(key)
    schema["required"] = required
    return CrdSchema(
        path=path,
        group=spec["group"],
        version=chosen["name"],
        kind=spec["names"]["kind"],
        namespaced=namespaced,
        schema=schema,
    )


def load_crd(crd_path: str | os.PathLike[str], version: str | None = "v1") -> CrdSchema:
    """Load (cached) one version of a CRD file. ``version=None`` picks the storage version."""
    return _load_crd_cached(os.path.abspath(os.fspath(crd_path)), version)


def validate_against_crd(
    obj: Mapping[str, Any], crd_path: str | os.PathLike[str], *, version: str | None = "v1"
) -> list[str]:
    """Validate one manifest strictly against a CRD file; returns readable errors (empty when valid)."""
    return load_crd(crd_path, version).errors(obj)


def assert_valid_against_crd(
    obj: Mapping[str, Any], crd_path: str | os.PathLike[str], *, version: str | None = "v1"
) -> None:
    """Like :func:`validate_against_crd` but raises ``AssertionError`` listing every problem."""
    errors = validate_against_crd(obj, crd_path, version=version)
    if errors:
        name = (obj.get("metadata") or {}).get("name") if isinstance(obj, Mapping) else None
        head = f"{obj.get('kind') if isinstance(obj, Mapping) else '?'}/{name}"
        raise AssertionError(f"{head} is invalid against {crd_path}:\n  " + "\n  ".join(errors))


class CrdValidator:
    """Validates manifests against a set of CRDs, choosing the CRD by ``apiVersion`` and ``kind``."""

    def __init__(self, crds: Iterable[CrdSchema]):
        self._by_gvk: dict[tuple[str, str], CrdSchema] = {}
        for crd in crds:
            self._by_gvk[(crd.api_version, crd.kind)] = crd

    @classmethod
    def from_files(
        cls, paths: Iterable[str | os.PathLike[str]], *, version: str | None = "v1"
    ) -> "CrdValidator":
        return cls(load_crd(p, version) for p in paths)

    def knows(self, obj: Mapping[str, Any]) -> bool:
        return (obj.get("apiVersion"), obj.get("kind")) in self._by_gvk

    def errors(self, obj: Mapping[str, Any]) -> list[str]:
        crd = self._by_gvk.get((obj.get("apiVersion"), obj.get("kind")))
        if crd is None:
            known = sorted(f"{a} {k}" for a, k in self._by_gvk)
            return [f"<root>: no CRD for apiVersion={obj.get('apiVersion')!r} kind={obj.get('kind')!r}; known: {known}"]
        return crd.errors(obj)

    def validate(self, obj: Mapping[str, Any]) -> None:
        errors = self.errors(obj)
        if errors:
            name = (obj.get("metadata") or {}).get("name")
            raise AssertionError(f"{obj.get('kind')}/{name} is invalid:\n  " + "\n  ".join(errors))
