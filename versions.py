"""Every upstream version the platform pins, in one place (DESIGN.md section 2).

Tests compare these against the vendored upstream files (Chart.yaml of each chart,
requirements files, package.json), so a bump here that is not matched elsewhere fails
the suite instead of deploying a mix.
"""

from __future__ import annotations

# Kubernetes minor versions we can deploy, each with the Python module and class of the
# kubectl Lambda layer that matches it. A version missing here is a config error.
KUBERNETES_VERSIONS: dict[str, tuple[str, str]] = {
    "1.35": ("aws_cdk.lambda_layer_kubectl_v35", "KubectlV35Layer"),
    "1.36": ("aws_cdk.lambda_layer_kubectl_v36", "KubectlV36Layer"),
}
DEFAULT_KUBERNETES_VERSION = "1.35"
# kubectl the validation runner downloads (checksum-verified), matching each Kubernetes version.
KUBECTL_VERSIONS: dict[str, str] = {"1.35": "1.35.2", "1.36": "1.36.0"}

# Held at 2.273.0, the last release that writes cloud-assembly schema 54: the delivery pipeline publishes
# assets with the separate `cdk-assets` tool, whose newest release (CDK_ASSETS) reads schema 54 at most and
# refuses the 55 that aws-cdk-lib 2.274+ writes. Move both together (tests/unit/test_pipeline.py runs the
# pinned cdk-assets over the synthesized asset manifests).
AWS_CDK_LIB = "2.273.0"
CONSTRUCTS = "10.8.1"
CDK_CLI = "2.1148.1"
# The asset publisher CDK Pipelines installs in its asset steps (its own version line, pinned in package.json).
CDK_ASSETS = "4.7.3"

# Helm charts installed into the cluster.
CILIUM_CHART_REPO = "https://helm.cilium.io/"
CILIUM_CHART_VERSION = "1.20.0"

KARPENTER_CHART_REPO = "oci://public.ecr.aws/karpenter"
KARPENTER_CHART_VERSION = "1.14.1"

# Installed with the GPU NodePool only.
NVIDIA_DEVICE_PLUGIN_REPO = "https://nvidia.github.io/k8s-device-plugin"
NVIDIA_DEVICE_PLUGIN_VERSION = "0.20.0"

KUBERAY_CHART_REPO = "https://ray-project.github.io/kuberay-helm/"
KUBERAY_CHART_VERSION = "1.7.0"

JUPYTERHUB_CHART_REPO = "https://hub.jupyter.org/helm-chart/"
JUPYTERHUB_CHART_VERSION = "4.4.0"

# Ray runs the same version everywhere: the Ray image, the notebook image and jobs/.
RAY_VERSION = "2.60.0"
RAY_PYTHON_VERSION = "3.11"
XGBOOST_VERSION = "3.2.0"
# Base of the platform's Ray image (images/ray/Dockerfile): the Docker official Python image as mirrored on
# ECR Public (gallery.ecr.aws/docker/library/python), so nothing is pulled from Docker Hub. The patch release
# is pinned; RAY_PYTHON_VERSION must be its minor (tests/unit/test_versions.py).
RAY_IMAGE_BASE = "public.ecr.aws/docker/library/python:3.11.14-slim-bookworm"

# Every Helm chart the platform installs, by chart name: (repository, version). Releases are
# named after their chart (cdk_constructs/helm.py).
HELM_CHARTS: dict[str, tuple[str, str]] = {
    "cilium": (CILIUM_CHART_REPO, CILIUM_CHART_VERSION),
    "karpenter-crd": (KARPENTER_CHART_REPO, KARPENTER_CHART_VERSION),
    "karpenter": (KARPENTER_CHART_REPO, KARPENTER_CHART_VERSION),
    "nvidia-device-plugin": (NVIDIA_DEVICE_PLUGIN_REPO, NVIDIA_DEVICE_PLUGIN_VERSION),
    "kuberay-operator": (KUBERAY_CHART_REPO, KUBERAY_CHART_VERSION),
    "jupyterhub": (JUPYTERHUB_CHART_REPO, JUPYTERHUB_CHART_VERSION),
}

