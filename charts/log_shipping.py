"""Logs that outlive their pods: a Fluent Bit DaemonSet ships the Ray and JupyterHub logs to CloudWatch Logs.

What is shipped, per node, by one Fluent Bit pod (the upstream ``fluent-bit`` chart, values built here):

* **Container stdout/stderr** of every pod in the ``ray`` and ``jupyterhub`` namespaces (Ray head and workers,
  hub, proxy, user scheduler, notebook servers), tailed from ``/var/log/containers/<pod>_<namespace>_<container>-
  <id>.log``. Stream ``pod/<pod>/<container>`` in the log group of the namespace.
* **Ray's own log files**, which never reach stdout: the job driver's ``job-driver-<submission id>.log`` (on the
  head) and every worker process's ``worker-<worker id>-<job id>-<pid>.out|err`` (ray-project/ray
  doc/source/ray-observability/user-guides/configure-logging.md, "Application logs"). Ray writes them under
  ``/tmp/ray/session_<date>_<pid>/logs`` inside the container. The Ray pods mount an ``emptyDir`` named
  ``ray-logs`` at ``/tmp/ray`` with ``subPathExpr: $(DF_POD_NAME)`` (the pod's own name, from the downward API),
  so on the node the files sit at
  ``/var/lib/kubelet/pods/<pod uid>/volumes/kubernetes.io~empty-dir/ray-logs/<pod name>/session_*/logs/<file>``,
  which the DaemonSet reads through a read-only hostPath. Stream ``file/<file>/<pod>`` in the Ray log group, so a
  job's driver log is the stream ``file/job-driver-<submission id>.log/<head pod>``.

Why a DaemonSet and an ``emptyDir``, not KubeRay's Fluent Bit sidecar (ray-project/kuberay
ray-operator/config/samples/ray-cluster.fluentbit.yaml: a second container in every Ray pod sharing a ``ray-logs``
emptyDir at /tmp/ray):

* One credential holder. The sidecar would ship with the Ray pods' own role (service account ``ray``, which runs
  every user's job code); here only the ``fluent-bit`` service account in its own namespace may write logs.
* Nothing extra on the system nodes. The head runs there with a few hundred millicores to spare; the sample's
  sidecar asks 100m/128Mi per Ray pod. The DaemonSet runs on those nodes anyway for the hub's logs.
* The container logs of the hub and the notebooks need a node agent in any case, so one mechanism covers both.
* The volume name is KubeRay's own: with in-tree autoscaling KubeRay adds an emptyDir ``ray-logs`` at /tmp/ray
  to the head and the autoscaler container unless /tmp/ray is already mounted (ray-project/kuberay
  ray-operator/controllers/ray/common/pod.go: ``RayLogVolumeName``, ``BuildPod`` -> ``addEmptyDir``), and it
  appends ``autoscalerOptions.env`` / ``volumeMounts`` to the autoscaler container before that
  (``mergeAutoscalerOverrides``); so :func:`ray_pod_log_wiring` gives the autoscaler the same sub-path and the
  head and its autoscaler keep sharing one session directory, as KubeRay intends.

What survives the pod: Fluent Bit follows each file with inotify and sends every second (``Flush 1``), and a
deleted file stays readable to it until read to the end; the node itself goes only after Karpenter has drained
the Ray pods and waited ``consolidateAfter``. Offsets live in ``/var/lib/fluent-bit`` on the node, so a restarted
Fluent Bit neither repeats nor skips lines; files are read from their start when first seen (a pod whose logs
appear between two directory scans, every 5 s, loses nothing).

Credentials: EKS Pod Identity injects ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` (http://169.254.170.23/...) and
``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE``; Fluent Bit's standard credential chain tries its HTTP provider after
the environment, profile and IRSA providers, accepts the EKS agent's address over plain HTTP and re-reads the
token file on every refresh (fluent/fluent-bit src/aws/flb_aws_credentials_http.c at the 5.0 line, commit
015e1bc1b35473c7fa13333457f4090aedb654f2, CMakeLists.txt FLB_VERSION 5.0.3: ``EKS_CREDENTIALS_HOST``,
``AUTH_TOKEN_FILE_ENV_VAR``; src/aws/flb_aws_credentials.c ``standard_chain_create``). The output calls only
CreateLogStream and PutLogEvents (plus CreateLogGroup / PutRetentionPolicy, which are off here: the groups are
CloudFormation's) (plugins/out_cloudwatch_logs/cloudwatch_api.c, the ``X-Amz-Target`` headers); it no longer
calls DescribeLogStreams, so the role does not get it.

Not used: the ``kubernetes`` filter. It would add several hundred bytes of pod metadata to every line (billed per
GB ingested) and a Kubernetes API dependency; the stream names already carry namespace, pod and container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import cdk8s
from constructs import Construct

import versions
from charts.k8s import namespace_with

__all__ = [
    "AUTOSCALER_CONTAINER",
    "HOST_KUBELET_PODS",
    "NAMESPACE",
    "POD_LABELS",
    "POD_NAME_ENV",
    "RAY_FILE_PATTERNS",
    "RAY_LOGS_MOUNT_PATH",
    "RAY_LOGS_VOLUME",
    "RELEASE",
    "RETENTION_DAYS_ALLOWED",
    "SERVICE_ACCOUNT",
    "SHIPPED_NAMESPACES",
    "FluentBitValues",
    "LogShippingChart",
    "RayPodLogWiring",
    "log_group_names",
    "ray_file_host_globs",
    "ray_logs_volume",
    "ray_logs_volume_mount",
    "ray_pod_log_wiring",
    "ray_pod_name_env",
]

# ---------------------------------------------------------------------------------------------------------
# Contract: the stack, the tests, the boot model and the Ray chart import these names.
# ---------------------------------------------------------------------------------------------------------
NAMESPACE = "logging"
RELEASE = "fluent-bit"  # cdk_constructs/helm.py names releases after their chart
SERVICE_ACCOUNT = "fluent-bit"
# The chart's selector labels (fluent-bit.selectorLabels: chart name and release name).
POD_LABELS = {"app.kubernetes.io/name": "fluent-bit", "app.kubernetes.io/instance": RELEASE}
# Namespaces whose containers' output is shipped, each into its own log group (ray: also Ray's files).
RAY_NAMESPACE = "ray"
JUPYTERHUB_NAMESPACE = "jupyterhub"
SHIPPED_NAMESPACES = (RAY_NAMESPACE, JUPYTERHUB_NAMESPACE)

# Ray pods: Ray's temp dir on an emptyDir, one sub-directory per pod (named after it).
RAY_LOGS_VOLUME = "ray-logs"  # KubeRay's RayLogVolumeName: it adds no second /tmp/ray volume to the head
RAY_LOGS_MOUNT_PATH = "/tmp/ray"  # Ray's default temp dir (and KubeRay's RayLogVolumeMountPath)
POD_NAME_ENV = "DF_POD_NAME"
AUTOSCALER_CONTAINER = "autoscaler"  # KubeRay's AutoscalerContainerName
# Ray's application logs (configure-logging.md, "Application logs"): the job driver, worker stdout and stderr.
RAY_FILE_PATTERNS = ("job-driver-*.log", "worker-*.out", "worker-*.err")

# Where the kubelet keeps an emptyDir on the node: <root-dir>/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>
# (kubernetes/kubernetes pkg/kubelet/kubelet_getters.go getPodVolumeDir: pods/<uid>/volumes/<plugin>/<volume>, the
# plugin name kubernetes.io/empty-dir with "/" escaped as "~"; the default --root-dir /var/lib/kubelet, as on EKS).
HOST_KUBELET_PODS = "/var/lib/kubelet/pods"
EMPTY_DIR_PLUGIN_DIR = "kubernetes.io~empty-dir"
HOST_CONTAINER_LOGS = "/var/log/containers"
HOST_STATE_DIR = "/var/lib/fluent-bit"  # tail offsets, so a restart neither repeats nor skips lines

# Requests are what the idle model places on each system node; limits bound a burst.
DEFAULT_RESOURCES = {"requests": {"cpu": "25m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "192Mi"}}
MEM_BUF_LIMIT = "16MB"  # per input: above it the input pauses (files stay on disk) instead of growing memory
REFRESH_INTERVAL_SECONDS = 5  # how often the tail input looks for new files

_LOG_GROUP_NAME = re.compile(r"^[\w#/.-]{1,512}$")

# The retention periods CloudWatch Logs accepts, in days (the AWS::Logs::LogGroup resource schema's RetentionInDays
# enum, as shipped with cfn-lint: "Possible values are: 1, 3, 5, ... and 3653"). config.py offers exactly these.
RETENTION_DAYS_ALLOWED = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                          2922, 3288, 3653)
DEFAULT_RETENTION_DAYS = 30


# ---------------------------------------------------------------------------------------------------------
# What the Ray pods need (wired into charts/raycluster.py)
# ---------------------------------------------------------------------------------------------------------


RAY_LOGS_SIZE_LIMIT = "20Gi"


def ray_pod_name_env() -> dict[str, Any]:
    """The container variable ``subPathExpr`` expands: the pod's own name, from the downward API."""
    return {"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def ray_logs_volume() -> dict[str, Any]:
    """The pod volume: a disk-backed emptyDir (a tmpfs one would be a mount the DaemonSet could not see, and would
    count against the pod's memory). It holds Ray's whole session directory, and Ray rotates each file but bounds
    no total: past RAY_LOGS_SIZE_LIMIT the kubelet evicts this one pod instead of the node's disk filling up."""
    return {"name": RAY_LOGS_VOLUME, "emptyDir": {"sizeLimit": RAY_LOGS_SIZE_LIMIT}}


def ray_logs_volume_mount() -> dict[str, Any]:
    """The container mount: /tmp/ray is the sub-directory named after the pod, so the node path names the pod."""
    return {"name": RAY_LOGS_VOLUME, "mountPath": RAY_LOGS_MOUNT_PATH, "subPathExpr": f"$({POD_NAME_ENV})"}


@dataclass(frozen=True)
class RayPodLogWiring:
    """Everything a Ray pod template needs so that the DaemonSet finds its files.

    * ``volume``: append to ``spec.volumes`` of the head and of every worker group's template;
    * ``container_env`` / ``container_volume_mount``: append to ``env`` / ``volumeMounts`` of the Ray container
      (``ray-head`` / ``ray-worker``) of each of those templates;
    * ``autoscaler_options``: merge into ``spec.autoscalerOptions`` (keys ``env`` and ``volumeMounts``), so the
      autoscaler container KubeRay adds to the head shares the head's sub-directory.
    """

    volume: dict[str, Any] = field(default_factory=ray_logs_volume)
    container_env: dict[str, Any] = field(default_factory=ray_pod_name_env)
    container_volume_mount: dict[str, Any] = field(default_factory=ray_logs_volume_mount)

    @property
    def autoscaler_options(self) -> dict[str, list[dict[str, Any]]]:
        return {"env": [dict(self.container_env)], "volumeMounts": [dict(self.container_volume_mount)]}


def ray_pod_log_wiring() -> RayPodLogWiring:
    return RayPodLogWiring()


def ray_file_host_globs() -> list[str]:
    """Where the DaemonSet looks for Ray's files on the node (one glob per file pattern)."""
    session = (f"{HOST_KUBELET_PODS}/*/volumes/{EMPTY_DIR_PLUGIN_DIR}/{RAY_LOGS_VOLUME}/*/session_[0-9]*/logs")
    return [f"{session}/{pattern}" for pattern in RAY_FILE_PATTERNS]


# Tags are composed from Tag_Regex's named groups over the file's path (fluent/fluent-bit plugins/in_tail/tail_file.c
# tag_compose; tail_config.c turns dynamic tags on when tag_regex is set).
# The tag of a Ray file: file.<pod>.<file stem>.<extension>, read from its node path. Stems and extensions have no
# dots (job-driver-raysubmit_XXXX, worker-<hex>-<hex>-<pid>), so the parts are $TAG[1..3] in the output.
RAY_FILE_TAG = "file.<pod_name>.<stem>.<ext>"
def _literal(path: str) -> str:
    """A path as a regex literal: only its dots need escaping (Onigmo and Python agree on the rest)."""
    return path.replace(".", r"\.")


RAY_FILE_TAG_REGEX = (
    rf"^{_literal(HOST_KUBELET_PODS)}/[^/]+/volumes/{_literal(EMPTY_DIR_PLUGIN_DIR)}/{RAY_LOGS_VOLUME}/"
    r"(?<pod_name>[^/]+)/session_[^/]+/logs/(?<stem>[^/.]+)\.(?<ext>log|out|err)$"
)
# The tag of a container log: pod.<namespace>.<pod>.<container>, from the kubelet's file name
# <pod>_<namespace>_<container>-<64-hex container id>.log (pod and namespace names have no "_").
POD_TAG = "pod.<namespace_name>.<pod_name>.<container_name>"
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
POD_TAG_REGEX = (
    rf"^{_literal(HOST_CONTAINER_LOGS)}/(?<pod_name>[^_/]+)_(?<namespace_name>[^_/]+)_"
    r"(?<container_name>[^/]+)-(?<container_id>[a-f0-9]{64})\.log$"
)
# Stream names (record-accessor templates over the tag; the prefix is the plugin's fallback and never used here).
POD_STREAM_TEMPLATE = "pod/$TAG[2]/$TAG[3]"
# A team's Ray pods share the Ray group: the stream name carries the namespace (tag pod.<namespace>.<pod>.<container>).
TEAM_POD_STREAM_TEMPLATE = "pod/$TAG[1]/$TAG[2]/$TAG[3]"
RAY_FILE_STREAM_TEMPLATE = "file/$TAG[2].$TAG[3]/$TAG[1]"
FALLBACK_STREAM_PREFIX = "unparsed."


def log_group_names(cluster_name: str) -> dict[str, str]:
    """The log group of each shipped namespace: ``/<cluster>/<namespace>``."""
    return {ns: f"/{cluster_name}/{ns}" for ns in SHIPPED_NAMESPACES}


# The Karpenter controller's own lines (kube-system, pods karpenter-*, container `controller`: the karpenter chart's
# Deployment), shipped when the platform alarms on its errors (stacks/observability_stack.py). Karpenter writes one
# JSON object per line ({"level":"ERROR",...}), which reaches CloudWatch as the event's message unchanged.
KARPENTER_NAMESPACE = "kube-system"
KARPENTER_POD_GLOB = "karpenter-*"
KARPENTER_CONTAINER = "controller"


def karpenter_log_group_name(cluster_name: str) -> str:
    return f"/{cluster_name}/karpenter"


# ---------------------------------------------------------------------------------------------------------
# Helm values of the fluent-bit chart (keys exist in schemas/fluent-bit/values.yaml; tests check)
# ---------------------------------------------------------------------------------------------------------


def _section(name: str, settings: Sequence[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in settings)
    return f"[{name}]\n" + "".join(f"    {k:<{width}} {v}\n" for k, v in settings)


@dataclass(frozen=True)
class FluentBitValues:
    """Values of the ``fluent-bit`` release.

    :param region: the AWS region of the log groups (a CDK token is fine).
    :param log_groups: log group name per shipped namespace (``ray`` also receives Ray's files).
    :param team_ray_namespaces: the namespaces of the teams' RayClusters (charts/ray_teams.py), whose containers'
        output goes into the Ray group too (a team's pod names and namespace are in the stream names).
    :param karpenter_log_group: where the Karpenter controller's lines go (None: not shipped).
    :param resources: the container's requests and limits.
    """

    region: str
    log_groups: Mapping[str, str]
    team_ray_namespaces: tuple[str, ...] = ()
    karpenter_log_group: str | None = None
    resources: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_RESOURCES)
    image_repository: str = versions.FLUENT_BIT_IMAGE_REPOSITORY
    image_tag: str = versions.FLUENT_BIT_VERSION

    def __post_init__(self) -> None:
        problems = []
        if set(self.log_groups) != set(SHIPPED_NAMESPACES):
            problems.append(f"log_groups must name a group for each of {list(SHIPPED_NAMESPACES)}, "
                            f"got {sorted(self.log_groups)}")
        for ns, name in self.log_groups.items():
            if not isinstance(name, str) or not _LOG_GROUP_NAME.match(name):
                problems.append(f"log group {name!r} ({ns}) is not a CloudWatch Logs group name")
        if self.karpenter_log_group is not None and not _LOG_GROUP_NAME.match(self.karpenter_log_group):
            problems.append(f"karpenter_log_group {self.karpenter_log_group!r} is not a CloudWatch Logs group name")
        if not isinstance(self.region, str) or not self.region:
            problems.append("region must be a region name or a CDK token")
        bad = [ns for ns in self.team_ray_namespaces
               if not isinstance(ns, str) or not _NAMESPACE_RE.match(ns) or ns in SHIPPED_NAMESPACES]
        if bad:
            problems.append(f"team_ray_namespaces {bad} must be namespace names other than {list(SHIPPED_NAMESPACES)}")
        if problems:
            raise ValueError("FluentBitValues: " + "; ".join(problems))

    @property
    def pod_namespaces(self) -> tuple[str, ...]:
        """Every namespace whose containers' output is shipped."""
        return SHIPPED_NAMESPACES + tuple(self.team_ray_namespaces)

    # -- Fluent Bit's configuration (classic format, the chart's config.* strings) ---------------------------

    def service(self) -> str:
        return _section("SERVICE", [
            ("Daemon", "Off"),
            ("Flush", 1),
            ("Log_Level", "info"),
            ("Parsers_File", "/fluent-bit/etc/parsers.conf"),
            ("HTTP_Server", "On"),  # the probes' /api/v1/health and the metrics port 2020
            ("HTTP_Listen", "0.0.0.0"),
            ("HTTP_Port", 2020),
            ("Health_Check", "On"),
        ])

    def inputs(self) -> str:
        common = [("Read_from_Head", "true"), ("Refresh_Interval", REFRESH_INTERVAL_SECONDS), ("Rotate_Wait", 30),
                  ("Mem_Buf_Limit", MEM_BUF_LIMIT), ("Skip_Long_Lines", "On"), ("DB.locking", "true")]
        pods = _section("INPUT", [
            ("Name", "tail"),
            ("Alias", "pods"),
            ("Path", ",".join([f"{HOST_CONTAINER_LOGS}/*_{ns}_*.log" for ns in self.pod_namespaces]
                              + ([f"{HOST_CONTAINER_LOGS}/{KARPENTER_POD_GLOB}_{KARPENTER_NAMESPACE}_"
                                  f"{KARPENTER_CONTAINER}-*.log"] if self.karpenter_log_group else []))),
            ("Tag", POD_TAG),
            ("Tag_Regex", POD_TAG_REGEX),
            ("multiline.parser", "cri"),  # containerd's CRI log format on AL2023; the message lands in `log`
            ("DB", f"{HOST_STATE_DIR}/pods.db"),
            *common,
        ])
        files = _section("INPUT", [
            ("Name", "tail"),
            ("Alias", "ray-files"),
            ("Path", ",".join(ray_file_host_globs())),
            ("Tag", RAY_FILE_TAG),
            ("Tag_Regex", RAY_FILE_TAG_REGEX),
            ("DB", f"{HOST_STATE_DIR}/ray-files.db"),
            *common,
        ])
        return pods + "\n" + files

    def outputs(self) -> str:
        def output(alias: str, match: str, group: str, template: str) -> str:
            return _section("OUTPUT", [
                ("Name", "cloudwatch_logs"),
                ("Alias", alias),
                ("Match", match),
                ("region", self.region),
                ("log_group_name", group),
                ("log_stream_template", template),
                ("log_stream_prefix", FALLBACK_STREAM_PREFIX),
                ("log_key", "log"),  # the line itself, not a JSON wrapper (fewer bytes ingested)
                ("auto_create_group", "Off"),  # CloudFormation owns the groups (encryption, retention)
                # A bounded number of retries (the scheduler backs off between them, minutes in all): a send that
                # keeps failing (credentials, policy, key) then counts as "retry failed", which the health check
                # counts, so a shipper that cannot deliver turns NotReady instead of looking healthy.
                ("Retry_Limit", "10"),
            ])
        ray, hub = self.log_groups[RAY_NAMESPACE], self.log_groups[JUPYTERHUB_NAMESPACE]
        return "\n".join([
            output("ray-pods", f"pod.{RAY_NAMESPACE}.*", ray, POD_STREAM_TEMPLATE),
            *(output(f"ray-pods-{ns}", f"pod.{ns}.*", ray, TEAM_POD_STREAM_TEMPLATE) for ns in self.team_ray_namespaces),
            output("ray-files", "file.*", ray, RAY_FILE_STREAM_TEMPLATE),
            output("jupyterhub-pods", f"pod.{JUPYTERHUB_NAMESPACE}.*", hub, POD_STREAM_TEMPLATE),
            *([output("karpenter-pods", f"pod.{KARPENTER_NAMESPACE}.{KARPENTER_POD_GLOB}", self.karpenter_log_group,
                      POD_STREAM_TEMPLATE)] if self.karpenter_log_group else []),
        ])

    # -- the chart's values -----------------------------------------------------------------------------------

    def to_values(self) -> dict[str, Any]:
        return {
            "kind": "DaemonSet",
            "image": {"repository": self.image_repository, "tag": self.image_tag, "pullPolicy": "IfNotPresent"},
            # The chart's `helm test` pod pulls busybox:latest from Docker Hub: never create it.
            "testFramework": {"enabled": False},
            "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
            # No kubernetes filter, so no read access to pods and namespaces.
            "rbac": {"create": False},
            "podSecurityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            # Root, to read the kubelet's 0640 root-owned container logs, but with every capability dropped (owner
            # bits suffice), a read-only root filesystem and no privilege escalation.
            "securityContext": {
                "runAsUser": 0,
                "runAsNonRoot": False,
                "privileged": False,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "resources": {part: dict(amounts) for part, amounts in self.resources.items()},
            # Every node: system nodes (CriticalAddonsOnly), each Karpenter pool's taint, Cilium's startup taint
            # (its sandbox is only created once Cilium has written the CNI config, so it cannot start unmanaged),
            # and Karpenter's disruption taint, so it stays on a draining node until the Ray pods there are gone.
            "tolerations": [{"operator": "Exists"}],
            "config": {
                "service": self.service(),
                "inputs": self.inputs(),
                "filters": "",
                "outputs": self.outputs(),
                "customParsers": "",
            },
            "daemonSetVolumes": [
                {"name": "varlog", "hostPath": {"path": "/var/log"}},
                {"name": "kubelet-pods", "hostPath": {"path": HOST_KUBELET_PODS, "type": "Directory"}},
                {"name": "state", "hostPath": {"path": HOST_STATE_DIR, "type": "DirectoryOrCreate"}},
            ],
            "daemonSetVolumeMounts": [
                {"name": "varlog", "mountPath": "/var/log", "readOnly": True},
                # HostToContainer: the kubelet's later unmounts (other pods' secrets) reach this container too.
                {"name": "kubelet-pods", "mountPath": HOST_KUBELET_PODS, "readOnly": True,
                 "mountPropagation": "HostToContainer"},
                {"name": "state", "mountPath": HOST_STATE_DIR},
            ],
        }


# ---------------------------------------------------------------------------------------------------------
# The namespace and its network policies (cdk8s)
# ---------------------------------------------------------------------------------------------------------


def namespace_manifest() -> dict[str, Any]:
    """Pod Security ``privileged`` is enforced (hostPath volumes are refused by ``baseline``); ``baseline`` is
    warned and audited, so anything else that lands here is reported."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {
                "pod-security.kubernetes.io/enforce": "privileged",
                "pod-security.kubernetes.io/warn": "baseline",
                "pod-security.kubernetes.io/audit": "baseline",
            },
        },
    }


class LogShippingChart(cdk8s.Chart):
    """Namespace ``logging`` and its policies: default deny both ways, Fluent Bit's egress (DNS, CloudWatch Logs
    over 443, the Pod Identity agent), nothing in. Apply it before the ``fluent-bit`` release."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        # Imported here: config.py reads this module's constants, and network_policies pulls in aws_cdk.
        from charts.network_policies import log_shipper_network_policies

        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.policies = log_shipper_network_policies(NAMESPACE, POD_LABELS)
        self.namespace_object = namespace_with(self, namespace_manifest(), self.policies)
