"""Logs that outlive pods: the Fluent Bit DaemonSet, what it tails, where it writes, and who may write there.

Everything is read from the session's synthesized platforms (tests/conftest.py), never synthesized again here.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any, Iterator

import pytest
import yaml

import versions
from charts import log_shipping as ls
from tests.platform_synth import ROOT
from tests.support.helm_values import unknown_paths
from tools.boot import netpol
from tools.boot.model import BootModel
from tools.boot.scheduling import tolerates

VALUES_FILE = ROOT / "schemas" / "fluent-bit" / "values.yaml"
POOL_LABEL = "dynamic-factory/pool"
SAMPLE_UID = "5f0c6a2e-3b1d-4c9e-8a7f-0123456789ab"
SAMPLE_CONTAINER_ID = "a" * 64


# ------------------------------------------------------------------ reading the synthesized platform


def _release(synth):
    return synth.assembly.helm_releases()[ls.RELEASE]


def _values(synth) -> dict[str, Any]:
    return _release(synth).values


def _resources(template: dict, type_: str) -> dict[str, dict]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == type_}


def _fluent_bit_sections(text: str) -> list[dict[str, str]]:
    """Fluent Bit's classic configuration as a list of {key: value} per section (key "[section]" = its name)."""
    sections: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("["):
            sections.append({"[section]": line.strip("[]")})
            continue
        key, _, value = line.strip().partition(" ")
        sections[-1][key] = value.strip()
    return sections


def _inputs(synth) -> dict[str, dict[str, str]]:
    return {s["Alias"]: s for s in _fluent_bit_sections(_values(synth)["config"]["inputs"])}


def _outputs(synth) -> dict[str, dict[str, str]]:
    return {s["Alias"]: s for s in _fluent_bit_sections(_values(synth)["config"]["outputs"])}


def _python_regex(onigmo: str) -> re.Pattern:
    """Fluent Bit's (Onigmo) named groups in Python's spelling; the rest of our patterns read the same in both."""
    return re.compile(onigmo.replace("(?<", "(?P<"))


def _tag(tail: dict[str, str], path: str) -> str | None:
    """The tag in_tail composes for ``path``: <name> placeholders filled from Tag_Regex (tail_file.c tag_compose)."""
    match = _python_regex(tail["Tag_Regex"]).search(path)
    if match is None:
        return None
    return re.sub(r"<([a-z_]+)>", lambda m: match.group(m.group(1)), tail["Tag"])


def _matches_path(tail: dict[str, str], path: str) -> bool:
    """in_tail's Path: comma-separated globs whose wildcards never cross a "/"."""
    return any(PurePosixPath(path).match(pattern) for pattern in tail["Path"].split(","))


def _routed(outputs: dict[str, dict[str, str]], tag: str) -> list[dict[str, str]]:
    return [o for o in outputs.values() if re.fullmatch(re.escape(o["Match"]).replace(r"\*", ".*"), tag)]


def _stream(output: dict[str, str], tag: str) -> str:
    """The record-accessor template of the output over the tag ($TAG[n] is the n-th dot-separated part)."""
    parts = tag.split(".")
    return re.sub(r"\$TAG\[(\d+)\]", lambda m: parts[int(m.group(1))], output["log_stream_template"])


def _ray_cluster(synth) -> dict[str, Any]:
    return next(o for o in synth.assembly.kube_objects() if o["kind"] == "RayCluster")


def _ray_templates(synth) -> Iterator[tuple[str, dict[str, Any]]]:
    spec = _ray_cluster(synth)["spec"]
    yield "head", spec["headGroupSpec"]["template"]
    for group in spec["workerGroupSpecs"]:
        yield group["groupName"], group["template"]


