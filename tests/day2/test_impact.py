"""Day 2: change impact (tools/impact), classified by CloudFormation's own resource schemas.

Part 1 pins the classifier on small hand-made template pairs (in place, replacement, add/delete, named
collisions, references to replaced resources, Kubernetes re-applies). Part 2 is the matrix: the model's
default configuration against one changed setting at a time, each synthesized once per session; nothing
stateful may be replaced and no replacement may collide with a fixed name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.platform_synth import SynthesizedPlatform, model_context
from tools.impact import STACK_TYPE, Change, compare, counts, errors, from_templates, impact, render
from tools.impact.__main__ import main as impact_main
from tools.impact.synth import ContextError, parse_context, synthesize
from tools.render import HELM_TYPE, MANIFEST_TYPE


def _res(type_: str, **props) -> dict:
    return {"Type": type_, "Properties": props}


def _run(before: dict, after: dict) -> list[Change]:
    return compare(from_templates({"S": {"Resources": before}}), from_templates({"S": {"Resources": after}}))


def _one(changes: list[Change], logical_id: str) -> Change:
    found = [c for c in changes if c.logical_id == logical_id]
    assert len(found) == 1, f"{logical_id}: {found}"
    return found[0]


def _nodegroup(**props) -> dict:
    base = {"ClusterName": "c", "NodeRole": "arn:aws:iam::111122223333:role/n", "Subnets": ["subnet-1"],
            "InstanceTypes": ["t3a.large"], "ScalingConfig": {"MinSize": 2, "MaxSize": 3, "DesiredSize": 2}}
    return _res("AWS::EKS::Nodegroup", **{**base, **props})


def _manifest(*objects, prune: bool = True) -> dict:
    props = {"ServiceToken": "arn:handler", "ClusterName": "c", "Manifest": json.dumps(list(objects))}
    if prune:
        props["PruneLabel"] = "aws.cdk.eks/prune-x"
    return _res(MANIFEST_TYPE, **props)


def _obj(kind: str, name: str, namespace: str | None = None, **spec) -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "v1", "kind": kind, "metadata": meta, **spec}


# ============================================================== the classifier, on hand-made pairs

def test_a_mutable_property_is_updated_in_place():
    before = {"Role": _res("AWS::IAM::Role", AssumeRolePolicyDocument={}, ManagedPolicyArns=["arn:a"])}
    after = {"Role": _res("AWS::IAM::Role", AssumeRolePolicyDocument={}, ManagedPolicyArns=["arn:b"])}
    change = _one(_run(before, after), "Role")
    assert (change.action, change.paths, change.errors) == ("update", ("ManagedPolicyArns[0]",), [])


def test_identical_templates_have_no_changes():
    same = {"Role": _res("AWS::IAM::Role", AssumeRolePolicyDocument={})}
    assert _run(same, json.loads(json.dumps(same))) == []


def test_a_create_only_property_replaces_an_unnamed_resource_without_error():
    change = _one(_run({"Ng": _nodegroup()}, {"Ng": _nodegroup(InstanceTypes=["m7i.large"])}), "Ng")
    assert change.action == "replace"
    assert change.reasons == ("create-only InstanceTypes",)
    assert (change.collision, change.loses, change.errors) == (None, (), [])


def test_a_nested_create_only_property_replaces_but_its_siblings_do_not():
    def cluster(**props):
        return _res("AWS::EKS::Cluster", RoleArn="arn:r", ResourcesVpcConfig={"SubnetIds": ["s"]}, **props)

    nested = _run({"C": cluster(KubernetesNetworkConfig={"IpFamily": "ipv4"})},
                  {"C": cluster(KubernetesNetworkConfig={"IpFamily": "ipv6"})})
    assert _one(nested, "C").reasons == ("create-only KubernetesNetworkConfig.IpFamily",)
    sibling = _run({"C": cluster(Logging={"ClusterLogging": {}})}, {"C": cluster(Logging={})})
    assert _one(sibling, "C").action == "update"


@pytest.mark.parametrize("new_name, collides", [("system", True), ("system-2", False)])
def test_a_replacement_that_keeps_its_fixed_name_collides(new_name, collides):
    before = {"Ng": _nodegroup(NodegroupName="system")}
    after = {"Ng": _nodegroup(NodegroupName=new_name, InstanceTypes=["m7i.large"])}
    change = _one(_run(before, after), "Ng")
    assert change.action == "replace"
    assert bool(change.collision) is collides
    assert (change.collision is not None and "NodegroupName system" in change.collision) is collides
    assert bool(errors([change])) is collides


def test_a_role_whose_path_changes_collides_on_its_role_name():
    before = {"R": _res("AWS::IAM::Role", RoleName="ray-head", Path="/", AssumeRolePolicyDocument={})}
    after = {"R": _res("AWS::IAM::Role", RoleName="ray-head", Path="/ray/", AssumeRolePolicyDocument={})}
    change = _one(_run(before, after), "R")
    assert change.reasons == ("create-only Path",)
    assert "RoleName ray-head" in change.collision


def test_a_stateful_replacement_is_an_error_naming_what_is_lost():
    change = _one(_run({"B": _res("AWS::S3::Bucket", BucketName="ckpt-a")},
                       {"B": _res("AWS::S3::Bucket", BucketName="ckpt-b")}), "B")
    assert (change.action, change.collision) == ("replace", None)  # a new name: no collision, but the data goes
    assert change.loses == ("every object in the bucket",)
    assert errors([change]) == ["S/B: replaced, losing every object in the bucket"]


def test_added_and_deleted_resources_and_what_a_deletion_loses():
    changes = _run({"B": _res("AWS::S3::Bucket"), "Q": _res("AWS::SQS::Queue")},
                   {"Q": _res("AWS::SQS::Queue"), "Eip": _res("AWS::EC2::EIP", Domain="vpc")})
    assert [(c.logical_id, c.action) for c in changes] == [("B", "delete"), ("Eip", "add")]
    assert _one(changes, "B").loses == ("every object in the bucket",)
    assert errors(changes) == []  # a deletion is reported, it is not a failed check
    assert counts(changes) == {"replace": 0, "delete": 1, "add": 1, "update": 0, "reapply": 0}


def test_a_retained_deletion_loses_nothing():
    retained = {"B": {**_res("AWS::S3::Bucket"), "DeletionPolicy": "Retain"}}
    change = _one(_run(retained, {}), "B")
    assert change.loses == ()
    assert "DeletionPolicy Retain" in change.notes[0]


def test_a_re_created_resource_with_the_same_name_collides():
    """A new logical id for a named resource: CloudFormation creates the new one before deleting the old."""
    changes = _run({"QueueA": _res("AWS::SQS::Queue", QueueName="interruptions")},
                   {"QueueB": _res("AWS::SQS::Queue", QueueName="interruptions")})
    assert "QueueName interruptions" in _one(changes, "QueueB").collision
    assert errors(_run({"QueueA": _res("AWS::SQS::Queue", QueueName="a")},
                       {"QueueB": _res("AWS::SQS::Queue", QueueName="b")})) == []


def test_a_name_that_moves_to_another_logical_id_collides_with_its_old_holder():
    """Index-keyed resources: inserting one in front shifts every name to the next logical id."""
    def entry(arn):
        return _res("AWS::EKS::AccessEntry", ClusterName="c", PrincipalArn=arn)

    changes = _run({"Admin0": entry("arn:a")}, {"Admin0": entry("arn:b"), "Admin1": entry("arn:a")})
    assert _one(changes, "Admin0").action == "replace" and _one(changes, "Admin0").collision is None
    collision = _one(changes, "Admin1").collision
    assert "PrincipalArn arn:a" in collision and "S/Admin0 (replaced)" in collision
    assert errors(_run({"Admin0": entry("arn:a")}, {"Admin0": entry("arn:a"), "Admin1": entry("arn:b")})) == []


def test_the_same_reference_to_a_replaced_resource_is_a_new_name():
    def cluster(name):
        return _res("AWS::EKS::Cluster", Name=name, RoleArn="r", ResourcesVpcConfig={})

    def entry(arn):
        return _res("AWS::EKS::AccessEntry", ClusterName={"Ref": "C"}, PrincipalArn=arn)

    changes = _run({"C": cluster("a"), "Old": entry("arn:a")}, {"C": cluster("b"), "New": entry("arn:a")})
    assert _one(changes, "New").collision is None  # on the new cluster
    changes = _run({"C": cluster("a"), "Old": entry("arn:a")}, {"C": cluster("a"), "New": entry("arn:a")})
    assert _one(changes, "New").collision is not None


def test_a_type_change_replaces():
    change = _one(_run({"X": _res("AWS::IAM::Policy", PolicyName="p")},
                       {"X": _res("AWS::IAM::ManagedPolicy")}), "X")
    assert change.action == "replace" and change.reasons == ("type AWS::IAM::Policy -> AWS::IAM::ManagedPolicy",)


def test_a_type_without_a_schema_is_reported_as_unknown():
    change = _one(_run({"X": _res("AWS::Made::Up", A=1)}, {"X": _res("AWS::Made::Up", A=2)}), "X")
    assert change.action == "update"
    assert "no CloudFormation schema" in change.notes[0]


# --------------------------------------------------------------- references to changed resources

def test_a_create_only_reference_to_a_replaced_resource_replaces_its_holder():
    def cluster(name):
        return _res("AWS::EKS::Cluster", Name=name, RoleArn="arn:r", ResourcesVpcConfig={"SubnetIds": ["s"]})

    before = {"C": cluster("a"), "Ng": _nodegroup(ClusterName={"Ref": "C"}),
              "R": _res("AWS::IAM::Role", AssumeRolePolicyDocument={"c": {"Fn::GetAtt": ["C", "Arn"]}})}
    after = {"C": cluster("b"), "Ng": _nodegroup(ClusterName={"Ref": "C"}),
             "R": _res("AWS::IAM::Role", AssumeRolePolicyDocument={"c": {"Fn::GetAtt": ["C", "Arn"]}})}
    changes = _run(before, after)
    assert _one(changes, "C").stateful_replacement
    node_group = _one(changes, "Ng")
    assert node_group.action == "replace"
    assert node_group.reasons == ("create-only ClusterName (follows C, replaced)",)
    assert _one(changes, "R").action == "update"


def test_an_in_place_update_does_not_change_a_reference_but_a_new_version_does():
    def template(data):
        return _res("AWS::EC2::LaunchTemplate", LaunchTemplateData=data)

    def node_group():
        return _nodegroup(LaunchTemplate={"Id": {"Ref": "Lt"}, "Version": {"Fn::GetAtt": ["Lt", "LatestVersionNumber"]}},
                          NodeRole={"Fn::GetAtt": ["Role", "Arn"]})

    role_before = _res("AWS::IAM::Role", AssumeRolePolicyDocument={}, Description="a")
    role_after = _res("AWS::IAM::Role", AssumeRolePolicyDocument={}, Description="b")
    changes = _run({"Lt": template({"A": 1}), "Ng": node_group(), "Role": role_before},
                   {"Lt": template({"A": 2}), "Ng": node_group(), "Role": role_after})
    node_group_change = _one(changes, "Ng")
    assert node_group_change.action == "update"  # NodeRole is create-only, but a role's Arn survives an update
    assert node_group_change.paths == ("LaunchTemplate.Version (follows Lt.LatestVersionNumber)",)


def test_a_replacement_is_followed_across_stacks_through_stack_outputs():
    def producer(name):
        return {"Resources": {"C": _res("AWS::EKS::Cluster", Name=name, RoleArn="r", ResourcesVpcConfig={})},
                "Outputs": {"Out": {"Value": {"Ref": "C"}}}}

    consumer = {"Resources": {"Ng": _nodegroup(ClusterName={"Fn::GetStackOutput": {
        "StackName": "p-stack", "OutputName": "Out", "Region": {"Ref": "AWS::Region"}}})}}
    names = {"P": "p-stack", "K": "k-stack"}
    changes = compare(from_templates({"P": producer("a"), "K": consumer}, names),
                      from_templates({"P": producer("b"), "K": json.loads(json.dumps(consumer))}, names))
    node_group = _one(changes, "Ng")
    assert node_group.action == "replace"
    assert node_group.reasons == ("create-only ClusterName (follows C, replaced via a stack output*)",)
    assert "Fn::GetStackOutput, a weak reference" in render(changes)


# --------------------------------------------------------------------- stacks

def test_a_renamed_stack_is_a_new_stack_and_its_fixed_names_collide_with_the_old_one():
    template = {"Resources": {"R": _res("AWS::IAM::Role", RoleName="fixed", AssumeRolePolicyDocument={})}}
    changes = compare(from_templates({"S": template}, {"S": "old"}), from_templates({"S": template}, {"S": "new"}))
    stack = [c for c in changes if c.type == STACK_TYPE]
    assert [c.action for c in stack] == ["add"] and "old stays deployed" in stack[0].notes[0]
    role = _one(changes, "R")
    assert role.action == "add"
    assert "RoleName fixed" in role.collision and "stays deployed" in role.collision


@pytest.mark.parametrize("cluster, collides", [({"Ref": "Cluster"}, False), ("fixed-cluster", True)])
def test_a_renamed_stack_re_creates_kubernetes_objects_only_in_a_cluster_it_shares(cluster, collides):
    """A stack's own cluster (a Ref) is a new cluster under a new stack name; a named one is the same cluster."""
    template = {"Resources": {"M": {**_manifest(_obj("Namespace", "ray")),
                                    "Properties": {**_manifest(_obj("Namespace", "ray"))["Properties"],
                                                   "ClusterName": cluster}}}}
    changes = compare(from_templates({"S": template}, {"S": "old"}), from_templates({"S": template}, {"S": "new"}))
    collision = _one(changes, "M").collision
    assert bool(collision) is collides
    assert collision is None or "Namespace ray, still owned by M in stack old" in collision


