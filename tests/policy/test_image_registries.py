"""No image a node pulls comes from Docker Hub.

Docker Hub rate-limits anonymous pulls per source IP address, and every node of the platform pulls through the
NAT gateway's address: a scale-out of Spot workers pulling from Docker Hub is throttled exactly when work arrives.
Every image reference is collected from the synthesized templates (our manifests, and every Helm release's values
merged over the chart's defaults where the chart's values.yaml is vendored; :data:`UPSTREAM_DEFAULTS` lists the
defaults of the other charts) and its registry is checked.

One reviewed exception: Grafana's own image (``grafana/grafana``, the kube-prometheus-stack release's Grafana), see
:data:`DOCKER_HUB_EXCEPTIONS`.
"""

from __future__ import annotations

import pathlib
from typing import Any, Iterator, Mapping

import pytest
import yaml

from charts.k8s import image_registry

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "schemas"

# Default values of the releases whose chart values.yaml is vendored (schemas/PROVENANCE.md).
VENDORED_VALUES = {
    "karpenter": SCHEMAS / "karpenter" / "values.yaml",
    "kuberay-operator": SCHEMAS / "kuberay" / "values.yaml",
    "kube-prometheus-stack": SCHEMAS / "kube-prometheus-stack" / "values.yaml",
}

# Subcharts whose values.yaml is vendored, by the key of the parent's values Helm hands them (Chart.yaml
# dependencies). Their defaults sit under the parent's: subchart values.yaml < parent values.yaml < ours.
VENDORED_SUBCHART_VALUES = {
    "kube-prometheus-stack": {
        "grafana": SCHEMAS / "grafana" / "values.yaml",
        "kube-state-metrics": SCHEMAS / "kube-state-metrics" / "values.yaml",
    },
}

# Parts of a chart's values that render no pod unless switched on: (values path of the subtree, the condition
# under which the chart renders it, as the template reads it). A subtree is left out of the collection only while
# its condition is false in the merged values, so switching one on brings its images back under the check.
#   grafana chart templates/_pod.tpl: the init-chown-data container needs persistence.enabled AND
#     initChownData.enabled (busybox, Docker Hub); tests/pod-test.yaml (helm test) needs testFramework.enabled
#     (bats, Docker Hub); templates/image-renderer-deployment.yaml needs imageRenderer.enabled (Docker Hub).
RENDERED_ONLY_WHEN: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "kube-prometheus-stack": [
        ("grafana.initChownData", ("grafana.persistence.enabled", "grafana.initChownData.enabled")),
        ("grafana.testFramework", ("grafana.testFramework.enabled",)),
        ("grafana.imageRenderer", ("grafana.imageRenderer.enabled",)),
    ],
}

# The one reviewed Docker Hub image, by exactly where it is set and what it is:
#   Grafana Labs publishes the Grafana OSS image only as docker.io/grafana/grafana (grafana.com "Configure a Grafana
#   Docker image": official images grafana/grafana and grafana/grafana-enterprise on Docker Hub; the grafana
#   chart's values.yaml defaults image.registry to docker.io). Requests for an official ECR Public or Quay copy
#   are open upstream (grafana/grafana issues #29539 and #27677); the copies on ECR Public and GHCR are other
#   publishers' (Bitnami, individuals), not Grafana Labs'. It is accepted because it is one pod (replicas 1) pinned
#   to the on-demand system nodes (charts/metrics.py; tests/schema/test_metrics.py checks the placement): it is
#   pulled once per system node, never by a Spot scale-out, and the platform's values name the registry
#   explicitly (grafana.image.registry: docker.io) so the choice is visible. Any other Docker Hub image still fails.
DOCKER_HUB_EXCEPTIONS = {
    ("helm kube-prometheus-stack:grafana.image", "docker.io/grafana/grafana"),
}

