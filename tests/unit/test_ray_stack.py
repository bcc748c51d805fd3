"""Ray wired into the platform: operator, RayCluster manifest, storage, policies, validation runner."""

from __future__ import annotations

import json

import pytest
import yaml

import versions
from charts import raycluster as rc
from tests.platform_synth import ROOT
from tests.support.k8s_schema import CrdValidator

KUBERAY = ROOT / "schemas" / "kuberay"


def _ray_template(synth):
    return synth.template_json("Ray")


def _resources(synth, type_):
    return {k: v for k, v in _ray_template(synth)["Resources"].items() if v["Type"] == type_}


def _depends(synth, logical_id):
    deps = _ray_template(synth)["Resources"][logical_id].get("DependsOn", [])
    return {deps} if isinstance(deps, str) else set(deps)


def _manifests_with(synth, kind):
    """The Ray stack's manifest resources holding a ``kind`` object (one per Ray namespace; other stacks have
    their own policies)."""
    return [r for r in synth.assembly.manifests()
            if r.stack.startswith("DynamicFactoryRay") and any(o["kind"] == kind for o in r.objects)]


def _manifest_with(synth, kind):
    """The one manifest holding a ``kind`` object (the default platform: one shared Ray cluster)."""
    (res,) = _manifests_with(synth, kind)
    return res


def _ray_clusters(synth):
    return [o for r in _manifests_with(synth, "RayCluster") for o in r.objects if o["kind"] == "RayCluster"]


def _ray_cluster(synth):
    """The first RayCluster (with teams, every team's has the same shape: test_teams.py)."""
    return _ray_clusters(synth)[0]


def test_operator_chart_pinned_on_system_nodes(platform):
    op = platform.assembly.helm_releases()["kuberay-operator"]
    assert op.properties["Version"] == versions.KUBERAY_CHART_VERSION
    assert op.properties["Namespace"] == "kuberay-system"
    assert op.values["nodeSelector"] == {"dynamic-factory/node-role": "system"}
    chart = yaml.safe_load((KUBERAY / "Chart.yaml").read_text())
    assert chart["version"] == versions.KUBERAY_CHART_VERSION


def test_operator_values_exist_upstream(platform):
    upstream = yaml.safe_load((KUBERAY / "values.yaml").read_text())
    for key in platform.assembly.helm_releases()["kuberay-operator"].values:
        # watchNamespace is a documented key that values.yaml carries only as a commented example
        # (tests/unit/test_kuberay_operator_values.py checks it against the chart's templates).
        assert key in upstream or key == "watchNamespace", key


def test_ray_cluster_validates_strictly_against_kuberay_crd(any_platform):
    validator = CrdValidator.from_files([KUBERAY / "ray.io_rayclusters.yaml"])
    clusters = _ray_clusters(any_platform)
    assert clusters and all(validator.errors(rc) == [] for rc in clusters)


