"""Pinned versions agree everywhere they appear (versions.py is the one place to change them)."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

import versions
from tests.platform_synth import ROOT


def _requirement(name: str, file: str = "requirements.txt") -> str:
    text = (ROOT / file).read_text()
    match = re.search(rf"^{re.escape(name)}==(\S+)$", text, re.MULTILINE | re.IGNORECASE)
    assert match, f"{name} is not pinned in {file}"
    return match.group(1)


def test_cdk_library_versions():
    assert _requirement("aws-cdk-lib") == versions.AWS_CDK_LIB
    assert _requirement("constructs") == versions.CONSTRUCTS


def test_cdk_cli_version_is_pinned_in_package_json_and_lock():
    assert json.loads((ROOT / "package.json").read_text())["devDependencies"]["aws-cdk"] == versions.CDK_CLI
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/aws-cdk"]["version"] == versions.CDK_CLI


def test_the_pipelines_asset_publisher_is_pinned_in_package_json_and_lock():
    assert json.loads((ROOT / "package.json").read_text())["devDependencies"]["cdk-assets"] == versions.CDK_ASSETS
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/cdk-assets"]["version"] == versions.CDK_ASSETS


def test_every_supported_kubernetes_version_has_its_kubectl_layer_pinned():
    for version, (module, _cls) in versions.KUBERNETES_VERSIONS.items():
        minor = version.split(".")[1]
        assert module.endswith(f"kubectl_v{minor}")
        _requirement(f"aws-cdk.lambda-layer-kubectl-v{minor}")
    assert versions.DEFAULT_KUBERNETES_VERSION in versions.KUBERNETES_VERSIONS


def test_cilium_version_matches_the_vendored_chart():
    chart = yaml.safe_load((ROOT / "schemas" / "cilium" / "Chart.yaml").read_text())
    assert chart["version"] == versions.CILIUM_CHART_VERSION


def test_every_helm_release_is_a_pinned_chart(any_platform):
    releases = any_platform.assembly.helm_releases()
    assert releases
    for name, release in releases.items():
        if "ChartAssetURL" in release.properties:
            # Our own chart, shipped as an asset of this app (the Grafana dashboards, charts/dashboards.py): no
            # upstream version to pin; its content is in the repository.
            from charts.dashboards import DASHBOARDS_CHART

            assert name == DASHBOARDS_CHART and "Chart" not in release.properties, name
            continue
        chart = release.properties["Chart"]
        repository, version = versions.HELM_CHARTS[chart]
        if repository.startswith("oci://"):
            # An OCI reference names the chart itself (the kubectl handler runs `helm pull <Repository>`).
            repository = f"{repository}/{chart}"
        assert (release.properties["Repository"], release.properties["Version"]) == (repository, version), name


_ADDON_BUILD = re.compile(r"^v(\d+)\.(\d+)\.(\d+)-eksbuild\.(\d+)$")


def test_every_eks_addon_is_pinned_for_every_kubernetes_version():
    """An unpinned add-on keeps its creation-time build through every Kubernetes upgrade."""
    for addon, pins in versions.EKS_ADDONS.items():
        assert set(pins) == set(versions.KUBERNETES_VERSIONS), addon
        for minor, build in pins.items():
            assert build and _ADDON_BUILD.match(build), (addon, minor, build)
            assert versions.eks_addon_version(addon, minor) == build


def test_no_kubernetes_upgrade_downgrades_an_addon():
    minors = sorted(versions.KUBERNETES_VERSIONS, key=lambda v: tuple(int(p) for p in v.split(".")))
    for addon, pins in versions.EKS_ADDONS.items():
        builds = [tuple(int(n) for n in _ADDON_BUILD.match(pins[m]).groups()) for m in minors]
        assert builds == sorted(builds), (addon, [pins[m] for m in minors])


@pytest.mark.skipif(os.environ.get("DF_CHECK_EKS_ADDONS") != "1",
                    reason="asks the EKS API (needs AWS credentials): set DF_CHECK_EKS_ADDONS=1 before deploying a new pin")
def test_every_pinned_addon_build_is_offered_by_eks_for_its_kubernetes_version():
    import boto3

    eks = boto3.client("eks")
    missing = []
    for addon, pins in versions.EKS_ADDONS.items():
        for minor, build in pins.items():
            pages = eks.get_paginator("describe_addon_versions").paginate(addonName=addon, kubernetesVersion=minor)
            offered = {v["addonVersion"] for page in pages for a in page["addons"] for v in a["addonVersions"]}
            if build not in offered:
                missing.append(f"{addon} {build} for Kubernetes {minor} (offered: {sorted(offered)[-3:]})")
    assert missing == []


def test_the_ray_image_base_is_the_pinned_python_from_ecr_public():
    from charts.k8s import image_registry

    assert image_registry(versions.RAY_IMAGE_BASE) == "public.ecr.aws"
    tag = versions.RAY_IMAGE_BASE.rsplit(":", 1)[1]
    assert re.match(rf"^{re.escape(versions.RAY_PYTHON_VERSION)}\.\d+-slim", tag), tag  # a patch release


def test_the_job_requirements_pin_the_platforms_ray_and_xgboost():
    """The Ray image installs jobs/requirements.txt; local runs use requirements-dev.txt's CPU wheel."""
    assert _requirement("ray[default,train]", "jobs/requirements.txt") == versions.RAY_VERSION
    assert _requirement("xgboost", "jobs/requirements.txt") == versions.XGBOOST_VERSION
    assert _requirement("xgboost-cpu", "requirements-dev.txt") == versions.XGBOOST_VERSION


def test_every_image_asset_passes_exactly_the_build_arguments_its_dockerfile_declares(any_platform):
    """A build argument the Dockerfile does not declare is ignored by Docker, and a declared one without a value
    builds with an empty version: either way the image would not carry the pins of versions.py."""
    images = {}
    for path in any_platform.outdir.rglob("*.assets.json"):
        for asset in json.loads(path.read_text()).get("dockerImages", {}).values():
            images[asset["source"]["dockerFile"]] = asset["source"].get("dockerBuildArgs", {})
    assert {"images/ray/Dockerfile", "images/notebook/Dockerfile"} <= set(images)
    for dockerfile, args in images.items():
        text = (ROOT / dockerfile).read_text()
        declared = set(re.findall(r"^ARG\s+([A-Z_]+)", text, re.MULTILINE))
        defaulted = set(re.findall(r"^ARG\s+([A-Z_]+)=", text, re.MULTILINE))
        assert declared - defaulted <= set(args) <= declared, dockerfile
        assert args.get("RAY_VERSION") == versions.RAY_VERSION and args.get("PYTHON_VERSION") == versions.RAY_PYTHON_VERSION
    ray = images["images/ray/Dockerfile"]
    assert ray["BASE_IMAGE"] == versions.RAY_IMAGE_BASE and ray["XGBOOST_VERSION"] == versions.XGBOOST_VERSION
