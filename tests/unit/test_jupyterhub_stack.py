"""JupyterHub wired into the platform: release, image, auth modes, Cognito, and the Ray wiring."""

from __future__ import annotations

import json
import re

import versions
from tests.platform_synth import ROOT


def _hub(synth):
    return synth.assembly.helm_releases()["jupyterhub"]


def test_chart_pinned_into_the_namespace_the_ray_stack_creates(platform):
    hub = _hub(platform)
    assert hub.properties["Version"] == versions.JUPYTERHUB_CHART_VERSION
    assert hub.properties["Namespace"] == "jupyterhub"
    assert hub.properties.get("CreateNamespace") in (False, None)
    ns = [o for o in platform.assembly.kube_objects() if o["kind"] == "Namespace"]
    assert "jupyterhub" in {o["metadata"]["name"] for o in ns}
    assert "Ray" in {s.node.id for s in platform.stage.jupyterhub.dependencies}


def test_the_deploy_waits_for_the_hub_to_be_ready(any_platform):
    """Without wait, the stack reports success while the hub crash-loops; the wait stays inside the
    15-minute kubectl handler."""
    props = _hub(any_platform).properties
    assert props["Wait"] is True
    assert props["Timeout"] == "720s"


def test_default_mode_native_auth_cluster_ip(platform):
    values = _hub(platform).values
    assert values["hub"]["config"]["JupyterHub"]["authenticator_class"] == "nativeauthenticator.NativeAuthenticator"
    assert values["proxy"]["service"]["type"] == "ClusterIP"
    assert not [r for r in platform.template_json("JupyterHub")["Resources"].values() if r["Type"].startswith("AWS::Cognito")]


