"""Evaluate a CRD's CEL validation rules (``x-kubernetes-validations``) against objects, as the API server does.

The OpenAPI part of a CRD is checked by :mod:`tests.support.k8s_schema`; this module adds the CEL rules, which
a JSON-schema validator ignores and on which Karpenter relies for most of its cross-field checks (restricted
label domains, mutually exclusive selector fields, alias formats, ...). Evaluation uses cel-python (``celpy``).

What it does, following ``k8s.io/apiextensions-apiserver`` (``pkg/apiserver/schema/cel``):

* **Collection.** Every rule of ``spec.versions[name].schema.openAPIV3Schema`` is collected with its schema
  path: ``properties`` steps, ``items`` (the rule applies to each element) and ``additionalProperties`` (to each
  map value). A rule on an array or map schema applies to the array/map itself. Rules found anywhere else in the
  schema (``allOf``, ``not``, ...) are reported by :meth:`CrdCelRules.unreachable_rules`: the test fails on them.
* **Defaulting and pruning first.** The API server validates the *defaulted* object with unknown fields pruned,
  so :func:`apply_defaults` (the structural defaulting algorithm) runs before evaluation, and the CEL value is
  built from the schema (``integer`` -> int, ``number`` -> double, undeclared fields dropped).
* **Locations.** A rule is evaluated at every location of the object its path matches, with ``self`` bound to
  the value there. A rule whose location is absent (or ``null``) in the object is *not applicable*.
* **Transition rules** (those that reference ``oldSelf``) only run on updates: they are never evaluated here and
  are counted as skipped.
* **Failures** read like the API server's: ``<path>: Invalid value: "<type>": <message>``, where the message is
  ``messageExpression`` (if it evaluates to a non-empty single-line string), else ``message``, else
  ``failed rule: <rule>``; ``reason`` selects the cause (``FieldValueForbidden`` -> ``Forbidden: ...``) and
  ``fieldPath`` is appended to the location. A rule that errors at runtime rejects the object too (as on the
  server), with the error in the text; an error is never a pass.
* **Kubernetes CEL libraries.** celpy implements standard CEL only. The Kubernetes extension functions that the
  vendored rules actually call are registered here (:data:`K8S_EXTENSIONS`): ``find`` (Kubernetes regex
  library) and ``split`` (cel-go strings extension, as enabled in the API server). Every rule's functions are
  checked statically against what celpy provides plus these (:meth:`CompiledRule.unknown_functions`); a rule that
  does not compile or calls anything else must be on :data:`ALLOWLIST` with a reviewed reason, or
  :meth:`CrdCelRules.unsupported_rules` reports it and the test fails.

Usage::

    crd = CrdCelRules.load("schemas/karpenter/karpenter.sh_nodepools.yaml")
    report = crd.evaluate(nodepool)
    assert report.ok, report.failure_text()
"""

from __future__ import annotations

import copy
import functools
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import celpy
import celpy.evaluation
import lark
import re2
from celpy import celtypes

from tests.support.k8s_schema import read_crd

__all__ = [
    "ALLOWLIST",
    "K8S_EXTENSIONS",
    "CelRule",
    "CompiledRule",
    "CrdCelRules",
    "Failure",
    "ObjectReport",
    "Outcome",
    "apply_defaults",
    "compile_rule",
]


# --------------------------------------------------------------------------------------------------------
# Kubernetes CEL extension functions (only those the vendored CRDs use)
# --------------------------------------------------------------------------------------------------------


def _k8s_find(text: celtypes.StringType, pattern: celtypes.StringType) -> celtypes.StringType:
    """``<string>.find(<regex>)`` (Kubernetes regex library): the first match, or ``''``. RE2 syntax."""
    if not isinstance(text, str) or not isinstance(pattern, str):
        raise TypeError(f"find({type(text).__name__}, {type(pattern).__name__})")
    match = re2.search(str(pattern), str(text))
    return celtypes.StringType(match.group(0) if match else "")