# The image repositories the other charts pull by default at the pinned versions, by values path, for the images our
# values do not override. Reviewed from the charts' values.yaml; they are not vendored here.
#   cilium 1.20.0 (cilium/cilium install/kubernetes/cilium/values.yaml): quay.io/cilium/* for the agent, the
#     operator (the "-aws" flavour with ENI IPAM), Envoy, Hubble relay/UI and certgen.
#   jupyterhub 4.4.0 (jupyterhub/zero-to-jupyterhub-k8s jupyterhub/values.yaml): quay.io/jupyterhub/* for the hub,
#     CHP, the image awaiter, secret-sync and network-tools; registry.k8s.io for kube-scheduler and pause. The one
#     Docker Hub image, traefik, belongs to the autohttps pod, which runs only with proxy.https.type letsencrypt
#     (tested below to be off).
#   nvidia-device-plugin 0.20.0 (NVIDIA/k8s-device-plugin deployments/helm/nvidia-device-plugin/values.yaml):
#     nvcr.io/nvidia/k8s-device-plugin.
UPSTREAM_DEFAULTS: dict[str, dict[str, str]] = {
    "cilium": {
        "image": "quay.io/cilium/cilium",
        "operator.image": "quay.io/cilium/operator",
        "envoy.image": "quay.io/cilium/cilium-envoy",
        "hubble.relay.image": "quay.io/cilium/hubble-relay",
        "hubble.ui.backend.image": "quay.io/cilium/hubble-ui-backend",
        "hubble.ui.frontend.image": "quay.io/cilium/hubble-ui",
        "certgen.image": "quay.io/cilium/certgen",
    },
    "jupyterhub": {
        "hub.image": "quay.io/jupyterhub/k8s-hub",
        "proxy.chp.image": "quay.io/jupyterhub/configurable-http-proxy",
        "proxy.secretSync.image": "quay.io/jupyterhub/k8s-secret-sync",
        "singleuser.networkTools.image": "quay.io/jupyterhub/k8s-network-tools",
        "scheduling.userScheduler.image": "registry.k8s.io/kube-scheduler",
        "scheduling.userPlaceholder.image": "registry.k8s.io/pause",
        "prePuller.hook.image": "quay.io/jupyterhub/k8s-image-awaiter",
        "prePuller.pause.image": "registry.k8s.io/pause",
    },
    "nvidia-device-plugin": {"image": "nvcr.io/nvidia/k8s-device-plugin"},
}


def _image_ref(node: Any) -> str | None:
    """An image reference from a values/manifest node: a string, or a mapping of registry/repository/name/tag."""
    if isinstance(node, str):
        return node or None
    if isinstance(node, Mapping):
        repo = node.get("repository") or node.get("name")
        if isinstance(repo, str) and repo:
            registry = node.get("registry")
            return f"{registry}/{repo}" if isinstance(registry, str) and registry else repo
    return None


