"""First boot: the synthesized platform, played as CloudFormation and Kubernetes would play the deploy.

The model (tools/boot) reads cdk.out only. Each defect a review found on a real deploy is re-introduced
here as an edit of a copy of the synthesized assembly, and the model must name it: so these tests prove
the model can fail, on exactly the class of defect that 625 shape tests missed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.platform_synth import ROOT
from tests.support.assembly_copy import copy_assembly, edit_template_text
from tools.boot.model import BootModel, Verdict


def _failures(verdicts: list[Verdict]) -> list[str]:
    return [f"[{v.step}] {v.line()}" for v in verdicts if not v.ok]




# ------------------------------------------------------------------ the platform boots


def test_default_platform_boots(boot_verdicts):
    assert _failures(boot_verdicts) == []


def test_variant_platform_boots(variant_verdicts):
    assert _failures(variant_verdicts) == []


def test_every_pod_is_judged_at_its_step(boot, boot_verdicts):
    """Every workload gets an admission verdict, every non-DaemonSet one a scheduling verdict."""
    judged = {(v.subject, v.check) for v in boot_verdicts}
    for w in boot.workloads:
        subject = f"{w.namespace}/{w.name}"
        assert (subject, "admitted") in judged, subject
        if not w.daemonset:
            assert (subject, "schedulable") in judged, subject
        if w.aws_apis and not w.node_role_credentials:
            assert (subject, "credentialed") in judged, subject
    names = {f"{w.namespace}/{w.name}" for w in boot.workloads}
    # The pods that matter most are all in the model: CNI, controllers, Ray and the notebook server.
    for expected in ("kube-system/cilium-operator", "kube-system/karpenter", "ray/ray-head", "ray/ray-cpu-worker",
                     "jupyterhub/jupyter-<user>", "kube-system/coredns", "ray/ray-auth-token-bootstrap"):
        assert expected in names


def test_system_node_group_waits_only_for_what_can_network_it(boot, boot_verdicts):
    (ready,) = [v for v in boot_verdicts if v.check == "nodes Ready"]
    assert ready.ok, ready.detail
    ng_key = boot.nodegroups[0][0]
    assert boot.agent in boot.graph.ancestors(ng_key)


def test_node_class_selectors_resolve(boot_verdicts):
    selectors = {v.subject: v for v in boot_verdicts if v.check == "selector"}
    assert set(selectors) == {"default.subnetSelectorTerms", "default.securityGroupSelectorTerms"}
    assert all(v.ok for v in selectors.values())
    assert "ClusterSecurityGroupId" in selectors["default.securityGroupSelectorTerms"].detail


def test_nothing_keeps_a_karpenter_node_at_idle_by_default(boot):
    placement = boot.idle_placement()
    assert placement.karpenter_nodes == [] and placement.unplaced == []


def test_every_system_node_keeps_headroom(boot, boot_verdicts):
    headroom = [v for v in boot_verdicts if v.check == "headroom"]
    # Two system nodes, three with metrics on (config.py METRICS_SYSTEM_NODE_SIZES): each is judged.
    assert len(headroom) == sum(len(nodes) for _, nodes in boot.nodegroups) >= 2
    assert all(v.ok for v in headroom), [v.detail for v in headroom]


def test_the_flows_the_platform_needs_are_allowed(boot_verdicts):
    flows = {v.subject: v for v in boot_verdicts if v.check == "flow"}
    for name in ("notebook -> Ray Jobs API", "notebook -> Ray client", "hub -> Kubernetes API",
                 "Ray ray/ray-cpu-worker -> head GCS", "KubeRay operator -> Ray head", "Karpenter -> AWS APIs"):
        assert flows[name].ok, flows[name].detail


def test_the_notebook_ray_address_reaches_a_listening_head(boot_verdicts):
    (client,) = [v for v in boot_verdicts if v.check == "client" and "RAY_ADDRESS" in v.subject]
    assert client.ok and "ray-head-svc" in client.detail


# ------------------------------------------------------------------ the model catches each defect class




def _edit_templates(root: Path, edit: Callable[[str, dict[str, Any]], None]) -> None:
    for path in root.rglob("*.template.json"):
        template = json.loads(path.read_text())
        edit(path.name, template)
        path.write_text(json.dumps(template))




def _resource(template: dict[str, Any], type_: str, predicate=lambda p: True) -> tuple[str, dict[str, Any]]:
    found = [(k, v) for k, v in template["Resources"].items() if v["Type"] == type_ and predicate(v.get("Properties", {}))]
    return found[0] if found else (None, None)


@pytest.fixture
def mutated(platform, tmp_path):
    """A copy of the default assembly to edit; returns the model's failures after an edit."""
    root = copy_assembly(platform.outdir, tmp_path / "cdk.out")

    def run(edit: Callable[[Path], None]) -> list[str]:
        edit(root)
        return _failures(BootModel(root).run())

    return run


