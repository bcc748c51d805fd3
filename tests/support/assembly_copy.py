"""A writable copy of a synthesized assembly (manifests and templates only: the first-boot model reads no asset),
and text edits of its templates, for tests that re-introduce a defect and expect the model to name it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path


def copy_assembly(src: Path, dst: Path) -> Path:
    for path in src.rglob("*"):
        if path.is_file() and (path.name == "manifest.json" or path.name.endswith(".template.json")):
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return dst


def edit_template_text(root: Path, pattern: str, replacement: str) -> None:
    """``re.subn`` over every template under ``root``; fails when the pattern matches nothing (a stale test)."""
    hits = 0
    for path in root.rglob("*.template.json"):
        text = path.read_text()
        new, n = re.subn(pattern, replacement, text)
        hits += n
        path.write_text(new)
    assert hits, f"mutation pattern {pattern!r} matched nothing: the assembly changed, update the test"
