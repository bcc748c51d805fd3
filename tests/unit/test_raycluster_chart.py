"""The RayCluster chart: strict CRD validity (KubeRay 1.7.0), placement, auth, pod hardening, the token bootstrap."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aws_cdk as cdk
import cdk8s
import jsonschema
import pytest

from charts.karpenter_nodes import (
    DEFAULT_GPU_POOL,
    DEFAULT_ON_DEMAND_POOL,
    DEFAULT_SPOT_POOL,
    POOL_LABEL_KEY,
    pool_placement,
)
from charts.raycluster import (
    BOOTSTRAP_SCRIPT,
    CLIENT_PORT,
    CLUSTER_NAME,
    DASHBOARD_PORT,
    GCS_PORT,
    HEAD_SERVICE,
    KUBERAY_TOKEN_KEY,
    NAMESPACE,
    RAY_UID,
    RAY_VERSION,
    SERVICE_ACCOUNT,
    TOKEN_KEY,
    TOKEN_SECRET,
    RayClusterChart,
    RayClusterSettings,
)
from charts.ray_prestop import PRESTOP_DRAIN_SCRIPT
from tests.support.k8s_schema import CrdValidator, load_crd

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "schemas" / "kuberay"
RAYCLUSTER_CRD = SCHEMAS / "ray.io_rayclusters.yaml"
BUCKET = "df-unit-ray-checkpoints"
# Literal stand-ins for the stack's image assets (ECR URIs; the stack passes CDK tokens).
IMAGE = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/ray:{RAY_VERSION}-cpu"
GPU_IMAGE = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/ray:{RAY_VERSION}-gpu"
_SETTINGS = {f.name for f in dataclasses.fields(RayClusterSettings)}


def _chart(app, construct_id: str, **kwargs) -> RayClusterChart:
    """The chart from flat keyword arguments: the settings' fields go to RayClusterSettings, the rest to the
    chart; a GPU pool gets the GPU image unless the call names one."""
    settings = RayClusterSettings(**{k: v for k, v in kwargs.items() if k in _SETTINGS})
    chart_args = {"checkpoint_bucket": BUCKET, "image": IMAGE,
                  **({"gpu_image": GPU_IMAGE} if settings.has_gpu_group else {}),
                  **{k: v for k, v in kwargs.items() if k not in _SETTINGS}}
    return RayClusterChart(app, construct_id, settings=settings, **chart_args)


def _synth(**kwargs) -> list[dict]:
    return cdk8s.Testing.synth(_chart(cdk8s.Testing.app(), "ray", **kwargs))


@pytest.fixture(scope="module")
def default_manifests() -> list[dict]:
    return _synth()


@pytest.fixture(scope="module")
def gpu_manifests() -> list[dict]:
    return _synth(gpu_pool=DEFAULT_GPU_POOL, gpu_max_workers=3)


@pytest.fixture(scope="module")
def validator() -> CrdValidator:
    return CrdValidator.from_files([RAYCLUSTER_CRD, SCHEMAS / "ray.io_rayjobs.yaml"])


@pytest.fixture(scope="module")
def pod_template_validator() -> jsonschema.Draft4Validator:
    """The (strict) PodTemplateSpec schema embedded in the RayCluster CRD, to check core kinds' pod templates."""
    schema = load_crd(RAYCLUSTER_CRD).schema["properties"]["spec"]["properties"]["headGroupSpec"]["properties"]["template"]
    return jsonschema.Draft4Validator(schema)