def test_catches_the_pod_identity_agent_after_the_nodes(mutated):
    """Defect 1 (boot deadlock): the agent add-on waiting for the node group, as on the first main."""
    def edit(root):
        def move(_, tpl):
            agent, agent_res = _resource(tpl, "AWS::EKS::Addon", lambda p: p.get("AddonName") == "eks-pod-identity-agent")
            if agent is None:
                return
            ng, _ = _resource(tpl, "AWS::EKS::Nodegroup")
            for res in tpl["Resources"].values():
                deps = res.get("DependsOn", [])
                if agent in deps:
                    deps.remove(agent)
            agent_res["DependsOn"] = [ng]
        _edit_templates(root, move)
    failures = mutated(edit)
    assert any("nodes Ready" in f and "Pod Identity agent" in f and "comes later" in f for f in failures), failures


def test_catches_a_security_group_selector_that_matches_nothing(mutated):
    """Defect 2: selecting the cluster security group by a tag that only an imported construct 'carries'."""
    def edit(root):
        edit_template_text(root, r'securityGroupSelectorTerms\\":\[\{\\"id\\":\\"",\s*\{\s*"Fn::GetStackOutput":\s*\{[^}]*\{[^}]*\}[^}]*\}\s*\},\s*"\\"\}\]',
                   r'securityGroupSelectorTerms\\":[{\\"tags\\":{\\"karpenter.sh/discovery\\":\\"dynamic-factory\\"}}]')
    failures = mutated(edit)
    assert any("securityGroupSelectorTerms" in f and "matches no resource" in f for f in failures), failures
    # ... and its consequence: every pod that needs a Karpenter node stays Pending.
    assert any("ray/ray-cpu-worker" in f and "Karpenter cannot launch" in f for f in failures), failures


def test_catches_a_notebook_pod_that_pod_security_refuses(mutated):
    """Defect 3: z2jh's privileged iptables init container in a baseline namespace."""
    failures = mutated(lambda root: edit_template_text(root, r'\\"blockWithIptables\\":false', r'\\"blockWithIptables\\":true'))
    assert any("admitted" in f and "jupyter-<user>" in f and "privileged" in f for f in failures), failures


def test_catches_a_pod_that_keeps_a_spot_node_alive_at_idle(mutated):
    """Defect 6: the Hubble relay without the system nodes' toleration lands on (and keeps) a Karpenter node."""
    failures = mutated(lambda root: edit_template_text(
        root, r'(\\"relay\\":\{\\"enabled\\":true),\\"nodeSelector\\":\{[^}]*\},\\"tolerations\\":\[[^\]]*\]', r'\1'))
    assert any("idle placement" in f and "hubble-relay" in f for f in failures), failures


def test_catches_system_nodes_without_headroom(mutated):
    """Defect 7: what is pinned to the system nodes must fit with room to spare."""
    def edit(root):
        def shrink(_, tpl):
            ng, res = _resource(tpl, "AWS::EKS::Nodegroup")
            if ng:
                res["Properties"]["InstanceTypes"] = ["t3a.medium"]
        _edit_templates(root, shrink)
    failures = mutated(edit)
    assert any("headroom" in f or "idle placement" in f for f in failures), failures


def test_catches_a_pod_without_its_pod_identity_association_first(mutated):
    """Credentials are injected only into pods created after the association."""
    def edit(root):
        def drop(_, tpl):
            chart, res = _resource(tpl, "Custom::AWSCDK-EKS-HelmChart", lambda p: p.get("Chart") == "karpenter")
            if chart:
                res["DependsOn"] = [d for d in res.get("DependsOn", []) if "Association" not in d]
        _edit_templates(root, drop)
    failures = mutated(edit)
    assert any("kube-system/karpenter" in f and "credentialed" in f for f in failures), failures


