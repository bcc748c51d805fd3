"""Cluster stack: EKS control plane, Cilium, system node group, add-ons and deploy order."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

import versions
from tools.render import join


def _one(template_json, type_):
    found = [(k, v) for k, v in template_json["Resources"].items() if v["Type"] == type_]
    assert len(found) == 1, f"expected one {type_}, found {len(found)}"
    return found[0]


def _depends_on(template_json, logical_id) -> set[str]:
    deps = template_json["Resources"][logical_id].get("DependsOn", [])
    return {deps} if isinstance(deps, str) else set(deps)


def _cilium(synth):
    return synth.assembly.helm_releases()["cilium"]


# ----------------------------------------------------------------- control plane


def test_kubernetes_version_and_matching_kubectl_layer(any_platform):
    tpl = any_platform.template_json("Cluster")
    version = any_platform.config.cluster.kubernetes_version
    _, cluster = _one(tpl, "AWS::EKS::Cluster")
    assert cluster["Properties"]["Version"] == version
    layers = [r for r in tpl["Resources"].values() if r["Type"] == "AWS::Lambda::LayerVersion"]
    kubectl = [layer for layer in layers if "kubectl" in layer["Properties"].get("Description", "")]
    assert len(kubectl) == 1
    assert f"kubectl {version}." in kubectl[0]["Properties"]["Description"]


def test_no_self_managed_addons_and_no_auto_mode(platform):
    _, cluster = _one(platform.template_json("Cluster"), "AWS::EKS::Cluster")
    props = cluster["Properties"]
    assert props["BootstrapSelfManagedAddons"] is False
    assert "ComputeConfig" not in props or props["ComputeConfig"].get("Enabled") is not True


def test_secrets_encrypted_with_a_rotating_key(platform):
    tpl = platform.templates["Cluster"]
    tpl.has_resource_properties(
        "AWS::EKS::Cluster",
        {"EncryptionConfig": [{"Provider": {"KeyArn": {"Fn::GetAtt": [Match.any_value(), "Arn"]}}, "Resources": ["secrets"]}]},
    )
    tpl.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_all_five_control_plane_log_types(platform):
    _, cluster = _one(platform.template_json("Cluster"), "AWS::EKS::Cluster")
    enabled = {t["Type"] for t in cluster["Properties"]["Logging"]["ClusterLogging"]["EnabledTypes"]}
    assert enabled == {"api", "audit", "authenticator", "controllerManager", "scheduler"}


def test_control_plane_log_group_is_precreated_encrypted_and_expires(platform):
    tpl = platform.template_json("Cluster")
    groups = {k: v for k, v in tpl["Resources"].items() if v["Type"] == "AWS::Logs::LogGroup"
              and v["Properties"].get("LogGroupName") == "/aws/eks/dynamic-factory/cluster"}
    (log_id, group), = groups.items()
    assert "KmsKeyId" in group["Properties"] and group["Properties"]["RetentionInDays"] == 30
    cluster_id, _ = _one(tpl, "AWS::EKS::Cluster")
    assert log_id in _depends_on(tpl, cluster_id)


def test_default_endpoint_is_private_only(platform):
    _, cluster = _one(platform.template_json("Cluster"), "AWS::EKS::Cluster")
    vpc_cfg = cluster["Properties"]["ResourcesVpcConfig"]
    assert vpc_cfg["EndpointPublicAccess"] is False
    assert vpc_cfg["EndpointPrivateAccess"] is True


def test_public_endpoint_only_from_listed_cidrs(variant):
    _, cluster = _one(variant.template_json("Cluster"), "AWS::EKS::Cluster")
    vpc_cfg = cluster["Properties"]["ResourcesVpcConfig"]
    assert vpc_cfg["EndpointPublicAccess"] is True
    assert vpc_cfg["EndpointPrivateAccess"] is True
    assert vpc_cfg["PublicAccessCidrs"] == ["203.0.113.0/24", "198.51.100.7/32"]


def test_control_plane_only_in_private_subnets(platform):
    tpl = platform.template_json("Cluster")
    _, cluster = _one(tpl, "AWS::EKS::Cluster")
    subnet_refs = json.dumps(cluster["Properties"]["ResourcesVpcConfig"]["SubnetIds"])
    assert "private" in subnet_refs.lower() and "public" not in subnet_refs.lower()


def test_admin_access_entries(platform, variant):
    admin_policy = "arn:${AWS::Partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    def admin_entries(synth):
        return [
            r for r in synth.template_json("Cluster")["Resources"].values()
            if r["Type"] == "AWS::EKS::AccessEntry"
            and any(join(p["PolicyArn"]) == admin_policy for p in r["Properties"].get("AccessPolicies", []))
        ]
    entries = admin_entries(variant)
    principals = [join(e["Properties"]["PrincipalArn"]) for e in entries]
    assert "arn:aws:iam::111122223333:role/PlatformAdmin" in principals
    # No one becomes admin by default: only the kubectl handler role has an entry.
    assert not [e for e in admin_entries(platform) if "PlatformAdmin" in json.dumps(e)]
    _, cluster = _one(platform.template_json("Cluster"), "AWS::EKS::Cluster")
    assert cluster["Properties"]["AccessConfig"]["BootstrapClusterCreatorAdminPermissions"] is False
    assert cluster["Properties"]["AccessConfig"]["AuthenticationMode"] == "API"


# ----------------------------------------------------------------- Cilium


def test_cilium_chart_is_pinned(platform):
    chart = _cilium(platform)
    assert chart.properties["Chart"] == "cilium"
    assert chart.properties["Version"] == versions.CILIUM_CHART_VERSION
    assert chart.properties["Repository"] == versions.CILIUM_CHART_REPO
    assert chart.properties["Namespace"] == "kube-system"


def test_cilium_eni_mode_native_routing(platform):
    values = _cilium(platform).values
    assert values["eni"]["enabled"] is True
    assert values["ipam"]["mode"] == "eni"
    assert values["routingMode"] == "native"
    assert values["cluster"]["name"] == "dynamic-factory"
    assert values["hubble"]["relay"]["enabled"] is True
    # Pod ENIs only in the private subnets that carry the discovery tag.
    assert values["eni"]["subnetTagsFilter"] == ["karpenter.sh/discovery=dynamic-factory"]


def test_cilium_operator_runs_on_the_booting_system_nodes(any_platform):
    """The chart's default operator tolerations do not cover the system taint: without ours the operator stays
    Pending, no node gets pod addresses and the node group never turns Ready."""
    operator = _cilium(any_platform).values["operator"]
    assert operator["nodeSelector"] == {"dynamic-factory/node-role": "system"}
    assert {"key": "CriticalAddonsOnly", "operator": "Exists", "effect": "NoSchedule"} in operator["tolerations"]
    assert {"key": "node.kubernetes.io/not-ready", "operator": "Exists"} in operator["tolerations"]


def test_hubble_relay_runs_on_the_system_nodes(any_platform):
    """The relay runs at idle: without the system placement Karpenter keeps a Spot node alive for it."""
    relay = _cilium(any_platform).values["hubble"]["relay"]
    assert relay["nodeSelector"] == {"dynamic-factory/node-role": "system"}
    assert {"key": "CriticalAddonsOnly", "operator": "Exists", "effect": "NoSchedule"} in relay["tolerations"]


def test_kube_proxy_replacement_has_the_api_server_host_from_the_cluster_endpoint(any_platform):
    """Regression for the outage: kube-proxy replacement without k8sServiceHost leaves new nodes dead."""
    tpl = any_platform.template_json("Cluster")
    cluster_id, _ = _one(tpl, "AWS::EKS::Cluster")
    raw_values = _cilium(any_platform).properties["Values"]
    values = _cilium(any_platform).values
    if values.get("kubeProxyReplacement") in (True, "true", "strict"):
        assert values["k8sServicePort"] == 443
        # Derived at deploy time from the cluster's Endpoint attribute, host part only.
        expected = {"Fn::Select": [1, {"Fn::Split": ["//", {"Fn::GetAtt": [cluster_id, "Endpoint"]}]}]}
        parts = raw_values["Fn::Join"][1]
        index = next(i for i, p in enumerate(parts) if isinstance(p, str) and p.endswith('"k8sServiceHost":"'))
        assert parts[index + 1] == expected
        assert values["k8sServiceHost"] == "${Cluster.Endpoint|split(//)[1]}"
    else:  # pragma: no cover - the platform always replaces kube-proxy today
        pytest.fail("kube-proxy replacement is expected to be on")


def test_cilium_host_helper_rejects_urls_and_ips_given_as_literals():
    from charts.cilium_values import CiliumValues, endpoint_hostname

    assert endpoint_hostname("https://ABC.gr7.eu-west-1.eks.amazonaws.com") == "ABC.gr7.eu-west-1.eks.amazonaws.com"
    with pytest.raises(ValueError, match="bare hostname"):
        CiliumValues(cluster_name="c", api_server_host="https://x.example.com")
    with pytest.raises(ValueError, match="TCP port"):
        CiliumValues(cluster_name="c", api_server_host="x.example.com", api_server_port=0)


def test_cilium_operator_gets_eni_permissions_through_pod_identity(platform):
    tpl = platform.template_json("Cluster")
    associations = [r["Properties"] for r in tpl["Resources"].values() if r["Type"] == "AWS::EKS::PodIdentityAssociation"]
    operator = [a for a in associations if a["ServiceAccount"] == "cilium-operator"]
    assert len(operator) == 1 and operator[0]["Namespace"] == "kube-system"
    role_id = operator[0]["RoleArn"]["Fn::GetAtt"][0]
    policies = [r["Properties"] for r in tpl["Resources"].values()
                if r["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in r["Properties"]["Roles"]]
    actions = {a for p in policies for s in p["PolicyDocument"]["Statement"] for a in _as_list(s["Action"])}
    # Cilium's ENI IPAM "Required privileges" (with cluster.name set and awsReleaseExcessIPs on).
    for needed in ("ec2:CreateNetworkInterface", "ec2:AttachNetworkInterface", "ec2:DeleteNetworkInterface",
                   "ec2:ModifyNetworkInterfaceAttribute", "ec2:AssignPrivateIpAddresses",
                   "ec2:UnassignPrivateIpAddresses", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
                   "ec2:DescribeVpcs", "ec2:DescribeRouteTables", "ec2:DescribeSecurityGroups",
                   "ec2:DescribeInstanceTypes", "ec2:CreateTags", "ec2:DescribeManagedPrefixLists",
                   "ec2:GetManagedPrefixListEntries"):
        assert needed in actions
    for p in policies:
        for s in p["PolicyDocument"]["Statement"]:
            assert s["Action"] != "*"
            resources = [join(r) for r in _as_list(s["Resource"])]
            if resources == ["*"]:
                assert s.get("Condition"), f"unscoped statement {s.get('Sid')}"
            condition = json.dumps(s.get("Condition", {}))
            # Each statement is scoped by a key its resource type has (tests/policy/test_iam_conditions.py):
            # ec2:Vpc on ENIs, subnets and security groups; the cluster's ownership tag on instances.
            if any(r.endswith((":subnet/*", ":security-group/*")) for r in resources):
                assert "ec2:Vpc" in condition, s.get("Sid")
            if any(r.endswith(":instance/*") for r in resources):
                assert resources == [r for r in resources if r.endswith(":instance/*")], s.get("Sid")
                assert s["Condition"] == {"StringEquals": {
                    f"aws:ResourceTag/kubernetes.io/cluster/{platform.config.cluster.name}": "owned"}}
                assert "ec2:Vpc" not in condition
            if any(r.endswith(":network-interface/*") for r in resources) and set(_as_list(s["Action"])) - {
                    "ec2:CreateNetworkInterface", "ec2:CreateTags"}:
                assert "ec2:Vpc" in condition, s.get("Sid")
            if set(_as_list(s["Action"])) == {"ec2:CreateNetworkInterface"}:
                # The new ENI itself: confined by the subnet (required, ec2:Vpc) of the same request.
                assert [r.rsplit(":", 1)[-1] for r in resources] == ["network-interface/*"], s.get("Sid")
    # The trust policy admits only EKS Pod Identity, for this account and cluster.
    trust = tpl["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert {s["Principal"]["Service"] for s in trust} == {"pods.eks.amazonaws.com"}
    assert all("aws:SourceAccount" in json.dumps(s["Condition"]) for s in trust)


def _as_list(value):
    return value if isinstance(value, list) else [value]


# ----------------------------------------------------------------- system nodes


def test_system_node_group(platform):
    tpl = platform.template_json("Cluster")
    _, ng = _one(tpl, "AWS::EKS::Nodegroup")
    props = ng["Properties"]
    assert props["AmiType"] == "AL2023_x86_64_STANDARD"
    assert props["CapacityType"] == "ON_DEMAND"
    assert props["InstanceTypes"] == ["t3a.large"]
    # With observability on (the default) a third node holds Prometheus and Grafana (config.py METRICS_SYSTEM_NODE_SIZES).
    assert props["ScalingConfig"] == {"DesiredSize": 3, "MinSize": 3, "MaxSize": 4}
    assert props["Taints"] == [{"Key": "CriticalAddonsOnly", "Value": "true", "Effect": "NO_SCHEDULE"}]
    assert props["Labels"] == {"dynamic-factory/node-role": "system", "dynamic-factory/pool": "system"}


def test_system_node_role_has_no_cni_policy(platform):
    tpl = platform.template_json("Cluster")
    _, ng = _one(tpl, "AWS::EKS::Nodegroup")
    role = tpl["Resources"][ng["Properties"]["NodeRole"]["Fn::GetAtt"][0]]
    policies = json.dumps(role["Properties"]["ManagedPolicyArns"])
    assert "AmazonEKSWorkerNodePolicy" in policies and "AmazonEC2ContainerRegistryPullOnly" in policies
    assert "CNI" not in policies


def test_system_nodes_require_imdsv2_and_encrypted_gp3(platform):
    tpl = platform.template_json("Cluster")
    _, lt = _one(tpl, "AWS::EC2::LaunchTemplate")
    data = lt["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    ebs = data["BlockDeviceMappings"][0]["Ebs"]
    assert ebs["Encrypted"] is True and ebs["VolumeType"] == "gp3"


def test_variant_instance_type(variant):
    _, ng = _one(variant.template_json("Cluster"), "AWS::EKS::Nodegroup")
    assert ng["Properties"]["InstanceTypes"] == ["m7i.large"]


# ----------------------------------------------------------------- add-ons and storage


def test_eks_addons(platform):
    tpl = platform.template_json("Cluster")
    addons = {r["Properties"]["AddonName"]: r["Properties"] for r in tpl["Resources"].values() if r["Type"] == "AWS::EKS::Addon"}
    assert set(addons) == {"coredns", "eks-pod-identity-agent", "aws-ebs-csi-driver"}
    coredns = json.loads(addons["coredns"]["ConfigurationValues"])
    assert {"key": "CriticalAddonsOnly", "operator": "Exists", "effect": "NoSchedule"} in coredns["tolerations"]
    ebs = json.loads(addons["aws-ebs-csi-driver"]["ConfigurationValues"])
    assert ebs["controller"]["tolerations"][0]["key"] == "CriticalAddonsOnly"
    associations = [r["Properties"] for r in tpl["Resources"].values() if r["Type"] == "AWS::EKS::PodIdentityAssociation"]
    ebs_assoc = [a for a in associations if a["ServiceAccount"] == "ebs-csi-controller-sa"]
    assert len(ebs_assoc) == 1


def test_storage_classes_are_encrypted_gp3_and_only_one_is_the_default(platform):
    """`gp3` (the default, volumes go with their claim) and `gp3-retain` (volumes outlive it: homes)."""
    classes = {o["metadata"]["name"]: o for o in platform.assembly.kube_objects() if o["kind"] == "StorageClass"}
    assert set(classes) == {"gp3", "gp3-retain"}
    defaults = [n for n, sc in classes.items()
                if sc["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"]
    assert defaults == ["gp3"]
    assert classes["gp3"]["reclaimPolicy"] == "Delete" and classes["gp3-retain"]["reclaimPolicy"] == "Retain"
    for sc in classes.values():
        assert sc["provisioner"] == "ebs.csi.aws.com"
        assert sc["parameters"]["type"] == "gp3" and sc["parameters"]["encrypted"] == "true"


# ----------------------------------------------------------------- deploy order


def _logical_id(tpl, type_, predicate=lambda props: True) -> str:
    ids = [k for k, v in tpl["Resources"].items() if v["Type"] == type_ and predicate(v["Properties"])]
    assert len(ids) == 1, (type_, ids)
    return ids[0]


def test_node_group_waits_for_the_cilium_release(any_platform):
    tpl = any_platform.template_json("Cluster")
    ng = _logical_id(tpl, "AWS::EKS::Nodegroup")
    assert _cilium(any_platform).logical_id in _depends_on(tpl, ng)


def test_cilium_release_waits_for_the_operator_pod_identity(platform):
    tpl = platform.template_json("Cluster")
    assoc = _logical_id(tpl, "AWS::EKS::PodIdentityAssociation", lambda p: p["ServiceAccount"] == "cilium-operator")
    assert assoc in _depends_on(tpl, _cilium(platform).logical_id)


def test_addons_with_deployments_come_after_the_system_node_group(platform):
    tpl = platform.template_json("Cluster")
    ng = _logical_id(tpl, "AWS::EKS::Nodegroup")
    for logical_id, res in tpl["Resources"].items():
        if res["Type"] == "AWS::EKS::Addon" and res["Properties"]["AddonName"] != "eks-pod-identity-agent":
            assert ng in _depends_on(tpl, logical_id), res["Properties"]["AddonName"]


def test_pod_identity_agent_comes_before_cilium_and_the_nodes(any_platform):
    """The Cilium operator (the only caller of EC2 for pod addresses) gets credentials through the agent:
    with the agent after the node group, no node ever turns Ready (boot deadlock)."""
    tpl = any_platform.template_json("Cluster")
    agent = _logical_id(tpl, "AWS::EKS::Addon", lambda p: p["AddonName"] == "eks-pod-identity-agent")
    ng = _logical_id(tpl, "AWS::EKS::Nodegroup")
    assert agent in _depends_on(tpl, _cilium(any_platform).logical_id)
    assert ng not in _depends_on(tpl, agent)


def test_cloudwatch_logs_may_use_the_keys_only_for_this_accounts_log_groups(any_platform):
    for stack in ("Network", "Cluster"):
        tpl = any_platform.template_json(stack)
        for res in tpl["Resources"].values():
            if res["Type"] != "AWS::KMS::Key":
                continue
            for st in res["Properties"]["KeyPolicy"]["Statement"]:
                principal = json.dumps(st.get("Principal", {}))
                if "logs." in principal:
                    cond = st["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]
                    assert ":log-group:*" in join(cond) and "${AWS::AccountId}" in join(cond)


def test_ebs_csi_after_its_pod_identity_and_storage_class_after_ebs_csi(platform):
    tpl = platform.template_json("Cluster")
    ebs = _logical_id(tpl, "AWS::EKS::Addon", lambda p: p["AddonName"] == "aws-ebs-csi-driver")
    assoc = _logical_id(tpl, "AWS::EKS::PodIdentityAssociation", lambda p: p["ServiceAccount"] == "ebs-csi-controller-sa")
    assert assoc in _depends_on(tpl, ebs)
    storage = [r for r in platform.assembly.manifests() if "StorageClass" in json.dumps(r.properties["Manifest"])]
    assert ebs in storage[0].depends_on


# ----------------------------------------------------------------- upgrades in place


def _after_the_control_plane(tpl, logical_id) -> bool:
    """Whether CloudFormation creates and updates ``logical_id`` after the AWS::EKS::Cluster (Ref or DependsOn)."""
    cluster = _logical_id(tpl, "AWS::EKS::Cluster")
    props = tpl["Resources"][logical_id]["Properties"]
    return props.get("ClusterName") == {"Ref": cluster} or cluster in _depends_on(tpl, logical_id)


def test_system_node_group_follows_the_cluster_version_after_the_control_plane(any_platform):
    """Without Version a managed node group stays on the version it was created with, and EKS refuses the next
    control-plane upgrade until the node groups match; EKS rejects nodes newer than the control plane."""
    tpl = any_platform.template_json("Cluster")
    _, cluster = _one(tpl, "AWS::EKS::Cluster")
    ng_id, ng = _one(tpl, "AWS::EKS::Nodegroup")
    assert ng["Properties"]["Version"] == cluster["Properties"]["Version"] == any_platform.config.cluster.kubernetes_version
    assert _after_the_control_plane(tpl, ng_id)
    # No AMI release pinned by default: EKS takes the latest release of that version.
    assert "ReleaseVersion" not in ng["Properties"]


def test_addons_pin_the_build_of_the_cluster_version_after_the_control_plane(any_platform):
    tpl = any_platform.template_json("Cluster")
    minor = any_platform.config.cluster.kubernetes_version
    addons = {r["Properties"]["AddonName"]: k for k, r in tpl["Resources"].items() if r["Type"] == "AWS::EKS::Addon"}
    pinned = {name: tpl["Resources"][k]["Properties"].get("AddonVersion") for name, k in addons.items()}
    assert pinned == {name: versions.eks_addon_version(name, minor) for name in versions.EKS_ADDONS}
    assert all(_after_the_control_plane(tpl, k) for k in addons.values())


def test_addon_updates_overwrite_hand_edits(any_platform):
    """The default (NONE) fails a version update on any field someone changed by hand."""
    tpl = any_platform.template_json("Cluster")
    addons = [r["Properties"] for r in tpl["Resources"].values() if r["Type"] == "AWS::EKS::Addon"]
    assert addons and all(a.get("ResolveConflicts") == "OVERWRITE" for a in addons)


def test_an_ami_release_version_reaches_the_node_group():
    """The system nodes' patch path: ClusterStack hands the configured release to the node group."""
    import aws_cdk as cdk
    from aws_cdk import aws_ec2 as ec2

    from stacks.cluster_stack import ClusterStack
    from tests.platform_synth import feature_flags

    app = cdk.App(context=feature_flags())
    vpc = ec2.Vpc(cdk.Stack(app, "Net"), "Vpc")
    release = "1.35.0-20990101"  # well-formed, not a real release: nothing here reaches AWS
    stack = ClusterStack(
        app, "Cluster", vpc=vpc, cluster_name="c", kubernetes_version="1.35", endpoint_access="private",
        public_cidrs=(), admin_principal_arns=(), system_instance_type="t3a.large", system_desired_size=2,
        system_min_size=2, system_max_size=3, system_ami_release_version=release,
    )
    nodegroup = stack.system_nodes.node.default_child
    assert (nodegroup.version, nodegroup.release_version) == ("1.35", release)


