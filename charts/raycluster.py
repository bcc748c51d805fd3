"""One Ray cluster: its namespace, service account, the ``RayCluster`` and the auth-token bootstrap Job.

A cdk8s chart of raw ``ApiObject``s for KubeRay 1.7.0 (``ray.io/v1``, CRDs vendored in ``schemas/kuberay/``) and
core Kubernetes kinds. It takes explicit arguments only; nothing here imports the stacks. The namespace is ``ray``
for the shared cluster, ``ray-<team>`` for a team's (charts/ray_teams.py); below, ``<ns>``.

What it builds, in apply order (explicit cdk8s dependencies):

1. ``Namespace/<ns>`` (Pod Security ``baseline`` enforced, ``restricted`` warned/audited).
2. ``ServiceAccount/ray`` (the Ray pods; the stack binds an AWS role to it through EKS Pod Identity) and
   ``ServiceAccount/ray-token-bootstrap``.
3. The bootstrap's rights: in ``<ns>`` a ``Role`` + ``RoleBinding`` ``ray-token-bootstrap`` (``get`` on the Secret
   ``ray-auth-token``, ``create`` on Secrets — ``create`` cannot be narrowed by name in Kubernetes RBAC — and what
   it needs to hand its own objects to the Job); in every namespace of ``token_copies`` a ``RoleBinding``
   ``ray-token-bootstrap-<ns>`` to the ``ClusterRole`` ``dynamic-factory:ray-token-bootstrap:<ns>`` (``get`` on
   the copy, ``create`` on Secrets, ``delete`` on that binding). Those namespaces are *not* created here
   (``jupyterhub`` belongs to the JupyterHub chart): they must exist before this chart is applied.
4. ``Job/ray-auth-token-bootstrap``: creates the Secret in ``<ns>`` and its copies with one random token (see
   *Token* below), then gives up its rights: it deletes its binding in the other namespaces and makes the Job the
   owner of its service account, Role and RoleBinding, which Kubernetes' garbage collector deletes with the Job
   (:data:`BOOTSTRAP_JOB_TTL_SECONDS` after it finished).
5. ``RayCluster/ray``.

Ray cluster shape:

* Head on ``head_pool`` (on-demand; :func:`charts.karpenter_nodes.pool_placement` gives nodeSelector +
  toleration), ``num-cpus: "0"`` so no task or actor lands on it, annotated ``karpenter.sh/do-not-disrupt``.
  KubeRay names its Service ``ray-head-svc`` (``<cluster>-head-svc``); ``serviceType: ClusterIP``: the dashboard
  and Jobs API (8265), GCS (6379) and client (10001) ports are reachable only inside the cluster.
* Worker group ``cpu`` on ``worker_pool`` (Spot first), ``minReplicas: 0``; optional group ``gpu`` on
  ``gpu_pool`` with ``nvidia.com/gpu`` resources, only when ``gpu_pool`` is given.
* In-tree autoscaler v2 (``enableInTreeAutoscaling`` + ``autoscalerOptions.version: v2``). KubeRay 1.7 rejects
  a cluster that *also* sets the old ``RAY_enable_autoscaler_v2`` env var on the head, and requires
  ``restartPolicy`` ``Never`` (or unset) on every Ray pod with v2: set to ``Never`` explicitly.
* Every Ray container: requests == limits (Guaranteed QoS), ``/dev/shm`` as a memory ``emptyDir`` (Ray's object
  store lives there; the container runtime's default is 64 MiB), non-root (the Ray image's user ``ray`` is uid
  1000, gid 100), no privilege escalation, all capabilities dropped, RuntimeDefault seccomp. A worker leaves
  through a preStop that drains its node (``charts/ray_prestop.py``: Ray Train keeps training until the
  deadline and counts a preemption) inside its termination grace period, with ``ray start --block`` as PID 1;
  the head leaves with ``ray stop``. The root filesystem
  of Ray containers stays writable: Ray writes ``/tmp/ray`` and runtime_env installs under ``$HOME``.
* ``DF_CHECKPOINT_URI=s3://<checkpoint_bucket>/<ns>/checkpoints`` in every Ray container (the bucket may be a CDK
  token; it resolves at deploy time): the Ray pods' AWS role may write under ``<ns>/`` only.
* No pod automounts a Kubernetes token: a job runs code in the head's Ray container. The head pod's token is
  projected into the autoscaler container alone.

Token (Ray token authentication, Ray >= 2.52):

* ``spec.authOptions: {mode: token, secretName: ray-auth-token}``. With ``mode: token`` alone KubeRay generates a
  per-cluster Secret itself; with ``secretName`` it skips that and reads the token from the named Secret's data
  key ``auth_token`` (:data:`KUBERAY_TOKEN_KEY`), injecting ``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN`` into all Ray
  containers. A single named Secret is what the notebooks need: they get a copy in their own namespace.
* The Secret therefore carries the same token under two keys: ``token`` (:data:`TOKEN_KEY`, the platform's
  contract, read by the notebooks) and ``auth_token`` (what KubeRay reads).
* The token is generated *in the cluster* by the bootstrap Job (Python's ``secrets`` module, in the pinned Ray
  image, talking to the API server with its service-account token and CA; no kubectl image). It never appears
  in a template. Idempotent: the value of the first namespace (``ray`` first) that already has the Secret is
  reused, missing copies are created, and a copy that differs makes the Job fail with a message (the Job may
  only create, never overwrite; delete the stale Secret to let it be recreated).
* Ray pods wait (``CreateContainerConfigError``, retried by the kubelet) until the Secret exists.
* The Job is deleted :data:`BOOTSTRAP_JOB_TTL_SECONDS` after it finishes: a Job's pod template is immutable, so
  re-applying a changed Job while the old one still exists fails; after the TTL a re-apply simply runs it again
  (harmlessly, it is idempotent), with its rights re-applied for that run.
* Rotation never goes through a missing Secret: ``make rotate-ray-token`` (tools/rotate_ray_token.py) replaces the
  Secrets in place with the operator's credentials.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

import aws_cdk as cdk
import cdk8s
from constructs import Construct

import versions
from charts.metrics import RayMetricsWiring
from charts.k8s import api_object, image_registry
from charts.log_shipping import ray_pod_log_wiring
from charts.ray_prestop import PRESTOP_DRAIN_SCRIPT
from charts.karpenter_nodes import (
    DEFAULT_ON_DEMAND_POOL,
    DEFAULT_SPOT_POOL,
    INSTANCE_TYPES,
    NodePoolSettings,
    pool_placement,
    reachable_instance_types,
)

__all__ = [
    "AUTOSCALER_CPU",
    "AUTOSCALER_MEMORY",
    "BOOTSTRAP_JOB",
    "BOOTSTRAP_JOB_TTL_SECONDS",
    "BOOTSTRAP_NAME",
    "CHECKPOINT_ENV",
    "CHECKPOINT_PREFIX",
    "CLIENT_PORT",
    "CLUSTER_NAME",
    "CPU_GROUP",
    "DASHBOARD_PORT",
    "DASHBOARD_URL",
    "DEFAULT_TOKEN_COPIES",
    "GCS_PORT",
    "GPU_GROUP",
    "HEAD_SERVICE",
    "KUBERAY_TOKEN_KEY",
    "NAMESPACE",
    "RAY_GID",
    "RAY_UID",
    "RAY_VERSION",
    "SERVICE_ACCOUNT",
    "TOKEN_KEY",
    "TOKEN_SECRET",
    "RayClusterChart",
    "RayClusterSettings",
]

# ---------------------------------------------------------------------------------------------------------
# Contract: other charts and stacks import these names.
# ---------------------------------------------------------------------------------------------------------
NAMESPACE = "ray"
CLUSTER_NAME = "ray"
HEAD_SERVICE = f"{CLUSTER_NAME}-head-svc"  # KubeRay names the head Service <RayCluster name>-head-svc
SERVICE_ACCOUNT = "ray"
DASHBOARD_PORT = 8265  # dashboard + Ray Jobs API
GCS_PORT = 6379
CLIENT_PORT = 10001
DASHBOARD_URL = f"http://{HEAD_SERVICE}.{NAMESPACE}.svc.cluster.local:{DASHBOARD_PORT}"
TOKEN_SECRET = "ray-auth-token"
TOKEN_KEY = "token"  # the platform's key (notebooks read it)
KUBERAY_TOKEN_KEY = "auth_token"  # the key KubeRay 1.7 reads from authOptions.secretName (same value)
NOTEBOOK_NAMESPACE = "jupyterhub"
# Where the shared cluster's token is copied (namespace -> Secret name): the notebooks' namespace.
DEFAULT_TOKEN_COPIES = {NOTEBOOK_NAMESPACE: TOKEN_SECRET}
CHECKPOINT_ENV = "DF_CHECKPOINT_URI"
CHECKPOINT_PREFIX = "checkpoints"
CPU_GROUP = "cpu"
GPU_GROUP = "gpu"

# The Ray image is the platform's own (images/ray, built as a CDK image asset by the Ray stack): Ray 2.60.0 on
# Python 3.11 (DESIGN.md §2), the job's pinned packages and the job itself; it runs as user "ray" (uid 1000,
# primary group "users", gid 100), like the upstream Ray images.
RAY_VERSION = versions.RAY_VERSION  # one setting for the Ray image, the notebook image and jobs/
RAY_UID = 1000
RAY_GID = 100

BOOTSTRAP_NAME = "ray-token-bootstrap"  # ServiceAccount, Roles, RoleBindings
BOOTSTRAP_JOB = "ray-auth-token-bootstrap"
BOOTSTRAP_JOB_TTL_SECONDS = 600

# Autoscaler sidecar in the head pod, requests == limits. Half KubeRay's default CPU (500m): the v2 autoscaler
# polls every few seconds and at this platform's scale (a few worker groups, tens of nodes) uses a few
# millicores, while 500m left the system node that holds the head with about 10m of CPU to spare (the
# first-boot model's headroom check, tools/boot).
AUTOSCALER_CPU = "250m"
AUTOSCALER_MEMORY = "512Mi"
_AUTOSCALER_CPU_CORES = 0.25
_AUTOSCALER_MEMORY_GIB = 0.5

_DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9._-](:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")
_UNPINNED_TAGS = ("latest", "nightly")
# Share of an instance's memory assumed allocatable to pods (kube-reserved, eviction threshold, daemonsets).
_ALLOCATABLE_MEMORY_SHARE = 0.85

_DROP_ALL: dict[str, Any] = {"drop": ["ALL"]}
# /tmp/ray of every Ray container (and the head's autoscaler) on a disk emptyDir the log shipper tails
# (charts/log_shipping.py): the job driver's and the workers' log files outlive the pods.
_LOGS = ray_pod_log_wiring()
# A Ray worker's way out (charts/ray_prestop.py): its preStop drains the node with a deadline this much before the
# pod's grace period ends (`ray start` then stops its processes, up to about a second each) and waits at most
# PRESTOP_DRAIN_SLACK_SECONDS past it.
WORKER_DRAIN_MARGIN_SECONDS = 10
PRESTOP_DRAIN_SLACK_SECONDS = 1
GRACEFUL_SHUTDOWN_DRAIN_ENV = "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"
# KubeRay 1.7 keeps a container's own command under this pod annotation (ray-operator/controllers/ray/utils/constant.go).
RAY_OVERWRITE_CMD_ANNOTATION = "ray.io/overwrite-container-cmd"


# The head pod's service-account token, mounted into the autoscaler container only (the pod does not automount
# it): the same projection the kubelet would make for an automounted token (token, cluster CA, namespace).
AUTOSCALER_TOKEN_VOLUME = "autoscaler-api-token"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
AUTOSCALER_TOKEN_MOUNT = {"name": AUTOSCALER_TOKEN_VOLUME, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}


def _autoscaler_token_volume() -> dict[str, Any]:
    return {
        "name": AUTOSCALER_TOKEN_VOLUME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                # 3600, not the kubelet's 3607: that value marks legacy tokens the API server extends to a year
                # (EKS: 90 days). Ray 2.60's autoscaler re-reads the file, which the kubelet refreshes.
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    }


def namespace_manifest(namespace: str) -> dict[str, Any]:
    """A Ray namespace: Pod Security ``baseline`` enforced (KubeRay's injected containers are not all guaranteed to
    satisfy ``restricted``), ``restricted`` violations reported."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
        },
    }