def test_catches_a_network_policy_that_cuts_notebooks_off_ray(mutated):
    failures = mutated(lambda root: edit_template_text(root, r'\\"port\\":10001', r'\\"port\\":10002'))
    assert any("notebook -> Ray client" in f for f in failures), failures


def test_catches_an_oci_chart_reference_the_handler_cannot_pull(mutated):
    failures = mutated(lambda root: edit_template_text(root, r'"oci://public\.ecr\.aws/karpenter/karpenter-crd"',
                                               '"oci://public.ecr.aws/karpenter"'))
    assert any("chart source" in f and "karpenter-crd" in f for f in failures), failures


def test_catches_a_home_storage_class_that_does_not_exist(mutated):
    """Homes and the hub database name a StorageClass: missing, their claims stay Pending and nothing starts."""
    def edit(root: Path) -> None:
        (path,) = root.rglob("*JupyterHub*.template.json")
        text = path.read_text()
        assert "gp3-retain" in text
        path.write_text(text.replace("gp3-retain", "gp3-missing"))

    failures = mutated(edit)
    assert any("storage class" in f and "storageClassName" in f for f in failures), failures
    assert any("storage class" in f and "storageClass" in f and "singleuser" in f for f in failures), failures


def test_catches_an_object_created_twice(mutated):
    """The JupyterHub stack re-applies the namespace the Ray stack made: without Overwrite the kubectl handler
    runs `kubectl create`, which fails with AlreadyExists and rolls the stack back."""
    def edit(root: Path) -> None:
        def drop_overwrite(name: str, template: dict[str, Any]) -> None:
            for res in template["Resources"].values():
                if "JupyterHub" in name and res["Type"] == "Custom::AWSCDK-EKS-KubernetesResource":
                    res["Properties"].pop("Overwrite", None)
        _edit_templates(root, drop_overwrite)

    failures = mutated(edit)
    assert any("created once" in f and "Namespace jupyterhub" in f for f in failures), failures


def test_catches_gpu_nodes_where_no_device_plugin_runs(variant, tmp_path):
    """Without the label the NVIDIA plugin's default affinity asks for, nothing advertises nvidia.com/gpu."""
    root = copy_assembly(variant.outdir, tmp_path / "cdk.out")
    assert not _failures(BootModel(root).run())
    edit_template_text(root, r',\\"nvidia\.com/gpu\.present\\":\\"true\\"', "")
    failures = _failures(BootModel(root).run())
    # The variant runs two teams: each team's GPU group is stranded.
    assert any("/ray-gpu-worker" in f and "nothing advertises ['nvidia.com/gpu']" in f for f in failures), failures


def test_interactive_pods_on_karpenter_nodes_are_never_disrupted(boot_verdicts, variant_verdicts):
    """Notebook servers (and the Ray head when it runs on the on-demand pool) carry karpenter.sh/do-not-disrupt."""
    default = {v.subject: v for v in boot_verdicts if v.check == "disruption"}
    assert default["jupyterhub/jupyter-<user>"].ok and "annotated" in default["jupyterhub/jupyter-<user>"].detail
    variant = {v.subject: v for v in variant_verdicts if v.check == "disruption"}
    heads = [v for subject, v in variant.items() if subject.endswith("/ray-head")]
    assert len(heads) == 2  # the variant's two teams
    assert all(v.ok and "Karpenter pool on-demand" in v.detail for v in heads)


def test_catches_a_notebook_that_karpenter_may_evict(mutated):
    failures = mutated(lambda root: edit_template_text(root, r'\\"extraAnnotations\\":\{[^}]*\},?', ""))
    assert any("disruption" in f and "jupyter-<user>" in f for f in failures), failures


# ------------------------------------------------------------------ the command


def test_command_prints_verdicts_and_exits_by_outcome(platform, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "tools.boot", str(platform.outdir), "--all"], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert "ok   admitted" in ok.stdout and "System nodes at idle:" in ok.stdout
    assert re.search(r"first boot: \d+ checks passed, 0 failed", ok.stdout)

    bad = copy_assembly(platform.outdir, tmp_path / "bad")
    edit_template_text(bad, r'\\"blockWithIptables\\":false', r'\\"blockWithIptables\\":true')
    failed = subprocess.run([sys.executable, "-m", "tools.boot", str(bad)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert failed.returncode == 1
    assert "FAIL admitted" in failed.stdout and "jupyter-<user>" in failed.stdout
