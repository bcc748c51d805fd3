"""Network stack: VPC, subnets and their discovery tags, NAT, flow logs, S3 endpoint."""

from __future__ import annotations

from aws_cdk.assertions import Match


def _subnets(template_json, public: bool):
    return [
        r for r in template_json["Resources"].values()
        if r["Type"] == "AWS::EC2::Subnet" and r["Properties"]["MapPublicIpOnLaunch"] is public
    ]


def _tags(resource) -> dict:
    return {t["Key"]: t["Value"] for t in resource["Properties"].get("Tags", [])}


def test_vpc_uses_the_configured_cidr(platform):
    platform.templates["Network"].has_resource_properties("AWS::EC2::VPC", {"CidrBlock": "10.0.0.0/16"})


def test_public_and_private_subnet_per_az(platform, variant):
    for synth, azs in ((platform, 2), (variant, 3)):
        tpl = synth.template_json("Network")
        assert len(_subnets(tpl, public=True)) == azs
        assert len(_subnets(tpl, public=False)) == azs


def test_private_subnets_carry_the_literal_cluster_name_for_karpenter(platform, variant):
    for synth in (platform, variant):
        for subnet in _subnets(synth.template_json("Network"), public=False):
            # A plain string, not a reference to the cluster (that would be a dependency cycle).
            assert _tags(subnet)["karpenter.sh/discovery"] == synth.config.cluster.name


def test_public_subnets_are_not_karpenter_targets(platform):
    for subnet in _subnets(platform.template_json("Network"), public=True):
        assert "karpenter.sh/discovery" not in _tags(subnet)


def test_nat_gateway_count_follows_config(platform, variant):
    platform.templates["Network"].resource_count_is("AWS::EC2::NatGateway", 1)
    variant.templates["Network"].resource_count_is("AWS::EC2::NatGateway", 3)


def test_explicit_availability_zones_are_used(variant):
    azs = {s["Properties"]["AvailabilityZone"] for s in _subnets(variant.template_json("Network"), public=False)}
    assert azs == {"eu-west-1a", "eu-west-1b", "eu-west-1c"}


def test_flow_logs_capture_all_traffic_into_an_encrypted_log_group(platform):
    tpl = platform.templates["Network"]
    tpl.has_resource_properties(
        "AWS::EC2::FlowLog",
        {"ResourceType": "VPC", "TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"},
    )
    tpl.has_resource_properties(
        "AWS::Logs::LogGroup", {"KmsKeyId": {"Fn::GetAtt": [Match.any_value(), "Arn"]}, "RetentionInDays": 30}
    )
    tpl.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_s3_gateway_endpoint(platform):
    platform.templates["Network"].has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcEndpointType": "Gateway",
            "ServiceName": {"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, ".s3"]]},
        },
    )


def test_default_security_group_is_locked_down(platform):
    platform.templates["Network"].resource_count_is("Custom::VpcRestrictDefaultSG", 1)
