"""Helm values against a chart's vendored values.yaml: every key path we set must exist upstream."""

from __future__ import annotations

from typing import Any, Iterator, Mapping


def known_paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path of a values tree (the chart's values.yaml)."""
    if isinstance(node, Mapping):
        for key, child in node.items():
            yield prefix + (key,)
            yield from known_paths(child, prefix + (key,))


def set_paths(node: Mapping[str, Any], free_form: frozenset[str], prefix: tuple = ()) -> Iterator[tuple]:
    """The key paths we set, not descending into ``free_form`` keys (maps whose keys are not the chart's:
    Kubernetes objects, selectors, annotations)."""
    for key, child in node.items():
        yield prefix + (key,)
        if isinstance(child, Mapping) and key not in free_form:
            yield from set_paths(child, free_form, prefix + (key,))


def unknown_paths(values: Mapping[str, Any], upstream: Any, free_form: frozenset[str]) -> list[str]:
    """Dotted paths of ``values`` that the chart's values tree ``upstream`` does not have."""
    known = set(known_paths(upstream))
    return [".".join(p) for p in set_paths(values, free_form) if p not in known]