def _k8s_split(
    text: celtypes.StringType, sep: celtypes.StringType, limit: celtypes.IntType | None = None
) -> celtypes.ListType:
    """``<string>.split(<sep>[, <limit>])`` (cel-go strings extension): Go's ``strings.SplitN``.

    ``limit`` < 0 (or absent): all substrings; 0: an empty list; n > 0: at most n substrings, the last being the
    unsplit remainder. An empty separator splits into characters.
    """
    if not isinstance(text, str) or not isinstance(sep, str):
        raise TypeError(f"split({type(text).__name__}, {type(sep).__name__})")
    s, sep_s = str(text), str(sep)
    n = -1 if limit is None else int(limit)
    if n == 0:
        parts: list[str] = []
    elif sep_s == "":
        chars = list(s)
        parts = chars if n < 0 or n >= len(chars) else chars[: n - 1] + ["".join(chars[n - 1:])]
    else:
        parts = s.split(sep_s) if n < 0 else s.split(sep_s, n - 1)
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


# name -> implementation. Method calls ``a.f(b)`` reach these as ``f(a, b)``.
K8S_EXTENSIONS: dict[str, Any] = {
    "find": _k8s_find,
    "split": _k8s_split,
}

# Macros the celpy parser expands itself (``has`` is a global macro, the others are receiver-style).
_MACROS = frozenset({"has", "all", "exists", "exists_one", "filter", "map"})
# Standard CEL functions celpy implements (its base function table, operators excluded).
_CELPY_FUNCTIONS = frozenset(k for k in celpy.evaluation.base_functions if not k.startswith(("_", "!", "-")))
SUPPORTED_FUNCTIONS = _MACROS | _CELPY_FUNCTIONS | frozenset(K8S_EXTENSIONS)

# Rules celpy cannot compile or evaluate even with the extensions above, each with a reviewed reason. Keyed by
# the exact rule text (the same rule text may appear at several paths). None of the rules in the vendored
# Karpenter 1.14.1 / KubeRay 1.7.0 CRDs needs an entry today; a CRD bump that brings e.g. ``quantity()``,
# ``url()`` or ``format`` must either add the function to K8S_EXTENSIONS or list the rule here.
ALLOWLIST: dict[str, str] = {}


# --------------------------------------------------------------------------------------------------------
# Rules and their compilation
# --------------------------------------------------------------------------------------------------------

# A schema path step: ("properties", name) | ("items",) | ("additionalProperties",)
Step = tuple[str, ...]