def test_head_is_never_on_spot(platform, variant):
    # Default: the always-on system node group (no extra idle node); variant: Karpenter's on-demand pool.
    for synth, pool in ((platform, "system"), (variant, "on-demand")):
        head = _ray_cluster(synth)["spec"]["headGroupSpec"]["template"]["spec"]
        assert head["nodeSelector"] == {"dynamic-factory/pool": pool}
    system = _ray_cluster(platform)["spec"]["headGroupSpec"]["template"]["spec"]
    assert {"key": "CriticalAddonsOnly", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in system["tolerations"]
    nodegroup = next(r for r in platform.template_json("Cluster")["Resources"].values() if r["Type"] == "AWS::EKS::Nodegroup")
    assert nodegroup["Properties"]["Labels"]["dynamic-factory/pool"] == "system"
    assert nodegroup["Properties"]["CapacityType"] == "ON_DEMAND"


def test_placement_auth_and_scale_to_zero(platform):
    spec = _ray_cluster(platform)["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["headGroupSpec"]["template"]["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    (workers,) = spec["workerGroupSpecs"]
    assert workers["minReplicas"] == 0 and workers["maxReplicas"] == platform.config.ray.workers.max_workers
    assert workers["template"]["spec"]["nodeSelector"] == {"dynamic-factory/pool": "spot"}
    assert spec["authOptions"]["mode"] == "token"
    assert spec["enableInTreeAutoscaling"] is True


def test_gpu_worker_group_only_when_configured(platform, variant):
    assert [g["groupName"] for g in _ray_cluster(platform)["spec"]["workerGroupSpecs"]] == ["cpu"]
    groups = {g["groupName"]: g for g in _ray_cluster(variant)["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    assert groups["gpu"]["template"]["spec"]["nodeSelector"] == {"dynamic-factory/pool": "gpu"}


def test_no_ray_port_is_exposed_outside_the_cluster(any_platform):
    for obj in any_platform.assembly.kube_objects():
        if obj["kind"] == "Service":
            assert obj.get("spec", {}).get("type", "ClusterIP") == "ClusterIP", obj["metadata"]["name"]
    for rc in _ray_clusters(any_platform):
        assert rc["spec"]["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"


def test_checkpoints_go_to_the_stack_bucket(platform):
    env = {e["name"]: e.get("value") for c in _ray_cluster(platform)["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
           for e in c.get("env", [])}
    assert env[rc.CHECKPOINT_ENV].startswith("s3://${StorageBucket")


def test_bucket_is_private_encrypted_tls_only(platform):
    (bucket_id, bucket), = [(k, v) for k, v in _resources(platform, "AWS::S3::Bucket").items() if k.startswith("StorageBucket")]
    props = bucket["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert "LoggingConfiguration" in props and props["LifecycleConfiguration"]["Rules"]
    policies = [p for p in _resources(platform, "AWS::S3::BucketPolicy").values() if p["Properties"]["Bucket"] == {"Ref": bucket_id}]
    assert '"aws:SecureTransport": "false"' in json.dumps(policies)


def test_ray_pods_get_credentials_before_the_ray_cluster(platform):
    ray_cluster = _manifest_with(platform, "RayCluster")
    (assoc_id, assoc), = _resources(platform, "AWS::EKS::PodIdentityAssociation").items()
    assert (assoc["Properties"]["Namespace"], assoc["Properties"]["ServiceAccount"]) == ("ray", "ray")
    assert assoc_id in ray_cluster.depends_on
    operator = platform.assembly.helm_releases()["kuberay-operator"]
    assert operator.logical_id in ray_cluster.depends_on


def test_network_policies_come_before_the_ray_pods(platform):
    """Ingress and egress policies are applied in the namespace before the RayCluster's pods exist."""
    cluster = _manifest_with(platform, "RayCluster")
    namespace = next(r for r in _manifests_with(platform, "Namespace")
                     if any(o["kind"] == "Namespace" and o["metadata"]["name"] == "ray" for o in r.objects))
    for kind in ("NetworkPolicy", "CiliumNetworkPolicy"):
        policies = _manifest_with(platform, kind)
        assert namespace.logical_id in policies.depends_on and policies.logical_id in cluster.depends_on, kind
    operator = platform.assembly.helm_releases()["kuberay-operator"]
    assert namespace.logical_id in operator.depends_on  # its Roles are created in the namespace


def test_token_secret_is_never_in_a_manifest(any_platform):
    assert not [o for o in any_platform.assembly.kube_objects() if o["kind"] == "Secret"]


# ------------------------------------------------------------------ validation runner


def _runner_project(synth):
    (project,) = _resources(synth, "AWS::CodeBuild::Project").values()
    return project["Properties"]


def test_runner_is_in_the_vpc_and_encrypted(platform):
    project = _runner_project(platform)
    assert project["Name"] == "dynamic-factory-validation"
    assert project["VpcConfig"]["Subnets"] and project["EncryptionKey"]
    assert project["Environment"]["PrivilegedMode"] is False


def test_runner_submits_the_job_with_the_configured_bar(platform):
    spec = json.dumps(_runner_project(platform)["Source"]["BuildSpec"])
    v = platform.config.ray.validation
    assert "python -m jobs.submit" in spec and "--wait" in spec
    assert f"--min-auc {v.min_auc}" in spec and f"--rows {v.rows}" in spec
    assert "sha512sum -c" in spec  # kubectl is verified before use


def test_runner_cluster_access_is_one_group_bound_to_a_narrow_role(platform):
    (entry,) = _resources(platform, "AWS::EKS::AccessEntry").values()
    assert entry["Properties"]["KubernetesGroups"] == ["dynamic-factory:validation"]
    assert "AccessPolicies" not in entry["Properties"]
    role = next(o for o in platform.assembly.kube_objects()
                if o["kind"] == "Role" and o["metadata"]["name"] == "validation-runner")
    rules = {(tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]}
    assert (("secrets",), ("get",)) in rules and (("pods/portforward",), ("create",)) in rules
    secret_rule = next(r for r in role["rules"] if r["resources"] == ["secrets"])
    assert secret_rule["resourceNames"] == [rc.TOKEN_SECRET]
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in role["rules"])


def test_invoker_role_only_with_a_pipeline(platform, pipeline_platform):
    from cdk_constructs.validation_runner import invoker_role_name

    roles = [r for r in _resources(platform, "AWS::IAM::Role").values()
             if str(r["Properties"].get("RoleName", "")).endswith("-invoker")]
    assert roles == []
    prod = next(s for s in pipeline_platform.app_stage.config.pipeline.stages if s.name == "prod")
    stage = pipeline_platform.stages["prod"]
    names = [r["Properties"].get("RoleName") for r in stage["Ray"]["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert invoker_role_name("dynamic-factory", "prod", prod.region) in names


def test_the_job_and_the_chart_agree_on_the_checkpoint_variable():
    from jobs import config as job_config

    assert job_config.CHECKPOINT_ENV == rc.CHECKPOINT_ENV
