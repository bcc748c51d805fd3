"""JupyterHub: the cockpit. Users log in, open a notebook, and submit work to Ray.

Deploy order: (Cognito user pool + client + the in-cluster secret bootstrap, with a domain; without one the
admin password bootstrap) + the hub's CiliumNetworkPolicy to the API server -> z2jh 4.4.0 release in the
`jupyterhub` namespace (the hub mounts the Secret the bootstrap makes, and needs the API server from its first
second). The Ray stack creates that namespace first (its token bootstrap puts the Ray token there) and leaves
it when deleted; this stack owns it, so deleting this stack removes the notebook pods and home claims after
the release. Homes and the hub database are on the
`gp3-retain` StorageClass unless ``keep_homes_on_destroy`` is false. The stack comes after the Ray stack.

Cognito mode names users by e-mail, and the admin too (config refuses anything else). The hosted-UI
domain prefix never changes once deployed: a user pool has one prefix domain and CloudFormation creates
a replacement before it deletes the old one, so a changed prefix would fail the update. Unless the config
names one, the prefix is derived from this stack's own id (:func:`cognito_domain_prefix`), which no
config change can alter.
"""

from __future__ import annotations

from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

import versions
from cdk_constructs.helm import pinned_chart
from cdk_constructs.image_asset import repo_image_asset
from cdk_constructs.pod_identity import PodIdentityRole
from charts import hub_admin_bootstrap as hub_admin
from charts import jupyterhub_values as jh
from charts import karpenter_nodes as kn
from charts import oauth_secret_bootstrap as oauth
from charts import ray_teams as rt
from charts.k8s import cdk8s_app
from charts.storage import DEFAULT_STORAGE_CLASS, RETAIN_STORAGE_CLASS

NAMESPACE = jh.JUPYTERHUB_NAMESPACE


# The stem of a derived Cognito domain prefix (Cognito refuses prefixes containing aws, amazon or cognito).
COGNITO_PREFIX_STEM = "jupyterhub"


def cognito_domain_prefix(stack: cdk.Stack, explicit: str = "") -> str:
    """The hosted-UI domain prefix: ``explicit`` when the config names one, else ``jupyterhub-<12 hex>``
    taken from the stack's id (``arn:...:stack/<name>/<uuid>``): fixed for the life of the stack, whatever
    the config later says, and unique (Cognito prefixes are global per region, across accounts)."""
    if explicit:
        return explicit
    uuid_parts = cdk.Fn.split("-", cdk.Fn.select(2, cdk.Fn.split("/", stack.stack_id)))
    return cdk.Fn.join("", [f"{COGNITO_PREFIX_STEM}-", cdk.Fn.select(0, uuid_parts), cdk.Fn.select(1, uuid_parts)])


def notebook_image_asset(scope: Construct) -> ecr_assets.DockerImageAsset:
    """The notebook image, built from images/notebook at deploy time with the pinned Ray and Python."""
    return repo_image_asset(
        scope,
        "NotebookImage",
        dockerfile="images/notebook/Dockerfile",
        context_dirs=["images/notebook", "jobs", "notebooks"],
        build_args={"RAY_VERSION": versions.RAY_VERSION, "PYTHON_VERSION": versions.RAY_PYTHON_VERSION},
    )


class JupyterHubStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        cluster_name: str,
        core_pool: kn.NodePoolSettings,
        user_pool: kn.NodePoolSettings,
        gpu_pool: kn.NodePoolSettings | None,
        admin_user: str,
        home_capacity_gib: int,
        cull_timeout_seconds: int,
        notebook_image: str,
        domain: str,
        certificate_arn: str,
        cognito_domain_prefix: str,
        internal_load_balancer: bool,
        allowed_cidrs: Sequence[str],
        keep_homes_on_destroy: bool = True,
        ray_gpu_workers: bool = False,
        ray_teams: tuple[rt.RayTeam, ...] = rt.ray_teams(()),
        proxied_services: Sequence[jh.ProxiedService] = (),
        **kwargs,
    ) -> None:
        """``keep_homes_on_destroy``: home volumes and the hub database outlive this stack and the cluster
        (StorageClass ``gp3-retain``); False deletes them with their claims. ``ray_gpu_workers``: the RayCluster
        has a GPU worker group (notebooks then submit the job in GPU mode). ``ray_teams``: the RayClusters notebooks
        reach (charts/ray_teams.py; default the one shared cluster); with named teams a user reaches the clusters of
        the JupyterHub groups (same names) an admin put them in."""
        super().__init__(scope, construct_id, **kwargs)

        # This stack owns the namespace (the Ray stack creates it first and leaves it on delete): deleting the
        # stack deletes the namespace after the release, and with it the notebook pods KubeSpawner started and
        # the home claims, whose volumes are kept or deleted by the StorageClass.
        # overwrite: the namespace exists already (the Ray stack made it), and the kubectl handler would `kubectl
        # create` it and fail; with overwrite it applies (aws-cdk-lib 2.273.0 kubectl handler, apply/__init__.py).
        self.namespace = eks.KubernetesManifest(
            self, "Namespace", cluster=cluster, manifest=[jh.namespace_manifest()], overwrite=True
        )

        if notebook_image:
            repository, tag = notebook_image.rsplit(":", 1)
            image = jh.NotebookImage(name=repository, tag=tag)
        else:
            asset = notebook_image_asset(self)
            image = jh.NotebookImage(name=asset.repository.repository_uri, tag=asset.image_tag)

        depends_on: list[Construct] = []
        https = None
        if domain:
            auth, bootstrap = self._cognito(cluster, cluster_name, domain, cognito_domain_prefix, admin_user, core_pool)
            depends_on.append(bootstrap)
            https = jh.HttpsEndpoint(
                domain=domain,
                certificate_arn=certificate_arn,
                internal=internal_load_balancer,
                source_ranges=tuple(allowed_cidrs),
            )
        else:
            auth = jh.NativeAuth(admin_user=admin_user)
            # The admin's password, random, made in the cluster before the hub first starts (the hub mounts it).
            admin_bootstrap = eks.KubernetesManifest(
                self,
                "HubAdminBootstrap",
                cluster=cluster,
                manifest=hub_admin.HubAdminBootstrapChart(
                    cdk8s_app(),
                    "hub-admin-bootstrap",
                    namespace=NAMESPACE,
                    placement=kn.pool_placement(core_pool),
                    minimum_password_length=auth.minimum_password_length,
                    secret_name=auth.admin_password_secret,
                ).to_json(),
            )
            admin_bootstrap.node.add_dependency(self.namespace)  # the Job runs in the namespace
            depends_on.append(admin_bootstrap)
        # The hub's only way to the Kubernetes API under Cilium (charts/jupyterhub_values.py, hub_api_server_policy):
        # in place before the hub starts, or KubeSpawner cannot reach the API.
        hub_policy = eks.KubernetesManifest(
            self, "HubApiServerPolicy", cluster=cluster, manifest=[jh.hub_api_server_policy(NAMESPACE)]
        )
        hub_policy.node.add_dependency(self.namespace)
        depends_on.append(hub_policy)

        values = jh.JupyterHubValues(
            notebook_image=image,
            core_pool=core_pool,
            user_pool=user_pool,
            auth=auth,
            https=https,
            gpu=jh.GpuProfile(pool=gpu_pool) if gpu_pool is not None else None,
            home_capacity=f"{home_capacity_gib}Gi",
            storage_class=RETAIN_STORAGE_CLASS if keep_homes_on_destroy else DEFAULT_STORAGE_CLASS,
            cull_timeout_seconds=cull_timeout_seconds,
            ray_gpu_workers=ray_gpu_workers,
            ray_teams=tuple(ray_teams),
            proxied=tuple(proxied_services),
        )
        self.release = pinned_chart(
            self,
            "JupyterHub",
            cluster=cluster,
            chart="jupyterhub",
            namespace=NAMESPACE,
            values=values.to_values(),
            # Wait for the hub, proxy and user scheduler to be Ready: without it the deploy "succeeds" while
            # the hub crash-loops. 12 minutes leaves the kubectl handler (15-minute Lambda) time to report.
            wait=True,
            timeout=cdk.Duration.minutes(12),
        )
        self.release.node.add_dependency(self.namespace)
        for dependency in depends_on:
            # The hub reads the OAuth client secret or mounts the admin password at start, and calls the API server.
            self.release.node.add_dependency(dependency)

    def _cognito(self, cluster, cluster_name, domain, prefix, admin_user, core_pool):
        pool = cognito.UserPool(
            self,
            "Users",
            user_pool_name=f"{cluster_name}-jupyterhub",
            self_sign_up_enabled=False,  # the hub admits everyone the pool admits: admins invite users
            sign_in_aliases=cognito.SignInAliases(email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(sms=False, otp=True),
            password_policy=cognito.PasswordPolicy(
                min_length=14, require_digits=True, require_lowercase=True, require_uppercase=True,
                require_symbols=True,
            ),
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        # Never changes once deployed (module docstring): derived from the stack id unless the config names it.
        prefix = cognito_domain_prefix(self, prefix)
        pool.add_domain("Domain", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=prefix))
        client = pool.add_client(
            "Hub",
            generate_secret=True,
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE],
                callback_urls=[f"https://{domain}/hub/oauth_callback"],
                logout_urls=[f"https://{domain}/hub/logout"],
            ),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO],
            prevent_user_existence_errors=True,
        )
        auth = jh.CognitoAuth(
            user_pool_domain_prefix=prefix,
            region=self.region,
            client_id=client.user_pool_client_id,
            admin_users=(admin_user,),
        )
        identity = PodIdentityRole(
            self,
            "OAuthSecretIdentity",
            cluster=cluster,
            namespace=NAMESPACE,
            service_account=oauth.SERVICE_ACCOUNT,
            statements=[
                iam.PolicyStatement(actions=["cognito-idp:DescribeUserPoolClient"], resources=[pool.user_pool_arn])
            ],
            description="Copies the JupyterHub app client's secret into the jupyterhub namespace",
        )
        bootstrap = eks.KubernetesManifest(
            self,
            "OAuthSecretBootstrap",
            cluster=cluster,
            manifest=oauth.OAuthSecretBootstrapChart(
                cdk8s_app(),
                "oauth-secret-bootstrap",
                namespace=NAMESPACE,
                user_pool_id=pool.user_pool_id,
                client_id=client.user_pool_client_id,
                region=self.region,
                secret_name=auth.client_secret_secret_name,
                secret_key=auth.client_secret_secret_key,
                placement=kn.pool_placement(core_pool),
            ).to_json(),
        )
        # The Job's pod needs its AWS credentials when it is created, and its namespace.
        bootstrap.node.add_dependency(identity)
        bootstrap.node.add_dependency(self.namespace)
        cdk.CfnOutput(self, "UserPoolId", value=pool.user_pool_id)
        cdk.CfnOutput(self, "CognitoDomainPrefix", value=prefix,
                      description="The hosted-UI domain prefix: fixed for the life of this stack")
        return auth, bootstrap