def format_schema_path(steps: Iterable[Step]) -> str:
    out = ""
    for step in steps:
        if step[0] == "properties":
            out += ("." if out else "") + step[1]
        elif step[0] == "items":
            out += "[*]"
        else:
            out += "{*}"
    return out or "<root>"


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry and where it sits in the schema."""

    crd: str  # file name of the CRD
    kind: str
    version: str
    steps: tuple[Step, ...]
    index: int  # position in that node's x-kubernetes-validations list
    rule: str
    message: str | None = None
    message_expression: str | None = None
    reason: str | None = None
    field_path: str | None = None

    @property
    def schema_path(self) -> str:
        return format_schema_path(self.steps)

    @property
    def id(self) -> str:
        return f"{self.kind}.{self.version} {self.schema_path} #{self.index}"

    @property
    def transition(self) -> bool:
        """References ``oldSelf``: a transition rule, evaluated by the server only on updates."""
        compiled = compile_rule(self.rule)
        return compiled.uses_old_self if compiled.ast is not None else "oldSelf" in self.rule

    @property
    def allowlisted(self) -> bool:
        return self.rule in ALLOWLIST


@dataclass(frozen=True)
class CompiledRule:
    text: str
    ast: lark.Tree | None
    program: Any  # celpy Runner, or None if it did not compile
    compile_error: str | None
    functions: frozenset[str]
    identifiers: frozenset[str]

    @property
    def uses_old_self(self) -> bool:
        return "oldSelf" in self.identifiers

    def unknown_functions(self) -> frozenset[str]:
        return self.functions - SUPPORTED_FUNCTIONS

    @property
    def problem(self) -> str | None:
        """Why celpy cannot evaluate this rule, or None."""
        if self.compile_error:
            return f"does not compile: {self.compile_error}"
        unknown = self.unknown_functions()
        if unknown:
            return f"calls functions neither celpy nor K8S_EXTENSIONS provide: {sorted(unknown)}"
        return None


_ENV = celpy.Environment()


def _walk_ast(tree: lark.Tree) -> tuple[set[str], set[str]]:
    functions: set[str] = set()
    identifiers: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "ident_arg" and node.children and isinstance(node.children[0], lark.Token):
            functions.add(str(node.children[0]))
        elif node.data == "member_dot_arg" and len(node.children) >= 2 and isinstance(node.children[1], lark.Token):
            functions.add(str(node.children[1]))
        elif node.data == "ident" and node.children and isinstance(node.children[0], lark.Token):
            identifiers.add(str(node.children[0]))
    return functions, identifiers


@functools.lru_cache(maxsize=None)
def compile_rule(text: str) -> CompiledRule:
    """Parse and bind one CEL expression, once per session (cached by text)."""
    try:
        ast = _ENV.compile(text)
    except Exception as err:  # celpy.CELParseError and lark errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return CompiledRule(text, None, None, f"{type(err).__name__}: {first}", frozenset(), frozenset())
    functions, identifiers = _walk_ast(ast)
    program = _ENV.program(ast, functions=K8S_EXTENSIONS)
    return CompiledRule(text, ast, program, None, frozenset(functions), frozenset(identifiers))


# --------------------------------------------------------------------------------------------------------
# Schema helpers: defaulting, schema-typed CEL values
# --------------------------------------------------------------------------------------------------------


def _is_nonnullable_null(value: Any, schema: Mapping[str, Any] | None) -> bool:
    return value is None and schema is not None and not schema.get("nullable", False)


def apply_defaults(value: Any, schema: Mapping[str, Any] | None) -> None:
    """Structural defaulting, in place (``apiextensions-apiserver/pkg/apiserver/schema/defaulting``).

    A missing property (or a non-nullable ``null``) gets its schema ``default``; then defaulting recurses into
    every property, item and map value, including values that were just defaulted.
    """
    if not schema:
        return
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, prop in props.items():
            if "default" not in prop:
                continue
            if key not in value or _is_nonnullable_null(value[key], prop):
                value[key] = copy.deepcopy(prop["default"])
        additional = schema.get("additionalProperties")
        for key in list(value):
            if key in props:
                apply_defaults(value[key], props[key])
            elif isinstance(additional, dict):
                if _is_nonnullable_null(value[key], additional) and "default" in additional:
                    value[key] = copy.deepcopy(additional["default"])
                apply_defaults(value[key], additional)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                if _is_nonnullable_null(item, items) and "default" in items:
                    value[i] = copy.deepcopy(items["default"])
                apply_defaults(value[i], items)


def to_cel(value: Any, schema: Mapping[str, Any] | None) -> Any:
    """The CEL value the API server binds for ``value`` under ``schema`` (pruned, schema-typed)."""
    if value is None:
        return None
    schema = schema or {}
    stype = schema.get("type")
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, (int, float)):
        # Schema type decides: "number" is a CEL double even when JSON wrote 3; "integer" an int.
        if stype == "number" or (isinstance(value, float) and not (stype == "integer" and value.is_integer())):
            return celtypes.DoubleType(float(value))
        return celtypes.IntType(int(value))
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else None
        return celtypes.ListType([to_cel(v, items) for v in value])
    if isinstance(value, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        out: dict[Any, Any] = {}
        for key, v in value.items():
            if props and key in props:
                out[celtypes.StringType(key)] = to_cel(v, props[key])
            elif isinstance(additional, dict):
                out[celtypes.StringType(key)] = to_cel(v, additional)
            elif additional is True or preserve or (not props and additional is None):
                out[celtypes.StringType(key)] = celpy.json_to_cel(v)
            # else: an undeclared field, pruned by the server before validation
        return celtypes.MapType(out)
    return celpy.json_to_cel(value)


def _cel_type_name(value: Any) -> str:
    """The type word the API server prints in ``Invalid value: "<type>"``."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


