"""Session-wide fixtures: each platform configuration is synthesized once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from tests.platform_synth import SynthesizedPipeline, SynthesizedPlatform, synth_pipeline, synth_platform  # noqa: E402

# A second configuration that exercises the non-default branches.
VARIANT_OVERRIDES = {
    "platform.cluster.name": "ml-prod",
    "platform.cluster.kubernetes_version": "1.36",
    "platform.cluster.endpoint.access": "public_and_private",
    "platform.cluster.endpoint.public_cidrs": ["203.0.113.0/24", "198.51.100.7/32"],
    "platform.cluster.admin_principal_arns": ["arn:aws:iam::111122223333:role/PlatformAdmin"],
    "platform.cluster.system_nodes.instance_type": "m7i.large",
    "platform.network.az_count": 3,
    "platform.network.availability_zones": ["eu-west-1a", "eu-west-1b", "eu-west-1c"],
    "platform.network.nat_gateways": 3,
    "platform.karpenter.gpu.enabled": True,
    "platform.karpenter.spot.cpu_limit": 512,
    "platform.ray.gpu_workers.max_workers": 2,
    "platform.ray.head_placement": "on-demand",
    "platform.ray.head_cpu": 2,
    "platform.ray.head_memory_gib": 8,
    "platform.ray.teams": ["alpha", "beta"],
    "platform.jupyterhub.core_placement": "on-demand",
    "platform.jupyterhub.domain": "hub.example.com",
    "platform.jupyterhub.admin_user": "admin@example.com",
    "platform.jupyterhub.keep_homes_on_destroy": False,
    "platform.jupyterhub.certificate_arn": "arn:aws:acm:eu-west-1:111122223333:certificate/0f2c9f6e-1b2a-4c3d-9e8f-0123456789ab",
    "platform.jupyterhub.cognito_domain_prefix": "ml-prod-hub",
    "platform.jupyterhub.allowed_cidrs": ["203.0.113.0/24"],
    "platform.observability.alarm_emails": ["ops@example.com", "oncall@example.org"],
    "platform.observability.retention": "7d",
    "platform.observability.grafana_behind_hub": True,
}


@pytest.fixture(scope="session")
def platform(tmp_path_factory) -> SynthesizedPlatform:
    """The config model's defaults (never the user's cdk.json platform)."""
    return synth_platform(tmp_path_factory.mktemp("cdk-default"))


@pytest.fixture(scope="session")
def variant(tmp_path_factory) -> SynthesizedPlatform:
    """Public endpoint, three AZs and NAT gateways, admins, Kubernetes 1.36, GPU pool and workers, Cognito login,
    two Ray teams, alarm e-mails."""
    return synth_platform(tmp_path_factory.mktemp("cdk-variant"), VARIANT_OVERRIDES)


@pytest.fixture(scope="session", params=["default", "variant"])
def any_platform(request) -> SynthesizedPlatform:
    return request.getfixturevalue("platform" if request.param == "default" else "variant")


@pytest.fixture(scope="session")
def pipeline_platform(tmp_path_factory) -> SynthesizedPipeline:
    """The app with the delivery pipeline enabled (two environments, approval before prod)."""
    return synth_pipeline(tmp_path_factory.mktemp("cdk-pipeline"))