# Well-formed AMI release versions below are test data, not real releases.
@pytest.mark.parametrize(
    ("overrides", "path", "reason"),
    [
        ({"platform.cluster.system_nodes.ami_release_version": "al2023@v20260818"},
         "platform.cluster.system_nodes.ami_release_version", "must be an EKS-optimized AMI release version"),
        ({"platform.cluster.system_nodes.ami_release_version": "1.35-20990101"},
         "platform.cluster.system_nodes.ami_release_version", "<Kubernetes version>.<patch>-<YYYYMMDD>"),
        ({"platform.cluster.system_nodes.ami_release_version": "1.35.0-20990101",
          "platform.cluster.kubernetes_version": "1.36"},
         "platform.cluster", "'1.35.0-20990101' is an AMI release of Kubernetes 1.35, but kubernetes_version is '1.36'"),
    ],
)
def test_ami_release_version_is_validated(overrides, path, reason):
    import config

    with pytest.raises(config.ConfigError) as err:
        config.build_config({}, overrides)
    (problem,) = err.value.problems
    assert problem.startswith(f"{path}: ") and reason in problem, problem


def test_ami_release_version_of_the_cluster_version_is_accepted():
    import config

    cfg = config.build_config({}, {"platform.cluster.kubernetes_version": "1.36",
                                   "platform.cluster.system_nodes.ami_release_version": "1.36.0-20990101"})
    assert cfg.cluster.system_nodes.ami_release_version == "1.36.0-20990101"
    assert config.build_config({}, {}).cluster.system_nodes.ami_release_version is None