def _node_selectors(node: Any) -> Iterator[dict[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("nodeSelector", "node_selector") and isinstance(value, dict):
                yield value
            else:
                yield from _node_selectors(value)
    elif isinstance(node, list):
        for item in node:
            yield from _node_selectors(item)


# ------------------------------------------------------------------ the release and its image


def test_release_is_the_pinned_upstream_chart_in_its_own_namespace(any_platform):
    release = _release(any_platform)
    assert release.properties["Chart"] == "fluent-bit"
    assert (release.properties["Repository"], release.properties["Version"]) == versions.HELM_CHARTS["fluent-bit"]
    assert release.properties["Namespace"] == ls.NAMESPACE
    assert str(release.properties.get("Wait")).lower() == "true"
    assert _values(any_platform)["kind"] == "DaemonSet"


def test_image_is_pinned_and_not_from_docker_hub(any_platform):
    values = _values(any_platform)
    image = values["image"]
    assert (image["repository"], image["tag"]) == (versions.FLUENT_BIT_IMAGE_REPOSITORY, versions.FLUENT_BIT_VERSION)
    registry = image["repository"].split("/")[0]
    assert "." in registry and registry not in ("docker.io", "registry-1.docker.io", "index.docker.io")
    # The chart's own default repository is the same registry (so a values change cannot silently fall back).
    assert yaml.safe_load(VALUES_FILE.read_text())["image"]["repository"] == versions.FLUENT_BIT_IMAGE_REPOSITORY
    # `helm test` would pull busybox:latest from Docker Hub; the hot-reload sidecar is off.
    assert values["testFramework"] == {"enabled": False}
    assert "hotReload" not in values


# Free-form values: Kubernetes objects, lists and Fluent Bit's config text, not the chart's own keys.
_FREE_FORM = frozenset({"resources", "tolerations", "securityContext", "podSecurityContext", "nodeSelector"})


def test_every_value_we_set_exists_in_the_chart_values_file(any_platform):
    upstream = yaml.safe_load(VALUES_FILE.read_text())
    assert unknown_paths(_values(any_platform), upstream, _FREE_FORM) == []


def test_the_vendored_values_file_is_recorded_in_provenance():
    import hashlib

    provenance = (ROOT / "schemas" / "PROVENANCE.md").read_text()
    digest = hashlib.sha256(VALUES_FILE.read_bytes()).hexdigest()
    assert "## fluent-bit/" in provenance and digest in provenance


# ------------------------------------------------------------------ placement: every node Ray and JupyterHub use


def _pool_taints(synth) -> dict[str, list[dict[str, Any]]]:
    """Taints of every node the platform can have, by pool: NodePools (taints + startup taints) and node groups."""
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in synth.assembly.kube_objects():
        if obj["kind"] == "NodePool":
            spec = obj["spec"]["template"]["spec"]
            out[obj["metadata"]["name"]] = list(spec.get("taints", [])) + list(spec.get("startupTaints", []))
    effects = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
    for ng in _resources(synth.template_json("Cluster"), "AWS::EKS::Nodegroup").values():
        props = ng["Properties"]
        out[props["Labels"][POOL_LABEL]] = [
            {"key": t["Key"], "value": t.get("Value"), "effect": effects[t["Effect"]]} for t in props.get("Taints", [])]
    return out


def test_the_daemonset_tolerates_every_node_ray_and_jupyterhub_pods_can_land_on(any_platform):
    pools = _pool_taints(any_platform)
    used = {sel[POOL_LABEL] for sel in _node_selectors(_ray_cluster(any_platform)) if POOL_LABEL in sel}
    used |= {sel[POOL_LABEL] for sel in _node_selectors(_release_values(any_platform, "jupyterhub"))
             if POOL_LABEL in sel}
    assert {"spot", "on-demand"} <= used and used <= set(pools), used
    tolerations = _values(any_platform)["tolerations"]
    untolerated = [(pool, taint) for pool in sorted(used) for taint in pools[pool]
                   if taint["effect"] in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint)]
    assert untolerated == []
    # The taints that matter are really there: the system nodes', the on-demand pool's and Cilium's startup taint.
    all_taints = {t["key"] for pool in used for t in pools[pool]}
    assert {"dynamic-factory/pool", "node.cilium.io/agent-not-ready"} <= all_taints


def _release_values(synth, release: str) -> dict[str, Any]:
    return synth.assembly.helm_releases()[release].values


def test_the_daemonset_also_tolerates_the_gpu_pool_and_the_system_nodes(variant, platform):
    gpu = _pool_taints(variant)["gpu"]
    assert gpu and all(tolerates(_values(variant)["tolerations"], t) for t in gpu)
    system = _pool_taints(platform)["system"]
    assert system and all(tolerates(_values(platform)["tolerations"], t) for t in system)


def test_small_requests_and_limits(platform):
    resources = _values(platform)["resources"]
    assert set(resources) == {"requests", "limits"}
    assert resources["requests"] == {"cpu": "25m", "memory": "64Mi"}
    assert set(resources["limits"]) == {"cpu", "memory"}


# ------------------------------------------------------------------ what is tailed, and the streams it lands in


def test_ray_pods_mount_the_log_volume_the_daemonset_tails(any_platform):
    """Fails until charts/raycluster.py wires ls.ray_pod_log_wiring() into the head, the worker groups and
    autoscalerOptions: Ray's files then sit where the DaemonSet looks for them."""
    wiring = ls.ray_pod_log_wiring()
    problems = []
    for group, template in _ray_templates(any_platform):
        spec = template["spec"]
        (ray_container,) = [c for c in spec["containers"] if c["name"] in ("ray-head", "ray-worker")]
        mounts = [m for m in ray_container.get("volumeMounts", []) if m["mountPath"] == ls.RAY_LOGS_MOUNT_PATH]
        if mounts != [wiring.container_volume_mount]:
            problems.append(f"{group}: {ls.RAY_LOGS_MOUNT_PATH} mounts {mounts}, expected {wiring.container_volume_mount}")
        if wiring.container_env not in ray_container.get("env", []):
            problems.append(f"{group}: no {ls.POD_NAME_ENV} from metadata.name in the Ray container")
        volumes = [v for v in spec.get("volumes", []) if v["name"] == ls.RAY_LOGS_VOLUME]
        if volumes != [wiring.volume]:
            problems.append(f"{group}: volume {ls.RAY_LOGS_VOLUME} is {volumes}, expected a disk-backed emptyDir")
    autoscaler = _ray_cluster(any_platform)["spec"].get("autoscalerOptions", {})
    for key, expected in wiring.autoscaler_options.items():
        if not all(item in autoscaler.get(key, []) for item in expected):
            problems.append(f"autoscalerOptions.{key} lacks {expected} (the autoscaler shares the head's directory)")
    assert problems == []


def _host_path_of(template: dict[str, Any], pod_name: str, file_name: str) -> str:
    """Where a Ray file written in the container lands on the node, from the pod template's own mount."""
    (ray_container,) = [c for c in template["spec"]["containers"] if c["name"] in ("ray-head", "ray-worker")]
    (mount,) = [m for m in ray_container["volumeMounts"] if m["mountPath"] == ls.RAY_LOGS_MOUNT_PATH]
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume and volume["emptyDir"].get("medium") != "Memory"
    env = {e["name"]: e for e in ray_container.get("env", [])}
    sub = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                 lambda m: pod_name if env[m.group(1)]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
                 else "?", mount.get("subPathExpr", mount.get("subPath", "")))
    in_container = f"{ls.RAY_LOGS_MOUNT_PATH}/session_2026-12-02_10-00-00_123456_42/logs/{file_name}"
    relative = in_container.removeprefix(ls.RAY_LOGS_MOUNT_PATH).lstrip("/")
    return "/".join(p for p in (f"{ls.HOST_KUBELET_PODS}/{SAMPLE_UID}/volumes/{ls.EMPTY_DIR_PLUGIN_DIR}",
                                volume["name"], sub, relative) if p)


