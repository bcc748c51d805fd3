"""Structural differences between two CloudFormation values, and the references a value makes.

A path is a tuple of keys and list indexes below ``Properties``. An intrinsic function (``{"Ref": ...}``,
``{"Fn::Join": ...}``) is a leaf: a change anywhere inside it is a change of the property that holds it.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

Path = tuple[Any, ...]

_SUB_VAR = re.compile(r"\$\{(?!!)([^}]+)\}")


def is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return key in ("Ref", "Condition") or key.startswith("Fn::")


def changed_paths(before: Any, after: Any, path: Path = ()) -> list[Path]:
    """Every path at which ``before`` and ``after`` differ (added and removed keys included)."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict) and not is_intrinsic(before) and not is_intrinsic(after):
        out: list[Path] = []
        for key in sorted(set(before) | set(after), key=str):
            if key not in before or key not in after:
                out.append(path + (key,))
            else:
                out.extend(changed_paths(before[key], after[key], path + (key,)))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (b, a) in enumerate(zip(before, after)):
            out.extend(changed_paths(b, a, path + (i,)))
        return out
    return [path]


def path_text(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(whole value)"


def summarize(paths: list[Path], limit: int = 3) -> str:
    texts = list(dict.fromkeys(path_text(p) for p in paths))
    more = f" (+{len(texts) - limit} more)" if len(texts) > limit else ""
    return ", ".join(texts[:limit]) + more


def _refs_inside(value: Any) -> Iterator[tuple[str, Any]]:
    """(kind, target) for every reference inside an intrinsic. kind: "ref", "getatt", "output", "import"."""
    if isinstance(value, list):
        for item in value:
            yield from _refs_inside(item)
        return
    if not isinstance(value, dict):
        return
    if len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref" and isinstance(arg, str):
            if not arg.startswith("AWS::"):
                yield "ref", (arg, None)
            return
        if fn == "Fn::GetAtt":
            if isinstance(arg, str):
                arg = arg.split(".", 1)
            if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str):
                yield "getatt", (arg[0], arg[1] if isinstance(arg[1], str) else None)
                return
        if fn == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1] if len(arg) > 1 else {})
            for var in _SUB_VAR.findall(text if isinstance(text, str) else ""):
                name, _, attr = var.partition(".")
                if name in variables or name.startswith("AWS::"):
                    continue
                yield ("getatt", (name, attr)) if attr else ("ref", (name, None))
            yield from _refs_inside(variables)
            return
        if fn == "Fn::GetStackOutput" and isinstance(arg, dict):
            yield "output", (arg.get("StackName"), arg.get("OutputName"))
            return
        if fn == "Fn::ImportValue":
            yield "import", arg
            return
    for item in value.values():
        yield from _refs_inside(item)


def references(value: Any, path: Path = ()) -> Iterator[tuple[Path, str, Any]]:
    """(path of the property holding it, kind, target) for each reference ``value`` makes."""
    if is_intrinsic(value):
        for kind, target in _refs_inside(value):
            yield path, kind, target
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from references(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from references(item, path + (i,))
