"""The deploy as CloudFormation plays it: which resources are guaranteed to exist before another starts.

CloudFormation creates a stack only after every stack it depends on is complete, and inside a stack it
creates a resource only after the resources it names in ``DependsOn`` or references (``Ref``,
``Fn::GetAtt``, ``Fn::Sub``) are complete. Nothing else is ordered: two resources without a path between
them may be created in either order or at once. So what a resource may rely on at its step is exactly
its set of ancestors in that graph; anything else is a race that a real deploy may lose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

from tools.render import Assembly

Key = tuple[str, str]  # (stack artifact id, logical id)


@dataclass(frozen=True)
class Resource:
    stack: str
    logical_id: str
    type: str
    properties: dict[str, Any] = field(hash=False, compare=False)

    @property
    def key(self) -> Key:
        return (self.stack, self.logical_id)


def _references(value: Any, names: set[str]) -> Iterator[str]:
    """Logical ids of ``names`` that ``value`` refers to through Ref, Fn::GetAtt or Fn::Sub."""
    if isinstance(value, dict):
        for fn, arg in value.items():
            if fn == "Ref" and arg in names:
                yield arg
            elif fn == "Fn::GetAtt" and isinstance(arg, list) and arg and arg[0] in names:
                yield arg[0]
            elif fn == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                for name in names:
                    if "${" + name + "}" in text or "${" + name + "." in text:
                        yield name
                if isinstance(arg, list):
                    yield from _references(arg[1], names)
            else:
                yield from _references(arg, names)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item, names)


class DeployGraph:
    """Every resource of every stack of an assembly, with its guaranteed predecessors."""

    def __init__(self, assembly: Assembly):
        self.assembly = assembly
        self.resources: dict[Key, Resource] = {}
        self._direct: dict[Key, set[Key]] = {}
        stack_deps = self._stack_dependencies(assembly.outdir)
        by_stack: dict[str, list[Key]] = {}
        for stack, template in assembly.templates.items():
            names = set(template.get("Resources", {}))
            for logical_id, res in template.get("Resources", {}).items():
                key = (stack, logical_id)
                self.resources[key] = Resource(stack, logical_id, res["Type"], res.get("Properties", {}))
                depends = res.get("DependsOn", [])
                depends = [depends] if isinstance(depends, str) else depends
                refs = set(_references(res.get("Properties", {}), names)) | set(depends)
                self._direct[key] = {(stack, name) for name in refs if name != logical_id}
                by_stack.setdefault(stack, []).append(key)
        # A stack starts only when the stacks it depends on are complete: every resource of theirs comes first.
        self._stack_ancestors: dict[str, set[str]] = {}
        for stack in assembly.templates:
            seen, todo = set(), list(stack_deps.get(stack, ()))
            while todo:
                dep = todo.pop()
                if dep not in seen and dep in assembly.templates:
                    seen.add(dep)
                    todo.extend(stack_deps.get(dep, ()))
            self._stack_ancestors[stack] = seen
        self._by_stack = by_stack
        self._ancestors: dict[Key, frozenset[Key]] = {}

    @staticmethod
    def _stack_dependencies(outdir: Path) -> dict[str, list[str]]:
        deps: dict[str, list[str]] = {}
        for manifest_path in [outdir / "manifest.json", *outdir.glob("assembly-*/manifest.json")]:
            manifest = json.loads(manifest_path.read_text())
            for artifact_id, artifact in manifest.get("artifacts", {}).items():
                if artifact.get("type") == "aws:cloudformation:stack":
                    deps[artifact_id] = list(artifact.get("dependencies", []))
        return deps

    def ancestors(self, key: Key) -> frozenset[Key]:
        """Everything CloudFormation has completed before it starts ``key``."""
        if key in self._ancestors:
            return self._ancestors[key]
        stack = key[0]
        out: set[Key] = {k for s in self._stack_ancestors[stack] for k in self._by_stack.get(s, ())}
        todo = list(self._direct[key])
        while todo:
            k = todo.pop()
            if k not in out:
                out.add(k)
                todo.extend(self._direct[k])
        self._ancestors[key] = frozenset(out)
        return self._ancestors[key]

    def before(self, key: Key) -> frozenset[Key]:
        """``key`` and its ancestors: what exists once ``key`` is complete."""
        return self.ancestors(key) | {key}

    @cached_property
    def everything(self) -> frozenset[Key]:
        return frozenset(self.resources)

    def order(self) -> list[Key]:
        """A deploy order consistent with every edge (stacks in assembly order, then by ancestor count)."""
        stacks = list(self.assembly.templates)
        return sorted(self.resources, key=lambda k: (len(self._stack_ancestors[k[0]]), stacks.index(k[0]),
                                                     len(self.ancestors(k)), k[1]))

    def find(self, type_: str, predicate: Callable[[Resource], bool] = lambda r: True) -> list[Resource]:
        return [r for r in self.resources.values() if r.type == type_ and predicate(r)]

    def stack_name(self, key: Key) -> str:
        return self.assembly.stack_names[key[0]]

    def label(self, key: Key) -> str:
        return f"{self.stack_name(key)}/{key[1]}"

    def output_source(self, stack_name: str, output_name: str) -> Any:
        """The value behind a cross-stack reference (``Fn::GetStackOutput``) or None."""
        for artifact_id, name in self.assembly.stack_names.items():
            if name == stack_name:
                return self.assembly.templates[artifact_id].get("Outputs", {}).get(output_name, {}).get("Value")
        return None

    def stack_of_name(self, stack_name: str) -> str | None:
        for artifact_id, name in self.assembly.stack_names.items():
            if name == stack_name:
                return artifact_id
        return None