def _images(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (path, image reference) under ``node``: values of keys named ``image`` (Kubernetes containers, Helm
    values conventions) and of keys named ``repository`` directly under an ``image`` mapping."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "image":
                ref = _image_ref(value)
                if ref:
                    yield here, ref
                    continue
            yield from _images(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _images(item, f"{path}[{i}]")


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over if over is not None else base


def _get(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _without(values: Mapping[str, Any], dotted: str) -> dict[str, Any]:
    """``values`` without the subtree at ``dotted``."""
    head, _, rest = dotted.partition(".")
    if head not in values:
        return dict(values)
    if not rest:
        return {k: v for k, v in values.items() if k != head}
    child = values[head]
    return {**values, head: _without(child, rest) if isinstance(child, Mapping) else child}


def chart_defaults(chart: str) -> dict[str, Any]:
    """The chart's vendored values.yaml, with its vendored subcharts' defaults under their keys."""
    values = yaml.safe_load(VENDORED_VALUES[chart].read_text())
    for key, path in VENDORED_SUBCHART_VALUES.get(chart, {}).items():
        values[key] = _merge(yaml.safe_load(path.read_text()), values.get(key) or {})
    return values


def unrendered(chart: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the subtrees of :data:`RENDERED_ONLY_WHEN` whose condition is false in ``values``."""
    for subtree, conditions in RENDERED_ONLY_WHEN.get(chart, []):
        if not all(_get(values, c) for c in conditions):
            values = _without(values, subtree)
    return dict(values)


def pulled_images(assembly) -> list[tuple[str, str]]:
    """(where, reference) of every image the platform's pods may pull."""
    found: list[tuple[str, str]] = []
    for resource in assembly.manifests():
        for obj in resource.objects:
            where = f"{resource.stack}/{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            found += [(f"{where}:{path}", ref) for path, ref in _images(obj)]
    for release, resource in assembly.helm_releases().items():
        chart = resource.properties.get("Chart")
        values = resource.values
        if chart in VENDORED_VALUES:
            values = unrendered(chart, _merge(chart_defaults(chart), values))
        found += [(f"helm {release}:{path}", ref) for path, ref in _images(values)]
        for path, default in UPSTREAM_DEFAULTS.get(chart, {}).items():
            if _image_ref(_get(values, path)) is None:
                found.append((f"helm {release}:{path} (chart default)", default))
    return found


@pytest.mark.parametrize(
    "reference, registry",
    [
        ("rayproject/ray:2.60.0-py311-cpu", "docker.io"),
        ("python:3.11", "docker.io"),
        ("traefik", "docker.io"),
        ("docker.io/library/python:3.11", "docker.io"),
        ("index.docker.io/rayproject/ray:2.60.0", "docker.io"),
        ("registry-1.docker.io/library/busybox@sha256:" + "0" * 64, "docker.io"),
        ("quay.io/cilium/cilium:v1.20.0", "quay.io"),
        ("public.ecr.aws/docker/library/python:3.11.14-slim-bookworm", "public.ecr.aws"),
        ("localhost/ray:dev", "localhost"),
        ("localhost:5000/ray:dev", "localhost:5000"),
        ("${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/cdk-hnb659fds-container-assets:abc",
         "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}"),
    ],
)
def test_the_registry_of_a_reference(reference, registry):
    assert image_registry(reference) == registry


def test_the_collector_sees_images_in_every_shape():
    """Guards the walk below: a collector that finds nothing would pass the Docker Hub check vacuously."""
    tree = {
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "busybox"}],
                                       "initContainers": [{"name": "b", "image": "quay.io/x/y:1"}]}}},
        "controller": {"image": {"repository": "public.ecr.aws/karpenter/controller", "tag": "1"}},
        "hub": {"image": {"name": "quay.io/jupyterhub/k8s-hub", "tag": "4"}},
        "relay": {"image": {"registry": "ghcr.io", "repository": "org/relay"}},
    }
    assert sorted(ref for _, ref in _images(tree)) == [
        "busybox", "ghcr.io/org/relay", "public.ecr.aws/karpenter/controller", "quay.io/jupyterhub/k8s-hub",
        "quay.io/x/y:1"]


def test_no_pulled_image_comes_from_docker_hub(any_platform):
    images = pulled_images(any_platform.assembly)
    wheres = " ".join(where for where, _ in images)
    # The collector reached every kind of source: the Ray pods, the notebook image, an upstream default.
    assert "RayCluster/ray" in wheres and "singleuser.image" in wheres and "chart default" in wheres, wheres
    hub = [(where, ref) for where, ref in images if image_registry(ref) == "docker.io"]
    assert [image for image in hub if image not in DOCKER_HUB_EXCEPTIONS] == []
    # The exception is still needed (else delete it) and matches exactly one image.
    assert sorted(image for image in hub if image in DOCKER_HUB_EXCEPTIONS) == sorted(DOCKER_HUB_EXCEPTIONS)