def test_a_stack_that_is_no_longer_synthesized_is_reported_once():
    gone = {"Resources": {"B": _res("AWS::S3::Bucket")}}
    changes = compare(from_templates({"S": gone}), from_templates({}))
    assert [(c.type, c.action, c.loses) for c in changes] == [
        (STACK_TYPE, "delete", ("B: every object in the bucket",))]
    assert errors(changes) == []


# ------------------------------------------------------- custom resources and what they do in the cluster

def test_a_changed_manifest_is_re_applied_with_an_account_of_its_objects():
    spot = _obj("NodePool", "spot", spec={"limits": {"cpu": 256}})
    before = {"M": _manifest(spot)}
    after = {"M": _manifest({**spot, "spec": {"limits": {"cpu": 512}}}, _obj("NodePool", "gpu"))}
    change = _one(_run(before, after), "M")
    assert change.action == "reapply"
    assert change.kube == ("+ NodePool gpu", "~ NodePool spot: spec.limits.cpu")
    assert change.errors == []


def test_a_pruned_volume_claim_is_lost_but_an_unpruned_one_is_left_behind():
    ns, pvc = _obj("Namespace", "hub"), _obj("PersistentVolumeClaim", "hub-db-dir", "hub")
    pruned = _one(_run({"M": _manifest(ns, pvc)}, {"M": _manifest(ns)}), "M")
    assert pruned.kube == ("- PersistentVolumeClaim hub/hub-db-dir (pruned)",)
    assert pruned.loses and "hub-db-dir" in pruned.loses[0]
    kept = _one(_run({"M": _manifest(ns, pvc, prune=False)}, {"M": _manifest(ns, prune=False)}), "M")
    assert "left in the cluster" in kept.kube[0] and kept.loses == ()