def worker_drain_seconds(grace_seconds: int) -> int:
    """Seconds from a worker's preStop to the drain deadline it announces, for a pod grace period of
    ``grace_seconds``."""
    return max(1, grace_seconds - WORKER_DRAIN_MARGIN_SECONDS)


def _container_security_context(*, read_only_root: bool = False) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": dict(_DROP_ALL),
        "privileged": False,
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "runAsGroup": RAY_GID,
    }
    if read_only_root:
        ctx["readOnlyRootFilesystem"] = True
    return ctx


def _pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "runAsGroup": RAY_GID,
        "fsGroup": RAY_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(cpu: int, memory_gib: int, gpus: int = 0) -> dict[str, Any]:
    quantities = {"cpu": str(cpu), "memory": f"{memory_gib}Gi"}
    if gpus:
        quantities["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(quantities), "limits": dict(quantities)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# The bootstrap script. Runs in the pinned Ray image (Python 3.11, standard library only). Prints names, never the
# token. Environment: DF_TARGETS (comma list of namespace/secret-name; the first is the reference copy, in the
# RayCluster's namespace), DF_SECRET_KEYS (comma list; all get the same value). When it has made sure of every
# copy it removes its own rights: DF_COPY_BINDING (the RoleBinding it deletes in every other namespace) and, in
# its own namespace, DF_OWN_OBJECTS (comma list of kind/name: its ServiceAccount, Role and RoleBinding) are
# handed to the Job DF_JOB_NAME as owner, so that Kubernetes' garbage collector deletes them with the Job (its
# TTL). DF_SA_DIR / DF_API_URL override the service-account directory and the API server URL (tests run the script
# against a fake API server; the Job sets neither).
BOOTSTRAP_SCRIPT = r'''
import base64, json, os, secrets, ssl, sys, urllib.error, urllib.request
SA = os.environ.get("DF_SA_DIR") or "/var/run/secrets/kubernetes.io/serviceaccount"
API = os.environ.get("DF_API_URL") or "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"],
                                                          os.environ["KUBERNETES_SERVICE_PORT"])
TARGETS = [tuple(t.split("/", 1)) for t in os.environ["DF_TARGETS"].split(",")]
KEYS = os.environ["DF_SECRET_KEYS"].split(",")
CTX = ssl.create_default_context(cafile=SA + "/ca.crt")
with open(SA + "/token") as fh:
    BEARER = fh.read().strip()
PATHS = {"ServiceAccount": "/api/v1/namespaces/%s/serviceaccounts/%s",
         "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/%s/roles/%s",
         "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/%s/rolebindings/%s"}

def call(method, path, body=None, content_type="application/json"):
    req = urllib.request.Request(API + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + BEARER, "Accept": "application/json",
                                          "Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, context=CTX, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, None

def read(ns, name):
    status, obj = call("GET", "/api/v1/namespaces/%s/secrets/%s" % (ns, name))
    if status == 404:
        return None
    if status != 200:
        sys.exit("GET secret %s/%s: HTTP %s" % (ns, name, status))
    data = obj.get("data") or {}
    values = {base64.b64decode(data[k]).decode() if k in data else None for k in KEYS}
    if len(values) != 1 or None in values:
        sys.exit("secret %s/%s must hold the same non-empty value under keys %s; delete it to let this Job "
                 "recreate it" % (ns, name, KEYS))
    return values.pop()

found = {t: read(*t) for t in TARGETS}
known = [found[t] for t in TARGETS if found[t]]
token = known[0] if known else secrets.token_urlsafe(32)
for ns, name in TARGETS:
    if found[(ns, name)] is None:
        encoded = base64.b64encode(token.encode()).decode()
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {"app.kubernetes.io/managed-by": "ray-token-bootstrap"}},
                "data": {k: encoded for k in KEYS}}
        status, _ = call("POST", "/api/v1/namespaces/%s/secrets" % ns, body)
        if status == 201:
            print("created %s/%s" % (ns, name))
            continue
        if status != 409:
            sys.exit("create secret %s/%s: HTTP %s" % (ns, name, status))
        found[(ns, name)] = read(ns, name)  # created concurrently: check it below
    if found[(ns, name)] != token:
        sys.exit("%s/%s holds a different token than %s/%s: delete the stale copy and re-run this Job"
                 % ((ns, name) + TARGETS[0]))
    print("%s/%s present" % (ns, name))

# Every copy is in place: give up the rights. Own namespace first: the Job owns its service account, Role and
# RoleBinding from now on, and they go with it (its TTL). Then the other namespaces' bindings, as the very last
# calls: if one fails, a retry of this pod still has every right it needs.
own = TARGETS[0][0]
job = os.environ.get("DF_JOB_NAME")
if job:
    status, obj = call("GET", "/apis/batch/v1/namespaces/%s/jobs/%s" % (own, job))
    if status != 200:
        sys.exit("GET job %s/%s: HTTP %s" % (own, job, status))
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": obj["metadata"]["uid"]}
    for item in filter(None, os.environ.get("DF_OWN_OBJECTS", "").split(",")):
        kind, name = item.split("/", 1)
        status, _ = call("PATCH", PATHS[kind] % (own, name), {"metadata": {"ownerReferences": [owner]}},
                         "application/merge-patch+json")
        if status != 200:
            sys.exit("hand %s %s/%s to the Job: HTTP %s" % (kind, own, name, status))
        print("%s %s/%s goes with job %s" % (kind, own, name, job))
binding = os.environ.get("DF_COPY_BINDING")
for ns in sorted({ns for ns, _ in TARGETS[1:]} - {own}) if binding else ():
    status, _ = call("DELETE", PATHS["RoleBinding"] % (ns, binding))
    if status not in (200, 202, 404):
        sys.exit("delete rolebinding %s/%s: HTTP %s" % (ns, binding, status))
    print("removed rolebinding %s/%s" % (ns, binding))
'''.strip()


def pod_fit_problem(label: str, pool: NodePoolSettings, cpu: int, memory_gib: int, *, gpus: int = 0,
                    sidecar: bool = False) -> str | None:
    """Why a Ray pod of this size fits no instance type ``pool`` can launch, or None when it fits.

    ``sidecar``: the head's autoscaler container comes on top. Used by the chart and by the config
    (so a bad combination is refused before anything is built).
    """
    extra_cpu, extra_mem = (_AUTOSCALER_CPU_CORES, _AUTOSCALER_MEMORY_GIB) if sidecar else (0.0, 0.0)
    types = reachable_instance_types(pool)
    fits = [t for t in types
            if cpu + extra_cpu < INSTANCE_TYPES[t].vcpus
            and memory_gib + extra_mem <= INSTANCE_TYPES[t].memory_gib * _ALLOCATABLE_MEMORY_SHARE
            and gpus <= INSTANCE_TYPES[t].gpus]
    if fits:
        return None
    largest = max(types, key=lambda t: (INSTANCE_TYPES[t].vcpus, INSTANCE_TYPES[t].memory_gib))
    info = INSTANCE_TYPES[largest]
    return (
        f"{label} pod ({cpu} CPU, {memory_gib} GiB{f', {gpus} GPU' if gpus else ''}"
        f"{' + the autoscaler sidecar' if sidecar else ''}) fits no instance type of pool {pool.name!r} "
        f"(largest: {largest}, {info.vcpus} vCPUs, {info.memory_gib} GiB, {info.gpus} GPU; about "
        f"{int(_ALLOCATABLE_MEMORY_SHARE * 100)}% of memory and less than all vCPUs are allocatable)"
    )


@dataclasses.dataclass(frozen=True)
class RayClusterSettings:
    """The shape of the Ray cluster, validated once when it is built (every problem in one ``ValueError``).

    :param head_pool: pool of the head and the bootstrap Job; must not allow Spot capacity.
    :param worker_pool: pool of the ``cpu`` worker group.
    :param gpu_pool: pool of the optional ``gpu`` worker group (None: no GPU group); must launch GPU types.
    :param max_workers / gpu_max_workers: ``maxReplicas`` of the ``cpu`` / ``gpu`` groups (``minReplicas`` is 0).
    :param worker_cpu / worker_memory_gib, head_cpu / head_memory_gib, gpu_worker_cpu / gpu_worker_memory_gib /
        gpus_per_worker: per-pod resources (requests == limits); must fit an instance type of the pool.
    :param idle_timeout_seconds: the autoscaler removes a worker idle this long.
    :param worker_termination_grace_seconds: how long a reclaimed worker has to leave (below Spot's 2-minute notice).
    :param worker_do_not_disrupt: annotate workers ``karpenter.sh/do-not-disrupt`` so that Karpenter's
        consolidation never evicts a busy worker (the Ray autoscaler removes idle ones; the emptied node is then
        consolidated). Spot interruptions still drain the node.
    """

    head_pool: NodePoolSettings = DEFAULT_ON_DEMAND_POOL
    worker_pool: NodePoolSettings = DEFAULT_SPOT_POOL
    gpu_pool: NodePoolSettings | None = None
    max_workers: int = 8
    worker_cpu: int = 3
    worker_memory_gib: int = 12
    head_cpu: int = 2
    head_memory_gib: int = 8
    idle_timeout_seconds: int = 120
    gpu_max_workers: int = 2
    gpu_worker_cpu: int = 3
    gpu_worker_memory_gib: int = 12
    gpus_per_worker: int = 1
    worker_termination_grace_seconds: int = 90
    worker_do_not_disrupt: bool = True

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ValueError("RayClusterSettings: " + "; ".join(problems))

    @property
    def has_gpu_group(self) -> bool:
        return self.gpu_pool is not None

    def _problems(self) -> list[str]:
        p: list[str] = []
        pools = {"head_pool": self.head_pool, "worker_pool": self.worker_pool}
        if self.gpu_pool is not None:
            pools["gpu_pool"] = self.gpu_pool
        for label, pool in pools.items():
            if not isinstance(pool, NodePoolSettings):
                p.append(f"{label} must be a NodePoolSettings, got {pool!r}")
        head_pool, worker_pool, gpu_pool = self.head_pool, self.worker_pool, self.gpu_pool
        if isinstance(head_pool, NodePoolSettings) and "spot" in head_pool.capacity_types:
            p.append(f"head_pool {head_pool.name!r} allows Spot capacity: the head (GCS, autoscaler, Jobs API) is the "
                     "cluster's single point of failure and must run on on-demand capacity")
        if isinstance(worker_pool, NodePoolSettings) and worker_pool.gpu:
            p.append(f"worker_pool {worker_pool.name!r} can launch GPU instance types: use gpu_pool for GPU workers")
        if isinstance(gpu_pool, NodePoolSettings) and not gpu_pool.gpu:
            p.append(f"gpu_pool {gpu_pool.name!r} launches no GPU instance type")
        for label, value, low, high in (
            ("max_workers", self.max_workers, 1, 1000),
            ("idle_timeout_seconds", self.idle_timeout_seconds, 10, 86400),
            # Below the 2-minute Spot interruption notice.
            ("worker_termination_grace_seconds", self.worker_termination_grace_seconds, 10, 110),
        ):
            if not _is_int(value) or not low <= value <= high:
                p.append(f"{label} {value!r} must be an integer from {low} to {high}")
        sizes = [("head", head_pool, self.head_cpu, self.head_memory_gib, 0, True),
                 ("worker", worker_pool, self.worker_cpu, self.worker_memory_gib, 0, False)]
        if gpu_pool is not None:
            if not _is_int(self.gpu_max_workers) or not 1 <= self.gpu_max_workers <= 1000:
                p.append(f"gpu_max_workers {self.gpu_max_workers!r} must be an integer from 1 to 1000")
            if not _is_int(self.gpus_per_worker) or self.gpus_per_worker < 1:
                p.append(f"gpus_per_worker {self.gpus_per_worker!r} must be a positive integer")
            sizes.append(("gpu_worker", gpu_pool, self.gpu_worker_cpu, self.gpu_worker_memory_gib,
                          self.gpus_per_worker if _is_int(self.gpus_per_worker) else 0, False))
        for label, pool, cpu, memory, gpus, sidecar in sizes:
            bad = False
            for attr, value in ((f"{label}_cpu", cpu), (f"{label}_memory_gib", memory)):
                if not _is_int(value) or value < 1:
                    p.append(f"{attr} {value!r} must be a positive integer")
                    bad = True
            if bad or not isinstance(pool, NodePoolSettings):
                continue
            problem = pod_fit_problem(label, pool, cpu, memory, gpus=gpus, sidecar=sidecar)
            if problem:
                p.append(problem)
        return p


class RayClusterChart(cdk8s.Chart):
    """Namespace ``ray``, service account ``ray``, the token bootstrap Job + RBAC, and ``RayCluster/ray``.

    :param settings: the cluster's shape (:class:`RayClusterSettings`, already validated).
    :param checkpoint_bucket: S3 bucket name for checkpoints/results (a CDK token is fine); exported to every Ray
        container as ``DF_CHECKPOINT_URI=s3://<bucket>/checkpoints``.
    :param image: the Ray image (head, ``cpu`` workers, autoscaler, bootstrap Job): in practice the platform's own
        image asset (a CDK token); a literal must be pinned (tag or digest) and must not come from Docker Hub.
    :param gpu_image: image of the ``gpu`` group; required exactly when ``settings`` has a GPU pool.
    :param namespace: the namespace of this RayCluster (``ray``, or ``ray-<team>`` with teams: charts/ray_teams.py).
    :param token_copies: other namespaces that get a copy of the token, namespace -> Secret name (they must exist
        before the chart is applied).
    :param create_namespace: include the Namespace object (False: it is applied before, :func:`namespace_manifest`).
    :param metrics: with metrics on (charts/metrics.py), the head tells Ray's dashboard where Grafana and
        Prometheus are, and the Ray containers declare the ports Prometheus scrapes.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: RayClusterSettings,
        checkpoint_bucket: str,
        image: str,
        gpu_image: str | None = None,
        namespace: str = NAMESPACE,
        token_copies: Mapping[str, str] | None = None,
        create_namespace: bool = True,
        metrics: RayMetricsWiring | None = None,
    ) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self._metrics = metrics
        token_copies = dict(DEFAULT_TOKEN_COPIES if token_copies is None else token_copies)
        self._validate(settings=settings, checkpoint_bucket=checkpoint_bucket, image=image, gpu_image=gpu_image,
                       namespace=namespace, token_copies=token_copies)
        self.settings = settings
        self.ray_namespace = namespace
        # The RayCluster's own Secret first: the source of truth for the copies.
        self.token_targets = ((namespace, TOKEN_SECRET),) + tuple(sorted(token_copies.items()))
        # The checkpoint prefix starts with the namespace: the Ray pods' AWS role may write there only
        # (cdk_constructs/ray_storage.py, a condition on the Pod Identity session tag kubernetes-namespace).
        self.checkpoint_uri = f"s3://{checkpoint_bucket}/{namespace}/{CHECKPOINT_PREFIX}"
        self._image = image
        self._gpu_image = gpu_image
        self._head_pool = settings.head_pool

        # The stack creates the namespace on its own (the KubeRay operator's Roles need it first): then no
        # Namespace object here.
        self.namespace_object = (api_object(self, "Namespace", namespace_manifest(namespace))
                                 if create_namespace else None)
        self.service_account = self._in_namespace(
            api_object(
                self,
                "ServiceAccount",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace}},
            )
        )
        self.bootstrap_job = self._token_bootstrap()
        self.ray_cluster = api_object(
            self,
            "RayCluster",
            {
                "apiVersion": "ray.io/v1",
                "kind": "RayCluster",
                "metadata": {"name": CLUSTER_NAME, "namespace": namespace},
                "spec": self._ray_cluster_spec(),
            },
        )
        self._in_namespace(self.ray_cluster)
        # The Ray pods run as ServiceAccount "ray" (KubeRay does not create it when the head template names it).
        self.ray_cluster.add_dependency(self.service_account)
        # The pods read the token Secret that the Job creates: start the Job first (the pods retry until it exists).
        self.ray_cluster.add_dependency(self.bootstrap_job)

    # -- helpers -------------------------------------------------------------------------------------------

    @property
    def copy_binding(self) -> str:
        """The bootstrap's RoleBinding in the namespaces that get a copy (several clusters copy to one namespace)."""
        return f"{BOOTSTRAP_NAME}-{self.ray_namespace}"

    @property
    def copy_cluster_role(self) -> str:
        return f"dynamic-factory:{BOOTSTRAP_NAME}:{self.ray_namespace}"

    def _in_namespace(self, obj: cdk8s.ApiObject) -> cdk8s.ApiObject:
        # A namespaced object is rejected until its namespace exists.
        if self.namespace_object is not None:
            obj.add_dependency(self.namespace_object)
        return obj

    # -- validation ----------------------------------------------------------------------------------------

    @staticmethod
    def _validate(*, settings, checkpoint_bucket, image, gpu_image, namespace, token_copies) -> None:
        p: list[str] = []
        if not isinstance(namespace, str) or not _DNS1123_LABEL_RE.match(namespace) or len(namespace) > 63:
            p.append(f"namespace {namespace!r} is not a valid namespace name (a DNS label)")
        for ns, name in token_copies.items():
            if not isinstance(ns, str) or not _DNS1123_LABEL_RE.match(ns) or len(ns) > 63 or ns == namespace:
                p.append(f"token_copies: {ns!r} is not a namespace other than the RayCluster's own")
            if not isinstance(name, str) or not _DNS1123_SUBDOMAIN_RE.match(name) or len(name) > 253:
                p.append(f"token_copies: {name!r} (in {ns!r}) is not a valid Secret name")
        if not isinstance(settings, RayClusterSettings):
            p.append(f"settings must be a RayClusterSettings, got {settings!r}")
        if not isinstance(checkpoint_bucket, str) or not checkpoint_bucket:
            p.append("checkpoint_bucket must be a non-empty bucket name (a CDK token is fine)")
        elif not cdk.Token.is_unresolved(checkpoint_bucket) and (
            not _BUCKET_RE.match(checkpoint_bucket) or ".." in checkpoint_bucket
        ):
            p.append(f"checkpoint_bucket {checkpoint_bucket!r} is not a valid S3 bucket name")
        p.extend(_image_problems("image", image))
        has_gpu = isinstance(settings, RayClusterSettings) and settings.has_gpu_group
        if gpu_image is not None:
            p.extend(_image_problems("gpu_image", gpu_image))
            if not has_gpu:
                p.append("gpu_image is set but the settings have no gpu_pool (no GPU group to use it)")
        elif has_gpu:
            p.append("gpu_image is required with a gpu_pool (the GPU group runs the CUDA build of the Ray image)")
        if p:
            raise ValueError("RayClusterChart: " + "; ".join(p))

    # -- token bootstrap -----------------------------------------------------------------------------------

    def _token_bootstrap(self) -> cdk8s.ApiObject:
        own = self.ray_namespace
        rbac_api = "rbac.authorization.k8s.io"
        bootstrap_sa = self._in_namespace(
            api_object(
                self,
                "BootstrapServiceAccount",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": BOOTSTRAP_NAME, "namespace": own}},
            )
        )
        subject = {"kind": "ServiceAccount", "name": BOOTSTRAP_NAME, "namespace": own}
        # Own namespace: a Role with what the Job needs there, including handing its service account, Role and
        # RoleBinding to the Job (ownerReferences), so that they are deleted with it.
        role = self._in_namespace(api_object(self, "BootstrapRole", {
            "apiVersion": f"{rbac_api}/v1",
            "kind": "Role",
            "metadata": {"name": BOOTSTRAP_NAME, "namespace": own},
            "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [TOKEN_SECRET], "verbs": ["get"]},
                # RBAC cannot restrict create by name (the name is in the body): create any, update none.
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
                {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": [BOOTSTRAP_JOB], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["serviceaccounts"], "resourceNames": [BOOTSTRAP_NAME],
                 "verbs": ["patch"]},
                {"apiGroups": [rbac_api], "resources": ["roles", "rolebindings"], "resourceNames": [BOOTSTRAP_NAME],
                 "verbs": ["patch"]},
            ],
        }))
        binding = self._in_namespace(api_object(self, "BootstrapRoleBinding", {
            "apiVersion": f"{rbac_api}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": BOOTSTRAP_NAME, "namespace": own},
            "roleRef": {"apiGroup": rbac_api, "kind": "Role", "name": BOOTSTRAP_NAME},
            "subjects": [subject],
        }))
        binding.add_dependency(role)
        binding.add_dependency(bootstrap_sa)
        rbac: list[cdk8s.ApiObject] = [bootstrap_sa, role, binding]
        # Other namespaces: a RoleBinding there to a ClusterRole (no Role object to leave behind), which the Job
        # deletes as its last call in that namespace.
        copies = [(ns, name) for ns, name in self.token_targets[1:]]
        if copies:
            copy_role = api_object(self, "BootstrapCopyClusterRole", {
                "apiVersion": f"{rbac_api}/v1",
                "kind": "ClusterRole",
                "metadata": {"name": self.copy_cluster_role},
                "rules": [
                    {"apiGroups": [""], "resources": ["secrets"],
                     "resourceNames": sorted({name for _, name in copies}), "verbs": ["get"]},
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
                    {"apiGroups": [rbac_api], "resources": ["rolebindings"], "resourceNames": [self.copy_binding],
                     "verbs": ["delete"]},
                ],
            })
            rbac.append(copy_role)
            for ns in sorted({ns for ns, _ in copies}):
                copy_binding = api_object(self, f"BootstrapRoleBinding-{ns}", {
                    "apiVersion": f"{rbac_api}/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": self.copy_binding, "namespace": ns},
                    "roleRef": {"apiGroup": rbac_api, "kind": "ClusterRole", "name": self.copy_cluster_role},
                    "subjects": [subject],
                })
                copy_binding.add_dependency(copy_role)
                copy_binding.add_dependency(bootstrap_sa)
                rbac.append(copy_binding)

        placement = pool_placement(self._head_pool)
        job = self._in_namespace(
            api_object(
                self,
                "BootstrapJob",
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {"name": BOOTSTRAP_JOB, "namespace": own},
                    "spec": {
                        "backoffLimit": 6,
                        "activeDeadlineSeconds": 1800,  # room for Karpenter to launch a node and pull the image
                        "ttlSecondsAfterFinished": BOOTSTRAP_JOB_TTL_SECONDS,
                        "template": {
                            "metadata": {"labels": {"app.kubernetes.io/name": BOOTSTRAP_JOB}},
                            "spec": {
                                "serviceAccountName": BOOTSTRAP_NAME,
                                "automountServiceAccountToken": True,  # it talks to the API server
                                "restartPolicy": "Never",
                                "securityContext": _pod_security_context(),
                                "nodeSelector": placement["nodeSelector"],
                                **({"tolerations": placement["tolerations"]} if placement["tolerations"] else {}),
                                "containers": [
                                    {
                                        "name": "bootstrap",
                                        "image": self._image,
                                        "imagePullPolicy": "IfNotPresent",
                                        "command": ["python", "-c", BOOTSTRAP_SCRIPT],
                                        "env": [
                                            {"name": "DF_TARGETS",
                                             "value": ",".join(f"{ns}/{name}" for ns, name in self.token_targets)},
                                            {"name": "DF_SECRET_KEYS", "value": f"{TOKEN_KEY},{KUBERAY_TOKEN_KEY}"},
                                            {"name": "DF_COPY_BINDING", "value": self.copy_binding},
                                            {"name": "DF_JOB_NAME", "value": BOOTSTRAP_JOB},
                                            {"name": "DF_OWN_OBJECTS", "value": ",".join(
                                                f"{kind}/{BOOTSTRAP_NAME}"
                                                for kind in ("RoleBinding", "Role", "ServiceAccount"))},
                                            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                                            {"name": "HOME", "value": "/tmp"},
                                        ],
                                        "resources": {
                                            "requests": {"cpu": "200m", "memory": "256Mi"},
                                            "limits": {"cpu": "200m", "memory": "256Mi"},
                                        },
                                        "securityContext": _container_security_context(read_only_root=True),
                                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                                    }
                                ],
                                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                            },
                        },
                    },
                },
            )
        )
        # The Job's first API call needs its service account and permissions in every namespace.
        for obj in rbac:
            job.add_dependency(obj)
        return job

    # -- RayCluster ----------------------------------------------------------------------------------------

    def _ray_cluster_spec(self) -> dict[str, Any]:
        st = self.settings
        image, gpu_image = self._image, self._gpu_image
        head_cpu, head_memory_gib, head_pool = st.head_cpu, st.head_memory_gib, st.head_pool
        worker_grace = st.worker_termination_grace_seconds
        head_container = self._ray_container(
            "ray-head", image, head_cpu, head_memory_gib,
            ports=[
                {"containerPort": GCS_PORT, "name": "gcs-server", "protocol": "TCP"},
                {"containerPort": DASHBOARD_PORT, "name": "dashboard", "protocol": "TCP"},
                {"containerPort": CLIENT_PORT, "name": "client", "protocol": "TCP"},
                *self._metrics_ports(head=True),
            ],
        )
        if self._metrics is not None:
            head_container["env"].extend(self._metrics.head_env())
        head_template = self._pod_template(
            head_container, head_pool, memory_gib=head_memory_gib, grace=60,
            # The head hosts GCS and the autoscaler: never voluntarily disrupted by Karpenter.
            annotations={"karpenter.sh/do-not-disrupt": "true"},
        )
        # No Ray container holds a Kubernetes credential (a job runs code on the head): only the autoscaler
        # sidecar, which patches the RayCluster's replicas, gets the service-account token, mounted into that
        # container alone where Ray's KubeRay node provider reads it (ray 2.60
        # python/ray/autoscaler/_private/kuberay/node_provider.py, load_k8s_secrets). An admission policy limits
        # what that identity may change (charts/ray_admission.py).
        head_template["spec"]["volumes"].append(_autoscaler_token_volume())
        worker_annotations = {RAY_OVERWRITE_CMD_ANNOTATION: "true"}
        if st.worker_do_not_disrupt:
            worker_annotations["karpenter.sh/do-not-disrupt"] = "true"
        worker_groups = [
            self._worker_group(
                CPU_GROUP, st.max_workers,
                self._pod_template(
                    self._ray_container("ray-worker", image, st.worker_cpu, st.worker_memory_gib),
                    st.worker_pool, memory_gib=st.worker_memory_gib, grace=worker_grace, annotations=worker_annotations,
                ),
            )
        ]
        if st.gpu_pool is not None:
            worker_groups.append(
                self._worker_group(
                    GPU_GROUP, st.gpu_max_workers,
                    self._pod_template(
                        self._ray_container("ray-worker", gpu_image, st.gpu_worker_cpu, st.gpu_worker_memory_gib,
                                            gpus=st.gpus_per_worker),
                        st.gpu_pool, memory_gib=st.gpu_worker_memory_gib, grace=worker_grace, annotations=worker_annotations,
                    ),
                )
            )
        return {
            "rayVersion": RAY_VERSION,  # KubeRay requires it (>= 2.52.0) when token auth is on
            "authOptions": {"mode": "token", "secretName": TOKEN_SECRET},
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {
                "version": "v2",  # do NOT also set RAY_enable_autoscaler_v2 on the head: KubeRay 1.7 rejects both
                "idleTimeoutSeconds": st.idle_timeout_seconds,
                "upscalingMode": "Default",
                "imagePullPolicy": "IfNotPresent",
                "resources": {
                    "requests": {"cpu": AUTOSCALER_CPU, "memory": AUTOSCALER_MEMORY},
                    "limits": {"cpu": AUTOSCALER_CPU, "memory": AUTOSCALER_MEMORY},
                },
                "securityContext": _container_security_context(),
                # The autoscaler writes its logs into the head's session directory too.
                "env": _LOGS.autoscaler_options["env"],
                "volumeMounts": _LOGS.autoscaler_options["volumeMounts"] + [AUTOSCALER_TOKEN_MOUNT],
            },
            "headGroupSpec": {
                "serviceType": "ClusterIP",  # in-cluster only; never LoadBalancer / NodePort
                "enableIngress": False,
                "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                "template": head_template,
            },
            "workerGroupSpecs": worker_groups,
        }

    @staticmethod
    def _worker_group(name: str, max_replicas: int, template: dict[str, Any]) -> dict[str, Any]:
        return {
            "groupName": name,
            "replicas": 0,
            "minReplicas": 0,
            "maxReplicas": max_replicas,
            "rayStartParams": {},  # CPU / memory / GPU come from the container limits
            "template": template,
        }

    def _ray_container(self, name: str, image: str, cpu: int, memory_gib: int, *, gpus: int = 0,
                       ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        env = [{"name": CHECKPOINT_ENV, "value": self.checkpoint_uri}, _LOGS.container_env]
        if ports:  # the head: never reclaimed (on-demand, do-not-disrupt); it leaves with `ray stop`
            pre_stop = ["/bin/sh", "-c", "ray stop"]
            command: dict[str, Any] = {}
        else:
            # A worker drains its node at the GCS (reason PREEMPTION, deadline just inside the grace period) and
            # keeps training until the deadline; Ray Train then moves the job off it and counts a preemption, not
            # a failure (charts/ray_prestop.py, measured by jobs/reclaim_drill.py).
            drain_s = worker_drain_seconds(self.settings.worker_termination_grace_seconds)
            pre_stop = ["python", "-c", PRESTOP_DRAIN_SCRIPT, str(drain_s), str(PRESTOP_DRAIN_SLACK_SECONDS)]
            # The kubelet's SIGTERM comes after that deadline: `ray start` must then stop at once, not drain again.
            env.append({"name": GRACEFUL_SHUTDOWN_DRAIN_ENV, "value": "0"})
            # `ray start --block` as PID 1 (exec), so SIGTERM reaches it whatever shell KubeRay would wrap it in;
            # KubeRay leaves the command alone under RAY_OVERWRITE_CMD_ANNOTATION and passes its generated
            # `ray start ...` in KUBERAY_GEN_RAY_START_CMD.
            command = {"command": ["/bin/bash", "-c", "--"],
                       "args": ['ulimit -n 65536; exec /bin/bash -c "$KUBERAY_GEN_RAY_START_CMD"']}
        container: dict[str, Any] = {
            "name": name,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            **command,
            "env": env,
            "resources": _resources(cpu, memory_gib, gpus),
            "securityContext": _container_security_context(),
            "lifecycle": {"preStop": {"exec": {"command": pre_stop}}},
            "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, _LOGS.container_volume_mount],
        }
        if not ports and self._metrics_ports(head=False):  # a worker: Prometheus scrapes its metrics port
            ports = self._metrics_ports(head=False)
        if ports:
            container["ports"] = ports
        return container

    def _metrics_ports(self, *, head: bool) -> list[dict[str, Any]]:
        """The ports Prometheus scrapes by name (KubeRay's `metrics`; the head's autoscaler and dashboard)."""
        if self._metrics is None:
            return []
        ports = [dict(self._metrics.metrics_port)]
        return ports + [dict(p) for p in self._metrics.head_ports] if head else ports

    @staticmethod
    def _pod_template(container: dict[str, Any], pool: NodePoolSettings, *, memory_gib: int, grace: int,
                      annotations: dict[str, str]) -> dict[str, Any]:
        placement = pool_placement(pool)
        metadata: dict[str, Any] = {"labels": {"app.kubernetes.io/part-of": "dynamic-factory"}}
        if annotations:
            metadata["annotations"] = dict(annotations)
        spec: dict[str, Any] = {
            "serviceAccountName": SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",  # autoscaler v2: a Ray node is never restarted in place
            "terminationGracePeriodSeconds": grace,
            "securityContext": _pod_security_context(),
            "nodeSelector": placement["nodeSelector"],
            "containers": [container],
            "volumes": [
                # Ray's object store is shared memory; tmpfs pages count against the container's memory limit.
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{memory_gib}Gi"}},
                # Ray's session directory (logs), on the node's disk where the log shipper reads it.
                _LOGS.volume,
            ],
        }
        if placement["tolerations"]:
            spec["tolerations"] = placement["tolerations"]
        return {"metadata": metadata, "spec": spec}


def _image_problems(label: str, image: Any) -> list[str]:
    if isinstance(image, str) and cdk.Token.is_unresolved(image):
        return []  # the image asset's URI: an ECR repository of the account, resolved at deploy time
    if not isinstance(image, str) or not image or not _IMAGE_RE.match(image):
        return [f"{label} {image!r} is not a valid image reference"]
    if image_registry(image) == "docker.io":
        return [f"{label} {image!r} comes from Docker Hub, which rate-limits anonymous pulls per IP address (every "
                "node here pulls through the NAT's): use the platform's image asset or a registry such as ECR"]
    name, _, tag = image.split("@", 1)[0].rpartition(":")
    if "/" in tag or not name:  # "host:port/repo" without a tag
        name, tag = image.split("@", 1)[0], ""
    if "@sha256:" in image:
        return []
    if not tag or tag in _UNPINNED_TAGS or tag.startswith(tuple(f"{t}-" for t in _UNPINNED_TAGS)):
        return [f"{label} {image!r} must be pinned to a release tag (or a digest), not latest/nightly/untagged"]
    py = "py" + versions.RAY_PYTHON_VERSION.replace(".", "")
    if name.endswith("rayproject/ray") and not tag.startswith(f"{RAY_VERSION}-{py}"):  # a mirror of upstream's image
        return [f"{label} {image!r} must run Ray {RAY_VERSION} on Python {versions.RAY_PYTHON_VERSION} "
                f"(tag '{RAY_VERSION}-{py}-...'), like the notebook image and jobs/"]
    return []
