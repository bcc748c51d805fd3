"""z2jh 4.4.0 values: strict schema validation, authentication, exposure, placement, Ray wiring."""

from __future__ import annotations

import dataclasses
import json
import os

import jsonschema
import pytest
import yaml

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk  # noqa: E402

import versions  # noqa: E402
from charts import jupyterhub_values as jh  # noqa: E402
from charts.karpenter_nodes import (  # noqa: E402
    DEFAULT_GPU_POOL,
    DEFAULT_ON_DEMAND_POOL,
    DEFAULT_SPOT_POOL,
    POOL_LABEL_KEY,
    pool_placement,
)
from charts import hub_admin_bootstrap as hub_admin  # noqa: E402
from charts.ray_teams import TEAM_LABEL, RayTeam, ray_teams  # noqa: E402
from tests.platform_synth import ROOT  # noqa: E402

SCHEMA_DIR = ROOT / "schemas" / "zero-to-jupyterhub"
IMAGE = jh.notebook_image("111122223333.dkr.ecr.eu-west-1.amazonaws.com/dynamic-factory-notebook")
CERT = "arn:aws:acm:eu-west-1:111122223333:certificate/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def _without_required(node):
    """Drop ``required``: the chart validates user values merged over its defaults, which supply them."""
    if isinstance(node, dict):
        return {k: _without_required(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


@pytest.fixture(scope="module")
def validator():
    schema = yaml.safe_load((SCHEMA_DIR / "values.schema.yaml").read_text())
    assert schema.get("additionalProperties") is False, "the upstream z2jh schema is strict at the root"
    schema = _without_required(schema)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(validator, values):
    # Round-trip through JSON: what Helm receives (tuples become lists, keys strings).
    values = json.loads(json.dumps(values))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]


def native(**overrides) -> jh.JupyterHubValues:
    kwargs = dict(notebook_image=IMAGE, core_pool=DEFAULT_ON_DEMAND_POOL, user_pool=DEFAULT_ON_DEMAND_POOL,
                  auth=jh.NativeAuth(admin_user="admin"))
    kwargs.update(overrides)
    return jh.JupyterHubValues(**kwargs)


def cognito_auth(**overrides) -> jh.CognitoAuth:
    kwargs = dict(user_pool_domain_prefix="dynamic-factory-login", region="eu-west-1",
                  client_id="3n4b5urk1ft4fl3mg5e62d9ado", admin_users=("admin@example.com",))
    kwargs.update(overrides)
    return jh.CognitoAuth(**kwargs)


def cognito(**overrides) -> jh.JupyterHubValues:
    kwargs = dict(auth=cognito_auth(),
                  https=jh.HttpsEndpoint(domain="notebooks.example.com", certificate_arn=CERT),
                  gpu=jh.GpuProfile(pool=DEFAULT_GPU_POOL))
    kwargs.update(overrides)
    return native(**kwargs)


CONFIGS = {
    "native-default": lambda: native(),
    "native-spot-users-allowlist": lambda: native(user_pool=DEFAULT_SPOT_POOL,
                                                  auth=jh.NativeAuth(admin_user="admin", allowed_users=("ana", "bo"))),
    "native-https-gpu": lambda: native(https=jh.HttpsEndpoint(domain="hub.example.org", certificate_arn=CERT,
                                                              internal=True, source_ranges=("203.0.113.0/24",)),
                                       gpu=jh.GpuProfile(pool=DEFAULT_GPU_POOL, gpus=2), cull_max_age_seconds=86400),
    "cognito": lambda: cognito(),
    "native-teams": lambda: native(ray_teams=ray_teams(("alpha", "beta"))),
    "cognito-teams": lambda: cognito(ray_teams=ray_teams(("alpha",))),
}


# -- schema ---------------------------------------------------------------------------------------------


def test_vendored_schema_files_are_the_upstream_ones():
    import hashlib

    expected = {
        "values.schema.yaml": "1d9d48ee343efda1140edfc3de4d8ec4113ae9173bf9e44b83f19c2ca335a0dc",
        "Chart.yaml": "bddf1d180c29ef606a86ae0af93c2fc5369be3b570f97237ffc16b9530557243",
    }
    for name, digest in expected.items():
        assert hashlib.sha256((SCHEMA_DIR / name).read_bytes()).hexdigest() == digest, name
    provenance = (ROOT / "schemas" / "PROVENANCE.md").read_text()
    assert "## zero-to-jupyterhub/" in provenance and expected["values.schema.yaml"] in provenance


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_values_match_the_strict_upstream_schema(validator, name):
    assert _errors(validator, CONFIGS[name]().to_values()) == []


def test_strict_schema_rejects_an_unknown_key(validator):
    values = native().to_values()
    values["singleuser"]["cloudMetadata"]["blockWithIPTables"] = True  # wrong case
    assert any("blockWithIPTables" in e for e in _errors(validator, values))
    values = native().to_values()
    values["proxy"]["service"]["tipe"] = "ClusterIP"
    assert _errors(validator, values)


def test_schema_rejects_a_wrong_type(validator):
    values = native().to_values()
    values["cull"]["timeout"] = "3600"
    assert _errors(validator, values)


def test_values_with_cdk_tokens_resolve_into_strings(validator):
    stack = cdk.Stack(cdk.App())
    prefix = cdk.Token.as_string(cdk.Fn.ref("UserPoolDomain"))
    region = cdk.Aws.REGION
    cert = cdk.Token.as_string(cdk.Fn.ref("Certificate"))
    values = cognito(auth=cognito_auth(user_pool_domain_prefix=prefix, region=region,
                                       client_id=cdk.Token.as_string(cdk.Fn.ref("Client"))),
                     https=jh.HttpsEndpoint(domain="notebooks.example.com", certificate_arn=cert)).to_values()
    resolved = stack.resolve(values)
    oauth = resolved["hub"]["config"]["GenericOAuthenticator"]
    assert "Fn::Join" in oauth["authorize_url"]
    assert {"Ref": "Certificate"} == resolved["proxy"]["service"]["annotations"][
        "service.beta.kubernetes.io/aws-load-balancer-ssl-cert"]
    # With placeholders for the tokens, still schema-valid.
    placeholder = json.loads(json.dumps(resolved, default=str).replace('{"Ref": "Certificate"}', '"arn"'))
    oauth = placeholder["hub"]["config"]["GenericOAuthenticator"]
    for key in ("authorize_url", "token_url", "userdata_url", "client_id"):
        oauth[key] = "https://placeholder"
    assert _errors(validator, placeholder) == []


# -- authentication -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_authenticator_is_never_dummy_and_has_an_allow_rule(name):
    config = CONFIGS[name]().to_values()["hub"]["config"]
    authenticator_class = config["JupyterHub"]["authenticator_class"]
    assert "dummy" not in authenticator_class.lower()
    assert authenticator_class in ("nativeauthenticator.NativeAuthenticator", "generic-oauth")
    auth_sections = [v for k, v in config.items() if k.endswith("Authenticator")]
    assert any(s.get("allow_all") is True or s.get("allowed_users") for s in auth_sections), config
    assert any(s.get("admin_users") for s in auth_sections)
    assert "DummyAuthenticator" not in json.dumps(config)


def test_native_auth_requires_admin_approval():
    config = native().to_values()["hub"]["config"]
    assert config["NativeAuthenticator"]["open_signup"] is False
    assert config["Authenticator"] == {"admin_users": ["admin"], "allow_all": True}
    allow = native(auth=jh.NativeAuth(admin_user="root-admin", allowed_users=("ana",))).to_values()
    assert allow["hub"]["config"]["Authenticator"]["allowed_users"] == ["ana", "root-admin"]
    assert "allow_all" not in allow["hub"]["config"]["Authenticator"]
    assert "nativeauthenticator" in native().to_values()["hub"]["extraConfig"]["nativeauthenticator-templates"]


def test_cognito_urls_and_callback_are_consistent():
    values = cognito().to_values()
    oauth = values["hub"]["config"]["GenericOAuthenticator"]
    base = "https://dynamic-factory-login.auth.eu-west-1.amazoncognito.com/oauth2"
    assert oauth["authorize_url"] == f"{base}/authorize"
    assert oauth["token_url"] == f"{base}/token"
    assert oauth["userdata_url"] == f"{base}/userInfo"
    assert oauth["oauth_callback_url"] == "https://notebooks.example.com/hub/oauth_callback"
    assert oauth["scope"] == ["openid", "email", "profile"]
    assert oauth["client_id"] == "3n4b5urk1ft4fl3mg5e62d9ado"
    assert oauth["allow_all"] is True and oauth["admin_users"] == ["admin@example.com"]
    # The callback host is the host users open (and the one the certificate is for).
    assert values["proxy"]["https"]["hosts"] == ["notebooks.example.com"]


def test_cognito_client_secret_comes_from_a_kubernetes_secret():
    values = cognito().to_values()
    oauth = values["hub"]["config"]["GenericOAuthenticator"]
    assert "client_secret" not in oauth
    env = values["hub"]["extraEnv"]["OAUTH_CLIENT_SECRET"]
    assert env == {"name": "OAUTH_CLIENT_SECRET",
                   "valueFrom": {"secretKeyRef": {"name": "cognito-oauth-client", "key": "client-secret"}}}
    assert "secret" not in json.dumps(values["hub"]["config"]).lower()


# -- exposure -------------------------------------------------------------------------------------------


def test_default_is_cluster_ip_without_https():
    proxy = native().to_values()["proxy"]
    assert proxy["service"] == {"type": "ClusterIP"}
    assert "https" not in proxy


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_load_balancer_only_with_a_domain_and_then_tls_only(name):
    builder = CONFIGS[name]()
    service = builder.to_values()["proxy"]["service"]
    if builder.https is None:
        assert service["type"] != "LoadBalancer"
        return
    proxy = builder.to_values()["proxy"]
    assert service["type"] == "LoadBalancer"
    assert proxy["https"]["enabled"] is True and proxy["https"]["type"] == "offload"
    annotations = service["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-ssl-cert"] == CERT
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-ssl-ports"] == "https"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-type"] == "nlb"
    assert service["disableHttpPort"] is True  # no plain-HTTP listener


