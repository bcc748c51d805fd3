"""Config: defaults, overrides, and table-driven bad inputs with exact messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import config
from tests.platform_synth import ROOT, cdk_json_context, feature_flags, model_context


def test_committed_cdk_json_platform_is_a_valid_config():
    """Whatever a user or the pipeline commits there; the suite itself tests the model's defaults."""
    config.build_config(cdk_json_context()[config.CONTEXT_KEY])


def test_defaults_are_secure_and_env_agnostic():
    cfg = config.build_config({})
    assert cfg.cluster.endpoint.access == "private"
    assert cfg.cluster.endpoint.public_cidrs == ()
    assert cfg.cluster.kubernetes_version == "1.35"
    assert cfg.network.availability_zones == ()  # no lookups, no credentials


def test_config_is_frozen():
    cfg = config.build_config({})
    with pytest.raises(Exception):
        cfg.cluster.name = "other"  # type: ignore[misc]


def test_command_line_overrides_are_parsed_as_json_or_string():
    cfg = config.build_config(
        {},
        {
            "platform.cluster.name": "ml-prod",
            "platform.network.nat_gateways": "2",
            "platform.cluster.endpoint.access": "public_and_private",
            "platform.cluster.endpoint.public_cidrs": '["203.0.113.0/24"]',
        },
    )
    assert cfg.cluster.name == "ml-prod"
    assert cfg.network.nat_gateways == 2
    assert cfg.cluster.endpoint.public_cidrs == ("203.0.113.0/24",)


def test_gpu_pool_only_when_enabled():
    assert [p.name for p in config.build_config({}).karpenter.node_pools()] == ["spot", "on-demand"]
    enabled = config.build_config({}, {"platform.karpenter.gpu.enabled": "true"})
    assert [p.name for p in enabled.karpenter.node_pools()] == ["spot", "on-demand", "gpu"]


def test_pool_overrides_reach_the_chart_settings():
    cfg = config.build_config({}, {"platform.karpenter.spot.cpu_limit": "64",
                                   "platform.karpenter.spot.instance_families": '["c7i", "m7i"]'})
    spot = cfg.karpenter.node_pools()[0]
    assert spot.cpu_limit == 64 and spot.instance_families == ("c7i", "m7i")
    assert spot.capacity_types == ("spot", "on-demand")  # not configurable: Spot first, always


def test_text_fields_keep_numeric_looking_overrides_as_text():
    cfg = config.build_config({}, {"platform.cluster.kubernetes_version": "1.36"})
    assert cfg.cluster.kubernetes_version == "1.36"


def test_load_from_context_reads_cdk_json_when_the_context_has_no_platform():
    assert config.load_from_context(feature_flags()) == config.build_config(cdk_json_context()[config.CONTEXT_KEY])


def test_load_from_context_applies_overrides():
    ctx = model_context()
    ctx["platform.cluster.system_nodes.desired_size"] = "3"
    assert config.load_from_context(ctx).cluster.system_nodes.desired_size == 3


CERT = "arn:aws:acm:eu-west-1:111122223333:certificate/0f2c9f6e-1b2a-4c3d-9e8f-0123456789ab"