@pytest.mark.parametrize("group,file_name", [
    ("head", "job-driver-raysubmit_8XkqZ2mN4pLt7Ywa.log"),
    ("head", "worker-3f9c2b7e1d0a4c8b9e6f5a4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f-02000000-4123.out"),
    ("cpu", "worker-0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5-02000000-311.err"),
])
def test_a_ray_file_on_the_node_is_tailed_tagged_and_named_after_pod_and_file(platform, group, file_name):
    """Also fails until the Ray pods are wired (it reads the node path from the RayCluster's own mount)."""
    templates = dict(_ray_templates(platform))
    pod_name = f"ray-{group}-x7k2p" if group == "head" else f"ray-{group}-worker-q4m8d"
    path = _host_path_of(templates[group], pod_name, file_name)
    tail = _inputs(platform)["ray-files"]
    assert _matches_path(tail, path), (path, tail["Path"])
    tag = _tag(tail, path)
    assert tag is not None, (path, tail["Tag_Regex"])
    (output,) = _routed(_outputs(platform), tag)
    assert output["log_group_name"] == ls.log_group_names(platform.config.cluster.name)["ray"]
    assert _stream(output, tag) == f"file/{file_name}/{pod_name}"


def test_ray_files_other_than_driver_and_worker_logs_are_not_tailed(platform):
    tail = _inputs(platform)["ray-files"]
    base = f"{ls.HOST_KUBELET_PODS}/{SAMPLE_UID}/volumes/{ls.EMPTY_DIR_PLUGIN_DIR}/{ls.RAY_LOGS_VOLUME}/ray-head-x7k2p"
    assert not _matches_path(tail, f"{base}/session_2026-12-02_10-00-00_123456_42/logs/raylet.out")
    # session_latest is a symlink to the session directory: tailing it too would read every file twice.
    assert not _matches_path(tail, f"{base}/session_latest/logs/job-driver-raysubmit_8XkqZ2mN4pLt7Ywa.log")
    # Another emptyDir of the same pod (e.g. /dev/shm's) is never read.
    other = f"{ls.HOST_KUBELET_PODS}/{SAMPLE_UID}/volumes/{ls.EMPTY_DIR_PLUGIN_DIR}/dshm/x/session_1/logs/worker-a.out"
    assert not _matches_path(tail, other)