def test_internal_load_balancer_and_source_ranges():
    service = CONFIGS["native-https-gpu"]().to_values()["proxy"]["service"]
    assert service["annotations"]["service.beta.kubernetes.io/aws-load-balancer-internal"] == "true"
    assert service["loadBalancerSourceRanges"] == ["203.0.113.0/24"]


# -- placement, security, storage, culling --------------------------------------------------------------


def test_hub_proxy_and_user_scheduler_on_the_core_pool_users_on_the_user_pool():
    values = native(user_pool=DEFAULT_SPOT_POOL).to_values()
    core = pool_placement(DEFAULT_ON_DEMAND_POOL)
    for section in (values["hub"], values["proxy"]["chp"], values["scheduling"]["userScheduler"]):
        assert section["nodeSelector"] == {POOL_LABEL_KEY: "on-demand"}
        assert section["tolerations"] == core["tolerations"]
    assert values["singleuser"]["nodeSelector"] == {POOL_LABEL_KEY: "spot"}
    assert values["singleuser"]["extraTolerations"] == []
    default_users = native().to_values()["singleuser"]
    assert default_users["nodeSelector"] == {POOL_LABEL_KEY: "on-demand"}
    assert default_users["extraTolerations"] == core["tolerations"] != []


def test_single_user_servers_are_not_root():
    singleuser = native().to_values()["singleuser"]
    assert singleuser["uid"] == 1000 != 0
    assert singleuser["fsGid"] == 100
    assert singleuser["allowPrivilegeEscalation"] is False
    csc = native().to_values()["hub"]["config"]["KubeSpawner"]["container_security_context"]
    assert csc["runAsNonRoot"] is True and csc["capabilities"] == {"drop": ["ALL"]}