class _Key(str):
    """A map key in an instance path (printed as ``[key]``, like field.Path.Key)."""


def _format_location(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, _Key):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


# --------------------------------------------------------------------------------------------------------
# Outcomes and reports
# --------------------------------------------------------------------------------------------------------

PASSED = "passed"
FAILED = "failed"
NOT_APPLICABLE = "not_applicable"
TRANSITION = "transition"
ALLOWLISTED = "allowlisted"


@dataclass(frozen=True)
class Failure:
    """One rule failing at one location."""

    location: str  # e.g. spec.template.spec.requirements[2].key
    message: str  # the rule's message (or messageExpression result, or "failed rule: ...")
    text: str  # the whole line, as the API server words it

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Outcome:
    """One rule against one object: its status and, for evaluated rules, each location's result."""

    rule: CelRule
    status: str  # passed | failed | not_applicable | transition | allowlisted
    locations: tuple[str, ...] = ()  # every location where it was evaluated
    failures: tuple[Failure, ...] = ()


@dataclass
class ObjectReport:
    ref: str  # Kind/name
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(o.status == FAILED for o in self.outcomes)

    def counts(self) -> Counter:
        c: Counter = Counter(o.status for o in self.outcomes)
        c["evaluations"] = sum(len(o.locations) for o in self.outcomes)
        return c

    def failures(self) -> list[Failure]:
        return [f for o in self.outcomes for f in o.failures]

    def failed(self) -> set[tuple[str, str]]:
        """``{(location, message)}`` of every failure, for assertions."""
        return {(f.location, f.message) for f in self.failures()}

    def failure_text(self) -> str:
        lines = [f"{f.text}\n      rule {o.rule.id} ({o.rule.crd}): {o.rule.rule}"
                 for o in self.outcomes for f in o.failures]
        return f"{self.ref} violates CEL rules of its CRD:\n  " + "\n  ".join(lines)