@pytest.mark.parametrize("namespace,pod,container,group", [
    ("ray", "ray-head-x7k2p", "ray-head", "ray"),
    ("ray", "ray-cpu-worker-q4m8d", "ray-worker", "ray"),
    ("jupyterhub", "hub-7d9f8c6b5-abcde", "hub", "jupyterhub"),
    ("jupyterhub", "jupyter-ana", "notebook", "jupyterhub"),
])
def test_container_output_is_tailed_and_named_after_pod_and_container(platform, namespace, pod, container, group):
    path = f"{ls.HOST_CONTAINER_LOGS}/{pod}_{namespace}_{container}-{SAMPLE_CONTAINER_ID}.log"
    tail = _inputs(platform)["pods"]
    assert _matches_path(tail, path)
    tag = _tag(tail, path)
    (output,) = _routed(_outputs(platform), tag)
    assert output["log_group_name"] == ls.log_group_names(platform.config.cluster.name)[group]
    assert _stream(output, tag) == f"pod/{pod}/{container}"


def test_other_namespaces_are_not_shipped(platform):
    tail = _inputs(platform)["pods"]
    for namespace in ("kube-system", "kuberay-system", "logging", "default"):
        assert not _matches_path(tail, f"{ls.HOST_CONTAINER_LOGS}/x-1_{namespace}_c-{SAMPLE_CONTAINER_ID}.log")


def test_the_daemonset_mounts_what_it_tails_read_only(platform):
    values = _values(platform)
    host = {v["name"]: v["hostPath"]["path"] for v in values["daemonSetVolumes"]}
    mounts = {m["name"]: m for m in values["daemonSetVolumeMounts"]}
    assert host["kubelet-pods"] == ls.HOST_KUBELET_PODS and mounts["kubelet-pods"]["readOnly"] is True
    assert mounts["kubelet-pods"]["mountPath"] == ls.HOST_KUBELET_PODS
    assert mounts["kubelet-pods"]["mountPropagation"] == "HostToContainer"
    assert host["varlog"] == "/var/log" and mounts["varlog"]["readOnly"] is True
    # Only the offsets database is written, in its own directory.
    writable = [name for name, m in mounts.items() if not m.get("readOnly")]
    assert writable == ["state"] and host["state"] == ls.HOST_STATE_DIR
    for tail in _inputs(platform).values():
        assert tail["DB"].startswith(ls.HOST_STATE_DIR + "/")
        assert tail["Read_from_Head"] == "true"


def _shipped_groups(synth) -> set[str]:
    """The namespaces' groups, and Karpenter's when observability is on (its error alarm reads it)."""
    name = synth.config.cluster.name
    karpenter = {ls.karpenter_log_group_name(name)} if synth.config.observability.enabled else set()
    return set(ls.log_group_names(name).values()) | karpenter


def test_outputs_write_only_into_the_platforms_groups(any_platform):
    groups = _shipped_groups(any_platform)
    outputs = _outputs(any_platform)
    assert {o["Name"] for o in outputs.values()} == {"cloudwatch_logs"}
    assert {o["log_group_name"] for o in outputs.values()} == groups
    for output in outputs.values():
        assert output["auto_create_group"] == "Off"  # CloudFormation owns the groups (KMS, retention)
        assert output["region"] == "${AWS::Region}"
        assert "log_retention_days" not in output and "log_group_class" not in output
    # No kubernetes filter: no API dependency, no metadata bytes on every line.
    assert _values(any_platform)["config"]["filters"] == "" and _values(any_platform)["rbac"] == {"create": False}


