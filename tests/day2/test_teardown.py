"""Teardown: `make destroy` (cdk destroy 'DynamicFactory/*') deletes what it should, in an order that works.

CloudFormation deletes stacks in the reverse of their dependency order, and inside a stack deletes a
resource only after everything that depends on it (DependsOn or a reference) is gone. So "A is deleted
before B" holds exactly when B is an ancestor of A in the deploy graph (tools/boot/deploy.py), across
stacks too. The tests below play that order over the synthesized templates for what Kubernetes finalizers
and controllers need at delete time, and check what is left behind against the README.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools.boot.deploy import DeployGraph
from tools.boot.workloads import iter_kube_objects
from tools.render import Assembly

ROOT = Path(__file__).resolve().parents[2]
STAGE = "assembly-DynamicFactory"


def graph(synth) -> DeployGraph:
    return DeployGraph(Assembly(synth.outdir / STAGE))


def one(g: DeployGraph, type_: str, predicate=lambda r: True):
    found = g.find(type_, predicate)
    assert len(found) == 1, [r.key for r in found]
    return found[0].key


def manifest_with(g: DeployGraph, kind: str, name: str):
    keys = {key for key, obj in iter_kube_objects(g, [kind]) if obj["metadata"]["name"] == name}
    return keys


def release(g: DeployGraph, chart: str):
    return one(g, "Custom::AWSCDK-EKS-HelmChart", lambda r: r.properties.get("Chart") == chart)


def deleted_before(g: DeployGraph, first, then) -> bool:
    return then in g.ancestors(first)


@pytest.fixture(scope="module", params=["default", "variant"])
def synth(request):
    return request.getfixturevalue("platform" if request.param == "default" else "variant")


def test_node_pools_go_while_karpenter_and_what_its_nodes_need_still_exist(synth):
    """Deleting a NodePool makes Karpenter drain and terminate its nodes (finalizers): the controller, its
    credentials, its queue, and the nodes' role and access entry must outlive the pools."""
    g = graph(synth)
    (pools,) = manifest_with(g, "NodePool", "spot")
    needed = {
        "karpenter controller": release(g, "karpenter"),
        "controller Pod Identity": one(g, "AWS::EKS::PodIdentityAssociation",
                                       lambda r: r.properties.get("ServiceAccount") == "karpenter"),
        "node access entry": one(g, "AWS::EKS::AccessEntry", lambda r: r.properties.get("Type") == "EC2_LINUX"),
        "interruption queue": one(g, "AWS::SQS::Queue"),
    }
    late = [name for name, key in needed.items() if not deleted_before(g, pools, key)]
    assert late == [], f"deleted before (or with) the NodePools: {late}"


def test_the_node_class_goes_after_every_pool_and_while_karpenter_and_the_node_role_exist(synth):
    """The EC2NodeClass finalizer waits for every NodeClaim, then deletes the instance profiles Karpenter made for
    the node role and its launch templates: the EC2NodeClass is deleted on its own, after every NodePool, while
    the controller, its credentials and the node role (which IAM deletes only once it is in no profile) exist."""
    g = graph(synth)
    (node_class,) = manifest_with(g, "EC2NodeClass", "default")
    pools = {key for key, _ in iter_kube_objects(g, ["NodePool"])}
    assert pools and node_class not in pools
    early = [g.label(key) for key in pools if not deleted_before(g, key, node_class)]
    assert early == [], f"deleted after (or with) the EC2NodeClass: {early}"
    needed = {
        "karpenter controller": release(g, "karpenter"),
        "controller Pod Identity": one(g, "AWS::EKS::PodIdentityAssociation",
                                       lambda r: r.properties.get("ServiceAccount") == "karpenter"),
        "interruption queue": one(g, "AWS::SQS::Queue"),
        "node role": one(g, "AWS::IAM::Role", lambda r: g.stack_name(r.key).endswith("-karpenter")
                         and "ec2.amazonaws.com" in str(r.properties.get("AssumeRolePolicyDocument"))),
    }
    late = [name for name, key in needed.items() if not deleted_before(g, node_class, key)]
    assert late == [], f"deleted before (or with) the EC2NodeClass: {late}"


def test_the_ray_cluster_goes_while_its_operator_runs(synth):
    g = graph(synth)
    clusters = {key for key, _ in iter_kube_objects(g, ["RayCluster"])}
    operator = release(g, "kuberay-operator")
    assert clusters and all(deleted_before(g, ray, operator) for ray in clusters)
    # The namespaces the operator watches (and holds Roles in) go after it.
    namespaces = [key for key, obj in iter_kube_objects(g, ["Namespace"])
                  if obj["metadata"]["name"] == "ray" or obj["metadata"]["name"].startswith("ray-")]
    assert namespaces and all(deleted_before(g, operator, ns) for ns in namespaces)


