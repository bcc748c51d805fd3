"""Helm releases of the pinned upstream charts (versions.HELM_CHARTS), one way for every stack."""

from __future__ import annotations

from typing import Any, Mapping

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

import versions


def pinned_chart(
    scope: Construct,
    construct_id: str,
    *,
    cluster: eks.ICluster,
    chart: str,
    namespace: str,
    values: Mapping[str, Any] | None = None,
    create_namespace: bool = False,
    wait: bool = False,
    skip_crds: bool | None = None,
    timeout: cdk.Duration | None = None,
) -> eks.HelmChart:
    """A release named ``chart`` of the repository and version pinned for it in versions.py."""
    repository, version = versions.HELM_CHARTS[chart]
    if repository.startswith("oci://"):
        # The kubectl handler runs `helm pull <Repository> --version <v>` for OCI sources and ignores
        # `Chart` (aws-cdk-lib 2.273.0, aws-eks-v2 kubectl handler helm/__init__.py, get_oci_cmd): the
        # repository must name the chart itself, as helm's OCI references do.
        repository = f"{repository.rstrip('/')}/{chart}"
    return eks.HelmChart(
        scope,
        construct_id,
        cluster=cluster,
        chart=chart,
        repository=repository,
        version=version,
        release=chart,
        namespace=namespace,
        create_namespace=create_namespace,
        values=dict(values) if values is not None else None,
        wait=wait,
        skip_crds=skip_crds,
        timeout=timeout,
    )