# ------------------------------------------------------------------ log groups, IAM, Pod Identity


def _observability(synth) -> dict:
    return synth.template_json("Observability")


def _shipped_group_resources(template: dict) -> dict[str, dict]:
    """The log groups the shipper writes (named; the stack's other group is the alarms' custom-resource Lambda's)."""
    return {k: r for k, r in _resources(template, "AWS::Logs::LogGroup").items()
            if isinstance(r["Properties"].get("LogGroupName"), str)}


def _cluster_logs_key(synth) -> str:
    """Logical id of the cluster stack's logs key: the KMS key that is not the Kubernetes secrets key."""
    resources = synth.template_json("Cluster")["Resources"]
    (cluster,) = [r for r in resources.values() if r["Type"] == "AWS::EKS::Cluster"]
    secrets = cluster["Properties"]["EncryptionConfig"][0]["Provider"]["KeyArn"]["Fn::GetAtt"][0]
    (logs_key,) = [k for k, r in resources.items() if r["Type"] == "AWS::KMS::Key" and k != secrets]
    return logs_key


def test_log_groups_are_encrypted_with_the_logs_key_and_keep_the_configured_retention(any_platform):
    groups = _shipped_group_resources(_observability(any_platform))
    names = {g["Properties"]["LogGroupName"] for g in groups.values()}
    assert names == _shipped_groups(any_platform)
    logs_key = _cluster_logs_key(any_platform)
    for group in groups.values():
        props = group["Properties"]
        assert props["RetentionInDays"] == any_platform.config.logs.retention_days
        output = props["KmsKeyId"]["Fn::GetStackOutput"]
        assert output["StackName"] == f"{any_platform.config.cluster.name}-cluster"
        # The logs key, never the key of the Kubernetes secrets (logical id = construct path + an 8-digit hash).
        assert logs_key[:-8] in output["OutputName"] and "Arn" in output["OutputName"]
        # Deleted with the stack, before the cluster stack deletes the key (README, Tearing down).
        assert group.get("DeletionPolicy") == "Delete"


def test_the_iam_policy_is_scoped_to_the_log_groups(any_platform):
    template = _observability(any_platform)
    groups = set(_shipped_group_resources(template))
    # The Fluent Bit role's policy (the stack's other policies belong to the alarms' custom resource).
    from stacks.observability_stack import LOG_WRITER_SID

    statements = [s for p in _resources(template, "AWS::IAM::Policy").values()
                  for s in p["Properties"]["PolicyDocument"]["Statement"]
                  if any(st.get("Sid") == LOG_WRITER_SID for st in p["Properties"]["PolicyDocument"]["Statement"])]
    assert len(statements) == 1
    (statement,) = statements
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert {r["Fn::GetAtt"][0] for r in statement["Resource"]} == groups
    assert all(r["Fn::GetAtt"][1] == "Arn" for r in statement["Resource"])
    assert "Condition" not in statement