# --------------------------------------------------------------------------------------------------------
# CRD rules
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrdCelRules:
    """The CEL rules of one served version of one CRD."""

    path: str
    group: str
    version: str
    kind: str
    schema: dict[str, Any]
    rules: tuple[CelRule, ...]
    all_rule_texts: tuple[tuple[str, str], ...]  # (raw json-pointer-ish location, rule) for every rule anywhere

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @classmethod
    def load(cls, path: str | os.PathLike[str], version: str = "v1") -> "CrdCelRules":
        return _load_cached(os.path.abspath(os.fspath(path)), version)

    @classmethod
    def load_all(cls, path: str | os.PathLike[str]) -> list["CrdCelRules"]:
        """One per served version of the CRD file."""
        crd = read_crd(os.path.abspath(os.fspath(path)))
        return [cls.load(path, v["name"]) for v in crd["spec"]["versions"] if v.get("served", True)]

    # -- static checks --------------------------------------------------------------------------------------

    def unreachable_rules(self) -> list[str]:
        """Rules present in the schema at places the structural walk does not reach (they would be ignored)."""
        reachable = Counter(r.rule for r in self.rules)
        found = Counter(text for _, text in self.all_rule_texts)
        return [f"{loc}: {text}" for loc, text in self.all_rule_texts if found[text] > reachable[text]]

    def unsupported_rules(self) -> list[str]:
        """Rules celpy cannot compile or evaluate that are not on :data:`ALLOWLIST` (must be empty)."""
        out = []
        for r in self.rules:
            problem = compile_rule(r.rule).problem
            if problem and not r.allowlisted:
                out.append(f"{self.kind}.{self.version} {r.schema_path}: {r.rule!r} {problem}")
            if r.message_expression and compile_rule(r.message_expression).problem and not r.allowlisted:
                out.append(f"{self.kind}.{self.version} {r.schema_path}: messageExpression "
                           f"{r.message_expression!r} {compile_rule(r.message_expression).problem}")
        return out

    # -- evaluation ---------------------------------------------------------------------------------------

    def evaluate(self, obj: Mapping[str, Any], *, defaults: bool = True) -> ObjectReport:
        """Every rule of this CRD against ``obj`` (a create: no ``oldSelf``)."""
        name = (obj.get("metadata") or {}).get("name")
        report = ObjectReport(ref=f"{obj.get('kind')}/{name}")
        value = copy.deepcopy(dict(obj))
        if defaults:
            apply_defaults(value, self.schema)
        for rule in self.rules:
            report.outcomes.append(self._evaluate_rule(rule, value))
        return report

    def _evaluate_rule(self, rule: CelRule, value: Any) -> Outcome:
        if rule.transition:
            return Outcome(rule, TRANSITION)
        if rule.allowlisted:
            return Outcome(rule, ALLOWLISTED)
        node_schema = self._schema_at(rule.steps)
        compiled = compile_rule(rule.rule)
        locations: list[str] = []
        failures: list[Failure] = []
        for loc_path, loc_value in _locations(value, rule.steps):
            loc = _format_location(loc_path)
            locations.append(loc)
            cel_self = to_cel(loc_value, node_schema)
            failure = self._check(rule, compiled, cel_self, loc_value, loc)
            if failure:
                failures.append(failure)
        if not locations:
            return Outcome(rule, NOT_APPLICABLE)
        return Outcome(rule, FAILED if failures else PASSED, tuple(locations), tuple(failures))

    def _check(self, rule: CelRule, compiled: CompiledRule, cel_self: Any, raw: Any, loc: str) -> Failure | None:
        # fieldPath is a relative JSONPath (".foo", "['a.b']") from the rule's location.
        field_loc = loc + rule.field_path if rule.field_path else loc
        declared = (self._schema_at(rule.steps) or {}).get("type")
        type_name = declared if isinstance(declared, str) else _cel_type_name(raw)
        if compiled.problem:  # not allowlisted and celpy cannot run it: a failure, never a pass
            msg = f"rule {rule.rule!r} {compiled.problem}"
            return Failure(field_loc, msg, f"{field_loc}: Internal error: {msg}")
        try:
            result = compiled.program.evaluate({"self": cel_self})
        except Exception as err:  # celpy raises CELEvalError for runtime errors (no such key, bad int(), ...)
            result = err
        if isinstance(result, Exception):
            # The server rejects the object when a rule errors; say which rule and why.
            msg = f"rule evaluation error: {_short_error(result)} (rule {rule.rule!r}; message: {rule.message!r})"
            return Failure(field_loc, msg, f'{field_loc}: Invalid value: "{type_name}": {msg}')
        if not isinstance(result, celtypes.BoolType):
            msg = f"rule {rule.rule!r} returned {type(result).__name__}, not bool"
            return Failure(field_loc, msg, f"{field_loc}: Internal error: {msg}")
        if bool(result):
            return None
        message = self._message(rule, cel_self)
        return Failure(field_loc, message, _format_cause(field_loc, rule.reason, type_name, message))

    @staticmethod
    def _message(rule: CelRule, cel_self: Any) -> str:
        if rule.message_expression:
            compiled = compile_rule(rule.message_expression)
            if compiled.program is not None:
                try:
                    msg = compiled.program.evaluate({"self": cel_self})
                except Exception:
                    msg = None
                if isinstance(msg, str) and msg.strip() and "\n" not in msg:
                    return str(msg)
        if rule.message:
            return rule.message
        return f"failed rule: {rule.rule}"

    def _schema_at(self, steps: Iterable[Step]) -> dict[str, Any]:
        node: Any = self.schema
        for step in steps:
            node = node["properties"][step[1]] if step[0] == "properties" else node[step[0]]
        return node


