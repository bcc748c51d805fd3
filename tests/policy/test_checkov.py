"""checkov over the synthesized templates and the rendered Kubernetes objects.

Runs the pinned checkov from its own virtualenv (.venv-checkov, created by `make test`).
Failures are allowed only from compliance/checkov_allowlist.yaml, each with a reason.
Pod templates nested in custom resources (the RayCluster's head and worker groups) are
written out as Pods so that checkov's Kubernetes checks see them too.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.platform_synth import ROOT
from tools.boot.workloads import singleuser_pod

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
ALLOWLIST = yaml.safe_load((ROOT / "compliance" / "checkov_allowlist.yaml").read_text())
STANDARD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet"}


def nested_pods(obj: dict) -> list[dict]:
    """Pods described by the pod templates inside a custom resource."""
    pods = []

    def walk(node, path):
        if isinstance(node, dict):
            spec = node.get("template", {}).get("spec") if isinstance(node.get("template"), dict) else None
            if isinstance(spec, dict) and "containers" in spec:
                name = f"{obj['metadata']['name']}-{'-'.join(path) or 'pod'}".lower()[:63].strip("-")
                metadata = {"name": name, "namespace": obj["metadata"].get("namespace", "default")}
                pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
            for key, child in node.items():
                walk(child, [*path, key] if key not in ("spec",) else path)
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, [*path, str(index)])

    walk(obj.get("spec", {}), [])
    return pods


def _run(directory: Path, framework: str) -> dict:
    if not CHECKOV.exists():
        pytest.fail("checkov is not installed: run `make test`, which creates .venv-checkov")
    result = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", framework, "-o", "json", "--compact", "--skip-download"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    (report,) = [r for r in reports if r.get("check_type") == framework] or [{"summary": {"passed": 0, "failed": 0}, "results": {"failed_checks": []}}]
    return report


def _judge(report: dict, section: str) -> tuple[list[str], set[int]]:
    entries = ALLOWLIST.get(section) or []
    used: set[int] = set()
    unexplained = []
    for failure in report["results"]["failed_checks"]:
        matches = [i for i, e in enumerate(entries)
                   if e["check"] == failure["check_id"] and fnmatch.fnmatch(failure["resource"], e["resource"])]
        if matches:
            used.update(matches)
        else:
            unexplained.append(f"{failure['check_id']} {failure['resource']}: {failure['check_name']}")
    return unexplained, used


@pytest.fixture(scope="module")
def cloudformation_report(platform):
    return _run(next(platform.outdir.glob("assembly-*")), "cloudformation")


@pytest.fixture(scope="module")
def kubernetes_report(platform, tmp_path_factory):
    out = tmp_path_factory.mktemp("k8s")
    objects = platform.assembly.kube_objects()
    written = 0
    for index, obj in enumerate(objects):
        docs = [obj] + ([] if obj["kind"] in STANDARD_KINDS else nested_pods(obj))
        (out / f"{index:03d}-{obj['kind'].lower()}.yaml").write_text(yaml.safe_dump_all(docs))
        written += len(docs)
    assert written >= len(objects) > 0
    hub_values = platform.assembly.helm_releases()["jupyterhub"].values
    (out / "z2jh-user-pod.yaml").write_text(yaml.safe_dump(singleuser_pod(hub_values)))
    return _run(out, "kubernetes")


def test_cloudformation_failures_are_all_allowlisted(cloudformation_report):
    unexplained, _ = _judge(cloudformation_report, "cloudformation")
    assert cloudformation_report["summary"]["passed"] > 100
    assert unexplained == []


def test_kubernetes_failures_are_all_allowlisted(kubernetes_report):
    unexplained, _ = _judge(kubernetes_report, "kubernetes")
    assert unexplained == []


def test_every_allowlist_entry_is_used_and_explained(cloudformation_report, kubernetes_report):
    for section, report in (("cloudformation", cloudformation_report), ("kubernetes", kubernetes_report)):
        _, used = _judge(report, section)
        entries = ALLOWLIST.get(section) or []
        stale = [entries[i] for i in range(len(entries)) if i not in used]
        assert stale == [], f"{section}: allowlist entries that match no failure: {stale}"
        assert all(len(e["reason"]) > 30 for e in entries)


def test_nested_pod_templates_are_extracted():
    ray_like = {"kind": "RayCluster", "metadata": {"name": "ray", "namespace": "ray"}, "spec": {
        "headGroupSpec": {"template": {"spec": {"containers": [{"name": "head"}]}}},
        "workerGroupSpecs": [{"template": {"spec": {"containers": [{"name": "w"}]}}}]}}
    pods = nested_pods(ray_like)
    assert [p["metadata"]["name"] for p in pods] == ["ray-headgroupspec", "ray-workergroupspecs-0"]
