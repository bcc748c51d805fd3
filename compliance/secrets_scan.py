"""Find secret-like values in synthesized templates, manifests and Helm values.

Nothing secret may be written into a template or manifest: tokens are generated in the
cluster or kept in Secrets Manager. This scanner looks for credentials by shape (AWS
access keys, private keys), Kubernetes Secrets carrying literal data, and literal values
under secret-sounding keys.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Iterator

_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
}
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_?key|private_?key|cookie_?secret)$", re.IGNORECASE)
# Keys that end like a secret but hold a name or a reference, never the secret itself.
_REFERENCE_KEY = re.compile(r"(name|ref|arn|path|file|key_?ref|secret_?name)$", re.IGNORECASE)


def entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def scan_text(text: str, where: str) -> list[str]:
    return [f"{where}: {label}" for label, pattern in _PATTERNS.items() if pattern.search(text)]


def scan_object(obj: Any, where: str) -> list[str]:
    """Walk parsed JSON/YAML; flag literal secret-looking values under secret-sounding keys."""
    findings = []
    for path, key, value in _walk(obj, ()):
        if not isinstance(value, str) or not _SECRET_KEY.search(key) or _REFERENCE_KEY.search(key):
            continue
        if value.startswith("${") or len(value) < 8:
            continue  # a deploy-time reference or a trivially short setting
        if entropy(value) >= 3.0:
            findings.append(f"{where}: {'/'.join(map(str, path))} holds a literal secret-like value")
    if isinstance(obj, dict) and obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
        findings.append(f"{where}: Secret {obj.get('metadata', {}).get('name')} carries literal data")
    return findings


def _walk(node: Any, path: tuple) -> Iterator[tuple[tuple, str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield path + (key,), str(key), value
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, path + (index,))
