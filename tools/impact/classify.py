"""Classify every resource that differs between two synthesized assemblies.

Stacks are matched by construct path (``DynamicFactory/Cluster``), resources by logical id. A matched
resource is *replaced* when its type changes or a changed property lies at or below one of its type's
``createOnlyProperties``, *updated* in place otherwise (*re-applied* for custom resources, whose handler
decides what an update means), *added* or *deleted* when only one side has it.

A replacement changes the physical id, so a reference to a replaced resource (``Ref``, ``Fn::GetAtt``,
``Fn::Sub``, an output read through ``Fn::GetStackOutput``) changes too even where the template text does
not; a ``Fn::GetAtt`` of a ``...Version...`` attribute changes with any in-place update (a launch template's
``LatestVersionNumber``). Both are followed to a fixed point, so a create-only reference to a replaced
resource replaces its holder as well.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Iterable

from tools.impact import kube, stateful
from tools.impact.diff import Path, changed_paths, path_text, references
from tools.impact.schemas import DEFAULT_REGION, overlaps, pointer_text, schema_for
from tools.render import join

STACK_TYPE = "AWS::CloudFormation::Stack"
WEAK = "*"  # marks a change that arrives through Fn::GetStackOutput (see WEAK_NOTE)
WEAK_NOTE = ("* read through Fn::GetStackOutput, a weak reference: CloudFormation re-reads it only when the "
             "consuming stack updates that resource, and cdk deploy skips a stack whose template is unchanged")
ACTIONS = ("replace", "delete", "add", "update", "reapply")

Key = tuple[str, str]  # (stack construct path, logical id)


@dataclass(frozen=True)
class Change:
    """One changed resource (or stack, with ``type == STACK_TYPE`` and no logical id)."""

    stack: str                      # construct path of the stack, e.g. "DynamicFactory/Cluster"
    logical_id: str
    type: str
    action: str                     # one of ACTIONS
    paths: tuple[str, ...] = ()     # changed properties
    reasons: tuple[str, ...] = ()   # why it is replaced
    loses: tuple[str, ...] = ()     # what a user would lose
    collision: str | None = None    # a replacement or re-creation that cannot coexist with what it replaces
    kube: tuple[str, ...] = ()      # Kubernetes objects / Helm releases it changes
    notes: tuple[str, ...] = ()     # warnings that do not fail the check

    @property
    def stateful_replacement(self) -> bool:
        return self.action == "replace" and bool(self.loses)

    @property
    def errors(self) -> list[str]:
        out = []
        if self.stateful_replacement:
            out.append(f"{self.where}: replaced, losing {'; '.join(self.loses)}")
        if self.collision:
            out.append(f"{self.where}: {self.collision}")
        return out

    @property
    def where(self) -> str:
        return f"{self.stack}/{self.logical_id}" if self.logical_id else self.stack


@dataclass
class Stack:
    path: str
    name: str
    template: dict[str, Any]
    region: str | None = None

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.template.get("Resources", {})


def load_stacks(directory: str | FsPath, stage: str = "DynamicFactory") -> dict[str, Stack]:
    """The stacks of a cloud assembly (``cdk.out`` or its ``assembly-<stage>`` directory), by construct path."""
    root = FsPath(directory)
    if (root / f"assembly-{stage}").is_dir():
        root = root / f"assembly-{stage}"
    manifest = json.loads((root / "manifest.json").read_text())
    stacks: dict[str, Stack] = {}
    for artifact_id, artifact in manifest.get("artifacts", {}).items():
        if artifact.get("type") != "aws:cloudformation:stack":
            continue
        props = artifact.get("properties", {})
        region = artifact.get("environment", "").rsplit("/", 1)[-1]
        stacks[artifact.get("displayName", artifact_id)] = Stack(
            path=artifact.get("displayName", artifact_id),
            name=props.get("stackName", artifact_id),
            template=json.loads((root / props["templateFile"]).read_text()),
            region=None if not region or region.startswith("unknown") else region,
        )
    return stacks


def from_templates(templates: dict[str, dict[str, Any]], names: dict[str, str] | None = None) -> dict[str, Stack]:
    """Stacks from bare templates (``{stack path: template}``), for tests and other callers."""
    return {path: Stack(path=path, name=(names or {}).get(path, path), template=t) for path, t in templates.items()}


def _is_custom(type_name: str) -> bool:
    return type_name.startswith("Custom::") or type_name == "AWS::CloudFormation::CustomResource"


def _shown(value: Any) -> str:
    text = join(value) if isinstance(value, (str, dict)) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _literal(value: Any) -> bool:
    """No intrinsic inside: the same text means the same value in any stack."""
    text = json.dumps(value)
    return '"Ref"' not in text and '"Fn::' not in text


class _Comparison:
    def __init__(self, before: dict[str, Stack], after: dict[str, Stack], region: str | None):
        self.before, self.after, self.region = before, after, region
        self.changes: list[Change] = []
        self.matched: dict[Key, tuple[dict, dict]] = {}
        self.added: dict[Key, dict] = {}
        self.deleted: dict[Key, dict] = {}
        self.lingering: dict[Key, tuple[dict, str]] = {}  # resources of renamed stacks: stay deployed
        self.after_by_name = {s.name: s for s in after.values()}

    def schema(self, stack: str, type_name: str):
        st = self.after.get(stack) or self.before.get(stack)
        return schema_for(type_name, self.region or (st.region if st else None) or DEFAULT_REGION)

    # --- pairing ---------------------------------------------------------------------------------------
    def pair(self) -> None:
        for path in list(self.after) + [p for p in self.before if p not in self.after]:
            b, a = self.before.get(path), self.after.get(path)
            if a is not None and b is not None and a.name == b.name:
                for lid in a.resources.keys() | b.resources.keys():
                    if lid in a.resources and lid in b.resources:
                        self.matched[(path, lid)] = (b.resources[lid], a.resources[lid])
                    elif lid in a.resources:
                        self.added[(path, lid)] = a.resources[lid]
                    else:
                        self.deleted[(path, lid)] = b.resources[lid]
            elif a is not None:
                for lid, res in a.resources.items():
                    self.added[(path, lid)] = res
                if b is None:
                    self.changes.append(Change(path, "", STACK_TYPE, "add", notes=(f"new stack {a.name}",)))
                else:
                    for lid, res in b.resources.items():
                        self.lingering[(path, lid)] = (res, b.name)
                    self.changes.append(Change(path, "", STACK_TYPE, "add", notes=(
                        f"stack name {b.name} -> {a.name}: CloudFormation creates a new stack; {b.name} stays "
                        "deployed (cdk deploy never deletes a stack) until you destroy it",)))
            elif b is not None:
                losses = []
                for lid, res in b.resources.items():
                    what, _ = stateful.loss(res["Type"], res.get("DeletionPolicy"), replaced=False)
                    if what:
                        losses.append(f"{lid}: {what}")
                self.changes.append(Change(path, "", STACK_TYPE, "delete", loses=tuple(losses), notes=(
                    f"stack {b.name} is no longer synthesized: cdk deploy leaves it deployed; destroying it deletes "
                    f"its {len(b.resources)} resources",)))

    # --- references ------------------------------------------------------------------------------------
    def _resolve(self, stack: Stack, kind: str, target: Any, depth: int = 0) -> list[tuple[Key, str | None, bool]]:
        """(resource key, attribute, crosses stacks) for one reference made from ``stack``."""
        if depth > 3:
            return []
        if kind in ("ref", "getatt"):
            lid, attr = target
            return [((stack.path, lid), attr, False)] if lid in stack.resources else []
        outputs: list[tuple[Stack, Any]] = []
        if kind == "output" and isinstance(target[0], str):
            producer = self.after_by_name.get(target[0])
            if producer and target[1] in producer.template.get("Outputs", {}):
                outputs.append((producer, producer.template["Outputs"][target[1]].get("Value")))
        elif kind == "import" and isinstance(target, str):
            for producer in self.after.values():
                for out in producer.template.get("Outputs", {}).values():
                    if out.get("Export", {}).get("Name") == target:
                        outputs.append((producer, out.get("Value")))
        found = []
        for producer, value in outputs:
            for _, k, t in references(value):
                found.extend((key, attr, True) for key, attr, _ in self._resolve(producer, k, t, depth + 1))
        return found

    def reference_index(self) -> dict[Key, list[tuple[Path, Key, str | None, bool]]]:
        index: dict[Key, list] = defaultdict(list)
        for key, (_, res) in self.matched.items():
            stack = self.after[key[0]]
            for path, kind, target in references(res.get("Properties", {})):
                for tkey, attr, cross in self._resolve(stack, kind, target):
                    index[key].append((path, tkey, attr, cross))
        return index

    # --- classification --------------------------------------------------------------------------------
    def classify(self) -> None:
        base = {k: changed_paths(b.get("Properties", {}), a.get("Properties", {})) for k, (b, a) in self.matched.items()}
        refs = self.reference_index()
        extra: dict[Key, dict[Path, str]] = {}
        while True:
            replaced: dict[Key, list[str]] = {}
            updated: set[Key] = set()
            for key, (b, a) in self.matched.items():
                paths = base[key] + list(extra.get(key, {}))
                if b["Type"] != a["Type"]:
                    replaced[key] = [f"type {b['Type']} -> {a['Type']}"]
                    continue
                schema = self.schema(key[0], a["Type"])
                reasons = []
                for pointer in schema.create_only:
                    for p in paths:
                        if overlaps(p, pointer):
                            why = extra.get(key, {}).get(p)
                            reasons.append(f"create-only {pointer_text(pointer)}" + (f" ({why})" if why else ""))
                            break
                if reasons:
                    replaced[key] = reasons
                elif paths:
                    updated.add(key)
            following: dict[Key, dict[Path, str]] = defaultdict(dict)
            for key, items in refs.items():
                for path, tkey, attr, cross in items:
                    weak = f" via a stack output{WEAK}" if cross else ""
                    if tkey in replaced:
                        following[key].setdefault(path, f"follows {tkey[1]}, replaced{weak}")
                    elif tkey in updated and attr and "Version" in attr:
                        following[key].setdefault(path, f"follows {tkey[1]}.{attr}{weak}")
            if dict(following) == extra:
                break
            extra = dict(following)
        self.replaced, self.updated, self.extra, self.base = replaced, updated, extra, base

    # --- collisions ------------------------------------------------------------------------------------
    def _identity(self, stack: str, res: dict, *, created: bool = False) -> tuple | None:
        """The resource's identity values as text; None without one, or when a created resource's identity
        refers to a replaced resource (same text, new value)."""
        schema = self.schema(stack, res["Type"])
        props = res.get("Properties", {})
        if not schema.identity or schema.identity[0] not in props:
            return None
        if created and stack in self.after:
            for _, kind, target in references({p: props.get(p) for p in schema.identity}):
                if any(tkey in self.replaced for tkey, _, _ in self._resolve(self.after[stack], kind, target)):
                    return None
        return tuple(json.dumps(props.get(p), sort_keys=True) for p in schema.identity)

    def replacement_collision(self, key: Key, before: dict, after: dict) -> str | None:
        schema = self.schema(key[0], after["Type"])
        props = after.get("Properties", {})
        if before["Type"] != after["Type"] or not schema.identity or schema.delete_then_create:
            return None
        if schema.identity[0] not in props:
            return None
        touched = self.base[key] + list(self.extra.get(key, {}))
        for prop in schema.identity:
            if any(overlaps(p, (prop,)) for p in touched):
                return None
        shown = ", ".join(f"{p} {_shown(props[p])}" for p in schema.identity if p in props)
        return (f"replaced with the same {shown}: CloudFormation creates the replacement before deleting the old "
                "resource, and that name is taken (the update fails and rolls back)")

    def kube_collision(self, type_name: str, old: tuple[dict, str], new: tuple[dict, str], old_where: str, *,
                       old_deleted: bool = True) -> str | None:
        """Objects or a release that ``new`` (resource, stack name) re-creates while ``old`` still owns them."""
        (old, old_stack), (new, new_stack) = old, new
        shared = (kube.footprint(type_name, old.get("Properties", {}), old_stack)
                  & kube.footprint(type_name, new.get("Properties", {}), new_stack))
        if not shared:
            return None
        items = ", ".join(sorted(kube.footprint_text(s) for s in shared)[:3])
        if type_name == kube.HELM_TYPE:
            how = "helm upgrade --install takes the release over"
        elif str(new.get("Properties", {}).get("Overwrite", "false")).lower() == "true":
            how = "kubectl apply takes them over"
        else:
            how = "kubectl create fails on objects that exist (AlreadyExists)"
        if not old_deleted:
            return f"re-creates {items}, still owned by {old_where}: {how}, and both now manage them"
        return (f"re-creates {items} that {old_where} owns: {how}, then the cleanup deletes {old_where} and "
                "with it those objects")

    def creation_collisions(self) -> dict[Key, str]:
        """Resources created by this deploy (added, or the new half of a replacement) whose name, or whose
        Kubernetes objects, are still held by a resource that goes only in the cleanup phase (deleted, or the
        old half of another replacement) or never (in a renamed stack, left deployed)."""
        out: dict[Key, str] = {}
        gone: list[tuple[Key, dict, str, bool, str]] = [
            (k, r, f"{k[0]}/{k[1]}", True, self.before[k[0]].name) for k, r in self.deleted.items()]
        gone += [(k, self.matched[k][0], f"{k[0]}/{k[1]} (replaced)", True, self.before[k[0]].name)
                 for k in self.replaced]
        gone += [(k, r, f"{k[1]} in stack {name} (left deployed)", False, name)
                 for k, (r, name) in self.lingering.items()]
        created = list(self.added.items()) + [(k, self.matched[k][1]) for k in self.replaced]
        for key, res in created:
            schema = self.schema(key[0], res["Type"])
            props = res.get("Properties", {})
            ident = self._identity(key[0], res, created=True)
            for old_key, old, where, deleted, old_stack in gone:
                if (old_key == key and key in self.replaced) or old["Type"] != res["Type"]:
                    continue
                same_stack = deleted and old_key[0] == key[0]
                if ident is not None and ident == self._identity(old_key[0], old) and (
                        same_stack or all(_literal(props.get(p)) for p in schema.identity)):
                    shown = ", ".join(f"{p} {_shown(props[p])}" for p in schema.identity if p in props)
                    still = "is deleted only after this one is created" if deleted else "stays deployed"
                    out[key] = f"created with {shown}, the same as {where}, which {still}: the name is taken"
                    break
                if res["Type"] in kube.KUBE_TYPES:
                    if hit := self.kube_collision(res["Type"], (old, old_stack), (res, self.after[key[0]].name), where,
                                                  old_deleted=deleted):
                        out[key] = hit
                        break
        return out

    # --- output ----------------------------------------------------------------------------------------
    def build(self) -> list[Change]:
        self.pair()
        self.classify()
        collisions = self.creation_collisions()
        for key, (b, a) in self.matched.items():
            paths = self.base[key] + [p for p in self.extra.get(key, {}) if p not in self.base[key]]
            type_changed = b["Type"] != a["Type"]
            if not paths and not type_changed:
                continue
            followed = self.extra.get(key, {})
            notes: list[str] = []
            schema = self.schema(key[0], a["Type"])
            if not schema.known:
                notes.append(f"no CloudFormation schema for {a['Type']}: whether it is replaced is unknown")
            kube_lines: list[str] = []
            loses: list[str] = []
            collision = None
            if key in self.replaced:
                action = "replace"
                what, note = stateful.loss(a["Type"], b.get("UpdateReplacePolicy"), replaced=True)
                loses += [what] if what else []
                notes += [note] if note else []
                collision = self.replacement_collision(key, b, a) or collisions.get(key)
                if a["Type"] in kube.KUBE_TYPES and not type_changed:
                    name = self.after[key[0]].name
                    collision = collision or self.kube_collision(a["Type"], (b, name), (a, name), "the old resource")
            else:
                action = "reapply" if _is_custom(a["Type"]) else "update"
            if a["Type"] in kube.KUBE_TYPES and b["Type"] == a["Type"]:
                acc = kube.account(a["Type"], b.get("Properties"), a.get("Properties"))
                kube_lines, loses, notes = acc.lines, loses + acc.losses, notes + acc.problems
            self.changes.append(Change(
                key[0], key[1], a["Type"], action,
                paths=tuple(path_text(p) + (f" ({followed[p]})" if p in followed and p not in self.base[key] else "")
                            for p in paths) or ("(type)",),
                reasons=tuple(self.replaced.get(key, ())),
                loses=tuple(loses), collision=collision, kube=tuple(kube_lines), notes=tuple(notes),
            ))
        for key, res in self.added.items():
            acc = kube.account(res["Type"], None, res.get("Properties")) if res["Type"] in kube.KUBE_TYPES else None
            self.changes.append(Change(key[0], key[1], res["Type"], "add", collision=collisions.get(key),
                                       kube=tuple(acc.lines) if acc else ()))
        for key, res in self.deleted.items():
            loses, notes = [], []
            what, note = stateful.loss(res["Type"], res.get("DeletionPolicy"), replaced=False)
            loses += [what] if what else []
            notes += [note] if note else []
            lines: tuple[str, ...] = ()
            if res["Type"] in kube.KUBE_TYPES and res.get("DeletionPolicy") not in ("Retain", "RetainExceptOnCreate"):
                acc = kube.account(res["Type"], res.get("Properties"), None)
                lines, loses = tuple(acc.lines), loses + acc.losses
            self.changes.append(Change(key[0], key[1], res["Type"], "delete", loses=tuple(loses), kube=lines,
                                       notes=tuple(notes)))
        order = {path: i for i, path in enumerate(list(self.after) + list(self.before))}
        self.changes.sort(key=lambda c: (order.get(c.stack, 99), c.type != STACK_TYPE, ACTIONS.index(c.action),
                                         c.logical_id))
        return self.changes


def compare(before: dict[str, Stack], after: dict[str, Stack], *, region: str | None = None) -> list[Change]:
    """Every changed resource between two sets of stacks (see ``load_stacks`` and ``from_templates``)."""
    return _Comparison(before, after, region).build()


def impact(before_assembly_dir: str | FsPath, after_assembly_dir: str | FsPath, *, stage: str = "DynamicFactory",
           region: str | None = None) -> list[Change]:
    """Classify every resource that differs between two synthesized assemblies (``cdk.out`` directories or
    their ``assembly-<stage>`` subdirectories)."""
    return compare(load_stacks(before_assembly_dir, stage), load_stacks(after_assembly_dir, stage), region=region)


def errors(changes: Iterable[Change]) -> list[str]:
    return [e for c in changes for e in c.errors]


def counts(changes: Iterable[Change]) -> dict[str, int]:
    out = dict.fromkeys(ACTIONS, 0)
    for c in changes:
        if c.type != STACK_TYPE:
            out[c.action] += 1
    return out


__all__ = ["ACTIONS", "Change", "STACK_TYPE", "compare", "counts", "errors", "from_templates", "impact",
           "load_stacks"]