def test_a_deleted_manifest_deletes_its_namespace_and_all_in_it():
    change = _one(_run({"M": _manifest(_obj("Namespace", "jupyterhub"))}, {}), "M")
    assert change.kube == ("- Namespace jupyterhub (kubectl delete)",)
    assert "Namespace jupyterhub: every object in it" in change.loses[0]


def test_an_immutable_kubernetes_field_is_flagged():
    def storage_class(kind):
        return _obj("StorageClass", "gp3", provisioner="ebs.csi.aws.com", parameters={"type": kind})

    change = _one(_run({"M": _manifest(storage_class("gp3"))}, {"M": _manifest(storage_class("io2"))}), "M")
    assert change.notes == ("StorageClass gp3: parameters.type cannot change: kubectl apply fails on the existing object",)
    assert change.errors == []  # a warning: whether it fails depends on the cluster's state


def test_a_changed_job_template_fails_only_while_the_job_still_exists():
    def job(node_pool):
        return _obj("Job", "bootstrap", "ray", spec={"ttlSecondsAfterFinished": 600,
                                                      "template": {"spec": {"nodeSelector": {"pool": node_pool}}}})

    change = _one(_run({"M": _manifest(job("system"))}, {"M": _manifest(job("on-demand"))}), "M")
    assert change.notes == ("Job ray/bootstrap: spec.template.spec.nodeSelector.pool cannot change: kubectl apply "
                            "fails while the finished Job still exists (it is deleted 600s after it finishes; then it "
                            "runs again)",)