def test_the_pod_identity_association_names_the_daemonsets_service_account(any_platform):
    template = _observability(any_platform)
    (assoc_id, assoc), = _resources(template, "AWS::EKS::PodIdentityAssociation").items()
    release = _release(any_platform)
    values = release.values
    assert values["serviceAccount"]["create"] is True
    assert assoc["Properties"]["ServiceAccount"] == values["serviceAccount"]["name"] == ls.SERVICE_ACCOUNT
    assert assoc["Properties"]["Namespace"] == release.properties["Namespace"]
    # Created before the pods (EKS injects credentials only into pods created after it), with its role's policy.
    release_deps = set(template["Resources"][release.logical_id]["DependsOn"])
    assert assoc_id in release_deps
    role_id = assoc["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    trust = template["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert all(s["Principal"] == {"Service": "pods.eks.amazonaws.com"} for s in trust)


def test_the_release_waits_for_its_namespace_policies_groups_and_identity(platform):
    template = _observability(platform)
    release = _release(platform)
    deps = set(template["Resources"][release.logical_id]["DependsOn"])
    assert set(_shipped_group_resources(template)) <= deps
    manifest = _logging_manifest(platform)
    assert manifest.logical_id in deps


def test_observability_comes_after_the_cluster_and_before_ray_and_jupyterhub(platform):
    manifest = json.loads((platform.outdir / "assembly-DynamicFactory" / "manifest.json").read_text())
    deps = {a["displayName"].split("/")[-1]: {d.split("DynamicFactory")[-1].rstrip("0123456789ABCDEF")
                                              for d in a.get("dependencies", [])}
            for a in manifest["artifacts"].values() if a.get("type") == "aws:cloudformation:stack"}
    assert "Cluster" in deps["Observability"]
    assert "Observability" in deps["Ray"] and "Observability" in deps["JupyterHub"]
    assert "Ray" not in deps["Observability"] and "JupyterHub" not in deps["Observability"]


# ------------------------------------------------------------------ namespace and network policies


def _logging_manifest(synth):
    """The manifest that creates the `logging` namespace and its policies."""
    (manifest,) = [r for r in synth.assembly.manifests() if r.stack.startswith("DynamicFactoryObservability")
                   and any(o["kind"] == "Namespace" and o["metadata"]["name"] == ls.NAMESPACE for o in r.objects)]
    return manifest


def _logging_objects(synth) -> list[dict[str, Any]]:
    return _logging_manifest(synth).objects


def test_the_namespace_enforces_privileged_and_warns_baseline(platform):
    (ns,) = [o for o in _logging_objects(platform) if o["kind"] == "Namespace"]
    labels = ns["metadata"]["labels"]
    assert ns["metadata"]["name"] == ls.NAMESPACE
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"  # hostPath volumes
    assert labels["pod-security.kubernetes.io/warn"] == "baseline"


def test_the_namespace_and_network_policies_validate_strictly(platform):
    import kubernetes_validate

    objects = _logging_objects(platform)
    assert [o["kind"] for o in objects].count("NetworkPolicy") == 2
    for obj in objects:
        if obj["kind"] in ("Namespace", "NetworkPolicy"):
            kubernetes_validate.validate(obj, "1.35", strict=True)
    (cnp,) = [o for o in objects if o["kind"] == "CiliumNetworkPolicy"]
    assert cnp["apiVersion"] == "cilium.io/v2"
    assert cnp["spec"]["endpointSelector"] == {"matchLabels": ls.POD_LABELS}
    assert cnp["spec"]["egress"] == [{"toEntities": ["host"], "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]
    assert [o["metadata"]["name"] for o in objects if o["kind"] != "Namespace"] == [
        p["metadata"]["name"] for p in _policies()]


def _policies() -> list[dict[str, Any]]:
    from charts.network_policies import log_shipper_network_policies

    return log_shipper_network_policies(ls.NAMESPACE, ls.POD_LABELS)


def _evaluable(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [netpol.cilium_policy(o) if o["kind"] == "CiliumNetworkPolicy" else o
            for o in objects if o["kind"] in ("NetworkPolicy", "CiliumNetworkPolicy")]


SHIPPER = netpol.Endpoint.pod(ls.NAMESPACE, ls.POD_LABELS)
COREDNS = netpol.Endpoint.pod("kube-system", {"k8s-app": "kube-dns"})
RAY_HEAD = netpol.Endpoint.pod("ray", {"ray.io/node-type": "head"})
NOTEBOOK = netpol.Endpoint.pod("jupyterhub", {"component": "singleuser-server"})


@pytest.mark.parametrize("dst,port,proto,allowed", [
    (COREDNS, 53, "UDP", True),
    (COREDNS, 53, "TCP", True),
    (netpol.Endpoint(entity="world"), 443, "TCP", True),  # CloudWatch Logs
    (netpol.Endpoint(entity="host"), 80, "TCP", True),  # the Pod Identity agent
    (netpol.Endpoint(entity="host"), 10250, "TCP", False),  # not the kubelet
    (netpol.Endpoint(entity="world"), 80, "TCP", False),
    (netpol.Endpoint(entity="kube-apiserver"), 443, "TCP", False),  # no kubernetes filter, no API
    (RAY_HEAD, 8265, "TCP", False),
])
def test_egress_is_exactly_what_fluent_bit_needs(platform, dst, port, proto, allowed):
    policies = _evaluable(_logging_objects(platform))
    assert netpol.flow_allowed(policies, SHIPPER, dst, port, proto)[0] is allowed


@pytest.mark.parametrize("src", [NOTEBOOK, RAY_HEAD, netpol.Endpoint.pod(ls.NAMESPACE, {"app": "other"})])
def test_nothing_comes_in(platform, src):
    policies = _evaluable(_logging_objects(platform))
    assert not netpol.flow_allowed(policies, src, SHIPPER, 2020)[0]


# ------------------------------------------------------------------ first boot


@pytest.fixture(scope="module")
def boot(platform) -> BootModel:
    return BootModel(platform.outdir)


def test_the_boot_model_places_a_shipper_on_every_system_node(boot):
    placement = boot.idle_placement()
    assert placement.unplaced == [] and placement.karpenter_nodes == []
    shipper = f"{ls.NAMESPACE}/{ls.RELEASE}"
    assert all(any(p == shipper for p, _, _ in node.placed) for node in placement.nodes)
    (workload,) = [w for w in boot.workloads if f"{w.namespace}/{w.name}" == shipper]
    assert workload.daemonset and workload.requests == (25, 64)


def test_the_boot_model_admits_credentials_and_networks_the_shipper(boot):
    verdicts = boot.run()
    mine = {(v.subject, v.check): v for v in verdicts if "fluent" in v.subject.lower()}
    for key in ((f"{ls.NAMESPACE}/{ls.RELEASE}", "admitted"), (f"{ls.NAMESPACE}/{ls.RELEASE}", "credentialed"),
                ("Fluent Bit -> DNS", "flow"), ("Fluent Bit -> Pod Identity agent", "flow"),
                ("Fluent Bit -> CloudWatch Logs", "flow")):
        assert key in mine and mine[key].ok, (key, mine.get(key))


# ------------------------------------------------------------------ the helpers the Ray chart uses


def test_the_ray_wiring_is_self_consistent():
    wiring = ls.ray_pod_log_wiring()
    # Disk-backed (no medium: Memory, which the DaemonSet could not see) and bounded: a runaway worker is evicted
    # before the node's disk fills.
    assert wiring.volume == {"name": "ray-logs", "emptyDir": {"sizeLimit": "20Gi"}}
    assert wiring.container_volume_mount["name"] == wiring.volume["name"]
    assert wiring.container_volume_mount["subPathExpr"] == f"$({wiring.container_env['name']})"
    assert wiring.container_env["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert wiring.autoscaler_options == {"env": [wiring.container_env], "volumeMounts": [wiring.container_volume_mount]}


def test_fluent_bit_values_refuse_a_missing_group():
    with pytest.raises(ValueError, match="must name a group for each of"):
        ls.FluentBitValues(region="eu-west-1", log_groups={"ray": "/x/ray"})
    with pytest.raises(ValueError, match="is not a CloudWatch Logs group name"):
        ls.FluentBitValues(region="eu-west-1", log_groups={"ray": "/x/ray", "jupyterhub": "bad name"})


def test_without_the_cilium_policy_the_pod_identity_agent_is_out_of_reach(platform):
    """The one thing a NetworkPolicy cannot express under Cilium: the model must see the agent cut off."""
    objects = [o for o in _logging_objects(platform) if o["kind"] != "CiliumNetworkPolicy"]
    assert not netpol.flow_allowed(_evaluable(objects), SHIPPER, netpol.Endpoint(entity="host"), 80)[0]
    assert netpol.flow_allowed(_evaluable(objects), SHIPPER, netpol.Endpoint(entity="world"), 443)[0]


def test_cilium_policies_read_as_network_policies():
    cnp = {"metadata": {"name": "p", "namespace": "n"},
           "spec": {"endpointSelector": {"matchLabels": {"a": "b"}},
                    "egress": [{"toEntities": ["host"], "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]},
                               {"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system",
                                                                 "k8s-app": "kube-dns"}}]}]}}
    policy = netpol.cilium_policy(cnp)
    pod = netpol.Endpoint.pod("n", {"a": "b"})
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert netpol.flow_allowed([policy], pod, netpol.Endpoint(entity="host"), 80)[0]
    assert not netpol.flow_allowed([policy], pod, netpol.Endpoint(entity="host"), 81)[0]
    assert netpol.flow_allowed([policy], pod, COREDNS, 53, "UDP")[0]
    assert not netpol.flow_allowed([policy], pod, netpol.Endpoint(entity="world"), 443)[0]