# ----------------------------------------------------------------- one key per purpose (issue #16)


def _statements(tpl, key_id) -> list[dict]:
    return tpl["Resources"][key_id]["Properties"]["KeyPolicy"]["Statement"]


def _service_statements(tpl, key_id) -> list[dict]:
    return [s for s in _statements(tpl, key_id) if "Service" in s.get("Principal", {})]


def _keys(tpl) -> tuple[str, str]:
    """(secrets key, logs key) logical ids: the key of the cluster's EncryptionConfig, and the other one."""
    _, cluster = _one(tpl, "AWS::EKS::Cluster")
    (config,) = cluster["Properties"]["EncryptionConfig"]
    secrets = config["Provider"]["KeyArn"]["Fn::GetAtt"][0]
    keys = {k for k, r in tpl["Resources"].items() if r["Type"] == "AWS::KMS::Key"}
    assert secrets in keys and len(keys) == 2, f"expected a secrets key and a logs key, found {sorted(keys)}"
    (logs,) = keys - {secrets}
    return secrets, logs


def test_kubernetes_secrets_and_logs_use_separate_keys(any_platform):
    tpl = any_platform.template_json("Cluster")
    secrets, logs = _keys(tpl)
    groups = {k: r for k, r in tpl["Resources"].items() if r["Type"] == "AWS::Logs::LogGroup"}
    assert groups
    for logical_id, group in groups.items():
        assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [logs, "Arn"]}, logical_id
    # The secrets key is the platform's first key, under its first logical id: EncryptionConfig is create-only
    # (AWS::EKS::Cluster resource schema), so another key there would replace the cluster.
    assert secrets.startswith("ClusterKey"), secrets