def test_objects_moved_to_a_new_logical_id_collide_with_their_old_owner():
    objects = (_obj("Namespace", "ray"), _obj("ServiceAccount", "ray", "ray"))
    changes = _run({"Old": _manifest(*objects)}, {"New": _manifest(*objects)})
    collision = _one(changes, "New").collision
    assert "AlreadyExists" in collision and "Namespace ray" in collision
    assert errors(_run({"Old": _manifest(objects[0])}, {"New": _manifest(objects[1])})) == []


def _chart(**props) -> dict:
    return _res(HELM_TYPE, **{"ServiceToken": "arn:handler", "ClusterName": "c", "Chart": "jupyterhub",
                              "Release": "jupyterhub", "Namespace": "jupyterhub", "Version": "4.4.0", **props})


def test_a_helm_release_change_names_its_values_and_a_renamed_release_is_left_installed():
    change = _one(_run({"H": _chart(Values='{"hub": {"a": 1}}')},
                       {"H": _chart(Values='{"hub": {"a": 2}}', Release="hub")}), "H")
    assert change.action == "reapply"
    assert "~ release hub values: hub.a" in change.kube
    assert any("release jupyterhub in jupyterhub is left installed" in n for n in change.notes)


def test_uninstalling_jupyterhub_loses_the_hub_database():
    change = _one(_run({"H": _chart()}, {}), "H")
    assert change.kube == ("- release jupyterhub (helm uninstall)",)
    assert "hub database" in change.loses[0]