def test_persistent_home_on_gp3_and_cloud_metadata_blocked():
    singleuser = native(home_capacity="20Gi").to_values()["singleuser"]
    assert singleuser["storage"]["type"] == "dynamic"
    assert singleuser["storage"]["capacity"] == "20Gi"
    assert singleuser["storage"]["dynamic"]["storageClass"] == "gp3"
    # The iptables init container is privileged (baseline Pod Security refuses it); IMDS hop limit 1 and the
    # egress policy keep the metadata service out of reach.
    assert singleuser["cloudMetadata"] == {"blockWithIptables": False, "ip": "169.254.169.254"}
    assert singleuser["networkPolicy"]["egressAllowRules"]["cloudMetadataServer"] is False


def test_culling_is_on_with_the_configured_timeout():
    cull = native(cull_timeout_seconds=1800, cull_every_seconds=120).to_values()["cull"]
    assert cull["enabled"] is True and cull["timeout"] == 1800 and cull["every"] == 120


def test_network_policies_on_and_ray_head_reachable_by_selector_not_ip():
    values = native().to_values()
    assert values["hub"]["networkPolicy"]["enabled"] is True
    assert values["proxy"]["chp"]["networkPolicy"]["enabled"] is True
    policy = values["singleuser"]["networkPolicy"]
    assert policy["enabled"] is True
    rules = policy["egressAllowRules"]
    assert rules["privateIPs"] is False and rules["nonPrivateIPs"] is True
    assert rules["dnsPortsKubeSystemNamespace"] is True
    (rule,) = policy["egress"]
    (peer,) = rule["to"]
    assert "ipBlock" not in peer
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ray"}}
    assert peer["podSelector"] == {"matchLabels": {"ray.io/cluster": "ray", "ray.io/node-type": "head"}}
    assert sorted(p["port"] for p in rule["ports"]) == [8265, 10001]
    assert "ipBlock" not in json.dumps(values)