def test_cognito_mode_pool_client_and_hub_agree(variant):
    resources = variant.template_json("JupyterHub")["Resources"]
    (pool,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Cognito::UserPool"]
    (client,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Cognito::UserPoolClient"]
    (domain,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Cognito::UserPoolDomain"]
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert pool["MfaConfiguration"] == "ON"
    assert client["CallbackURLs"] == ["https://hub.example.com/hub/oauth_callback"]
    assert client["GenerateSecret"] is True and client["AllowedOAuthFlows"] == ["code"]
    assert domain["Domain"] == "ml-prod-hub"
    values = _hub(variant).values
    oauth = values["hub"]["config"]["GenericOAuthenticator"]
    assert oauth["oauth_callback_url"] == "https://hub.example.com/hub/oauth_callback"
    assert oauth["authorize_url"].startswith("https://ml-prod-hub.auth.")
    assert "client_secret" not in json.dumps(oauth).lower().replace("client_secret_", "")
    assert values["proxy"]["https"]["enabled"] is True


def test_cognito_admin_is_named_by_email(variant):
    """Users are named by their e-mail in Cognito mode; an admin named `admin` was an admin nobody could be."""
    admin = variant.config.jupyterhub.admin_user
    oauth = _hub(variant).values["hub"]["config"]["GenericOAuthenticator"]
    assert oauth["username_claim"] == "email"
    assert oauth["admin_users"] == [admin] and re.fullmatch(r"[a-z0-9._-]+@[a-z0-9.-]+\.[a-z]+", admin)


def test_cognito_domain_prefix_is_derived_from_the_stack_id_unless_named():
    """A changed prefix replaces the UserPoolDomain, which fails (one prefix domain per pool, replacement
    created first): the derived prefix depends on nothing a config change can touch."""
    import aws_cdk as cdk

    from stacks.jupyterhub_stack import COGNITO_PREFIX_STEM, cognito_domain_prefix

    stack = cdk.Stack(cdk.App(), "Hub")
    derived = json.dumps(stack.resolve(cognito_domain_prefix(stack)))
    refs = set(re.findall(r'"Ref": "([^"]+)"', derived))
    assert refs == {"AWS::StackId"}
    assert not any(word in COGNITO_PREFIX_STEM for word in ("aws", "amazon", "cognito"))
    assert cognito_domain_prefix(stack, "ml-prod-hub") == "ml-prod-hub"  # a prefix the config names is kept


def test_cognito_domain_prefix_is_an_output(variant):
    outputs = variant.template_json("JupyterHub")["Outputs"]
    assert any(k.startswith("CognitoDomainPrefix") and o["Value"] == "ml-prod-hub" for k, o in outputs.items())


def test_cognito_secret_reaches_the_hub_through_an_in_cluster_job(variant):
    objects = [o for r in variant.assembly.manifests() for o in r.objects if o["metadata"].get("namespace") == "jupyterhub"]
    job = next(o for o in objects if o["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "oauth-secret-bootstrap"
    assoc = [r["Properties"] for r in variant.template_json("JupyterHub")["Resources"].values()
             if r["Type"] == "AWS::EKS::PodIdentityAssociation"]
    assert [(a["Namespace"], a["ServiceAccount"]) for a in assoc] == [("jupyterhub", "oauth-secret-bootstrap")]
    policies = [r["Properties"]["PolicyDocument"] for r in variant.template_json("JupyterHub")["Resources"].values()
                if r["Type"] == "AWS::IAM::Policy"]
    statements = [s for p in policies for s in p["Statement"]]
    assert [s["Action"] for s in statements] == ["cognito-idp:DescribeUserPoolClient"]


def test_notebook_image_is_built_with_the_pinned_ray_and_python(platform):
    manifests = list(platform.outdir.glob("assembly-*/*JupyterHub*.assets.json"))
    (assets,) = [json.loads(m.read_text()) for m in manifests]
    (image,) = assets["dockerImages"].values()
    assert image["source"]["dockerBuildArgs"] == {
        "RAY_VERSION": versions.RAY_VERSION, "PYTHON_VERSION": versions.RAY_PYTHON_VERSION}
    text = (ROOT / "images" / "notebook" / "Dockerfile").read_text()
    assert "${RAY_VERSION}" in text and "python-${PYTHON_VERSION}" in text and "ray.__version__ ==" in text


def test_every_user_server_gets_ray_address_and_token(platform):
    singleuser = _hub(platform).values["singleuser"]
    env = singleuser["extraEnv"]
    assert env["RAY_ADDRESS"] == "http://ray-head-svc.ray.svc.cluster.local:8265"
    (volume,) = singleuser["storage"]["extraVolumes"]
    (mount,) = singleuser["storage"]["extraVolumeMounts"]
    assert volume["secret"]["secretName"] == "ray-auth-token" and mount["name"] == volume["name"]
    assert env["RAY_AUTH_TOKEN_PATH"].startswith(mount["mountPath"] + "/")
    assert "RAY_AUTH_TOKEN" not in env
    assert singleuser["uid"] != 0


def test_notebooks_are_told_whether_the_ray_cluster_has_gpu_workers(any_platform):
    """DF_RAY_GPU_WORKERS follows the synthesized RayCluster: "1" exactly when it has the gpu worker group."""
    clusters = [o for o in any_platform.assembly.kube_objects() if o["kind"] == "RayCluster"]
    has_gpu = {any(g["groupName"] == "gpu" for g in rc["spec"]["workerGroupSpecs"]) for rc in clusters}
    assert len(has_gpu) == 1  # every team's cluster has the same groups
    has_gpu = has_gpu.pop()
    assert _hub(any_platform).values["singleuser"]["extraEnv"]["DF_RAY_GPU_WORKERS"] == ("1" if has_gpu else "0")


# -- issue #16, on the stack alone (an imported cluster: no platform synth) -----------------------------------


def _hub_stack(domain: str = "", **kwargs):
    import aws_cdk as cdk
    from aws_cdk import aws_eks_v2 as eks
    from aws_cdk import aws_iam as iam
    from aws_cdk.assertions import Template

    from charts.karpenter_nodes import DEFAULT_ON_DEMAND_POOL
    from stacks.jupyterhub_stack import JupyterHubStack
    from tests.platform_synth import feature_flags

    app = cdk.App(context=feature_flags())
    base = cdk.Stack(app, "Base", env=cdk.Environment(account="111122223333", region="eu-west-1"))
    cdk.CfnWaitConditionHandle(base, "Placeholder")
    provider = eks.KubectlProvider.from_kubectl_provider_attributes(
        base, "Kubectl", service_token="arn:aws:lambda:eu-west-1:111122223333:function:kubectl",
        role=iam.Role.from_role_arn(base, "KubectlRole", "arn:aws:iam::111122223333:role/kubectl"))
    cluster = eks.Cluster.from_cluster_attributes(base, "Cluster", cluster_name="c", kubectl_provider=provider)
    stack = JupyterHubStack(
        app, "Hub", env=cdk.Environment(account="111122223333", region="eu-west-1"),
        cluster=cluster, cluster_name="c", core_pool=DEFAULT_ON_DEMAND_POOL, user_pool=DEFAULT_ON_DEMAND_POOL,
        gpu_pool=None, admin_user="admin@example.com" if domain else "admin", home_capacity_gib=10,
        cull_timeout_seconds=3600, notebook_image="111122223333.dkr.ecr.eu-west-1.amazonaws.com/nb:ray-2.60.0-py3.11",
        domain=domain,
        certificate_arn="arn:aws:acm:eu-west-1:111122223333:certificate/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
        if domain else "", cognito_domain_prefix="hub-test" if domain else "", internal_load_balancer=False,
        allowed_cidrs=[], **kwargs)
    return Template.from_stack(stack).to_json()["Resources"]


def _resource(resources, prefix):
    (logical_id,) = [k for k in resources if k.startswith(prefix)]
    return logical_id, resources[logical_id]


def _manifest(resource) -> list[dict]:
    manifest = resource["Properties"]["Manifest"]
    if isinstance(manifest, dict):  # Fn::Join around tokens: the objects here hold none that matter
        manifest = "".join(p if isinstance(p, str) else '"TOKEN"' for p in manifest["Fn::Join"][1])
    return json.loads(manifest)


def _values(resources) -> dict:
    _, release = _resource(resources, "JupyterHub")
    raw = release["Properties"]["Values"]
    if isinstance(raw, dict):
        raw = "".join(p if isinstance(p, str) else "TOKEN" for p in raw["Fn::Join"][1])
    return json.loads(raw)


def test_the_hub_starts_after_its_admin_password_and_its_way_to_the_api_server():
    from charts import hub_admin_bootstrap as hub_admin

    resources = _hub_stack()
    bootstrap_id, bootstrap = _resource(resources, "HubAdminBootstrap")
    policy_id, policy = _resource(resources, "HubApiServerPolicy")
    _, release = _resource(resources, "JupyterHub")
    assert {bootstrap_id, policy_id} <= set(release["DependsOn"])
    objects = {o["kind"]: o for o in _manifest(bootstrap)}
    assert set(objects) == {"ServiceAccount", "Role", "RoleBinding", "Job"}
    assert {o["metadata"]["namespace"] for o in objects.values()} == {"jupyterhub"}
    pod = objects["Job"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"quay.io/jupyterhub/k8s-hub:{versions.JUPYTERHUB_CHART_VERSION}"
    assert container["command"] == ["python3", "-c", hub_admin.BOOTSTRAP_SCRIPT]
    assert pod["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]
    rules = objects["Role"]["rules"]
    assert {r["resources"][0] for r in rules} == {"secrets"}
    assert {v for r in rules for v in r["verbs"]} == {"create", "get"}
    assert [r.get("resourceNames") for r in rules if "get" in r["verbs"]] == [[hub_admin.SECRET_NAME]]
    (cnp,) = _manifest(policy)
    assert cnp["kind"] == "CiliumNetworkPolicy" and cnp["spec"]["egress"][0]["toEntities"] == ["kube-apiserver"]
    values = _values(resources)
    assert values["hub"]["extraVolumes"][0]["secret"]["secretName"] == hub_admin.SECRET_NAME
    assert "ray-teams" not in values["hub"]["extraConfig"]  # the shared cluster by default


def test_with_cognito_no_local_admin_password_but_the_same_api_server_policy():
    resources = _hub_stack(domain="hub.example.com")
    assert not [k for k in resources if k.startswith("HubAdminBootstrap")]
    policy_id, _ = _resource(resources, "HubApiServerPolicy")
    _, release = _resource(resources, "JupyterHub")
    assert policy_id in release["DependsOn"]
    values = _values(resources)
    assert "extraVolumes" not in values["hub"]
    assert values["proxy"]["service"]["annotations"][
        "service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy"].startswith("ELBSecurityPolicy-TLS13-")


def test_the_stack_hands_the_ray_teams_to_the_hub():
    from charts.ray_teams import ray_teams

    values = _values(_hub_stack(ray_teams=ray_teams(("alpha", "beta"))))
    assert values["hub"]["config"]["JupyterHub"]["load_groups"] == {"alpha": {"users": []}, "beta": {"users": []}}
    assert "ray-teams" in values["hub"]["extraConfig"]
    assert [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for p in values["singleuser"]["networkPolicy"]["egress"][0]["to"]] == ["ray-alpha", "ray-beta"]