# (overrides, field path named in the message, a fragment of the reason)
BAD_INPUTS = [
    ({"platform.cluster.name": ""}, "platform.cluster.name", "2-40 characters"),
    ({"platform.cluster.name": "Bad_Name"}, "platform.cluster.name", "lowercase letters"),
    ({"platform.cluster.name": "-starts-with-hyphen"}, "platform.cluster.name", "starting with a letter"),
    ({"platform.cluster.name": "x" * 41}, "platform.cluster.name", "2-40 characters"),
    ({"platform.cluster.name": 42}, "platform.cluster.name", "valid string"),
    ({"platform.cluster.kubernetes_version": "1.29"}, "platform.cluster.kubernetes_version", "one of 1.35, 1.36"),
    ({"platform.cluster.kubernetes_version": 1.35}, "platform.cluster.kubernetes_version", "valid string"),
    ({"platform.cluster.nmae": "typo"}, "platform.cluster.nmae", "unknown key"),
    ({"platform.clusterr.name": "typo"}, "platform.clusterr", "unknown key"),
    (
        {"platform.cluster.endpoint.access": "public_and_private",
         "platform.cluster.endpoint.public_cidrs": ["0.0.0.0/0"]},
        "platform.cluster.endpoint.public_cidrs",
        "whole internet",
    ),
    ({"platform.cluster.endpoint.access": "public_and_private"}, "platform.cluster.endpoint", "at least one"),
    ({"platform.cluster.endpoint.access": "public"}, "platform.cluster.endpoint.access", "'private' or 'public_and_private'"),
    (
        {"platform.cluster.endpoint.access": "public_and_private",
         "platform.cluster.endpoint.public_cidrs": ["10.0.0.1/8"]},
        "platform.cluster.endpoint.public_cidrs",
        "CIDR form",
    ),
    ({"platform.cluster.endpoint.public_cidrs": ["203.0.113.0/24"]}, "platform.cluster.endpoint", "only allowed with access"),
    ({"platform.cluster.system_nodes.desired_size": 0}, "platform.cluster.system_nodes.desired_size", "greater than or equal to 1"),
    ({"platform.cluster.system_nodes.min_size": -1}, "platform.cluster.system_nodes.min_size", "greater than or equal to 1"),
    ({"platform.cluster.system_nodes.desired_size": "2"}, "platform.cluster.system_nodes.desired_size", "valid integer"),
    ({"platform.cluster.system_nodes.desired_size": True}, "platform.cluster.system_nodes.desired_size", "valid integer"),
    ({"platform.cluster.system_nodes.max_size": 1}, "platform.cluster.system_nodes", "min_size <= desired_size <= max_size"),
    ({"platform.cluster.system_nodes.instance_type": "large"}, "platform.cluster.system_nodes.instance_type", "EC2 instance type"),
    ({"platform.cluster.admin_principal_arns": ["alice"]}, "platform.cluster.admin_principal_arns", "IAM role or user ARN"),
    ({"platform.cluster.admin_principal_arns": "arn:aws:iam::111122223333:role/A"}, "platform.cluster.admin_principal_arns", "valid array"),
    ({"platform.network.vpc_cidr": "10.0.0.0/33"}, "platform.network.vpc_cidr", "CIDR form"),
    ({"platform.network.vpc_cidr": "10.0.0.1/16"}, "platform.network.vpc_cidr", "CIDR form"),
    ({"platform.network.vpc_cidr": "8.8.0.0/16"}, "platform.network.vpc_cidr", "private (RFC 1918)"),
    ({"platform.network.vpc_cidr": "10.0.0.0/24"}, "platform.network.vpc_cidr", "between /16 and /20"),
    # Allowed by the prefix rule, but two private /19 subnets and the public /24s do not fit (used to fail
    # deep in the CDK's subnet allocator).
    ({"platform.network.vpc_cidr": "10.0.0.0/18"}, "platform.network", "must be /17 or shorter"),
    ({"platform.network.vpc_cidr": "172.16.0.0/20", "platform.network.az_count": 3,
      "platform.network.availability_zones": ["us-east-1a", "us-east-1b", "us-east-1c"]},
     "platform.network", "no room for 3 public /24 and 3 private /19"),
    ({"platform.network.az_count": 1}, "platform.network.az_count", "greater than or equal to 2"),
    ({"platform.network.az_count": 3}, "platform.network", "availability_zones listed by name"),
    ({"platform.network.nat_gateways": 0}, "platform.network.nat_gateways", "greater than or equal to 1"),
    ({"platform.network.nat_gateways": 2, "platform.network.az_count": 2,
      "platform.network.availability_zones": ["us-east-1a"]}, "platform.network", "lists 1 zones but az_count is 2"),
    ({"platform.network.availability_zones": ["us-east-1a", "nowhere"]}, "platform.network.availability_zones", "availability zone name"),
    ({"platform.tags": {"aws:owner": "me"}}, "platform.tags", "must not start with 'aws:'"),
    ({"platform.tags": {"team": 7}}, "platform.tags.team", "valid string"),
    ({"platform.tags": "team=ml"}, "platform.tags", "should be an object"),
    # Karpenter pools
    ({"platform.karpenter.spot.instance_families": ["x9"]}, "platform.karpenter.spot", "instance_families ['x9']"),
    ({"platform.karpenter.spot.instance_families": []}, "platform.karpenter.spot", "must not be empty"),
    ({"platform.karpenter.spot.instance_sizes": ["huge"]}, "platform.karpenter.spot", "instance_sizes ['huge']"),
    ({"platform.karpenter.spot.cpu_limit": 0}, "platform.karpenter.spot.cpu_limit", "greater than or equal to 1"),
    ({"platform.karpenter.on_demand.memory_limit_gib": -5}, "platform.karpenter.on_demand.memory_limit_gib", "greater than or equal to 1"),
    ({"platform.karpenter.spot.consolidate_after": "soon"}, "platform.karpenter.spot", "consolidate_after 'soon'"),
    ({"platform.karpenter.on_demand.expire_after": "30d"}, "platform.karpenter.on_demand", "expire_after '30d'"),
    ({"platform.karpenter.gpu.enabled": "yes"}, "platform.karpenter.gpu.enabled", "valid boolean"),
    ({"platform.karpenter.gpu.gpu_limit": 0}, "platform.karpenter.gpu.gpu_limit", "greater than or equal to 1"),
    ({"platform.karpenter.gpu.instance_families": ["m7i"]}, "platform.karpenter.gpu", "gpu"),
    ({"platform.karpenter.ami_alias": "al2023@latest"}, "platform.karpenter.ami_alias", "never @latest"),
    ({"platform.karpenter.spot.cpu": 8}, "platform.karpenter.spot.cpu", "unknown key"),
    # Ray
    ({"platform.ray.workers.max_workers": 0}, "platform.ray.workers.max_workers", "greater than or equal to 1"),
    ({"platform.ray.head_memory_gib": 1}, "platform.ray.head_memory_gib", "greater than or equal to 2"),
    ({"platform.ray.idle_timeout_seconds": 5}, "platform.ray.idle_timeout_seconds", "greater than or equal to 30"),
    ({"platform.ray.validation.min_auc": 0.5}, "platform.ray.validation.min_auc", "greater than 0.5"),
    ({"platform.ray.validation.workers": 100}, "platform.ray", "exceeds the CPUs the worker group can offer"),
    ({"platform.ray.gpu_workers.max_workers": 2}, "platform", "set karpenter.gpu.enabled to true"),
    # JupyterHub
    ({"platform.jupyterhub.admin_user": "bad user"}, "platform.jupyterhub.admin_user", "user name"),
    ({"platform.jupyterhub.user_pool": "gpu"}, "platform.jupyterhub.user_pool", "'on-demand' or 'spot'"),
    ({"platform.jupyterhub.notebook_image": "jupyter/base:latest"}, "platform.jupyterhub.notebook_image", "ray-2.60.0-py3.11"),
    ({"platform.jupyterhub.domain": "hub.example.com", "platform.jupyterhub.admin_user": "ana@example.com"},
     "platform.jupyterhub", "missing: certificate_arn"),
    ({"platform.jupyterhub.domain": "not a domain", "platform.jupyterhub.certificate_arn": CERT,
      "platform.jupyterhub.admin_user": "ana@example.com", "platform.jupyterhub.cognito_domain_prefix": "hub"},
     "platform.jupyterhub", "is not a DNS name"),
    ({"platform.jupyterhub.domain": "hub.example.com", "platform.jupyterhub.certificate_arn": "arn:aws:acm:cert",
      "platform.jupyterhub.admin_user": "ana@example.com", "platform.jupyterhub.cognito_domain_prefix": "hub"},
     "platform.jupyterhub", "is not an ACM certificate ARN"),
    # Cognito mode names users by e-mail: the admin too (the default "admin" would be nobody).
    ({"platform.jupyterhub.domain": "hub.example.com", "platform.jupyterhub.certificate_arn": CERT},
     "platform.jupyterhub.admin_user", '"admin" is not allowed: must be the admin\'s e-mail address'),
    ({"platform.jupyterhub.domain": "hub.example.com", "platform.jupyterhub.certificate_arn": CERT,
      "platform.jupyterhub.admin_user": "Ana@Example.com"}, "platform.jupyterhub.admin_user", "in lowercase"),
    ({"platform.jupyterhub.domain": "hub.example.com", "platform.jupyterhub.certificate_arn": CERT,
      "platform.jupyterhub.admin_user": "ana@example.com", "platform.jupyterhub.cognito_domain_prefix": "amazon-hub"},
     "platform.jupyterhub", "may not contain 'aws', 'amazon' or 'cognito'"),
    ({"platform.jupyterhub.cognito_domain_prefix": "hub"}, "platform.jupyterhub", "only applies with a domain"),
    ({"platform.jupyterhub.allowed_cidrs": ["203.0.113.0/24"]}, "platform.jupyterhub", "only apply when a domain"),
    # Cost
    ({"platform.cost.price_region": "mars-north-1"}, "platform.cost.price_region", "prices in cost/prices.yaml"),
    ({"platform.cost.max_idle_usd_per_hour": 0}, "platform.cost.max_idle_usd_per_hour", "greater than 0"),
    ({"platform.cost.max_idle_usd_per_hour": "cheap"}, "platform.cost.max_idle_usd_per_hour", "valid number"),
    # Observability
    ({"platform.observability.retention": "3 days"}, "platform.observability.retention",
     "whole number of hours, days or weeks"),
    ({"platform.observability.retention": "1h"}, "platform.observability.retention", "between 2h and 90d"),
    ({"platform.observability.retention": "13w"}, "platform.observability.retention", "between 2h and 90d"),
    ({"platform.observability.volume_gib": 1}, "platform.observability.volume_gib", "greater than or equal to 2"),
    ({"platform.observability.alarm_emails": ["ops"]}, "platform.observability.alarm_emails",
     "are not e-mail addresses"),
    ({"platform.observability.alarm_emails": ["a@example.com", "A@example.com"]},
     "platform.observability.alarm_emails", "lists an address twice"),
    ({"platform.observability.enabled": "yes"}, "platform.observability.enabled", "valid boolean"),
    ({"platform.observability.grafana_behind_hub": True}, "platform",
     "observability.grafana_behind_hub needs observability.enabled and jupyterhub.domain"),
    # Cross-area
    ({"platform.cluster.system_nodes.instance_type": "t3a.medium", "platform.ray.head_memory_gib": 8},
     "platform", "ray head pod (1 CPU, 8 GiB + the autoscaler sidecar) fits no instance type of pool 'system'"),
    ({"platform.cluster.system_nodes.instance_type": "x2idn.large"}, "platform.cluster.system_nodes.instance_type",
     "network limits the platform knows"),
    # Pipeline
    ({"platform.pipeline.enabled": True}, "platform.pipeline", "must be a CodeConnections ARN"),
    ({"platform.pipeline.enabled": True, "platform.pipeline.repository": "no-owner"}, "platform.pipeline", "must be 'owner/name'"),
    ({"platform.pipeline.stages": [{"name": "prod", "account": "12345", "region": "eu-west-1"}]},
     "platform.pipeline.stages.0", "12-digit AWS account id"),
    ({"platform.pipeline.stages": [{"name": "prod", "account": "111122223333", "region": "Europe"}]},
     "platform.pipeline.stages.0", "AWS region"),
    ({"platform.pipeline.stages": [{"name": "1st", "account": "111122223333", "region": "eu-west-1"}]},
     "platform.pipeline.stages.0.name", "starting with a letter"),
]