def _hub_flow(values, destination, port):
    """Whether the hub pod may open TCP ``port`` to ``destination`` under Cilium, per the z2jh policies rendered from
    ``values`` plus the hub's CiliumNetworkPolicy (the first-boot model's evaluator, tools/boot/netpol.py)."""
    from tools.boot import netpol

    policies = netpol.z2jh_policies(values, "jupyterhub") + [netpol.cilium_policy(jh.hub_api_server_policy())]
    hub = netpol.Endpoint.pod("jupyterhub", {**jh.HUB_POD_LABELS, "release": "jupyterhub"})
    return netpol.flow_allowed(policies, hub, destination, port)[0]


def test_the_hub_reaches_the_api_server_and_nothing_else_on_443():
    """Issue #16: the hub had TCP 443 to every destination (a rule without `to`: every pod, node and VPC address).
    Now the API server comes through Cilium's kube-apiserver entity, and 443 elsewhere only with Cognito."""
    from tools.boot import netpol

    native_values, cognito_values = native().to_values(), cognito().to_values()
    api, world = netpol.Endpoint(entity="kube-apiserver"), netpol.Endpoint(entity="world")
    ray_head = netpol.Endpoint.pod("ray", {"ray.io/cluster": "ray", "ray.io/node-type": "head"})
    for values in (native_values, cognito_values):
        assert all(rule.get("to") for rule in values["hub"]["networkPolicy"]["egress"])
        assert _hub_flow(values, api, 443)
        assert not _hub_flow(values, ray_head, 443) and not _hub_flow(values, ray_head, 8265)
        assert not _hub_flow(values, world, 80)
    assert not _hub_flow(native_values, world, 443)  # NativeAuthenticator calls nothing outside
    assert _hub_flow(cognito_values, world, 443)  # the OAuth token and userinfo calls
    rules = native_values["hub"]["networkPolicy"]["egressAllowRules"]
    assert rules["privateIPs"] is False and rules["cloudMetadataServer"] is False and rules["nonPrivateIPs"] is False


def test_the_api_server_policy_selects_the_hub_pod():
    policy = jh.hub_api_server_policy()
    assert policy["kind"] == "CiliumNetworkPolicy" and policy["metadata"]["namespace"] == "jupyterhub"
    assert policy["spec"]["endpointSelector"] == {"matchLabels": {"app": "jupyterhub", "component": "hub"}}
    (rule,) = policy["spec"]["egress"]
    assert rule == {"toEntities": ["kube-apiserver"], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}
    assert "ingress" not in policy["spec"]  # it adds an egress allow and isolates nothing else


def test_no_pod_reaches_the_proxy_without_a_domain():
    """Issue #16: z2jh's default allowedIngressPorts (http, https) admit every pod of every namespace to the proxy,
    and through it to /hub/signup. Without a domain nothing needs that: port-forward enters the pod's own network
    namespace. With a domain the load balancer's connections still reach the proxy's http port."""
    policy = native().to_values()["proxy"]["chp"]["networkPolicy"]
    assert policy == {"enabled": True, "allowedIngressPorts": [], "interNamespaceAccessLabels": "ignore"}
    assert "ingress" not in policy
    with_domain = CONFIGS["native-https-gpu"]().to_values()["proxy"]["chp"]["networkPolicy"]
    assert with_domain["allowedIngressPorts"] == ["http"]
    assert cognito().to_values()["proxy"]["chp"]["networkPolicy"]["allowedIngressPorts"] == ["http"]