def _one(manifests, kind, name=None, namespace=None) -> dict:
    found = [m for m in manifests if m["kind"] == kind
             and (name is None or m["metadata"]["name"] == name)
             and (namespace is None or m["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, (kind, name, namespace, len(found))
    return found[0]


def _ray_cluster(manifests) -> dict:
    return _one(manifests, "RayCluster")


def _groups(manifests) -> dict[str, dict]:
    return {g["groupName"]: g for g in _ray_cluster(manifests)["spec"]["workerGroupSpecs"]}


def _pod_templates(manifests) -> dict[str, dict]:
    """Every pod template of the chart: head, each worker group, the bootstrap Job."""
    spec = _ray_cluster(manifests)["spec"]
    out = {"head": spec["headGroupSpec"]["template"]}
    out.update({f"worker:{name}": g["template"] for name, g in _groups(manifests).items()})
    out["job"] = _one(manifests, "Job")["spec"]["template"]
    return out


def _ray_containers(manifests) -> dict[str, dict]:
    return {name: t["spec"]["containers"][0] for name, t in _pod_templates(manifests).items() if name != "job"}


# ------------------------------------------------------------------ schema validity and object set


@pytest.mark.parametrize("fixture", ["default_manifests", "gpu_manifests"])
def test_every_custom_resource_is_valid_against_the_vendored_kuberay_crd_strictly(request, validator, fixture):
    manifests = request.getfixturevalue(fixture)
    custom = [m for m in manifests if "." in m["apiVersion"].split("/")[0]
              and not m["apiVersion"].startswith("rbac.authorization.k8s.io")]
    assert [m["kind"] for m in custom] == ["RayCluster"]
    for manifest in custom:
        assert validator.knows(manifest), manifest["kind"]
        errors = validator.errors(manifest)
        assert not errors, f"{manifest['kind']}/{manifest['metadata']['name']}:\n" + "\n".join(errors)


def test_the_strict_validator_rejects_a_typo_in_the_ray_cluster(default_manifests, validator):
    bad = json.loads(json.dumps(_ray_cluster(default_manifests)))
    bad["spec"]["authOptions"]["secretname"] = TOKEN_SECRET
    bad["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resource"] = {}
    errors = "\n".join(validator.errors(bad))
    assert "secretname" in errors and "resource" in errors


@pytest.mark.parametrize("fixture", ["default_manifests", "gpu_manifests"])
def test_the_job_pod_template_is_a_valid_pod_template(request, pod_template_validator, fixture):
    template = _one(request.getfixturevalue(fixture), "Job")["spec"]["template"]
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in pod_template_validator.iter_errors(template)]
    assert not errors, "\n".join(errors)


def test_objects_fixed_names_and_apply_order(default_manifests):
    assert [(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in default_manifests] == [
        ("Namespace", None, "ray"),
        ("ServiceAccount", "ray", "ray"),
        ("ServiceAccount", "ray", "ray-token-bootstrap"),
        ("Role", "ray", "ray-token-bootstrap"),
        ("RoleBinding", "ray", "ray-token-bootstrap"),
        ("ClusterRole", None, "dynamic-factory:ray-token-bootstrap:ray"),
        ("RoleBinding", "jupyterhub", "ray-token-bootstrap-ray"),
        ("Job", "ray", "ray-auth-token-bootstrap"),
        ("RayCluster", "ray", "ray"),
    ]


def test_only_the_ray_namespace_is_created(default_manifests):
    assert [m["metadata"]["name"] for m in default_manifests if m["kind"] == "Namespace"] == [NAMESPACE]
    ns = _one(default_manifests, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/warn"] == "restricted"


def test_contract_constants():
    assert (NAMESPACE, CLUSTER_NAME, SERVICE_ACCOUNT) == ("ray", "ray", "ray")
    assert HEAD_SERVICE == "ray-head-svc"
    assert (DASHBOARD_PORT, GCS_PORT, CLIENT_PORT) == (8265, 6379, 10001)
    assert (TOKEN_SECRET, TOKEN_KEY) == ("ray-auth-token", "token")
    assert RAY_VERSION == "2.60.0"


# ------------------------------------------------------------------ cluster shape


def test_ray_cluster_name_version_and_service_account(default_manifests):
    rc = _ray_cluster(default_manifests)
    assert rc["metadata"] == {"name": CLUSTER_NAME, "namespace": NAMESPACE}
    assert rc["spec"]["rayVersion"] == RAY_VERSION
    for name, template in _pod_templates(default_manifests).items():
        if name != "job":
            assert template["spec"]["serviceAccountName"] == SERVICE_ACCOUNT, name


def test_autoscaler_v2_in_tree_with_idle_timeout(default_manifests):
    spec = _ray_cluster(default_manifests)["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == 120
    assert _ray_cluster(_synth(idle_timeout_seconds=300))["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] == 300
    # KubeRay 1.7 rejects .autoscalerOptions.version together with the head env var RAY_enable_autoscaler_v2,
    # and requires restartPolicy Never (or unset) on every Ray pod with v2.
    for name, container in _ray_containers(default_manifests).items():
        assert "RAY_enable_autoscaler_v2" not in {e["name"] for e in container.get("env", [])}, name
    for name, template in _pod_templates(default_manifests).items():
        assert template["spec"]["restartPolicy"] == "Never", name


def test_head_placement_on_demand_with_toleration(default_manifests):
    head = _ray_cluster(default_manifests)["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["nodeSelector"] == {POOL_LABEL_KEY: "on-demand"}
    assert head["tolerations"] == [
        {"key": POOL_LABEL_KEY, "operator": "Equal", "value": "on-demand", "effect": "NoSchedule"}]


def test_head_follows_the_head_pool_argument():
    pool = dataclasses.replace(DEFAULT_ON_DEMAND_POOL, name="critical")
    head = _ray_cluster(_synth(head_pool=pool))["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["nodeSelector"] == pool_placement(pool)["nodeSelector"]


def test_cpu_workers_on_spot_scale_from_zero(default_manifests):
    groups = _groups(default_manifests)
    assert list(groups) == ["cpu"]
    cpu = groups["cpu"]
    assert cpu["minReplicas"] == 0 and cpu["replicas"] == 0
    assert cpu["maxReplicas"] == 8
    assert cpu["template"]["spec"]["nodeSelector"] == {POOL_LABEL_KEY: "spot"}
    assert "tolerations" not in cpu["template"]["spec"], "spot is untainted; workers must not tolerate on-demand"
    assert _groups(_synth(max_workers=20))["cpu"]["maxReplicas"] == 20


def test_head_takes_no_work_and_is_protected_from_karpenter(default_manifests):
    head = _ray_cluster(default_manifests)["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head["template"]["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"


def test_head_ports(default_manifests):
    ports = {p["name"]: p["containerPort"] for p in _ray_containers(default_manifests)["head"]["ports"]}
    assert ports == {"gcs-server": GCS_PORT, "dashboard": DASHBOARD_PORT, "client": CLIENT_PORT}


def test_checkpoint_uri_env_on_every_ray_container(default_manifests):
    for name, c in _ray_containers(default_manifests).items():
        # Under the namespace: the prefix the Ray pods' AWS role may write (cdk_constructs/ray_storage.py).
        assert {"name": "DF_CHECKPOINT_URI", "value": f"s3://{BUCKET}/ray/checkpoints"} in c["env"], name


def test_checkpoint_bucket_may_be_a_cdk_token():
    token = cdk.Fn.import_value("BucketName")
    rc = _ray_cluster(_synth(checkpoint_bucket=token))
    env = rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["value"] == f"s3://{token}/ray/checkpoints"
    assert cdk.Token.is_unresolved(env[0]["value"])  # resolved by CDK when the manifest is deployed


# ------------------------------------------------------------------ services: never exposed


@pytest.mark.parametrize("fixture", ["default_manifests", "gpu_manifests"])
def test_no_load_balancer_or_node_port_anywhere(request, fixture):
    manifests = request.getfixturevalue(fixture)
    head = _ray_cluster(manifests)["spec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert head.get("enableIngress") is False
    assert "headService" not in head  # KubeRay's own Service, named ray-head-svc
    text = json.dumps(manifests)
    assert "LoadBalancer" not in text and "NodePort" not in text
    assert all(m["kind"] not in ("Service", "Ingress") for m in manifests)


# ------------------------------------------------------------------ pod hardening


@pytest.mark.parametrize("fixture", ["default_manifests", "gpu_manifests"])
def test_dev_shm_memory_volume_on_every_ray_container(request, fixture):
    manifests = request.getfixturevalue(fixture)
    templates = _pod_templates(manifests)
    for name, container in _ray_containers(manifests).items():
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "/dev/shm" in mounts, name
        volumes = {v["name"]: v for v in templates[name]["spec"]["volumes"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", name
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["sizeLimit"] == container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("fixture", ["default_manifests", "gpu_manifests"])
def test_requests_equal_limits_for_every_container_including_the_autoscaler(request, fixture):
    manifests = request.getfixturevalue(fixture)
    for name, template in _pod_templates(manifests).items():
        for c in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            r = c["resources"]
            assert r["requests"] == r["limits"] and {"cpu", "memory"} <= set(r["limits"]), (name, c["name"])
    auto = _ray_cluster(manifests)["spec"]["autoscalerOptions"]["resources"]
    assert auto["requests"] == auto["limits"]


def test_resource_arguments_are_used():
    m = _synth(worker_cpu=6, worker_memory_gib=24, head_cpu=1, head_memory_gib=4)
    assert _ray_containers(m)["worker:cpu"]["resources"]["limits"] == {"cpu": "6", "memory": "24Gi"}
    assert _ray_containers(m)["head"]["resources"]["limits"] == {"cpu": "1", "memory": "4Gi"}


@pytest.mark.parametrize("fixture", ["default_manifests", "gpu_manifests"])
def test_every_container_is_non_root_without_privilege_escalation(request, fixture):
    manifests = request.getfixturevalue(fixture)
    for name, template in _pod_templates(manifests).items():
        pod_ctx = template["spec"]["securityContext"]
        assert pod_ctx["runAsNonRoot"] is True and pod_ctx["runAsUser"] == RAY_UID, name
        assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not template["spec"].get("hostNetwork") and not template["spec"].get("hostPID"), name
        for c in template["spec"]["containers"]:
            ctx = c["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx["capabilities"].get("add"), (name, c["name"])
            assert ctx["runAsNonRoot"] is True and ctx.get("privileged") is False, (name, c["name"])
    auto = _ray_cluster(manifests)["spec"]["autoscalerOptions"]["securityContext"]
    assert auto["allowPrivilegeEscalation"] is False and auto["runAsNonRoot"] is True
    assert auto["capabilities"]["drop"] == ["ALL"]


def test_workers_terminate_gracefully(default_manifests):
    template = _groups(default_manifests)["cpu"]["template"]
    assert 10 <= template["spec"]["terminationGracePeriodSeconds"] < 120  # inside Spot's 2-minute notice
    grace = template["spec"]["terminationGracePeriodSeconds"]
    (container,) = template["spec"]["containers"]
    # The preStop drains the node with a deadline inside the grace period (the script the reclaim drill runs).
    assert container["lifecycle"]["preStop"]["exec"]["command"] == [
        "python", "-c", PRESTOP_DRAIN_SCRIPT, str(grace - 10), "1"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] == "0"  # SIGTERM after the deadline: stop, no second drain
    # `ray start --block` is PID 1 (exec) and KubeRay keeps this command (it passes its own in the variable).
    assert template["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    assert container["command"] == ["/bin/bash", "-c", "--"]
    assert container["args"][0].endswith('exec /bin/bash -c "$KUBERAY_GEN_RAY_START_CMD"')
    shorter = _groups(_synth(worker_termination_grace_seconds=45))["cpu"]["template"]
    assert shorter["spec"]["terminationGracePeriodSeconds"] == 45
    assert shorter["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][3] == "35"
    head = _ray_cluster(default_manifests)["spec"]["headGroupSpec"]["template"]
    assert head["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1] == "ray stop"
    assert "command" not in head["spec"]["containers"][0]


def test_workers_protected_from_consolidation_by_default_only(default_manifests):
    assert _groups(default_manifests)["cpu"]["template"]["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert "karpenter.sh/do-not-disrupt" not in _groups(_synth(worker_do_not_disrupt=False))["cpu"]["template"][
        "metadata"]["annotations"]


def test_only_the_autoscaler_holds_a_kubernetes_api_token(request):
    """A job runs code in the head's Ray container: no pod automounts a token, and the head pod's projected token
    is mounted into the autoscaler container only, where Ray's KubeRay node provider reads it."""
    for fixture in ("default_manifests", "gpu_manifests"):
        manifests = request.getfixturevalue(fixture)
        templates = _pod_templates(manifests)
        for name, template in templates.items():
            if name == "job":
                continue
            spec = template["spec"]
            assert spec["automountServiceAccountToken"] is False, name
            for c in spec["containers"]:
                assert all(m["mountPath"] != "/var/run/secrets/kubernetes.io/serviceaccount"
                           for m in c.get("volumeMounts", [])), (name, c["name"])
        head_volumes = {v["name"]: v for v in templates["head"]["spec"]["volumes"]}
        auto = _ray_cluster(manifests)["spec"]["autoscalerOptions"]
        (token_mount,) = [m for m in auto["volumeMounts"]
                          if m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"]
        assert token_mount["readOnly"] is True
        sources = head_volumes[token_mount["name"]]["projected"]["sources"]
        assert [next(iter(src)) for src in sources] == ["serviceAccountToken", "configMap", "downwardAPI"]
        assert sources[1]["configMap"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


# ------------------------------------------------------------------ GPU group


def test_no_gpu_group_without_a_gpu_pool(default_manifests):
    assert "gpu" not in _groups(default_manifests)
    assert "nvidia.com/gpu" not in json.dumps(default_manifests)


def test_gpu_group_with_limits_toleration_and_gpu_image(gpu_manifests):
    gpu = _groups(gpu_manifests)["gpu"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] == 3
    spec = gpu["template"]["spec"]
    assert spec["nodeSelector"] == {POOL_LABEL_KEY: "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in spec["tolerations"]
    res = spec["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == "1"
    assert spec["containers"][0]["image"] == GPU_IMAGE
    assert "nvidia.com/gpu" not in _groups(gpu_manifests)["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]


# ------------------------------------------------------------------ token auth and the bootstrap


def test_token_auth_through_auth_options(default_manifests):
    assert _ray_cluster(default_manifests)["spec"]["authOptions"] == {"mode": "token", "secretName": TOKEN_SECRET}


@pytest.mark.parametrize("fixture", ["default_manifests", "gpu_manifests"])
def test_the_token_never_appears_in_the_output(request, fixture):
    manifests = request.getfixturevalue(fixture)
    assert all(m["kind"] != "Secret" for m in manifests)
    for m in manifests:
        assert "data" not in m and "stringData" not in m, m["kind"]
    for name, template in _pod_templates(manifests).items():
        for c in template["spec"]["containers"]:
            for env in c.get("env", []):
                assert not ("TOKEN" in env["name"].upper() and "value" in env), (name, env["name"])
    # No value is generated at synth time: a second synth is identical.
    again = _synth() if fixture == "default_manifests" else _synth(gpu_pool=DEFAULT_GPU_POOL, gpu_max_workers=3)
    assert json.dumps(manifests, sort_keys=True) == json.dumps(again, sort_keys=True)


def test_bootstrap_rbac_is_least_privilege_in_every_token_namespace(default_manifests):
    subject = [{"kind": "ServiceAccount", "name": "ray-token-bootstrap", "namespace": "ray"}]
    role = _one(default_manifests, "Role", namespace="ray")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [TOKEN_SECRET], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": ["ray-auth-token-bootstrap"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["serviceaccounts"], "resourceNames": ["ray-token-bootstrap"],
         "verbs": ["patch"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
         "resourceNames": ["ray-token-bootstrap"], "verbs": ["patch"]},
    ]
    binding = _one(default_manifests, "RoleBinding", namespace="ray")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ray-token-bootstrap"}
    assert binding["subjects"] == subject
    # The notebook namespace: a binding to a ClusterRole (no Role there to leave behind) that the Job deletes.
    copy_role = _one(default_manifests, "ClusterRole")
    assert copy_role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [TOKEN_SECRET], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"],
         "resourceNames": ["ray-token-bootstrap-ray"], "verbs": ["delete"]},
    ]
    copy_binding = _one(default_manifests, "RoleBinding", namespace="jupyterhub")
    assert copy_binding["roleRef"]["kind"] == "ClusterRole"
    assert copy_binding["roleRef"]["name"] == copy_role["metadata"]["name"]
    assert copy_binding["subjects"] == subject
    assert not [m for m in default_manifests if m["kind"] == "ClusterRoleBinding"]


def test_a_team_cluster_lives_in_its_namespace_and_copies_its_token_under_its_own_name():
    m = _synth(namespace="ray-alpha", token_copies={"jupyterhub": "ray-auth-token-alpha"})
    assert {o["metadata"].get("namespace") for o in m} == {None, "ray-alpha", "jupyterhub"}
    assert _one(m, "Namespace")["metadata"]["name"] == "ray-alpha"
    assert _ray_cluster(m)["metadata"]["namespace"] == "ray-alpha"
    env = {e["name"]: e["value"] for e in _one(m, "Job")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DF_TARGETS"] == "ray-alpha/ray-auth-token,jupyterhub/ray-auth-token-alpha"
    assert _one(m, "RoleBinding", namespace="jupyterhub")["metadata"]["name"] == "ray-token-bootstrap-ray-alpha"
    assert _one(m, "ClusterRole")["rules"][0]["resourceNames"] == ["ray-auth-token-alpha"]
    uris = {e["value"] for t in _pod_templates(m).values() for c in t["spec"]["containers"]
            for e in c.get("env", []) if e["name"] == "DF_CHECKPOINT_URI"}
    assert uris == {f"s3://{BUCKET}/ray-alpha/checkpoints"}


def test_bootstrap_job_uses_the_ray_image_hardened_on_on_demand_nodes(default_manifests):
    job = _one(default_manifests, "Job")
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == IMAGE
    assert c["command"][:2] == ["python", "-c"] and c["command"][2] == BOOTSTRAP_SCRIPT
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["serviceAccountName"] == "ray-token-bootstrap"
    assert pod["nodeSelector"] == {POOL_LABEL_KEY: "on-demand"}
    assert pod["tolerations"] == pool_placement(DEFAULT_ON_DEMAND_POOL)["tolerations"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["DF_TARGETS"] == f"ray/{TOKEN_SECRET},jupyterhub/{TOKEN_SECRET}"
    assert env["DF_SECRET_KEYS"] == f"{TOKEN_KEY},{KUBERAY_TOKEN_KEY}"
    assert env["DF_COPY_BINDING"] == "ray-token-bootstrap-ray" and env["DF_JOB_NAME"] == job["metadata"]["name"]
    assert env["DF_OWN_OBJECTS"] == "RoleBinding/ray-token-bootstrap,Role/ray-token-bootstrap,ServiceAccount/ray-token-bootstrap"
    assert "DF_API_URL" not in env and "DF_SA_DIR" not in env
    assert job["spec"]["ttlSecondsAfterFinished"] > 0 and job["spec"]["backoffLimit"] >= 1


# ------------------------------------------------------------------ the bootstrap script against a fake API server


class _FakeKubeApi(BaseHTTPRequestHandler):
    """The few API server paths the bootstrap calls, on an in-memory store keyed by URL path, with the
    bootstrap's RBAC modelled: a request is allowed while the binding that grants it exists."""

    store: dict[str, dict] = {}
    calls: list[tuple[str, str]] = []
    bearer = "sa-bearer"

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, code, body=None):
        data = json.dumps(body or {}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.bearer}":
            return False
        # The namespace's grant is its bootstrap RoleBinding (own namespace) or copy binding (the others).
        ns = self.path.split("/namespaces/")[1].split("/")[0]
        bindings = [k for k in self.store if f"/namespaces/{ns}/rolebindings/ray-token-bootstrap" in k]
        return bool(bindings)

    def _body(self):
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def do_GET(self):
        self.calls.append(("GET", self.path))
        if not self._authorized():
            return self._reply(403)
        obj = self.store.get(self.path)
        return self._reply(200, obj) if obj else self._reply(404)

    def do_POST(self):
        self.calls.append(("POST", self.path))
        if not self._authorized():
            return self._reply(403)
        body = self._body()
        key = f"{self.path}/{body['metadata']['name']}"
        if key in self.store:
            return self._reply(409)
        assert self.path.endswith("/secrets") and body["type"] == "Opaque"
        assert f"/namespaces/{body['metadata']['namespace']}/" in key
        self.store[key] = body
        return self._reply(201, body)

    def do_DELETE(self):
        self.calls.append(("DELETE", self.path))
        if not self._authorized():
            return self._reply(403)
        return self._reply(200, self.store.pop(self.path)) if self.path in self.store else self._reply(404)

    def do_PATCH(self):
        self.calls.append(("PATCH", self.path))
        if not self._authorized():
            return self._reply(403)
        assert self.headers["Content-Type"] == "application/merge-patch+json"
        if self.path not in self.store:
            return self._reply(404)
        self.store[self.path]["metadata"].update(self._body()["metadata"])
        return self._reply(200, self.store[self.path])


def _rbac_paths(own: str, copies: tuple[str, ...]) -> dict[str, dict]:
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces"
    objects = {f"/api/v1/namespaces/{own}/serviceaccounts/ray-token-bootstrap": {"metadata": {}},
               f"{rbac}/{own}/roles/ray-token-bootstrap": {"metadata": {}},
               f"{rbac}/{own}/rolebindings/ray-token-bootstrap": {"metadata": {}},
               f"/apis/batch/v1/namespaces/{own}/jobs/ray-auth-token-bootstrap": {"metadata": {"uid": "job-uid-1"}}}
    for ns in copies:
        objects[f"{rbac}/{ns}/rolebindings/ray-token-bootstrap-{own}"] = {"metadata": {}}
    return objects


@pytest.fixture()
def fake_api(tmp_path, default_manifests):
    _FakeKubeApi.store, _FakeKubeApi.calls = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKubeApi)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(_FakeKubeApi.bearer + "\n")
    import certifi  # any CA bundle: the fake API is plain HTTP

    (sa / "ca.crt").write_text(pathlib.Path(certifi.where()).read_text())
    # The Job's own environment, as rendered by the chart.
    job_env = {e["name"]: e["value"]
               for e in _one(default_manifests, "Job")["spec"]["template"]["spec"]["containers"][0]["env"]}

    def run(namespaces=("ray", "jupyterhub"), *, grants=True):
        own, copies = namespaces[0], tuple(namespaces[1:])
        if grants:  # the chart's RBAC objects, as applied before the Job
            _FakeKubeApi.store.update(_rbac_paths(own, copies))
        env = {**os.environ, **job_env, "DF_SA_DIR": str(sa), "DF_API_URL": f"http://127.0.0.1:{server.server_port}",
               "DF_TARGETS": ",".join(f"{ns}/{TOKEN_SECRET}" for ns in namespaces),
               "DF_COPY_BINDING": f"ray-token-bootstrap-{own}"}
        return subprocess.run([sys.executable, "-c", BOOTSTRAP_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=60)

    yield run, _FakeKubeApi.store
    server.shutdown()


def _token_of(store, ns):
    data = store[f"/api/v1/namespaces/{ns}/secrets/{TOKEN_SECRET}"]["data"]
    values = {base64.b64decode(v).decode() for v in data.values()}
    assert set(data) == {TOKEN_KEY, KUBERAY_TOKEN_KEY} and len(values) == 1
    return values.pop()


def test_bootstrap_creates_one_token_in_every_namespace_and_is_idempotent(fake_api):
    run, store = fake_api
    first = run()
    assert first.returncode == 0, first.stderr
    token = _token_of(store, "ray")
    assert len(token) >= 32 and _token_of(store, "jupyterhub") == token
    assert token not in first.stdout + first.stderr
    again = run()
    assert again.returncode == 0, again.stderr
    assert _token_of(store, "ray") == token and "present" in again.stdout


def test_bootstrap_gives_up_its_rights_when_done(fake_api):
    """After the copies: the notebook namespace's binding is gone, and the Job owns the bootstrap's service
    account, Role and RoleBinding in its own namespace (the garbage collector deletes them with the Job)."""
    run, store = fake_api
    result = run()
    assert result.returncode == 0, result.stderr
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces"
    assert f"{rbac}/jupyterhub/rolebindings/ray-token-bootstrap-ray" not in store
    owner = [{"apiVersion": "batch/v1", "kind": "Job", "name": "ray-auth-token-bootstrap", "uid": "job-uid-1"}]
    for path in (f"/api/v1/namespaces/ray/serviceaccounts/ray-token-bootstrap", f"{rbac}/ray/roles/ray-token-bootstrap",
                 f"{rbac}/ray/rolebindings/ray-token-bootstrap"):
        assert store[path]["metadata"]["ownerReferences"] == owner, path
    # The copy namespace's binding goes last: a retry after any earlier failure still has every right.
    assert _FakeKubeApi.calls[-1] == ("DELETE", f"{rbac}/jupyterhub/rolebindings/ray-token-bootstrap-ray")


def test_bootstrap_without_its_grants_fails_loudly(fake_api):
    run, _ = fake_api
    result = run(grants=False)
    assert result.returncode != 0 and "HTTP 403" in result.stderr


def test_bootstrap_copies_the_existing_ray_token(fake_api):
    run, store = fake_api
    assert run(("ray",)).returncode == 0
    token = _token_of(store, "ray")
    result = run(("ray", "jupyterhub"))
    assert result.returncode == 0, result.stderr
    assert _token_of(store, "jupyterhub") == token


def test_bootstrap_fails_loudly_on_a_diverging_copy(fake_api):
    run, store = fake_api
    assert run(("jupyterhub",)).returncode == 0
    assert run(("notebooks",)).returncode == 0  # a different random token
    result = run(("ray", "jupyterhub", "notebooks"))
    assert result.returncode != 0
    assert "different token" in result.stderr and _token_of(store, "notebooks") not in result.stderr


# ------------------------------------------------------------------ argument validation


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"checkpoint_bucket": ""}, "checkpoint_bucket"),
        ({"checkpoint_bucket": "Bad_Bucket"}, "not a valid S3 bucket name"),
        ({"image": "rayproject/ray:2.60.0-py311-cpu"}, "Docker Hub"),
        ({"image": "docker.io/rayproject/ray:2.60.0-py311-cpu"}, "Docker Hub"),
        ({"image": "registry-1.docker.io/library/python:3.11"}, "Docker Hub"),
        ({"image": "python:3.11"}, "Docker Hub"),
        ({"image": "quay.io/example/ray:latest"}, "pinned"),
        ({"image": "quay.io/example/ray"}, "pinned"),
        ({"image": "quay.io/mirror/rayproject/ray:2.41.0-py311-cpu"}, "Ray 2.60.0"),
        ({"image": "quay.io/mirror/rayproject/ray:2.60.0-py39-cpu"}, "Python 3.11"),
        ({"gpu_image": GPU_IMAGE}, "no gpu_pool"),
        ({"gpu_pool": DEFAULT_GPU_POOL, "gpu_image": None}, "gpu_image is required"),
        ({"head_pool": DEFAULT_SPOT_POOL}, "Spot"),
        ({"worker_pool": DEFAULT_GPU_POOL}, "use gpu_pool"),
        ({"gpu_pool": DEFAULT_SPOT_POOL}, "no GPU instance type"),
        ({"max_workers": 0}, "max_workers"),
        ({"max_workers": True}, "max_workers"),
        ({"idle_timeout_seconds": 1}, "idle_timeout_seconds"),
        ({"worker_termination_grace_seconds": 300}, "worker_termination_grace_seconds"),
        ({"worker_cpu": 0}, "worker_cpu"),
        ({"worker_memory_gib": 2.5}, "worker_memory_gib"),
        ({"worker_cpu": 16}, "fits no instance type of pool 'spot'"),
        ({"head_memory_gib": 32}, "head pod"),
        ({"gpu_pool": DEFAULT_GPU_POOL, "gpus_per_worker": 2}, "gpu_worker pod"),
        ({"gpu_pool": DEFAULT_GPU_POOL, "gpu_max_workers": 0}, "gpu_max_workers"),
        ({"namespace": "Ray_Team"}, "not a valid namespace name"),
        ({"token_copies": {"ray": "ray-auth-token"}}, "other than the RayCluster's own"),
        ({"token_copies": {"Not_A_Namespace": "x"}}, "other than the RayCluster's own"),
        ({"token_copies": {"jupyterhub": "Bad_Name"}}, "not a valid Secret name"),
    ],
)
def test_bad_arguments_raise_a_clear_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _chart(cdk8s.Testing.app(), "bad", **kwargs)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValueError) as err:
        RayClusterSettings(max_workers=0, head_pool=DEFAULT_SPOT_POOL, worker_cpu=0)
    assert all(word in str(err.value) for word in ("worker_cpu", "max_workers", "Spot"))
    with pytest.raises(ValueError) as err:
        RayClusterChart(cdk8s.Testing.app(), "bad", settings=RayClusterSettings(), checkpoint_bucket="",
                        image="rayproject/ray:2.60.0-py311-cpu")
    assert all(word in str(err.value) for word in ("checkpoint_bucket", "Docker Hub"))