@pytest.mark.parametrize("overrides,path,reason", BAD_INPUTS, ids=[f"{i}:{b[1]}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_input_names_field_value_and_reason(overrides, path, reason):
    base: dict = {}
    for dotted, value in overrides.items():  # typed values, as they would stand in cdk.json
        config._set_path(base, dotted.removeprefix("platform."), value)
    with pytest.raises(config.ConfigError) as info:
        config.build_config(base)
    message = str(info.value)
    lines = [line for line in info.value.problems if line.startswith(path + ":")]
    assert lines, f"no problem names {path!r}:\n{message}"
    assert any(reason in line for line in lines), f"{reason!r} not in:\n{message}"


def test_cognito_mode_takes_the_admin_by_email_and_derives_the_domain_prefix():
    cfg = config.build_config({}, {"platform.jupyterhub.domain": "hub.example.com",
                                   "platform.jupyterhub.certificate_arn": CERT,
                                   "platform.jupyterhub.admin_user": "ana@example.com"})
    assert cfg.jupyterhub.admin_user == "ana@example.com"
    assert cfg.jupyterhub.cognito_domain_prefix == ""  # derived from the stack id: nothing to change later
    # Without a domain (NativeAuthenticator) the admin is a plain user name, as before.
    assert config.build_config({}).jupyterhub.admin_user == "admin"


def test_unknown_key_message_lists_allowed_keys():
    with pytest.raises(config.ConfigError) as info:
        config.build_config({"network": {"nat_gateway": 1}})
    assert "allowed keys: availability_zones, az_count, nat_gateways, vpc_cidr" in str(info.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(config.ConfigError) as info:
        config.build_config({"cluster": {"name": "X", "kubernetes_version": "1.2"}, "network": {"nat_gateways": 0}})
    assert len(info.value.problems) == 3


def test_the_value_given_is_quoted_in_the_message():
    with pytest.raises(config.ConfigError) as info:
        config.build_config({}, {"platform.network.vpc_cidr": "8.8.0.0/16"})
    assert '"8.8.0.0/16"' in str(info.value)


def test_platform_must_be_an_object():
    with pytest.raises(config.ConfigError, match="must be a JSON object"):
        config.build_config(["not", "a", "dict"])  # type: ignore[arg-type]


def _run_app(context: dict, outdir) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(CDK_CONTEXT_JSON=json.dumps(context), CDK_OUTDIR=str(outdir), CDK_VALIDATION="false")
    return subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_app_refuses_bad_override_with_a_message_and_no_traceback(tmp_path):
    ctx = model_context()
    ctx["platform.network.nat_gateways"] = "many"
    result = _run_app(ctx, tmp_path)
    assert result.returncode == 2
    assert "platform.network.nat_gateways" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not list(tmp_path.glob("**/*.template.json")), "nothing may be synthesized"


def test_the_committed_cdk_json_synthesizes_and_passes_the_gates(tmp_path):
    """The one test that reads cdk.json's platform: what is committed must synthesize, pass cdk-nag, the cost
    budget and the first-boot model (app.py runs them all). With env-specific stages (a pipeline block) the
    committed cdk.context.json must hold their lookups; the default needs no credentials."""
    result = _run_app(cdk_json_context(), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(tmp_path.glob("assembly-*/*.template.json"))) >= 2


def test_app_refuses_a_config_that_would_not_boot(tmp_path):
    """A Ray head that fits a system node alone, but not beside what else must run there at idle."""
    ctx = model_context()
    ctx["platform.ray.head_memory_gib"] = 6
    result = _run_app(ctx, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "would not boot" in result.stderr and "ray/ray-head" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_the_bad_input_suite_covers_every_area():
    areas = {path.split(".")[1] for _, path, _ in BAD_INPUTS if path.count(".") >= 1}
    assert len(BAD_INPUTS) >= 30
    assert {"cluster", "network", "karpenter", "ray", "jupyterhub", "pipeline", "tags", "observability"} <= areas


@pytest.mark.parametrize("az_count", [2, 3])
@pytest.mark.parametrize("prefix", [16, 17, 18, 19, 20])
def test_subnet_plan_agrees_with_the_cdk_allocator(prefix, az_count):
    """The config's fit check and the CDK's own subnet allocator agree on every allowed prefix."""
    from aws_cdk import aws_ec2 as ec2

    cidr = f"10.0.0.0/{prefix}"
    masks = (config.NetworkConfig.PUBLIC_SUBNET_MASK, config.NetworkConfig.PRIVATE_SUBNET_MASK)
    requested = [
        ec2.RequestedSubnet(
            availability_zone=f"az{i}", subnet_construct_id=f"{kind}{i}",
            configuration=ec2.SubnetConfiguration(name=kind, subnet_type=subnet_type, cidr_mask=mask))
        for kind, subnet_type, mask in (("public", ec2.SubnetType.PUBLIC, masks[0]),
                                        ("private", ec2.SubnetType.PRIVATE_WITH_EGRESS, masks[1]))
        for i in range(az_count)
    ]
    try:
        allocated = [s.cidr for s in ec2.IpAddresses.cidr(cidr).allocate_subnets_cidr(
            vpc_cidr=cidr, requested_subnets=requested).allocated_subnets]
    except RuntimeError as err:
        assert "exceeds remaining space" in str(err)
        allocated = None
    assert config.subnet_plan(cidr, az_count, masks) == allocated


def test_a_list_whose_quotes_the_shell_removed_is_read_as_text_items():
    """`make deploy CTX='-c platform.cluster.admin_principal_arns=["arn:..."]'`: make hands the words to the shell,
    which removes the inner quotes, so the app receives `[arn:...]`. It must mean the same list."""
    arn_a, arn_b = "arn:aws:iam::111122223333:role/A", "arn:aws:iam::111122223333:role/B"
    for raw in (f"[{arn_a}]", f'["{arn_a}"]'):
        cfg = config.build_config({}, {"platform.cluster.admin_principal_arns": raw})
        assert cfg.cluster.admin_principal_arns == (arn_a,)
    cfg = config.build_config({}, {"platform.cluster.admin_principal_arns": f"[{arn_a}, {arn_b}]"})
    assert cfg.cluster.admin_principal_arns == (arn_a, arn_b)
    assert config.build_config({}, {"platform.cluster.admin_principal_arns": "[]"}).cluster.admin_principal_arns == ()
    with pytest.raises(config.ConfigError, match="admin_principal_arns"):
        config.build_config({}, {"platform.cluster.admin_principal_arns": "[not-an-arn]"})


def test_the_makefile_passes_a_list_override_through_the_shell_intact():
    """The real path: make -> bash -> the argument the CDK CLI would pass on (printed by a stand-in command)."""
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "-", "show",
         'CTX=-c platform.cluster.admin_principal_arns=["arn:aws:iam::111122223333:role/A"]'],
        input="SHELL := /bin/bash\n.SHELLFLAGS := -o pipefail -c\nshow:\n\t@printf '%s\\n' $(CTX)\n",
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    words = result.stdout.split()
    (value,) = [w.split("=", 1)[1] for w in words if w.startswith("platform.")]
    cfg = config.build_config({}, {"platform.cluster.admin_principal_arns": value})
    assert cfg.cluster.admin_principal_arns == ("arn:aws:iam::111122223333:role/A",)


# ------------------------------------------------------------------ logs (charts/log_shipping.py)

LOGS_BAD_INPUTS = [
    ({"platform.logs.retention_days": 10}, "platform.logs.retention_days",
     "10 is not allowed: must be one of the retention periods CloudWatch Logs accepts, in days: 1, 3, 5, 7, 14, 30"),
    ({"platform.logs.retention_days": 0}, "platform.logs.retention_days", "3288, 3653"),
    ({"platform.logs.retention_days": "30"}, "platform.logs.retention_days", "valid integer"),
    ({"platform.logs.retention_days": True}, "platform.logs.retention_days", "valid integer"),
    ({"platform.logs.retention": 30}, "platform.logs.retention", "unknown key (value 30); allowed keys: retention_days"),
]


@pytest.mark.parametrize("overrides,path,reason", LOGS_BAD_INPUTS, ids=[b[1] + f"-{i}" for i, b in enumerate(LOGS_BAD_INPUTS)])
def test_bad_logs_input_names_field_value_and_allowed_values(overrides, path, reason):
    test_bad_input_names_field_value_and_reason(overrides, path, reason)


def test_logs_default_to_thirty_days_and_take_any_cloudwatch_period():
    assert config.build_config({}).logs.retention_days == 30
    from charts.log_shipping import RETENTION_DAYS_ALLOWED

    for days in RETENTION_DAYS_ALLOWED:
        assert config.build_config({}, {"platform.logs.retention_days": str(days)}).logs.retention_days == days


# ------------------------------------------------------------------ client allowlists (issue #16)
# cluster.endpoint.public_cidrs and jupyterhub.allowed_cidrs admit at most a /8's worth of internet addresses, per
# entry and all entries together: the whole internet split into pieces is refused like 0.0.0.0/0.

_PUBLIC_ENDPOINT = {"platform.cluster.endpoint.access": "public_and_private"}
_HUB_WITH_DOMAIN = {"platform.jupyterhub.domain": "hub.example.com", "platform.jupyterhub.certificate_arn": CERT,
                    "platform.jupyterhub.admin_user": "admin@example.com"}
_ALLOWED = "allowed: entries of /8 or narrower, covering together at most 16777216 internet addresses"

ALLOWLIST_BAD_INPUTS = [
    # (field, cidrs, the value as the message quotes it, a fragment of the reason)
    ("platform.cluster.endpoint.public_cidrs", ["0.0.0.0/1", "128.0.0.0/1"], '["0.0.0.0/1", "128.0.0.0/1"]',
     "'0.0.0.0/1', '128.0.0.0/1': broader than /8, which opens the API server to a large part of the internet; "
     + _ALLOWED),
    ("platform.cluster.endpoint.public_cidrs", ["203.0.113.0/24", "64.0.0.0/2"], '["203.0.113.0/24", "64.0.0.0/2"]',
     "'64.0.0.0/2': broader than /8"),
    ("platform.cluster.endpoint.public_cidrs", ["11.0.0.0/8", "12.0.0.0/8"], '["11.0.0.0/8", "12.0.0.0/8"]',
     "together these entries open the API server to 33554432 internet addresses (0.8% of the IPv4 space); "
     + _ALLOWED),
    # Eight /11s are one /8 of internet plus one /11 more; overlapping entries do not hide the total.
    ("platform.cluster.endpoint.public_cidrs",
     [f"11.{i * 32}.0.0/11" for i in range(8)] + ["12.0.0.0/11", "12.0.0.0/12"], None,
     "to 18874368 internet addresses"),
    ("platform.jupyterhub.allowed_cidrs", ["0.0.0.0/1", "128.0.0.0/1"], '["0.0.0.0/1", "128.0.0.0/1"]',
     "broader than /8, which opens the hub's load balancer to a large part of the internet; " + _ALLOWED),
    ("platform.jupyterhub.allowed_cidrs", ["0.0.0.0/0"], '["0.0.0.0/0"]',
     "opens the hub's load balancer to the whole internet; list the networks that need it (an empty list admits "
     "any address, each still asked to sign in)"),
    ("platform.jupyterhub.allowed_cidrs", ["11.0.0.0/8", "198.18.0.0/15"], '["11.0.0.0/8", "198.18.0.0/15"]',
     "to 16908288 internet addresses"),
]


@pytest.mark.parametrize("field,cidrs,quoted,reason", ALLOWLIST_BAD_INPUTS,
                         ids=[f"{i}:{b[0].rsplit('.', 1)[-1]}" for i, b in enumerate(ALLOWLIST_BAD_INPUTS)])
def test_an_allowlist_wider_than_a_slash_8_of_internet_is_refused(field, cidrs, quoted, reason):
    context = _PUBLIC_ENDPOINT if "endpoint" in field else _HUB_WITH_DOMAIN
    with pytest.raises(config.ConfigError) as info:
        config.build_config({}, {**context, field: json.dumps(cidrs)})
    (line,) = [p for p in info.value.problems if p.startswith(field + ":")]
    assert line.startswith(f"{field}: {quoted or json.dumps(cidrs)} is not allowed: "), line
    assert reason in line, line


@pytest.mark.parametrize("field", ["platform.cluster.endpoint.public_cidrs", "platform.jupyterhub.allowed_cidrs"])
@pytest.mark.parametrize("cidrs", [
    ["203.0.113.0/24", "198.51.100.7/32"],
    ["11.0.0.0/8"],  # exactly the bound
    ["11.0.0.0/9", "11.128.0.0/9", "11.0.0.0/16"],  # one /8 in pieces, overlaps counted once
    # The private ranges never arrive from the internet (an internal load balancer, a VPN): they do not count.
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "11.0.0.0/8"],
])
def test_allowlists_up_to_a_slash_8_of_internet_are_accepted(field, cidrs):
    context = _PUBLIC_ENDPOINT if "endpoint" in field else _HUB_WITH_DOMAIN
    cfg = config.build_config({}, {**context, field: json.dumps(cidrs)})
    section = cfg.cluster.endpoint.public_cidrs if "endpoint" in field else cfg.jupyterhub.allowed_cidrs
    assert section == tuple(cidrs)


def test_the_idle_budget_follows_observability_unless_set():
    """Unset, the budget is the price region's default for the platform as configured (with metrics $0.40/h, without
    $0.30/h in us-east-1); set, it is what the user wrote, and null means none."""
    from config import build_config

    assert build_config({}).idle_budget == 0.40
    assert build_config({"observability": {"enabled": False}}).idle_budget == 0.30
    assert build_config({"cost": {"max_idle_usd_per_hour": 0.5}}).idle_budget == 0.5
    assert build_config({"cost": {"max_idle_usd_per_hour": None}}).idle_budget is None
    tokyo = build_config({"cost": {"price_region": "ap-northeast-1"}})
    assert tokyo.idle_budget == config.default_idle_budget("ap-northeast-1", observability=True)
