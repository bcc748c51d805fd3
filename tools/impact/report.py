"""The short, readable account of a list of changes."""

from __future__ import annotations

from tools.impact.classify import STACK_TYPE, WEAK, WEAK_NOTE, Change, counts, errors

_ACTION = {"replace": "REPLACE", "delete": "delete", "add": "add", "update": "update", "reapply": "re-apply"}


def _type(type_name: str) -> str:
    return type_name.removeprefix("AWS::").removeprefix("Custom::AWSCDK-")


def _what(change: Change) -> list[str]:
    if change.type == STACK_TYPE:
        return list(change.notes)
    if change.action == "replace":
        head = ["; ".join(change.reasons)]
    elif change.action == "update":
        head = [", ".join(change.paths[:3]) + (f" (+{len(change.paths) - 3} more)" if len(change.paths) > 3 else "")]
    elif change.kube:
        head = []
    elif change.action == "reapply":
        head = [", ".join(change.paths[:3])]
    else:
        head = [""]
    return head + list(change.kube)


def table(changes: list[Change]) -> list[str]:
    rows = []
    for c in changes:
        lines = _what(c) or [""]
        rows.append((_ACTION[c.action], c.stack.rsplit("/", 1)[-1], c.logical_id or "(stack)", _type(c.type), lines))
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows + [("ACTION", "STACK", "RESOURCE", "TYPE", [])]) for i in range(4)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths) + "  {}"
    out = [fmt.format("ACTION", "STACK", "RESOURCE", "TYPE", "WHAT").rstrip()]
    for action, stack, lid, type_name, lines in rows:
        out.append(fmt.format(action, stack, lid, type_name, lines[0]).rstrip())
        pad = " " * (sum(widths) + 8)
        out.extend(f"{pad}{line}" for line in lines[1:])
    return out


def render(changes: list[Change]) -> str:
    """The table, what would be lost, errors, warnings and a one-line summary."""
    out = table(changes)
    # Stateful replacements are listed under Errors.
    losses = [f"  - {c.where} ({_ACTION[c.action]}): {loss}" for c in changes if not c.stateful_replacement
              for loss in c.loses]
    if losses:
        out += ["", "Would lose:", *losses]
    warnings = list(dict.fromkeys(f"  - {c.where}: {n}" for c in changes if c.type != STACK_TYPE for n in c.notes))
    if warnings:
        out += ["", "Warnings:", *warnings]
    if any(f"{WEAK})" in text for c in changes for text in c.paths + c.reasons):
        out += ["", WEAK_NOTE]
    errs = errors(changes)
    if errs:
        out += ["", "Errors:", *(f"  - {e}" for e in errs)]
    n = counts(changes)
    summary = (f"{n['replace']} replaced, {n['update']} updated in place, {n['add']} added, {n['delete']} deleted, "
               f"{n['reapply']} re-applied")
    if not changes:
        summary = "no changes"
    verdict = (f"{len(errs)} error(s)" if errs else "nothing stateful replaced, no name collisions")
    out += ["" if out else "", f"{summary}; {verdict}."]
    return "\n".join(out).lstrip("\n")