def test_only_labelled_pods_of_the_hub_namespace_reach_the_hub():
    for values in (native().to_values(), cognito().to_values()):
        policy = values["hub"]["networkPolicy"]
        assert policy["allowedIngressPorts"] == [] and policy["interNamespaceAccessLabels"] == "ignore"
        assert "ingress" not in policy


# -- Ray wiring -----------------------------------------------------------------------------------------


def test_ray_address_and_token_are_injected_from_the_secret():
    env = native().to_values()["singleuser"]["extraEnv"]
    assert env["RAY_ADDRESS"] == "http://ray-head-svc.ray.svc.cluster.local:8265"
    assert env["RAY_AUTH_MODE"] == "token"
    # The token is a mounted file, not an environment variable (Ray 2.60 reads RAY_AUTH_TOKEN_PATH).
    assert "RAY_AUTH_TOKEN" not in env
    assert env["RAY_AUTH_TOKEN_PATH"] == "/etc/ray-auth/token"
    storage = native().to_values()["singleuser"]["storage"]
    (volume,) = storage["extraVolumes"]
    (mount,) = storage["extraVolumeMounts"]
    assert volume["secret"]["secretName"] == "ray-auth-token"
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}]
    assert volume["secret"]["defaultMode"] == 0o440  # root-owned, readable by the server's group (fsGid)
    assert (mount["name"], mount["readOnly"]) == (volume["name"], True)
    assert f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}" == env["RAY_AUTH_TOKEN_PATH"]


def test_notebooks_learn_whether_the_ray_cluster_has_gpu_workers():
    assert native().to_values()["singleuser"]["extraEnv"]["DF_RAY_GPU_WORKERS"] == "0"
    assert native(ray_gpu_workers=True).to_values()["singleuser"]["extraEnv"]["DF_RAY_GPU_WORKERS"] == "1"


def test_notebook_image_carries_the_cluster_ray_and_python():
    assert IMAGE.tag == f"ray-{versions.RAY_VERSION}-py{versions.RAY_PYTHON_VERSION}"
    values = native().to_values()["singleuser"]["image"]
    assert values == {"name": IMAGE.name, "tag": IMAGE.tag}
    dockerfile = jh.notebook_dockerfile()
    assert f'"ray[default]=={versions.RAY_VERSION}"' in dockerfile
    assert f"FROM quay.io/jupyter/minimal-notebook:python-{versions.RAY_PYTHON_VERSION}\n" in dockerfile


# -- profiles -------------------------------------------------------------------------------------------