def test_the_hub_goes_before_its_namespace_and_the_namespace_while_the_volume_driver_runs(synth):
    """The JupyterHub stack owns the namespace: it is deleted after the release, taking the notebook pods
    KubeSpawner made and the home claims; the EBS CSI driver and the StorageClasses must still exist then,
    or claims of a Delete class leave their volumes behind."""
    g = graph(synth)
    hub = release(g, "jupyterhub")
    owned = [key for key in manifest_with(g, "Namespace", "jupyterhub") if g.stack_name(key).endswith("-jupyterhub")]
    assert len(owned) == 1, "the JupyterHub stack must own the jupyterhub namespace"
    (namespace,) = owned
    assert deleted_before(g, hub, namespace)
    ebs = one(g, "AWS::EKS::Addon", lambda r: r.properties.get("AddonName") == "aws-ebs-csi-driver")
    storage = manifest_with(g, "StorageClass", "gp3-retain")
    assert deleted_before(g, namespace, ebs)
    assert storage and all(deleted_before(g, namespace, key) for key in storage)


def test_destroying_the_ray_stack_never_deletes_the_notebook_namespace(synth):
    g = graph(synth)
    ray_copies = [key for key in manifest_with(g, "Namespace", "jupyterhub") if g.stack_name(key).endswith("-ray")]
    assert ray_copies, "the Ray stack applies the namespace first (its token bootstrap writes there)"
    for stack, logical_id in ray_copies:
        resource = synth.assembly.templates[stack]["Resources"][logical_id]
        # Kept on delete and update; only a rolled-back first create removes it.
        assert resource.get("DeletionPolicy") == "RetainExceptOnCreate", logical_id
        # Applied, not `kubectl create`d: a rebuilt Ray stack finds the namespace already there.
        assert str(resource["Properties"].get("Overwrite")).lower() == "true", logical_id


def test_the_load_balancer_goes_before_the_network(variant):
    """With a domain the proxy Service is an NLB that EKS's cloud controller removes when the release goes;
    the subnets and VPC it lives in are deleted only afterwards (last stack)."""
    g = graph(variant)
    hub = release(g, "jupyterhub")
    assert '"type":"LoadBalancer"' in re.sub(r"\s", "", str(g.resources[hub].properties["Values"]).replace("'", '"'))
    for subnet in g.find("AWS::EC2::Subnet"):
        assert deleted_before(g, hub, subnet.key)


def test_homes_and_the_hub_database_are_kept_by_default_and_deleted_when_asked(platform, variant):
    """Default: keep_homes_on_destroy, a Retain class for home claims. The variant sets it to false: the Delete
    class. The hub database is always kept: its claim exists from the first install and a bound claim's class
    cannot change, so following the setting would fail every later helm upgrade."""
    for synth, reclaim in ((platform, "Retain"), (variant, "Delete")):
        g = graph(synth)
        classes = {o["metadata"]["name"]: o["reclaimPolicy"] for _, o in iter_kube_objects(g, ["StorageClass"])}
        values = g.assembly.helm_releases()["jupyterhub"].values
        homes = values["singleuser"]["storage"]["dynamic"]["storageClass"]
        database = values["hub"]["db"]["pvc"]["storageClassName"]
        assert classes[homes] == reclaim, (synth.config.jupyterhub, classes)
        assert classes[database] == "Retain" and database == "gp3-retain"


def _all_templates(platform, variant, pipeline_platform):
    yield from platform.assembly.templates.items()
    yield from variant.assembly.templates.items()
    # The pipeline stack itself (torn down separately, `npx cdk destroy Pipeline`) and each stage it deploys.
    yield from Assembly(pipeline_platform.outdir).templates.items()


def test_no_retained_log_group_is_encrypted_with_a_key_that_is_deleted(platform, variant, pipeline_platform):
    """A log group kept after its key is gone can be neither read nor written: it must go too."""
    problems = []
    for stack, template in _all_templates(platform, variant, pipeline_platform):
        resources = template.get("Resources", {})
        for logical_id, res in resources.items():
            if res["Type"] != "AWS::Logs::LogGroup" or res.get("DeletionPolicy", "Delete") == "Delete":
                continue
            key = res["Properties"].get("KmsKeyId")
            key_id = key.get("Fn::GetAtt", [None])[0] if isinstance(key, dict) else None
            if key_id in resources and resources[key_id].get("DeletionPolicy", "Delete") == "Delete":
                problems.append(f"{stack} {logical_id}: retained, encrypted with {key_id}, which is deleted")
    assert problems == []


def readme_survivors() -> set[str]:
    section = (ROOT / "README.md").read_text().split("## Tearing down", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(AWS::[A-Za-z0-9:]+)` \|", section, re.M))


def test_what_survives_teardown_is_what_the_readme_lists(platform, variant, pipeline_platform):
    retained = {res["Type"] for _, template in _all_templates(platform, variant, pipeline_platform)
                for res in template.get("Resources", {}).values() if res.get("DeletionPolicy") == "Retain"
                and not res["Type"].startswith("Custom::")}
    assert retained == readme_survivors()


def test_turning_the_gpu_pool_off_deletes_it(variant):
    """`prune` removes only built-in kinds, so a NodePool sharing a manifest with the others would stay when
    the GPU pool is switched off. As a resource of its own, CloudFormation deletes it (and Karpenter its
    nodes), after the device plugin."""
    g = graph(variant)
    (key,) = manifest_with(g, "NodePool", "gpu")
    objects = [obj for r in g.assembly.manifests() if (r.stack, r.logical_id) == key for obj in r.objects]
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [("NodePool", "gpu")]
    assert deleted_before(g, release(g, "nvidia-device-plugin"), key)
    (node_class,) = {k for k, _ in iter_kube_objects(g, ["EC2NodeClass"])}
    assert deleted_before(g, key, node_class)