def _short_error(err: Any) -> str:
    args = getattr(err, "args", ())
    if args and isinstance(args[0], str):
        detail = args[2] if len(args) > 2 and args[2] else ""
        return f"{args[0]} {detail}".strip()
    return str(err)


# The field.ErrorType strings of k8s.io/apimachinery for the reasons a rule may declare.
_REASONS = {
    None: "Invalid value",
    "FieldValueInvalid": "Invalid value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueRequired": "Required value",
    "FieldValueDuplicate": "Duplicate value",
}


def _format_cause(loc: str, reason: str | None, type_name: str, message: str) -> str:
    label = _REASONS.get(reason, "Invalid value")
    if label == "Invalid value":
        return f'{loc}: Invalid value: "{type_name}": {message}'
    return f"{loc}: {label}: {message}"


def _locations(
    value: Any, steps: tuple[Step, ...], path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """(instance path, value) for every present, non-null location matching the schema path."""
    if value is None:
        return
    if not steps:
        yield path, value
        return
    step, rest = steps[0], steps[1:]
    if step[0] == "properties":
        if isinstance(value, dict) and step[1] in value:
            yield from _locations(value[step[1]], rest, path + (step[1],))
    elif step[0] == "items":
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield from _locations(item, rest, path + (i,))
    elif step[0] == "additionalProperties":
        if isinstance(value, dict):
            for key, item in value.items():
                yield from _locations(item, rest, path + (_Key(key),))


def _collect(schema: Mapping[str, Any], steps: tuple[Step, ...], out: list[tuple[tuple[Step, ...], int, dict]]) -> None:
    for i, entry in enumerate(schema.get("x-kubernetes-validations") or []):
        out.append((steps, i, entry))
    for name, child in (schema.get("properties") or {}).items():
        if isinstance(child, dict):
            _collect(child, steps + (("properties", name),), out)
    if isinstance(schema.get("items"), dict):
        _collect(schema["items"], steps + (("items",),), out)
    if isinstance(schema.get("additionalProperties"), dict):
        _collect(schema["additionalProperties"], steps + (("additionalProperties",),), out)


def _all_rules_anywhere(node: Any, loc: str, out: list[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        for entry in node.get("x-kubernetes-validations") or []:
            out.append((loc or "/", entry.get("rule", "")))
        for key, child in node.items():
            if key != "x-kubernetes-validations":
                _all_rules_anywhere(child, f"{loc}/{key}", out)
    elif isinstance(node, list):
        for i, child in enumerate(node):
            _all_rules_anywhere(child, f"{loc}/{i}", out)


@functools.lru_cache(maxsize=None)
def _load_cached(path: str, version: str) -> CrdCelRules:
    crd = read_crd(path)
    spec = crd["spec"]
    chosen = next((v for v in spec["versions"] if v["name"] == version), None)
    if chosen is None:
        raise ValueError(f"{path}: version {version!r} not in {[v['name'] for v in spec['versions']]}")
    schema = chosen["schema"]["openAPIV3Schema"]
    collected: list[tuple[tuple[Step, ...], int, dict]] = []
    _collect(schema, (), collected)
    base = os.path.basename(path)
    kind = spec["names"]["kind"]
    rules = tuple(
        CelRule(
            crd=base,
            kind=kind,
            version=version,
            steps=steps,
            index=i,
            rule=entry["rule"],
            message=entry.get("message"),
            message_expression=entry.get("messageExpression"),
            reason=entry.get("reason"),
            field_path=entry.get("fieldPath"),
        )
        for steps, i, entry in collected
    )
    anywhere: list[tuple[str, str]] = []
    _all_rules_anywhere(schema, "", anywhere)
    return CrdCelRules(
        path=path,
        group=spec["group"],
        version=version,
        kind=kind,
        schema=schema,
        rules=rules,
        all_rule_texts=tuple(anywhere),
    )