def test_profile_list_has_gpu_only_when_enabled():
    slugs = [p["slug"] for p in native().to_values()["singleuser"]["profileList"]]
    assert slugs == ["cpu-small", "cpu-large"]
    profiles = native(gpu=jh.GpuProfile(pool=DEFAULT_GPU_POOL)).to_values()["singleuser"]["profileList"]
    assert [p["slug"] for p in profiles] == ["cpu-small", "cpu-large", "gpu"]
    assert sum(bool(p.get("default")) for p in profiles) == 1
    gpu = profiles[-1]["kubespawner_override"]
    assert gpu["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in gpu["tolerations"]
    assert gpu["node_selector"] == {POOL_LABEL_KEY: "gpu"}


# -- bad arguments --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: native(core_pool=DEFAULT_SPOT_POOL), "can launch Spot nodes"),
        (lambda: native(user_pool=DEFAULT_GPU_POOL), "is a GPU pool"),
        (lambda: native(auth=cognito_auth()), "needs the https endpoint"),
        (lambda: native(auth="dummy"), "no dummy authenticator"),
        (lambda: native(cull_timeout_seconds=10), "cull_timeout_seconds"),
        (lambda: native(home_capacity="10GB"), "home_capacity"),
        (lambda: native(server_sizes=()), "at least one CPU profile"),
        (lambda: native(extra_env={"RAY_AUTH_TOKEN": "x"}), "set by the builder"),
        (lambda: native(extra_env={"MY_API_TOKEN": "x"}), "looks like a secret"),
        (lambda: native(notebook_image="jupyter/base"), "NotebookImage"),
        (lambda: jh.NativeAuth(admin_user="has space"), "admin_user"),
        (lambda: jh.NativeAuth(admin_user="a", minimum_password_length=4), "minimum_password_length"),
        (lambda: cognito_auth(user_pool_domain_prefix="https://x.auth.eu-west-1.amazoncognito.com"), "prefix"),
        (lambda: cognito_auth(region="Europe"), "region"),
        (lambda: cognito_auth(admin_users=()), "at least one admin"),
        # Cognito names users by e-mail: a plain "admin" would be an admin nobody can log in as.
        (lambda: cognito_auth(admin_users=("admin",)), "admin_users: 'admin' is not a lowercase e-mail address"),
        (lambda: cognito_auth(admin_users=("Ana@Example.com",)), "not a lowercase e-mail address"),
        (lambda: cognito_auth(allowed_users=("bo",)), "allowed_users: 'bo' is not a lowercase e-mail address"),
        (lambda: cognito_auth(client_secret_secret_name="Bad_Name"), "client_secret_secret_name"),
        (lambda: jh.HttpsEndpoint(domain="https://hub.example.com", certificate_arn=CERT), "domain"),
        (lambda: jh.HttpsEndpoint(domain="hub.example.com", certificate_arn="arn:aws:iam::1:cert/x"), "ACM"),
        (lambda: jh.HttpsEndpoint(domain="hub.example.com", certificate_arn=CERT, source_ranges=("10.0.0.0/33",)),
         "CIDR"),
        (lambda: jh.GpuProfile(pool=DEFAULT_ON_DEMAND_POOL), "no gpu_limit"),
        (lambda: jh.GpuProfile(pool=DEFAULT_GPU_POOL, gpus=99), "exceed"),
        (lambda: jh.ServerSize(slug="x", display_name="x", cpu_guarantee=4, cpu_limit=2,
                               mem_guarantee="1G", mem_limit="2G"), "guarantee"),
        (lambda: jh.ServerSize(slug="x", display_name="x", cpu_guarantee=1, cpu_limit=2,
                               mem_guarantee="8G", mem_limit="2G"), "exceeds limit"),
        (lambda: jh.NotebookImage(name="repo:tag", tag="x"), "without a tag"),
    ],
)
def test_bad_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_cognito_admin_named_by_email_reaches_the_hub():
    oauth = cognito(auth=cognito_auth(admin_users=("ana@example.com",))).to_values()["hub"]["config"]["GenericOAuthenticator"]
    assert oauth["username_claim"] == "email" and oauth["admin_users"] == ["ana@example.com"]
    # Another claim names users otherwise: then plain names are what the hub sees.
    assert cognito_auth(username_claim="preferred_username", admin_users=("admin",)).admin_users == ("admin",)


def test_two_default_profiles_are_refused():
    sizes = tuple(dataclasses.replace(s, default=True) for s in jh.DEFAULT_SERVER_SIZES)
    with pytest.raises(ValueError, match="exactly one profile must be the default"):
        native(server_sizes=sizes)


# -- issue #16: TLS policy, admin account, teams ----------------------------------------------------------


def test_the_nlb_tls_listener_accepts_tls_1_2_and_newer_only():
    annotations = cognito().to_values()["proxy"]["service"]["annotations"]
    policy = annotations["service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy"]
    assert policy == "ELBSecurityPolicy-TLS13-1-2-Res-2021-06"
    assert all("2016" not in p and "TLS-1-1" not in p and "TLS13-1-0" not in p for p in jh.TLS12_POLICIES)
    assert "annotations" not in native().to_values()["proxy"]["service"]  # no load balancer, no listener


def test_an_old_tls_policy_is_refused_naming_the_field_and_the_choices():
    with pytest.raises(ValueError, match=r"ssl_policy 'ELBSecurityPolicy-2016-08' is not one of .*"
                                         r"ELBSecurityPolicy-TLS13-1-2-Res-2021-06"):
        jh.HttpsEndpoint(domain="hub.example.com", certificate_arn=CERT, ssl_policy="ELBSecurityPolicy-2016-08")


