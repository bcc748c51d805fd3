"""Read a synthesized cloud assembly back: templates, Kubernetes manifests and Helm values.

The manifests and Helm values the stacks hand to the cluster live inside the templates
as JSON strings, often split by ``Fn::Join`` around deploy-time values (the cluster
endpoint, role ARNs, queue names). This module joins them back together, replacing
each deploy-time value with a readable placeholder such as
``${Cluster.Endpoint|split(//)[1]}``, and parses the result. Tests validate what it
returns against upstream schemas; ``make synth`` writes it under ``dist/`` for review.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

MANIFEST_TYPE = "Custom::AWSCDK-EKS-KubernetesResource"
HELM_TYPE = "Custom::AWSCDK-EKS-HelmChart"

_HASH_SUFFIX = re.compile(r"[0-9A-F]{8}$")


def _short(logical_id: str) -> str:
    """Drop the 8-character hash CDK appends to logical ids, for readable placeholders."""
    return _HASH_SUFFIX.sub("", logical_id) or logical_id


def placeholder(value: Any) -> str:
    """A readable stand-in for a CloudFormation intrinsic (never contains a quote)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Ref":
            return "${" + _short(arg) + "}" if not arg.startswith("AWS::") else "${" + arg + "}"
        if fn == "Fn::GetAtt":
            return "${" + _short(arg[0]) + "." + arg[1] + "}"
        if fn == "Fn::ImportValue":
            inner = placeholder(arg)
            return "${import:" + inner.strip("${}") + "}"
        if fn == "Fn::GetStackOutput":
            # CDK's cross-stack reference: an output of another stack (Assembly.resolve_output reads it).
            return "${output:" + placeholder(arg["StackName"]) + "/" + placeholder(arg["OutputName"]) + "}"
        if fn == "Fn::Select" and isinstance(arg[1], dict) and "Fn::Split" in arg[1]:
            delim, source = arg[1]["Fn::Split"]
            return "${" + placeholder(source).strip("${}") + f"|split({delim})[{arg[0]}]" + "}"
        if fn == "Fn::Join":
            return join(value)
        if fn == "Fn::Sub":
            # Its template already reads as ${...} placeholders (e.g. the CDK asset repository's name).
            return arg if isinstance(arg, str) else arg[0]
        return "${" + fn + "}"
    return "${?}"


def join(value: Any) -> str:
    """Flatten a string or ``Fn::Join`` into one string, with placeholders for tokens."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        delim, parts = value["Fn::Join"]
        return delim.join(join(p) if isinstance(p, dict) and "Fn::Join" in p else placeholder(p) for p in parts)
    return placeholder(value)


@dataclass
class KubeResource:
    stack: str
    logical_id: str
    kind: str  # "manifest" or "helm"
    properties: dict[str, Any]
    depends_on: list[str] = field(default_factory=list)

    @property
    def objects(self) -> list[dict[str, Any]]:
        """Kubernetes objects of a manifest resource."""
        return json.loads(join(self.properties["Manifest"]))

    @property
    def values(self) -> dict[str, Any]:
        """Helm values of a chart resource."""
        raw = self.properties.get("Values")
        return json.loads(join(raw)) if raw else {}

    @property
    def release(self) -> str:
        return self.properties.get("Release", self.logical_id)


class Assembly:
    """A synthesized cloud assembly directory (``cdk.out`` or a test's outdir)."""

    def __init__(self, outdir: str | Path):
        self.outdir = Path(outdir)
        self.templates: dict[str, dict[str, Any]] = {}
        self.stack_names: dict[str, str] = {}
        for manifest_path in [self.outdir / "manifest.json", *self.outdir.glob("assembly-*/manifest.json")]:
            manifest = json.loads(manifest_path.read_text())
            for artifact_id, artifact in manifest.get("artifacts", {}).items():
                if artifact.get("type") != "aws:cloudformation:stack":
                    continue
                template_file = manifest_path.parent / artifact["properties"]["templateFile"]
                self.templates[artifact_id] = json.loads(template_file.read_text())
                self.stack_names[artifact_id] = artifact["properties"].get("stackName", artifact_id)

    def resources(self, type_: str | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for artifact_id, template in self.templates.items():
            for logical_id, resource in template.get("Resources", {}).items():
                if type_ is None or resource["Type"] == type_:
                    yield artifact_id, logical_id, resource

    def kube_resources(self) -> list[KubeResource]:
        found = []
        for artifact_id, logical_id, res in self.resources():
            if res["Type"] in (MANIFEST_TYPE, HELM_TYPE):
                depends = res.get("DependsOn", [])
                found.append(
                    KubeResource(
                        stack=artifact_id,
                        logical_id=logical_id,
                        kind="manifest" if res["Type"] == MANIFEST_TYPE else "helm",
                        properties=res["Properties"],
                        depends_on=[depends] if isinstance(depends, str) else list(depends),
                    )
                )
        return found

    def helm_releases(self) -> dict[str, KubeResource]:
        return {r.release: r for r in self.kube_resources() if r.kind == "helm"}

    def manifests(self) -> list[KubeResource]:
        return [r for r in self.kube_resources() if r.kind == "manifest"]

    def kube_objects(self) -> list[dict[str, Any]]:
        return [obj for r in self.manifests() for obj in r.objects]


def chart_asset_folder(assembly: Assembly, res: KubeResource) -> Path | None:
    """The staged folder of a Helm release whose chart is an asset of this app (``ChartAssetURL``), if present."""
    match = re.search(r"([0-9a-f]{64})\.zip", json.dumps(res.properties.get("ChartAssetURL")))
    if not match:
        return None
    candidates = (assembly.outdir / f"asset.{match.group(1)}", assembly.outdir.parent / f"asset.{match.group(1)}")
    return next((d for d in candidates if d.is_dir()), None)


def write_rendered(assembly: Assembly, dist: str | Path) -> list[Path]:
    """Write every manifest and every Helm values object as YAML under ``dist``."""
    dist = Path(dist)
    written = []
    for res in assembly.kube_resources():
        stack = assembly.stack_names[res.stack]
        if res.kind == "helm":
            path = dist / stack / "helm" / f"{res.release}.values.yaml"
            header = (
                (f"# Helm release {res.release!r}: chart {res.properties.get('Chart')} "
                 f"{res.properties.get('Version')} from {res.properties.get('Repository')}\n")
                if res.properties.get("Chart") else
                f"# Helm release {res.release!r}: a local chart from the app's assets (ChartAssetURL)\n"
                f"# namespace {res.properties.get('Namespace', 'default')}; ${{...}} marks deploy-time values\n"
            )
            body = yaml.safe_dump(res.values, sort_keys=False)
            folder = chart_asset_folder(assembly, res)
            if folder is not None:  # our own chart: its files beside the values, for review
                target = dist / stack / "charts" / res.release
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(folder, target)
                written += sorted(p for p in target.rglob("*") if p.is_file())
        else:
            path = dist / stack / "manifests" / f"{_short(res.logical_id)}.yaml"
            header = f"# Applied by {res.logical_id}; ${{...}} marks deploy-time values\n"
            body = yaml.safe_dump_all(res.objects, sort_keys=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + body)
        written.append(path)
    return written