def test_only_the_logs_key_lets_cloudwatch_logs_encrypt(any_platform):
    """The secrets key admits no service but CloudWatch Logs, and it only to decrypt the events written under it
    before the split (for this account's log groups); the logs key admits CloudWatch Logs to write."""
    tpl = any_platform.template_json("Cluster")
    secrets, logs = _keys(tpl)
    condition_key = "kms:EncryptionContext:aws:logs:arn"

    (read_back,) = _service_statements(tpl, secrets)
    assert read_back["Action"] == "kms:Decrypt", read_back
    assert "logs." in join(read_back["Principal"]["Service"])
    assert ":log-group:*" in join(read_back["Condition"]["ArnLike"][condition_key])

    services = _service_statements(tpl, logs)
    (write,) = [s for s in services if "logs." in join(s["Principal"]["Service"])]
    assert set(write["Action"]) == {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"}
    assert "${AWS::AccountId}:log-group:*" in join(write["Condition"]["ArnLike"][condition_key])
    # With observability on, CloudWatch alarms may use the logs key too (the alarm topic is encrypted with it):
    # encrypt-only actions, nothing more (cdk_constructs/alarms.py AlarmTopic).
    others = [s for s in services if s is not write]
    assert [join(s["Principal"]["Service"]) for s in others] == (
        ["cloudwatch.amazonaws.com"] if any_platform.config.observability.enabled else [])
    for statement in others:
        assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
