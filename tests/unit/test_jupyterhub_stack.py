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
    (ray_cluster,) = [o for o in any_platform.assembly.kube_objects() if o["kind"] == "RayCluster"]
    has_gpu = any(g["groupName"] == "gpu" for g in ray_cluster["spec"]["workerGroupSpecs"])
    assert _hub(any_platform).values["singleuser"]["extraEnv"]["DF_RAY_GPU_WORKERS"] == ("1" if has_gpu else "0")