def test_a_replaced_custom_resource_that_keeps_its_release_collides():
    """A new ServiceToken (create-only for custom resources): install under the same release, then uninstall."""
    change = _one(_run({"H": _chart()}, {"H": _chart(ServiceToken="arn:other")}), "H")
    assert change.action == "replace" and change.reasons == ("create-only ServiceToken",)
    assert "helm upgrade --install takes the release over" in change.collision


# --------------------------------------------------------------------- CLI

def test_context_arguments_are_parsed_like_the_cdk_cli():
    warnings = []
    parsed = parse_context(["platform.a=1", "platform.b=x=y", "platform.c=", "novalue"], warn=warnings.append)
    assert parsed == {"platform.a": "1", "platform.b": "x=y", "platform.c": ""}
    assert warnings == ["Context argument is not an assignment (key=value): novalue"]
    with pytest.raises(ContextError, match="aws:"):
        parse_context(["aws:cdk:enable-path-metadata=false"])


def _write_assembly(root: Path, resources: dict) -> Path:
    stage = root / "assembly-DynamicFactory"
    stage.mkdir(parents=True)
    (stage / "S.template.json").write_text(json.dumps({"Resources": resources}))
    (stage / "manifest.json").write_text(json.dumps({"artifacts": {"S": {
        "type": "aws:cloudformation:stack", "displayName": "DynamicFactory/S",
        "properties": {"templateFile": "S.template.json", "stackName": "s"}}}}))
    return root


@pytest.mark.parametrize("new_name, status", [("system", 1), ("system-2", 0)])
def test_the_cli_exits_1_on_a_collision(tmp_path, capsys, new_name, status):
    before = _write_assembly(tmp_path / "before", {"Ng": _nodegroup(NodegroupName="system")})
    after = _write_assembly(tmp_path / "after", {"Ng": _nodegroup(NodegroupName=new_name, InstanceTypes=["m7i.large"])})
    assert impact_main(["--assemblies", str(before), str(after)]) == status
    out = capsys.readouterr().out
    assert "REPLACE  S      Ng        EKS::Nodegroup  create-only " in out and "InstanceTypes" in out
    assert ("Errors:" in out) is bool(status)


# ============================================================== the matrix: one setting at a time

ADMIN_ARN = "arn:aws:iam::111122223333:role/PlatformAdmin"
COGNITO = {
    "platform.jupyterhub.domain": "hub.example.com",
    "platform.jupyterhub.certificate_arn":
        "arn:aws:acm:us-east-1:111122223333:certificate/0f2c9f6e-1b2a-4c3d-9e8f-0123456789ab",
    "platform.jupyterhub.cognito_domain_prefix": "dynamic-factory-hub",
    "platform.jupyterhub.admin_user": "admin@example.com",  # Cognito users are named by their e-mail
}