# EKS managed add-ons the cluster stack installs, each pinned per Kubernetes minor version:
# {add-on: {minor: version}}. An add-on without AddonVersion keeps the build EKS chose when it was
# created, so a Kubernetes upgrade would leave it behind; pinned per minor, a change of
# cluster.kubernetes_version changes AddonVersion in the template wherever EKS ships a different build.
# Every add-on has a version for every minor in KUBERNETES_VERSIONS, and no minor pins an older build
# than the minor before it (tests/unit/test_versions.py). For a new minor, take the build EKS marks as
# default for it (AWS's documented query):
#   aws eks describe-addon-versions --kubernetes-version <minor> --addon-name <add-on> \
#     --query "addons[].addonVersions[].[addonVersion, compatibilities[].defaultVersion]" --output text
# DF_CHECK_EKS_ADDONS=1 (with AWS credentials) makes tests/unit/test_versions.py ask EKS for every pin.
EKS_ADDONS: dict[str, dict[str, str]] = {
    # Amazon EKS User Guide, "Manage CoreDNS", table "CoreDNS versions" (latest Amazon EKS add-on build
    # per Kubernetes version): 1.36 -> v1.14.3-eksbuild.3, 1.35 -> v1.14.3-eksbuild.3.
    # https://docs.aws.amazon.com/ja_jp/eks/latest/userguide/managing-coredns.md (the stored English
    # renditions predate the 1.35 row; the table itself is not translated).
    "coredns": {"1.35": "v1.14.3-eksbuild.3", "1.36": "v1.14.3-eksbuild.3"},
    # AWS publishes no per-version table for the next two add-ons (their compatibility lives only in the
    # EKS API), so these pins are third-party records of `aws eks describe-addon-versions`, not AWS
    # documentation; run the query above before deploying a minor for the first time.
    # Pod Identity agent: the 1.36 default of 2026-09-03 in a public Terraform module ("pinned to the
    # defaults AWS reports for 1.36"); the same build is pinned for 1.35 by devopscoop/project1-dev
    # (written from the API by its update_eks_addons.sh) and for 1.34 and 1.36 by two more modules.
    "eks-pod-identity-agent": {"1.35": "v1.3.10-eksbuild.3", "1.36": "v1.3.10-eksbuild.3"},
    # EBS CSI driver: 1.36 -> the default in the same 2026-09-03 record; 1.35 -> pinned with Kubernetes
    # 1.35 in a public Terraform environment ("Today both track 1.35").
    "aws-ebs-csi-driver": {"1.35": "v1.64.0-eksbuild.1", "1.36": "v1.65.0-eksbuild.1"},
}


def eks_addon_version(addon: str, kubernetes_version: str) -> str:
    """The pinned build of EKS add-on ``addon`` for Kubernetes ``kubernetes_version`` (a minor, "1.35")."""
    return EKS_ADDONS[addon][kubernetes_version]


# ---------------------------------------------------------------------------------------------------------
# Log shipping (charts/log_shipping.py, stacks/observability_stack.py): Fluent Bit as a DaemonSet.
# Chart 0.57.9 is the newest release in the chart's CHANGELOG.md (fluent/helm-charts@0191c5ab6e23706ca66ea4cbaf4b46f7400dcaef:
# charts/fluent-bit/CHANGELOG.md, "[v0.57.9] - 2026-07-06: Update Fluent Bit OCI image to v5.0.9"); its appVersion,
# which is the image tag unless values set one, is Fluent Bit 5.0.9. The chart's default image repository is
# cr.fluentbit.io/fluent/fluent-bit (charts/fluent-bit/values.yaml), the Fluent project's own registry, not Docker
# Hub; the platform sets both explicitly so a chart bump cannot move either.
FLUENT_BIT_CHART_REPO = "https://fluent.github.io/helm-charts"
FLUENT_BIT_CHART_VERSION = "0.57.9"
FLUENT_BIT_VERSION = "5.0.9"
FLUENT_BIT_IMAGE_REPOSITORY = "cr.fluentbit.io/fluent/fluent-bit"
HELM_CHARTS["fluent-bit"] = (FLUENT_BIT_CHART_REPO, FLUENT_BIT_CHART_VERSION)

# ---------------------------------------------------------------------------------------------------------
# Metrics (charts/metrics.py, stacks/observability_stack.py): Prometheus, Grafana, kube-state-metrics and the
# Prometheus operator from one chart. kube-prometheus-stack 88.5.3 (prometheus-community/helm-charts
# ea930baeebeba39f56d6b44e351f23b2a072a600: charts/kube-prometheus-stack/Chart.yaml, vendored in
# schemas/kube-prometheus-stack/) pins prometheus-operator v0.93.1 and the subcharts kube-state-metrics 8.4.0 and
# grafana 12.11.1; image tags follow the chart unless values set them.
KUBE_PROMETHEUS_STACK_CHART_REPO = "https://prometheus-community.github.io/helm-charts"
KUBE_PROMETHEUS_STACK_CHART_VERSION = "88.5.3"
HELM_CHARTS["kube-prometheus-stack"] = (KUBE_PROMETHEUS_STACK_CHART_REPO, KUBE_PROMETHEUS_STACK_CHART_VERSION)