def test_the_admin_account_comes_from_a_secret_only_the_hub_mounts():
    values = native().to_values()
    code = values["hub"]["extraConfig"]["admin-account"]
    assert "c.JupyterHub.authenticator_class = DynamicFactoryNativeAuthenticator" in code
    (volume,) = values["hub"]["extraVolumes"]
    (mount,) = values["hub"]["extraVolumeMounts"]
    assert volume["secret"]["secretName"] == "jupyterhub-admin-password" and mount["readOnly"] is True
    path = f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    assert json.dumps(path)[1:-1] in code and json.dumps("admin")[1:-1] in code
    assert "admin-password" not in json.dumps(values["singleuser"])
    compile(code, "admin-account", "exec")
    # Cognito: no local accounts, no password.
    oauth_hub = cognito().to_values()["hub"]
    assert "extraVolumes" not in oauth_hub and "admin-account" not in oauth_hub.get("extraConfig", {})


def test_a_password_policy_longer_than_the_generated_password_is_refused():
    with pytest.raises(ValueError, match="minimum_password_length 40 must be at most 32"):
        jh.NativeAuth(admin_user="admin", minimum_password_length=40)


def test_the_shared_cluster_is_the_default_and_changes_nothing():
    default = native().to_values()
    assert native(ray_teams=ray_teams(())).to_values() == default
    assert native(ray_teams=(RayTeam(None),)).to_values() == default
    assert "load_groups" not in default["hub"]["config"]["JupyterHub"]
    assert "ray-teams" not in default["hub"]["extraConfig"]
    assert default["singleuser"]["extraEnv"]["RAY_ADDRESS"] == jh.RAY_ADDRESS
    assert [v["secret"]["secretName"] for v in default["singleuser"]["storage"]["extraVolumes"]] == ["ray-auth-token"]


def test_with_teams_the_groups_exist_and_the_hub_routes_each_notebook():
    teams = ray_teams(("alpha", "beta"))
    values = native(ray_teams=teams).to_values()
    assert values["hub"]["config"]["JupyterHub"]["load_groups"] == {"alpha": {"users": []}, "beta": {"users": []}}
    code = values["hub"]["extraConfig"]["ray-teams"]
    compile(code, "ray-teams", "exec")
    for team in teams:
        assert team.dashboard_url in code
        assert team.notebook_token_secret in code
    assert TEAM_LABEL in code
    singleuser = values["singleuser"]
    # Nothing static: the hook adds the chosen team's address and token Secret; the mount alone names no volume.
    assert "RAY_ADDRESS" not in singleuser["extraEnv"]
    assert singleuser["storage"]["extraVolumes"] == []
    assert [m["mountPath"] for m in singleuser["storage"]["extraVolumeMounts"]] == ["/etc/ray-auth"]


def test_with_teams_notebooks_may_reach_every_teams_head_only():
    from tools.boot import netpol

    values = native(ray_teams=ray_teams(("alpha", "beta"))).to_values()
    policies = netpol.z2jh_policies(values, "jupyterhub")
    notebook = netpol.Endpoint.pod("jupyterhub", {"component": "singleuser-server", TEAM_LABEL: "alpha"})

    def reaches(namespace, node_type, port=8265):
        pod = netpol.Endpoint.pod(namespace, {"ray.io/cluster": "ray", "ray.io/node-type": node_type})
        return netpol.flow_allowed(policies, notebook, pod, port)[0]

    assert reaches("ray-alpha", "head") and reaches("ray-beta", "head") and reaches("ray-beta", "head", 10001)
    assert not reaches("ray-alpha", "worker") and not reaches("ray", "head") and not reaches("ray-alpha", "head", 6379)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ray_teams": (RayTeam(None), RayTeam("alpha"))}, r"the shared cluster \(name None\) comes alone"),
        ({"ray_teams": (RayTeam("alpha"), RayTeam("alpha"))}, r"\['alpha'\] listed more than once"),
        ({"ray_teams": ()}, "ray_teams \\(\\): expected a non-empty tuple of RayTeam"),
        ({"ray_teams": ("alpha",)}, "expected a non-empty tuple of RayTeam"),
        ({"ray_teams": ray_teams(("alpha",)), "ray_address": "http://elsewhere:8265"},
         "ray_address 'http://elsewhere:8265' cannot be set with named ray_teams \\['alpha'\\]"),
        ({"ray_teams": ray_teams(("alpha",)), "ray_token_secret": "other"},
         "ray_token_secret 'other' cannot be set with named ray_teams"),
    ],
)
def test_bad_teams_are_refused_naming_the_field_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        native(**kwargs)