def _kube(changes, text):
    return any(text in line for c in changes for line in c.kube)


def _has(changes, type_, action):
    return any(c.type == type_ and c.action == action for c in changes)


# id: (overrides on the model's defaults, what the change must at least do)
MATRIX = {
    "kubernetes-1.36": ({"platform.cluster.kubernetes_version": "1.36"},
                        lambda ch: any(c.type == "AWS::EKS::Cluster" and c.action == "update" and "Version" in c.paths
                                       for c in ch)),
    "system-instance-type": ({"platform.cluster.system_nodes.instance_type": "m7i.large"},
                             lambda ch: _has(ch, "AWS::EKS::Nodegroup", "replace")),
    "spot-families": ({"platform.karpenter.spot.instance_families": ["c6i", "c7i", "m6i", "m7i"]},
                      lambda ch: _kube(ch, "~ NodePool spot")),
    "ray-max-workers": ({"platform.ray.workers.max_workers": 16}, lambda ch: _kube(ch, "~ RayCluster ray/ray")),
    "cognito-on": (COGNITO, lambda ch: _has(ch, "AWS::Cognito::UserPool", "add")),
    "gpu-pool-on": ({"platform.karpenter.gpu.enabled": True}, lambda ch: _kube(ch, "+ NodePool gpu")),
    "nat-gateways-2": ({"platform.network.nat_gateways": 2}, lambda ch: _has(ch, "AWS::EC2::NatGateway", "add")),
    "admin-principal": ({"platform.cluster.admin_principal_arns": [ADMIN_ARN]},
                        lambda ch: _has(ch, "AWS::EKS::AccessEntry", "add")),
}

# What a user cannot get back: none of these may be replaced by any change in the matrix.
PROTECTED_TYPES = {
    "AWS::EKS::Cluster", "AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::S3::Bucket", "AWS::Cognito::UserPool",
    "AWS::KMS::Key", "AWS::EC2::Volume", "AWS::Logs::LogGroup",
}


OTHER_ADMIN_ARN = "arn:aws:iam::111122223333:role/OnCall"
# Configurations compared with another one than the defaults.
PAIRED = {"admins-prepended": {"platform.cluster.admin_principal_arns": [OTHER_ADMIN_ARN, ADMIN_ARN]}}


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory):
    """case -> its assembly: the model's defaults with the case's overrides, synthesized once per session
    (without cdk-nag, which changes no template; tests/policy runs it on the shared configurations)."""
    done: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in done:
            overrides = MATRIX[case][0] if case in MATRIX else PAIRED[case]
            done[case] = synthesize(tmp_path_factory.mktemp(f"impact-{case}"), {**model_context(), **overrides})
        return done[case]

    return get


@pytest.fixture(scope="session", params=list(MATRIX))
def changed(request, synthesized) -> tuple[str, Path]:
    return request.param, synthesized(request.param)


@pytest.fixture(scope="session")
def matrix_changes(platform: SynthesizedPlatform, changed) -> tuple[str, list[Change]]:
    case, outdir = changed
    return case, impact(platform.outdir, outdir)


def test_each_matrix_change_does_what_it_says(matrix_changes):
    case, changes = matrix_changes
    assert MATRIX[case][1](changes), f"{case}:\n{render(changes)}"


def test_no_matrix_change_replaces_or_loses_anything_stateful(matrix_changes):
    case, changes = matrix_changes
    replaced = [c.where for c in changes if c.action == "replace" and c.type in PROTECTED_TYPES]
    lost = [f"{c.where}: {loss}" for c in changes for loss in c.loses]
    assert (replaced, lost) == ([], []), f"{case}:\n{render(changes)}"


def test_no_matrix_change_collides_with_a_fixed_name(matrix_changes):
    case, changes = matrix_changes
    assert errors(changes) == [], f"{case}:\n{render(changes)}"


def test_adding_an_admin_in_front_of_another_keeps_the_existing_access_entry(synthesized):
    changes = impact(synthesized("admin-principal"), synthesized("admins-prepended"))
    assert errors(changes) == [], render(changes)