def test_the_docker_hub_exception_is_exactly_grafanas_image():
    """Another image at the excepted path, or Grafana's image set anywhere else, is not excepted."""
    (where, ref), = DOCKER_HUB_EXCEPTIONS
    assert (where, "docker.io/grafana/grafana-image-renderer") not in DOCKER_HUB_EXCEPTIONS
    assert ("helm kube-prometheus-stack:grafana.testFramework.image", ref) not in DOCKER_HUB_EXCEPTIONS
    assert image_registry(ref) == "docker.io" and ref.endswith("/grafana/grafana")


def test_the_monitoring_release_images_are_all_collected(any_platform):
    """The operator, Prometheus, its config reloader, kube-state-metrics, Grafana and Grafana's sidecar, from the
    vendored values of kube-prometheus-stack and its subcharts (defaults under the platform's values)."""
    images = dict(pulled_images(any_platform.assembly))
    expected = {
        "prometheusOperator.image": "quay.io/prometheus-operator/prometheus-operator",
        "prometheusOperator.prometheusConfigReloader.image": "quay.io/prometheus-operator/prometheus-config-reloader",
        "prometheus.prometheusSpec.image": "quay.io/prometheus/prometheus",
        "kube-state-metrics.image": "registry.k8s.io/kube-state-metrics/kube-state-metrics",
        "grafana.image": "docker.io/grafana/grafana",
        "grafana.sidecar.image": "quay.io/kiwigrid/k8s-sidecar",
    }
    for path, ref in expected.items():
        assert images.get(f"helm kube-prometheus-stack:{path}") == ref, (path, sorted(images))


def test_grafanas_docker_hub_helpers_never_run(any_platform):
    """The grafana chart's other Docker Hub images belong to pods the platform's values keep off
    (:data:`RENDERED_ONLY_WHEN`); kube-prometheus-stack's CRD upgrade Job (busybox from Docker Hub, in an
    ``image: {busybox: ..., kubectl: ...}`` map the walk above does not read) is off too."""
    (resource,) = [r for r in any_platform.assembly.helm_releases().values()
                   if r.properties.get("Chart") == "kube-prometheus-stack"]
    values = _merge(chart_defaults("kube-prometheus-stack"), resource.values)
    for subtree, conditions in RENDERED_ONLY_WHEN["kube-prometheus-stack"]:
        assert not all(_get(values, c) for c in conditions), subtree
    assert _get(values, "crds.upgradeJob.enabled") is False
    assert _get(values, "crds.upgradeJob.image.busybox.registry") == "docker.io"  # why it must stay off


@pytest.mark.parametrize("enabled, collected", [(True, True), (False, False)])
def test_a_component_switched_on_brings_its_images_back(enabled, collected):
    values = _merge(chart_defaults("kube-prometheus-stack"), {"grafana": {"testFramework": {"enabled": enabled}}})
    refs = [ref for _, ref in _images(unrendered("kube-prometheus-stack", values))]
    assert ("docker.io/bats/bats" in refs) is collected


def test_the_ray_pods_run_the_platforms_image_asset(any_platform):
    """Head, workers and the token bootstrap pull the image built from images/ray (an ECR asset repository)."""
    ray = [(where, ref) for where, ref in pulled_images(any_platform.assembly)
           if "RayCluster/ray" in where or "Job/ray-auth-token-bootstrap" in where]
    assert len(ray) >= 3, ray
    for where, ref in ray:
        assert ".dkr.ecr." in ref and "container-assets" in ref, (where, ref)


def test_the_z2jh_autohttps_pod_with_its_docker_hub_traefik_never_runs(any_platform):
    """z2jh starts its autohttps pod (traefik, from Docker Hub) only for proxy.https.type letsencrypt
    (jupyterhub/templates/proxy/autohttps/*.yaml are guarded by the chart's $autoHTTPS helper)."""
    (values,) = [r.values for r in any_platform.assembly.helm_releases().values() if r.properties.get("Chart") == "jupyterhub"]
    https = _get(values, "proxy.https") or {}
    assert not https.get("enabled") or https.get("type") != "letsencrypt", https
