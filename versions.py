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

AWS_CDK_LIB = "2.275.0"
CONSTRUCTS = "10.8.1"
CDK_CLI = "2.1148.1"

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

# EKS managed add-ons. None lets EKS choose the default build for the cluster's
# Kubernetes version, which is the build AWS tests against that version.
EKS_ADDONS: dict[str, str | None] = {
    "coredns": None,
    "eks-pod-identity-agent": None,
    "aws-ebs-csi-driver": None,
}
