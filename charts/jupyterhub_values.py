"""Typed builder for the Zero to JupyterHub (z2jh 4.4.0, JupyterHub 5.5) Helm values.

The values are validated against the chart's own ``values.schema.yaml`` (vendored in
``schemas/zero-to-jupyterhub/``), which rejects unknown keys.

Choices (and why):

* **Authentication.** Never the DummyAuthenticator.

  - Default, no domain: NativeAuthenticator (ships in the z2jh hub image). Users sign up with a
    password; ``open_signup: false`` means nobody can log in until an admin approves them on
    ``/hub/authorize``. The admin (``NativeAuth.admin_user``) does not sign up: its account exists from the
    hub's first start, authorized, with a random password from the Secret ``jupyterhub-admin-password``
    (:mod:`charts.hub_admin_bootstrap`), so no pod can claim the name by signing up first; no sign-up is
    approved automatically, not even one under an ``allowed_users`` name. JupyterHub 5 admits nobody unless
    an allow rule is configured: with NativeAuthenticator the rule is ``allow_all`` (the admin approval is the
    real gate: an unapproved user never authenticates), or an explicit ``allowed_users`` list when given.
  - With a domain: GenericOAuthenticator against the Cognito user pool's hosted-UI domain
    (``https://<prefix>.auth.<region>.amazoncognito.com/oauth2/{authorize,token,userInfo}``), scopes
    ``openid email profile``, callback ``https://<domain>/hub/oauth_callback``. The client *secret* is
    never in the values (they end up in the CloudFormation template and in a Helm release Secret): the
    hub reads it from the environment variable ``OAUTH_CLIENT_SECRET``, which OAuthenticator uses as the
    default of ``client_secret``, filled from a Kubernetes Secret (``valueFrom.secretKeyRef``) that is
    created in-cluster. Users are named by the ``email`` claim, so the admins are e-mail addresses
    (lowercase, as JupyterHub normalizes names); a plain ``admin`` would name nobody and is refused. The allow
    rule is ``allow_all`` (every user of the pool; the pool, with self-sign-up disabled, is the gate) or
    ``allowed_users``. Cognito groups are not in the userInfo
    response (only in the ID token), so ``allowed_groups`` is not offered.

* **Exposure.** Default: ``proxy.service.type: ClusterIP``, nothing public; reach the hub with
  ``kubectl -n jupyterhub port-forward svc/proxy-public 8080:80`` and open http://localhost:8080.
  With a domain: HTTPS only, the z2jh-supported "offload" mode: ``proxy.https.enabled: true``,
  ``proxy.https.type: offload`` (the Service's port 443 targets the proxy's plain HTTP port) and
  ``proxy.service.disableHttpPort: true`` (no port 80 at all), with a ``LoadBalancer`` Service that EKS's
  built-in AWS cloud controller turns into a Network Load Balancer terminating TLS with the ACM
  certificate (``service.beta.kubernetes.io/aws-load-balancer-ssl-cert`` / ``-ssl-ports: https`` /
  ``-backend-protocol: tcp``) under a TLS 1.2+ security policy (``-ssl-negotiation-policy``). No extra
  controller (AWS Load Balancer Controller, ingress controller,
  cert-manager) is needed. The DNS record for the domain (alias to the NLB) is not created here.

* **Placement.** Hub and proxy run on the ``on-demand`` Karpenter pool (not the system node group): the
  hub's SQLite database is an EBS volume pinned to one availability zone and Karpenter launches a node
  in that zone when the hub is rescheduled (a fixed managed node group may have no node there), the
  pool is never Spot (a reclaim would log every user out and drop the proxy's routes), and the small
  system nodes stay reserved for cluster add-ons. Single-user servers default to ``on-demand`` too: a
  notebook is interactive and long-lived, a Spot reclaim (2 minutes' notice) kills the user's kernel
  and every variable in it; pass the ``spot`` pool to trade that for cost. The heavy compute belongs on
  the Ray workers, which *are* Spot.

* **Single-user pods.** uid 1000 / fsGid 100 (the Jupyter docker-stacks ``jovyan`` user and ``users``
  group), ``allowPrivilegeEscalation: false``, all capabilities dropped, RuntimeDefault seccomp; a
  ``gp3`` home volume per user; idle culling on; the cloud metadata service (169.254.169.254) out of
  reach twice: IMDSv2 with hop limit 1 on every node, and the network policy (``cloudMetadataServer:
  false``). z2jh's iptables init container is off: it is privileged, which Pod Security ``baseline``
  refuses.

* **Notebook → Ray.** Every server gets ``RAY_ADDRESS`` (the head Service's Jobs API, port 8265),
  ``RAY_AUTH_MODE=token`` and the token of the Secret ``ray-auth-token`` (key ``token``) in the ``jupyterhub``
  namespace as a read-only file (``RAY_AUTH_TOKEN_PATH``): what Ray (>= 2.52) reads for token
  authentication. The token is never a literal in the values. With Ray teams (``ray_teams``), the hub picks
  the cluster per server: the user's teams are their JupyterHub groups of the same names (created empty at
  the hub's start), the spawn form offers those teams next to the size, and a hook sets that team's
  ``RAY_ADDRESS``, token Secret copy and pod label; a user in no team cannot start a server.

* **Network policy.** On for hub, proxy and single-user servers. Proxy ingress: without a domain no port is
  open to every pod (``kubectl port-forward`` does not cross the pod network); with one, the http port the
  load balancer reaches. Hub ingress: the labelled pods of its own namespace only. Hub egress: DNS, the proxy
  and the servers (z2jh's rules), the API server through a CiliumNetworkPolicy (:func:`hub_api_server_policy`:
  under Cilium the API server has the ``kube-apiserver`` identity, which no NetworkPolicy peer matches), and
  HTTPS to public addresses only with Cognito. Single-user egress: DNS to kube-system,
  the Ray head of each cluster (8265 Jobs API, 10001 Ray Client) by namespace + pod selector (Cilium ignores ``ipBlock``
  for pod IPs, so z2jh's ``privateIPs`` rule would *not* open the way to Ray), the public internet
  (``nonPrivateIPs: true``: pip, conda, git, data sets), and nothing else in the VPC (``privateIPs:
  false``: no other pods, nodes, databases). Notebooks get no AWS credentials, so the ``host`` entity on
  port 80 (EKS Pod Identity under Cilium) is deliberately *not* opened.

* **Image.** Ray needs the same Ray and Python on the client as on the cluster, and z2jh needs
  ``jupyterhub-singleuser`` in the image. No public image has both with a pinned Ray, and installing Ray
  at start-up (``lifecycleHooks``) is slow and breaks when PyPI is unreachable. So the notebook image is
  built from :func:`notebook_dockerfile` (Jupyter docker-stacks ``minimal-notebook`` for the Python
  version, plus a pinned ``ray[default]``) and tagged by :func:`notebook_image_tag`
  (``ray-2.60.0-py3.11``), both functions of :mod:`versions`.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Sequence

import aws_cdk as cdk

import versions
from charts import hub_admin_bootstrap as hub_admin
from charts import ray_teams as rt
from charts import raycluster
from charts.karpenter_nodes import NodePoolSettings, pool_placement
from charts.storage import DEFAULT_STORAGE_CLASS
from charts.storage import RETAIN_STORAGE_CLASS as HUB_DB_STORAGE_CLASS

__all__ = [
    "COGNITO_SCOPES",
    "DEFAULT_SERVER_SIZES",
    "DEFAULT_TLS_POLICY",
    "HUB_POD_LABELS",
    "JUPYTERHUB_NAMESPACE",
    "NOTEBOOK_BASE_IMAGE",
    "RAY_ADDRESS",
    "RAY_AUTH_SECRET_KEY",
    "RAY_AUTH_SECRET_NAME",
    "RAY_GPU_WORKERS_ENV",
    "RAY_TOKEN_ENV",
    "RAY_TOKEN_FILE",
    "RAY_TOKEN_PATH_ENV",
    "TEAM_PROFILE_OPTION",
    "TLS12_POLICIES",
    "CognitoAuth",
    "GpuProfile",
    "HttpsEndpoint",
    "JupyterHubValues",
    "NativeAuth",
    "NotebookImage",
    "ServerSize",
    "hub_api_server_policy",
    "notebook_dockerfile",
    "notebook_image",
    "notebook_image_tag",
]

JUPYTERHUB_NAMESPACE = "jupyterhub"


def namespace_manifest() -> dict[str, Any]:
    """The ``jupyterhub`` namespace. Two stacks apply it (stacks/ray_stack.py and stacks/jupyterhub_stack.py):
    the Ray stack first, so its token bootstrap can copy the Ray token here, and retained when that stack is
    deleted; the JupyterHub stack owns it, so deleting the hub deletes its notebook pods and home claims."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": JUPYTERHUB_NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "baseline"}},
    }

# The Ray side of the contract is defined once, by the RayCluster chart.
RAY_NAMESPACE = raycluster.NAMESPACE
RAY_CLUSTER_NAME = raycluster.CLUSTER_NAME
RAY_HEAD_SERVICE = raycluster.HEAD_SERVICE
RAY_DASHBOARD_PORT = raycluster.DASHBOARD_PORT
RAY_CLIENT_PORT = raycluster.CLIENT_PORT
RAY_ADDRESS = raycluster.DASHBOARD_URL
# Ray's token authentication (Ray >= 2.52): RAY_AUTH_MODE=token turns it on, RAY_AUTH_TOKEN is the token.
RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"
RAY_TOKEN_ENV = "RAY_AUTH_TOKEN"
# Ray 2.60 also reads the token from a file named by RAY_AUTH_TOKEN_PATH (its C++ AuthenticationTokenLoader, used by
# the Jobs API client for the Authorization header): notebooks get the Secret mounted as a read-only file, so the
# token is not in the server's environment (which every subprocess, `env` dump and crash report inherits).
RAY_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
RAY_TOKEN_MOUNT_DIR = "/etc/ray-auth"
RAY_TOKEN_FILE = f"{RAY_TOKEN_MOUNT_DIR}/token"
RAY_TOKEN_VOLUME = "ray-auth-token"
# Whether the RayCluster has a GPU worker group ("1"/"0"): the notebook helper picks the job's device from it
# (notebooks/ray_submit.py, jobs/config.py GPU_WORKERS_ENV).
RAY_GPU_WORKERS_ENV = "DF_RAY_GPU_WORKERS"
RAY_AUTH_SECRET_NAME = raycluster.TOKEN_SECRET
RAY_AUTH_SECRET_KEY = raycluster.TOKEN_KEY
# Labels KubeRay puts on the Ray pods.
RAY_HEAD_POD_LABELS = {"ray.io/cluster": RAY_CLUSTER_NAME, "ray.io/node-type": "head"}

COGNITO_SCOPES = ("openid", "email", "profile")
# OAuthenticator takes the default of ``client_secret`` from this environment variable.
OAUTH_CLIENT_SECRET_ENV = "OAUTH_CLIENT_SECRET"

# Jupyter docker-stacks image for the notebook's Python: home /home/jovyan, uid 1000 (jovyan), gid 100
# (users), jupyterhub-singleuser installed: the layout z2jh's defaults expect.
NOTEBOOK_BASE_IMAGE = "quay.io/jupyter/minimal-notebook"
NOTEBOOK_UID = 1000
NOTEBOOK_FS_GID = 100
CLOUD_METADATA_IP = "169.254.169.254"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"  # Karpenter's pod annotation: no voluntary disruption of its node
# The EKS API server endpoint port (the `kubernetes` Service's endpoints listen on 443 on EKS).
KUBERNETES_API_PORT = 443
HTTPS_PORT = 443
# Addresses that are not the public internet: z2jh's private ranges, link-local (the instance metadata service, the
# EKS Pod Identity agent) and carrier-grade NAT space.
NON_PUBLIC_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10")
# z2jh's labels on the hub pod (its jupyterhub.matchLabels: app + component; tools/boot/upstream_pods.yaml).
HUB_POD_LABELS = {"app": "jupyterhub", "component": "hub"}
CILIUM_API_VERSION = "cilium.io/v2"
HUB_API_SERVER_POLICY = "hub-to-kube-apiserver"
# KubeSpawner names the server's container "notebook" (jupyterhub-kubespawner 7.0.0, kubespawner/objects.py make_pod).
NOTEBOOK_CONTAINER = "notebook"
# The spawn form's option (a KubeSpawner profile_options entry) that picks the Ray team.
TEAM_PROFILE_OPTION = "ray-team"


def hub_api_server_policy(namespace: str = JUPYTERHUB_NAMESPACE) -> dict[str, Any]:
    """The hub's way to the Kubernetes API (KubeSpawner creates the notebook pods and claims there): TCP 443 to
    Cilium's ``kube-apiserver`` entity, which "represents both deployments of the kube-apiserver: within the cluster
    and outside of the cluster" (cilium/cilium Documentation/security/policy/language.rst, "Entities Based"), i.e.
    EKS's control-plane endpoints. A NetworkPolicy cannot name it (an ipBlock never matches it under Cilium), which
    is why the hub had a port-443 rule to every destination before."""
    return {
        "apiVersion": CILIUM_API_VERSION,
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": HUB_API_SERVER_POLICY, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "dynamic-factory", "app.kubernetes.io/component": "hub"},
                     "annotations": {"dynamic-factory/description":
                                     "The JupyterHub hub calls the Kubernetes API (TCP 443) and nothing else "
                                     "beyond what z2jh's NetworkPolicy allows."}},
        "spec": {
            "endpointSelector": {"matchLabels": dict(HUB_POD_LABELS)},
            "egress": [{"toEntities": ["kube-apiserver"],
                        "toPorts": [{"ports": [{"port": str(KUBERNETES_API_PORT), "protocol": "TCP"}]}]}],
        },
    }


# hub.extraConfig of named Ray teams (z2jh runs it after hub.config and the singleuser settings, so
# c.KubeSpawner.profile_list holds singleuser.profileList here). KubeSpawner 7.0.0 (kubespawner/spawner.py):
# a callable profile_list is evaluated per spawner, for the form and again in load_user_options(); a choice of a
# profile option applies its kubespawner_override (dicts such as extra_labels are merged); modify_pod_hook(spawner,
# pod) runs on the built pod right before it is created. JupyterHub 5.5 runs pre_spawn_hook before Spawner.start and
# shows an exception's jupyterhub_message on the spawn page (jupyterhub/utils.py format_exception).
# The team is chosen on the form (only the user's own teams are offered) and carried by the pod label; the hook
# checks the label against the user's groups again and sets that team's RAY_ADDRESS and token Secret.
_TEAMS_CONFIG = r'''
import copy as _df_copy
import json as _df_json

from kubernetes_asyncio.client import models as _df_k8s

_DF_TEAMS = _df_json.loads(__DF_TEAMS_JSON__)
_DF_SIZES = c.KubeSpawner.profile_list
if not isinstance(_DF_SIZES, list) or not _DF_SIZES:
    raise RuntimeError("ray teams: c.KubeSpawner.profile_list (singleuser.profileList) must be a non-empty list")


class DynamicFactoryTeamError(Exception):
    """A server the Ray tenancy rules refuse; JupyterHub shows jupyterhub_message on the spawn page."""

    def __init__(self, message):
        super().__init__(message)
        self.jupyterhub_message = message


def df_user_teams(spawner):
    """The Ray teams of the spawner's user: JupyterHub groups named like a team."""
    groups = {group.name for group in spawner.user.groups}
    return [team for team in _DF_TEAMS["teams"] if team in groups]


def df_refusal(spawner, what):
    return ("%s. Ray teams: %s. An admin adds you to the JupyterHub group of your team (Admin page, Groups), "
            "then start your server again." % (what, ", ".join(_DF_TEAMS["teams"])))


def df_profile_list(spawner):
    """The server sizes, each with the choice of the user's teams."""
    profiles = _df_copy.deepcopy(_DF_SIZES)
    teams = df_user_teams(spawner)
    if not teams:
        return profiles  # the pre-spawn hook refuses the server
    for profile in profiles:
        profile.setdefault("profile_options", {})[_DF_TEAMS["option"]] = {
            "display_name": "Ray cluster",
            "choices": {team: {"display_name": "team %s" % team,
                               "kubespawner_override": {"extra_labels": {_DF_TEAMS["label"]: team}}}
                        for team in teams},
        }
    return profiles


def df_pre_spawn_hook(spawner):
    teams = df_user_teams(spawner)
    if not teams:
        raise DynamicFactoryTeamError(df_refusal(spawner, "%s is in no Ray team" % spawner.user.name))
    options = spawner.user_options if isinstance(spawner.user_options, dict) else {}
    chosen = options.get(_DF_TEAMS["option"])
    if chosen is not None and chosen not in teams:
        # Asked for through the API, or remembered from a start before the user left that team.
        raise DynamicFactoryTeamError(df_refusal(
            spawner, "%s is not in the Ray team %r (your teams: %s): choose one of yours on the spawn form"
            % (spawner.user.name, chosen, ", ".join(teams))))


def df_modify_pod_hook(spawner, pod):
    team = (pod.metadata.labels or {}).get(_DF_TEAMS["label"])
    if team not in df_user_teams(spawner):
        raise DynamicFactoryTeamError(df_refusal(spawner, "%s is not in the Ray team %r" % (spawner.user.name, team)))
    spec = _DF_TEAMS["teams"][team]
    (container,) = [one for one in pod.spec.containers if one.name == _DF_TEAMS["container"]]
    container.env = [var for var in (container.env or []) if var.name != _DF_TEAMS["address_env"]]
    container.env.append(_df_k8s.V1EnvVar(name=_DF_TEAMS["address_env"], value=spec["address"]))
    pod.spec.volumes = [vol for vol in (pod.spec.volumes or []) if vol.name != _DF_TEAMS["volume"]]
    pod.spec.volumes.append(_df_k8s.V1Volume(
        name=_DF_TEAMS["volume"],
        secret=_df_k8s.V1SecretVolumeSource(secret_name=spec["secret"], default_mode=0o440,
                                            items=[_df_k8s.V1KeyToPath(key=spec["key"], path=_DF_TEAMS["token_path"])]),
    ))
    return pod


c.KubeSpawner.profile_list = df_profile_list
c.KubeSpawner.pre_spawn_hook = df_pre_spawn_hook
c.KubeSpawner.modify_pod_hook = df_modify_pod_hook
'''

_DNS_NAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63}$")
_ACM_ARN_RE = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[A-Za-z0-9-]+$")
_COGNITO_PREFIX_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_K8S_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_SECRET_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
_USERNAME_RE = re.compile(r"^[^\s/]+$")
# A user named by the ``email`` claim, as JupyterHub sees it (Authenticator.normalize_username lowercases).
_EMAIL_USERNAME_RE = re.compile(r"^[^\sA-Z@/]+@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}$")
_QUANTITY_RE = re.compile(r"^\d+(\.\d+)?[KMGT]i?$")
_IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_CIDR_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$")
_PROFILE_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and cdk.Token.is_unresolved(value)


# --------------------------------------------------------------------------------------------------------
# Notebook image
# --------------------------------------------------------------------------------------------------------


def notebook_image_tag(ray_version: str = versions.RAY_VERSION,
                       python_version: str = versions.RAY_PYTHON_VERSION) -> str:
    """``ray-<ray version>-py<python version>``: the tag says which Ray and Python the image carries."""
    return f"ray-{ray_version}-py{python_version}"


@dataclass(frozen=True)
class NotebookImage:
    """The single-user image: ``name`` (repository, may be a CDK token such as an ECR repository URI)
    and ``tag``."""

    name: str
    tag: str

    def __post_init__(self) -> None:
        if not _is_token(self.name) and (not self.name or ":" in self.name.rsplit("/", 1)[-1] or " " in self.name):
            raise ValueError(f"notebook image name {self.name!r}: expected a repository without a tag")
        if not _is_token(self.tag) and not _IMAGE_TAG_RE.match(self.tag or ""):
            raise ValueError(f"notebook image tag {self.tag!r} is not a valid image tag")

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"


def notebook_image(repository: str, ray_version: str = versions.RAY_VERSION,
                   python_version: str = versions.RAY_PYTHON_VERSION) -> NotebookImage:
    """The notebook image in ``repository`` built by :func:`notebook_dockerfile` for these versions."""
    return NotebookImage(name=repository, tag=notebook_image_tag(ray_version, python_version))


def notebook_dockerfile(ray_version: str = versions.RAY_VERSION,
                        python_version: str = versions.RAY_PYTHON_VERSION,
                        base_image: str = NOTEBOOK_BASE_IMAGE) -> str:
    """Dockerfile of the notebook image: docker-stacks ``minimal-notebook`` for the Python version plus the
    cluster's Ray, pinned, checked at build time. Build it as ``<repository>:<notebook_image_tag()>``.

    XGBoost is not installed: the notebook only submits jobs, which run in the cluster's Ray image where the job
    and its pinned XGBoost already are (``images/ray/Dockerfile``).
    """
    return (
        f"# Notebook image: Python {python_version}, Ray {ray_version} (same as the Ray cluster).\n"
        f"FROM {base_image}:python-{python_version}\n"
        "RUN pip install --no-cache-dir \\\n"
        f"      \"ray[default]=={ray_version}\" \\\n"
        "      matplotlib \\\n"
        f" && python -c \"import ray, sys; assert ray.__version__ == '{ray_version}', ray.__version__; "
        f"assert sys.version.startswith('{python_version}.'), sys.version\"\n"
        f"USER {NOTEBOOK_UID}\n"
    )


# --------------------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------------------


def _check_usernames(what: str, names: Sequence[str]) -> list[str]:
    return [f"{what}: {n!r} is not a valid user name" for n in names
            if not isinstance(n, str) or not _USERNAME_RE.match(n)]


@dataclass(frozen=True)
class NativeAuth:
    """NativeAuthenticator: sign-up with admin approval, and an admin account that exists from the first start.

    :param admin_user: JupyterHub admin. Its account is created at the hub's start with the password of the
        Secret ``admin_password_secret`` (made by :mod:`charts.hub_admin_bootstrap`), so nobody can claim the name by
        signing up first; a sign-up under it is refused.
    :param allowed_users: if given, only these users (and the admin) may log in; otherwise every user the
        admin approved (``allow_all``). Either way a sign-up waits for the admin's approval.
    :param minimum_password_length: NativeAuthenticator's password policy.
    :param admin_password_secret: the Secret (namespace ``jupyterhub``, key ``password``) holding the admin's password.
    """

    admin_user: str
    allowed_users: tuple[str, ...] = ()
    minimum_password_length: int = 12
    admin_password_secret: str = hub_admin.SECRET_NAME

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_users", tuple(self.allowed_users))
        problems = _check_usernames("admin_user", [self.admin_user])
        problems += _check_usernames("allowed_users", self.allowed_users)
        if not isinstance(self.minimum_password_length, int) or self.minimum_password_length < 8:
            problems.append(f"minimum_password_length {self.minimum_password_length!r} must be >= 8")
        elif self.minimum_password_length > 4 * hub_admin.PASSWORD_BYTES // 3:
            problems.append(f"minimum_password_length {self.minimum_password_length!r} must be at most "
                            f"{4 * hub_admin.PASSWORD_BYTES // 3}, the length of the generated admin password")
        if not _K8S_NAME_RE.match(self.admin_password_secret or ""):
            problems.append(f"admin_password_secret {self.admin_password_secret!r} is not a Secret name")
        if problems:
            raise ValueError("native auth: " + "; ".join(problems))

    def hub_config(self) -> dict[str, Any]:
        authenticator: dict[str, Any] = {"admin_users": [self.admin_user]}
        if self.allowed_users:
            authenticator["allowed_users"] = sorted(set(self.allowed_users) | {self.admin_user})
        else:
            authenticator["allow_all"] = True
        return {
            # The class the extraConfig entry "admin-account" derives from; that entry replaces it by the subclass
            # that creates the admin account (charts/hub_admin_bootstrap.py).
            "JupyterHub": {"authenticator_class": "nativeauthenticator.NativeAuthenticator"},
            "Authenticator": authenticator,
            "NativeAuthenticator": {
                "open_signup": False,
                "minimum_password_length": self.minimum_password_length,
                "check_common_password": True,
                "allowed_failed_logins": 5,
                "seconds_before_next_try": 600,
            },
        }

    def extra_config(self) -> dict[str, str]:
        return {
            # NativeAuthenticator's sign-up / authorize pages live in its package's templates directory.
            "nativeauthenticator-templates": (
                "import os, nativeauthenticator\n"
                "c.JupyterHub.template_paths = "
                "[os.path.join(os.path.dirname(nativeauthenticator.__file__), 'templates')]\n"
            ),
            "admin-account": hub_admin.hub_extra_config(self.admin_user, secret_name=self.admin_password_secret),
        }

    def hub_env(self) -> dict[str, Any]:
        return {}

    def hub_volumes(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(volumes, mounts) of the hub pod: the admin password Secret as a read-only file."""
        volume, mount = hub_admin.hub_volume(self.admin_password_secret)
        return [volume], [mount]


@dataclass(frozen=True)
class CognitoAuth:
    """GenericOAuthenticator against an Amazon Cognito user pool (hosted UI domain).

    :param user_pool_domain_prefix: the Cognito domain prefix (``<prefix>.auth.<region>.amazoncognito.com``);
        a CDK token is fine.
    :param region: the user pool's region; a CDK token is fine.
    :param client_id: the app client id (not secret; a CDK token is fine).
    :param client_secret_secret_name: name of the Kubernetes Secret in the ``jupyterhub`` namespace holding
        the app client secret; created in-cluster, never in the template.
    :param client_secret_secret_key: key of the client secret in that Secret.
    :param admin_users: JupyterHub admins (values of ``username_claim``): with the default ``email`` claim,
        lowercase e-mail addresses; a plain name such as ``admin`` would match nobody, so it is refused.
    :param allowed_users: if given, only these users (and the admins); otherwise every pool user.
    :param username_claim: userInfo claim used as the JupyterHub user name.
    """

    user_pool_domain_prefix: str
    region: str
    client_id: str
    client_secret_secret_name: str = "cognito-oauth-client"
    client_secret_secret_key: str = "client-secret"
    admin_users: tuple[str, ...] = ()
    allowed_users: tuple[str, ...] = ()
    username_claim: str = "email"

    def __post_init__(self) -> None:
        object.__setattr__(self, "admin_users", tuple(self.admin_users))
        object.__setattr__(self, "allowed_users", tuple(self.allowed_users))
        problems = []
        if not _is_token(self.user_pool_domain_prefix) and not _COGNITO_PREFIX_RE.match(self.user_pool_domain_prefix or ""):
            problems.append(f"user_pool_domain_prefix {self.user_pool_domain_prefix!r} is not a Cognito domain "
                            "prefix (lowercase letters, digits, hyphens; not the full host name)")
        if not _is_token(self.region) and not _REGION_RE.match(self.region or ""):
            problems.append(f"region {self.region!r} is not an AWS region name")
        if not self.client_id or (not _is_token(self.client_id) and not re.match(r"^[\w+]+$", self.client_id)):
            problems.append(f"client_id {self.client_id!r} is not a Cognito app client id")
        if not _K8S_NAME_RE.match(self.client_secret_secret_name or ""):
            problems.append(f"client_secret_secret_name {self.client_secret_secret_name!r} is not a Secret name")
        if not _SECRET_KEY_RE.match(self.client_secret_secret_key or ""):
            problems.append(f"client_secret_secret_key {self.client_secret_secret_key!r} is not a Secret key")
        if not self.admin_users:
            problems.append("admin_users: at least one admin is required")
        problems += _check_usernames("admin_users", self.admin_users)
        problems += _check_usernames("allowed_users", self.allowed_users)
        if self.username_claim == "email":
            problems += [f"{what}: {n!r} is not a lowercase e-mail address, and users are named by their e-mail "
                         "(username_claim 'email')"
                         for what, names in (("admin_users", self.admin_users), ("allowed_users", self.allowed_users))
                         for n in names if isinstance(n, str) and not _is_token(n) and not _EMAIL_USERNAME_RE.match(n)]
        if self.username_claim not in ("email", "username", "sub", "preferred_username"):
            problems.append(f"username_claim {self.username_claim!r} not in email/username/sub/preferred_username")
        if problems:
            raise ValueError("cognito auth: " + "; ".join(problems))

    @property
    def base_url(self) -> str:
        return f"https://{self.user_pool_domain_prefix}.auth.{self.region}.amazoncognito.com"

    @property
    def authorize_url(self) -> str:
        return f"{self.base_url}/oauth2/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth2/token"

    @property
    def userdata_url(self) -> str:
        return f"{self.base_url}/oauth2/userInfo"

    def hub_config(self, domain: str) -> dict[str, Any]:
        oauth: dict[str, Any] = {
            "client_id": self.client_id,
            "oauth_callback_url": f"https://{domain}/hub/oauth_callback",
            "authorize_url": self.authorize_url,
            "token_url": self.token_url,
            "userdata_url": self.userdata_url,
            "scope": list(COGNITO_SCOPES),
            "username_claim": self.username_claim,
            "login_service": "Amazon Cognito",
            "admin_users": sorted(set(self.admin_users)),
        }
        if self.allowed_users:
            oauth["allowed_users"] = sorted(set(self.allowed_users) | set(self.admin_users))
        else:
            oauth["allow_all"] = True
        return {
            "JupyterHub": {"authenticator_class": "generic-oauth"},
            "GenericOAuthenticator": oauth,
        }

    def extra_config(self) -> dict[str, str]:
        return {}

    def hub_volumes(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return [], []

    def hub_env(self) -> dict[str, Any]:
        return {
            OAUTH_CLIENT_SECRET_ENV: {
                "name": OAUTH_CLIENT_SECRET_ENV,
                "valueFrom": {"secretKeyRef": {"name": self.client_secret_secret_name,
                                               "key": self.client_secret_secret_key}},
            }
        }


# --------------------------------------------------------------------------------------------------------
# Exposure, profiles
# --------------------------------------------------------------------------------------------------------


# The NLB TLS listener's security policy. EKS's AWS cloud controller passes the Service annotation
# service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy as the listener's SslPolicy
# (kubernetes/cloud-provider-aws, pkg/providers/v1/aws.go, EnsureLoadBalancer: portMapping.SSLPolicy); without it the
# listener is created with ELBSecurityPolicy-2016-08, which accepts TLS 1.0 and 1.1 ("Security policies for your Network
# Load Balancer", Elastic Load Balancing user guide: the default for listeners not created in the console).
# Default TLS13-1-2-Res-2021-06: TLS 1.3 and 1.2 only, with the restricted cipher set. The 2025 hybrid post-quantum
# policies the guide now recommends are accepted too.
DEFAULT_TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-Res-2021-06"
TLS12_POLICIES = (
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-FIPS-PQ-2025-09",
    "ELBSecurityPolicy-TLS-1-2-2017-01",
    "ELBSecurityPolicy-TLS-1-2-Ext-2018-06",
    "ELBSecurityPolicy-FS-1-2-Res-2020-10",
)


@dataclass(frozen=True)
class HttpsEndpoint:
    """Public HTTPS endpoint: an NLB terminating TLS with an ACM certificate for ``domain``.

    :param domain: host name users open (``notebooks.example.com``); also the OAuth callback host.
    :param certificate_arn: ACM certificate for ``domain`` in the cluster's region (a CDK token is fine).
    :param internal: an internal (VPC-only) load balancer instead of an internet-facing one.
    :param source_ranges: client CIDRs allowed through the load balancer (empty: any).
    :param ssl_policy: the TLS listener's security policy (:data:`TLS12_POLICIES`; default TLS 1.3 and 1.2 only).
    """

    domain: str
    certificate_arn: str
    internal: bool = False
    source_ranges: tuple[str, ...] = ()
    ssl_policy: str = DEFAULT_TLS_POLICY

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_ranges", tuple(self.source_ranges))
        problems = []
        if self.ssl_policy not in TLS12_POLICIES:
            problems.append(f"ssl_policy {self.ssl_policy!r} is not one of the NLB security policies without TLS 1.0 "
                            f"and 1.1: {', '.join(TLS12_POLICIES)}")
        if not _is_token(self.domain) and not _DNS_NAME_RE.match(self.domain or ""):
            problems.append(f"domain {self.domain!r} is not a lowercase DNS name (no scheme, no path)")
        if not _is_token(self.certificate_arn) and not _ACM_ARN_RE.match(self.certificate_arn or ""):
            problems.append(f"certificate_arn {self.certificate_arn!r} is not an ACM certificate ARN")
        for cidr in self.source_ranges:
            if not _CIDR_RE.match(cidr) or not all(0 <= int(o) <= 255 for o in cidr.split("/")[0].split(".")) \
                    or int(cidr.split("/")[1]) > 32:
                problems.append(f"source_ranges: {cidr!r} is not an IPv4 CIDR")
        if problems:
            raise ValueError("https endpoint: " + "; ".join(problems))

    def service_annotations(self) -> dict[str, str]:
        annotations = {
            # EKS's AWS cloud controller: a Network Load Balancer (not a Classic ELB) ...
            "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
            # ... with a TLS listener on the Service port named "https" using the ACM certificate ...
            "service.beta.kubernetes.io/aws-load-balancer-ssl-cert": self.certificate_arn,
            "service.beta.kubernetes.io/aws-load-balancer-ssl-ports": "https",
            # ... and a TLS 1.2+ security policy: without it the listener gets ELBSecurityPolicy-2016-08 (TLS 1.0/1.1).
            "service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy": self.ssl_policy,
            # ... forwarding the decrypted stream to the proxy's plain HTTP port (z2jh https.type offload).
            "service.beta.kubernetes.io/aws-load-balancer-backend-protocol": "tcp",
            "service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled": "true",
        }
        if self.internal:
            annotations["service.beta.kubernetes.io/aws-load-balancer-internal"] = "true"
        return annotations


@dataclass(frozen=True)
class ServerSize:
    """One CPU entry of the profile list (KubeSpawner cpu/mem guarantee and limit)."""

    slug: str
    display_name: str
    cpu_guarantee: float
    cpu_limit: float
    mem_guarantee: str
    mem_limit: str
    default: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not _PROFILE_SLUG_RE.match(self.slug or ""):
            problems.append(f"slug {self.slug!r} must be lowercase letters, digits and hyphens")
        if not self.display_name:
            problems.append("display_name is empty")
        if not (0 < self.cpu_guarantee <= self.cpu_limit):
            problems.append(f"cpu: need 0 < guarantee ({self.cpu_guarantee}) <= limit ({self.cpu_limit})")
        for what, q in (("mem_guarantee", self.mem_guarantee), ("mem_limit", self.mem_limit)):
            if not _QUANTITY_RE.match(q or ""):
                problems.append(f"{what} {q!r}: expected a quantity such as '4G' or '8Gi'")
        if not problems and _bytes(self.mem_guarantee) > _bytes(self.mem_limit):
            problems.append(f"memory guarantee {self.mem_guarantee} exceeds limit {self.mem_limit}")
        if problems:
            raise ValueError(f"server size {self.slug!r}: " + "; ".join(problems))

    def profile(self) -> dict[str, Any]:
        return {
            "display_name": self.display_name,
            "slug": self.slug,
            "description": f"{self.cpu_guarantee:g}-{self.cpu_limit:g} CPU, "
                           f"{self.mem_guarantee}-{self.mem_limit} memory",
            "default": self.default,
            "kubespawner_override": {
                "cpu_guarantee": self.cpu_guarantee,
                "cpu_limit": self.cpu_limit,
                "mem_guarantee": self.mem_guarantee,
                "mem_limit": self.mem_limit,
            },
        }


def _bytes(quantity: str) -> float:
    m = re.match(r"^(\d+(?:\.\d+)?)([KMGT])(i?)$", quantity)
    assert m
    base = 1024 if m.group(3) else 1000
    return float(m.group(1)) * base ** ("KMGT".index(m.group(2)) + 1)


DEFAULT_SERVER_SIZES = (
    ServerSize(slug="cpu-small", display_name="CPU small", cpu_guarantee=0.5, cpu_limit=2,
               mem_guarantee="2G", mem_limit="4G", default=True),
    ServerSize(slug="cpu-large", display_name="CPU large", cpu_guarantee=2, cpu_limit=4,
               mem_guarantee="8G", mem_limit="16G"),
)


@dataclass(frozen=True)
class GpuProfile:
    """The GPU entry of the profile list, on the ``gpu`` Karpenter pool.

    :param pool: the GPU NodePool (its taints become the profile's tolerations).
    :param gpus: ``nvidia.com/gpu`` per server.
    :param image: image for GPU servers (default: the CPU notebook image; CUDA comes with the wheels).
    """

    pool: NodePoolSettings
    gpus: int = 1
    cpu_guarantee: float = 3
    cpu_limit: float = 4
    mem_guarantee: str = "12G"
    mem_limit: str = "16G"
    image: NotebookImage | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.pool.gpu_limit is None:
            problems.append(f"pool {self.pool.name!r} has no gpu_limit: it cannot launch GPU nodes")
        if not isinstance(self.gpus, int) or self.gpus < 1:
            problems.append(f"gpus {self.gpus!r} must be a positive integer")
        elif self.pool.gpu_limit is not None and self.gpus > self.pool.gpu_limit:
            problems.append(f"gpus {self.gpus} exceed the pool's gpu_limit {self.pool.gpu_limit}")
        if not (0 < self.cpu_guarantee <= self.cpu_limit):
            problems.append(f"cpu: need 0 < guarantee ({self.cpu_guarantee}) <= limit ({self.cpu_limit})")
        for what, q in (("mem_guarantee", self.mem_guarantee), ("mem_limit", self.mem_limit)):
            if not _QUANTITY_RE.match(q or ""):
                problems.append(f"{what} {q!r}: expected a quantity such as '16G'")
        if problems:
            raise ValueError("gpu profile: " + "; ".join(problems))

    def profile(self) -> dict[str, Any]:
        placement = pool_placement(self.pool)
        override: dict[str, Any] = {
            "cpu_guarantee": self.cpu_guarantee,
            "cpu_limit": self.cpu_limit,
            "mem_guarantee": self.mem_guarantee,
            "mem_limit": self.mem_limit,
            "extra_resource_guarantees": {"nvidia.com/gpu": str(self.gpus)},
            "extra_resource_limits": {"nvidia.com/gpu": str(self.gpus)},
            # Replace (not add to) the CPU pool's placement: GPU nodes only.
            "node_selector": placement["nodeSelector"],
            "tolerations": placement["tolerations"],
        }
        if self.image is not None:
            override["image"] = self.image.ref
        return {
            "display_name": f"GPU ({self.gpus} x NVIDIA)",
            "slug": "gpu",
            "description": f"{self.gpus} GPU, {self.cpu_guarantee:g}-{self.cpu_limit:g} CPU, "
                           f"{self.mem_guarantee}-{self.mem_limit} memory, pool {self.pool.name}",
            "kubespawner_override": override,
        }


# --------------------------------------------------------------------------------------------------------
# The values
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxiedService:
    """A web app the hub's proxy serves at ``/services/<name>/`` over the hub's own HTTPS listener (a JupyterHub
    service with a ``url``: JupyterHub adds the route to the proxy; the proxy forwards the whole path, so the app
    must serve from that sub path). The app does its own login: the route adds no JupyterHub authentication.

    :param name: the service name (path segment).
    :param url: where the proxy sends the requests (``http://<service>.<namespace>.svc.cluster.local:<port>``).
    :param namespace / pod_labels / port: the app's pods, for the proxy's egress rule.
    """

    name: str
    url: str
    namespace: str
    pod_labels: Mapping[str, str]
    port: int


@dataclass(frozen=True)
class JupyterHubValues:
    """Values for the z2jh 4.4.0 chart (release in namespace ``jupyterhub``).

    :param notebook_image: single-user image (:func:`notebook_image`).
    :param core_pool: pool for hub, proxy and user-scheduler (must not be Spot-capable); ``on-demand``.
    :param user_pool: pool for the single-user servers; ``on-demand`` recommended (see module docstring).
    :param auth: :class:`NativeAuth` (default mode) or :class:`CognitoAuth` (needs ``https``).
    :param https: public HTTPS endpoint; None: ClusterIP only (``kubectl port-forward``).
    :param gpu: GPU profile, only when a GPU pool exists.
    :param server_sizes: CPU profiles; exactly one is the default.
    :param home_capacity: per-user home volume.
    :param storage_class: StorageClass of new home claims (``gp3-retain`` keeps them on destroy). The hub database
        is always on ``gp3-retain``.
    :param cull_timeout_seconds: stop servers idle this long; ``cull_every_seconds``: check interval.
    :param cull_max_age_seconds: stop servers this old even if active (0: never).
    :param proxied: apps the proxy serves under ``/services/<name>/`` with a domain (Grafana); ignored without one.
    :param ray_teams: the RayClusters notebooks reach (:func:`charts.ray_teams.ray_teams`). Default: the one shared
        cluster, every notebook reaches it. With named teams, a notebook gets the cluster of a team its user belongs
        to (JupyterHub group of the team's name, created empty at the hub's start), chosen on the spawn form when the
        user is in several; a user in no team cannot start a server. ``ray_address`` and ``ray_token_secret`` then
        come from the teams and must keep their defaults.
    """

    notebook_image: NotebookImage
    core_pool: NodePoolSettings
    user_pool: NodePoolSettings
    auth: NativeAuth | CognitoAuth
    https: HttpsEndpoint | None = None
    proxied: tuple[ProxiedService, ...] = ()
    gpu: GpuProfile | None = None
    server_sizes: tuple[ServerSize, ...] = DEFAULT_SERVER_SIZES
    home_capacity: str = "10Gi"
    home_mount_path: str = "/home/jovyan"
    storage_class: str = DEFAULT_STORAGE_CLASS
    cull_timeout_seconds: int = 3600
    cull_every_seconds: int = 300
    cull_max_age_seconds: int = 0
    start_timeout_seconds: int = 600
    ray_address: str = RAY_ADDRESS
    ray_token_secret: str = RAY_AUTH_SECRET_NAME
    ray_token_key: str = RAY_AUTH_SECRET_KEY
    ray_gpu_workers: bool = False
    ray_teams: tuple[rt.RayTeam, ...] = rt.ray_teams(())
    extra_env: dict[str, str] = field(default_factory=dict, hash=False)
    # Copied into each new home directory at server start (never over a user's own copy).
    example_notebook: str | None = "/opt/dynamic-factory/notebooks/xgboost_on_ray.ipynb"

    def __post_init__(self) -> None:
        object.__setattr__(self, "server_sizes", tuple(self.server_sizes))
        object.__setattr__(self, "extra_env", dict(self.extra_env))
        if isinstance(self.ray_teams, list):
            object.__setattr__(self, "ray_teams", tuple(self.ray_teams))
        problems = self.problems()
        if problems:
            raise ValueError("jupyterhub values: " + "; ".join(problems))

    def problems(self) -> list[str]:
        p: list[str] = []
        if not isinstance(self.notebook_image, NotebookImage):
            p.append("notebook_image must be a NotebookImage (see notebook_image())")
        for what, pool in (("core_pool", self.core_pool), ("user_pool", self.user_pool)):
            if not isinstance(pool, NodePoolSettings):
                p.append(f"{what} must be a NodePoolSettings")
        if isinstance(self.core_pool, NodePoolSettings) and "spot" in self.core_pool.capacity_types:
            p.append(f"core_pool {self.core_pool.name!r} can launch Spot nodes: a reclaim would take the hub "
                     "and proxy down; use the on-demand pool")
        if isinstance(self.user_pool, NodePoolSettings) and self.user_pool.gpu_limit is not None:
            p.append(f"user_pool {self.user_pool.name!r} is a GPU pool: use gpu=GpuProfile(...) for GPU servers")
        if not isinstance(self.auth, (NativeAuth, CognitoAuth)):
            p.append("auth must be NativeAuth or CognitoAuth (there is no dummy authenticator)")
        if isinstance(self.auth, CognitoAuth) and self.https is None:
            p.append("Cognito authentication needs the https endpoint (domain + certificate): the OAuth "
                     "callback must be https://<domain>/hub/oauth_callback")
        if not self.server_sizes:
            p.append("server_sizes: at least one CPU profile is required")
        elif sum(s.default for s in self.server_sizes) != 1:
            p.append("server_sizes: exactly one profile must be the default")
        slugs = [s.slug for s in self.server_sizes] + (["gpu"] if self.gpu else [])
        if len(set(slugs)) != len(slugs):
            p.append(f"profile slugs must be unique, got {slugs}")
        if not re.match(r"^\d+(Mi|Gi|Ti)$", self.home_capacity or ""):
            p.append(f"home_capacity {self.home_capacity!r}: expected e.g. '10Gi'")
        if not self.home_mount_path.startswith("/"):
            p.append(f"home_mount_path {self.home_mount_path!r} must be absolute")
        if not _K8S_NAME_RE.match(self.storage_class or ""):
            p.append(f"storage_class {self.storage_class!r} is not a StorageClass name")
        if not isinstance(self.cull_timeout_seconds, int) or self.cull_timeout_seconds < 300:
            p.append(f"cull_timeout_seconds {self.cull_timeout_seconds!r} must be an integer >= 300")
        if not isinstance(self.cull_every_seconds, int) or not 30 <= self.cull_every_seconds <= max(
                self.cull_timeout_seconds if isinstance(self.cull_timeout_seconds, int) else 0, 30):
            p.append(f"cull_every_seconds {self.cull_every_seconds!r} must be between 30 and cull_timeout_seconds")
        if not isinstance(self.cull_max_age_seconds, int) or self.cull_max_age_seconds < 0:
            p.append(f"cull_max_age_seconds {self.cull_max_age_seconds!r} must be >= 0 (0: no maximum age)")
        if not isinstance(self.start_timeout_seconds, int) or self.start_timeout_seconds < 60:
            p.append(f"start_timeout_seconds {self.start_timeout_seconds!r} must be >= 60 (Karpenter needs "
                     "time to launch a node)")
        if not re.match(r"^https?://[^/\s]+:\d+$", self.ray_address or ""):
            p.append(f"ray_address {self.ray_address!r}: expected http://<host>:<port> (the Jobs API)")
        if not _K8S_NAME_RE.match(self.ray_token_secret or ""):
            p.append(f"ray_token_secret {self.ray_token_secret!r} is not a Secret name")
        if not _SECRET_KEY_RE.match(self.ray_token_key or ""):
            p.append(f"ray_token_key {self.ray_token_key!r} is not a Secret key")
        p += self._team_problems()
        reserved = {"RAY_ADDRESS", RAY_AUTH_MODE_ENV, RAY_TOKEN_ENV, RAY_TOKEN_PATH_ENV, RAY_GPU_WORKERS_ENV}
        for name, value in self.extra_env.items():
            if name in reserved:
                p.append(f"extra_env {name!r} is set by the builder")
            elif not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name) or not isinstance(value, str):
                p.append(f"extra_env {name!r}: expected NAME -> string value")
            elif "TOKEN" in name.upper() or "SECRET" in name.upper() or "PASSWORD" in name.upper():
                p.append(f"extra_env {name!r} looks like a secret: secrets come from Kubernetes Secrets")
        return p

    def _team_problems(self) -> list[str]:
        teams = self.ray_teams
        if not isinstance(teams, tuple) or not teams or not all(isinstance(t, rt.RayTeam) for t in teams):
            return [f"ray_teams {teams!r}: expected a non-empty tuple of RayTeam (charts.ray_teams.ray_teams())"]
        p: list[str] = []
        names = [t.name for t in teams]
        if any(t.shared for t in teams) and len(teams) > 1:
            p.append(f"ray_teams {names!r}: the shared cluster (name None) comes alone, without named teams")
        duplicates = sorted({n for n in names if n is not None and names.count(n) > 1})
        if duplicates:
            p.append(f"ray_teams: {duplicates} listed more than once; each team is listed once")
        if self.teams_mode:
            for what, value, default in (("ray_address", self.ray_address, RAY_ADDRESS),
                                         ("ray_token_secret", self.ray_token_secret, RAY_AUTH_SECRET_NAME)):
                if value != default:
                    p.append(f"{what} {value!r} cannot be set with named ray_teams {names!r}: each team's address "
                             "and token Secret come from charts.ray_teams")
        return p

    @property
    def teams_mode(self) -> bool:
        """Named teams (several RayClusters) rather than the one shared cluster."""
        return isinstance(self.ray_teams, tuple) and any(
            isinstance(t, rt.RayTeam) and not t.shared for t in self.ray_teams)

    # -- pieces -------------------------------------------------------------------------------------------

    def singleuser_env(self) -> dict[str, Any]:
        env: dict[str, Any] = dict(self.extra_env)
        if not self.teams_mode:
            # With teams, the hub's modify_pod_hook sets the chosen team's address (teams_extra_config).
            env["RAY_ADDRESS"] = self.ray_address
        env[RAY_AUTH_MODE_ENV] = "token"
        env[RAY_TOKEN_PATH_ENV] = RAY_TOKEN_FILE
        env[RAY_GPU_WORKERS_ENV] = "1" if self.ray_gpu_workers else "0"
        return env

    def singleuser_token_volume(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The Ray token Secret as a read-only file (volume, mount): owned by root, readable by the notebook's
        group (fsGroup), nothing else in the Secret."""
        volume = {"name": RAY_TOKEN_VOLUME, "secret": {
            "secretName": self.ray_token_secret,
            "items": [{"key": self.ray_token_key, "path": RAY_TOKEN_FILE.rsplit("/", 1)[1]}],
            "defaultMode": 0o440,
        }}
        mount = {"name": RAY_TOKEN_VOLUME, "mountPath": RAY_TOKEN_MOUNT_DIR, "readOnly": True}
        return volume, mount

    def singleuser_egress(self) -> list[dict[str, Any]]:
        """Explicit egress rule of the single-user pods: the Ray head of every RayCluster (each team's namespace; the
        team namespace's own ingress policy admits only its team's notebooks), by namespace + pod selector."""
        namespaces = [RAY_NAMESPACE] if not self.teams_mode else [t.namespace for t in self.ray_teams]
        return [
            {
                "to": [
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                        "podSelector": {"matchLabels": dict(RAY_HEAD_POD_LABELS)},
                    }
                    for namespace in namespaces
                ],
                "ports": [
                    {"protocol": "TCP", "port": RAY_DASHBOARD_PORT},
                    {"protocol": "TCP", "port": RAY_CLIENT_PORT},
                ],
            }
        ]

    def hub_network_policy(self) -> dict[str, Any]:
        """z2jh's ``hub.networkPolicy``.

        Ingress (hub:8081): only the pods of this namespace that z2jh labels ``hub.jupyter.org/network-access-hub``
        (the proxy, the notebook servers: they call the hub's API); no port is open to every source, and the label is
        not honoured on pods or namespaces elsewhere (``interNamespaceAccessLabels: ignore``): Ray pods of any
        namespace cannot reach the hub. Notebooks still reach the hub's sign-up page there, which creates an account
        waiting for the admin's approval only (the admin account exists from the start: charts/hub_admin_bootstrap.py).

        Egress: DNS (z2jh's rules), the proxy's API and the notebook servers (z2jh's own rules, by pod selector), the
        Kubernetes API through :func:`hub_api_server_policy` (a CiliumNetworkPolicy: no NetworkPolicy peer names
        the API server under Cilium), and with Cognito HTTPS to public addresses (the OAuth token and userinfo calls).
        Nothing else: no other address in the VPC (``privateIPs``), no other port on the internet, not the instance
        metadata service."""
        egress: list[dict[str, Any]] = []
        if isinstance(self.auth, CognitoAuth):
            egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(NON_PUBLIC_RANGES)}}],
                           "ports": [{"protocol": "TCP", "port": HTTPS_PORT}]})
        return {
            "enabled": True,
            "allowedIngressPorts": [],
            "interNamespaceAccessLabels": "ignore",
            "egressAllowRules": {
                "privateIPs": False,
                "nonPrivateIPs": False,
                "cloudMetadataServer": False,
                # EKS DNS is CoreDNS in kube-system, not the metadata server's address.
                "dnsPortsCloudMetadataServer": False,
                "dnsPortsKubeSystemNamespace": True,
                "dnsPortsPrivateIPs": True,
            },
            "egress": egress,
        }

    def proxy_network_policy(self) -> dict[str, Any]:
        """z2jh's ``proxy.chp.networkPolicy``. ``allowedIngressPorts`` are open to every source, pods included
        (z2jh's default: http and https): without a domain nothing needs the proxy's port over the pod network, so
        none is open and only pods of this namespace labelled ``hub.jupyter.org/network-access-proxy-http`` (the
        hub) reach it. ``kubectl port-forward`` still works: the container runtime connects to the port from inside
        the pod's own network namespace (containerd's CRI portForward dials localhost:<port> in the sandbox netns),
        so the connection never crosses the pod's interface where Cilium enforces policy. With a domain the NLB's
        connections come from its own and the nodes' addresses, so the http port (where z2jh's offload mode sends
        the decrypted stream) stays open."""
        policy: dict[str, Any] = {
            "enabled": True,
            "allowedIngressPorts": [] if self.https is None else ["http"],
            "interNamespaceAccessLabels": "ignore",
        }
        if self.https is not None and self.proxied:
            # The proxy forwards /services/<name>/ to each proxied app (pod and namespace selectors: Cilium does not
            # apply z2jh's ipBlock-based egress rules to pod addresses).
            policy["egress"] = [
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": svc.namespace}},
                         "podSelector": {"matchLabels": dict(svc.pod_labels)}}],
                 "ports": [{"protocol": "TCP", "port": svc.port}]}
                for svc in self.proxied]
        return policy

    def teams_extra_config(self) -> str:
        """The ``hub.extraConfig`` entry of named teams (see :data:`_TEAMS_CONFIG`)."""
        file_name = RAY_TOKEN_FILE.rsplit("/", 1)[1]
        data = {
            "label": rt.TEAM_LABEL,
            "option": TEAM_PROFILE_OPTION,
            "container": NOTEBOOK_CONTAINER,
            "address_env": "RAY_ADDRESS",
            "volume": RAY_TOKEN_VOLUME,
            "token_path": file_name,
            "teams": {t.name: {"address": t.dashboard_url, "secret": t.notebook_token_secret,
                               "key": self.ray_token_key} for t in self.ray_teams},
        }
        return _TEAMS_CONFIG.replace("__DF_TEAMS_JSON__", repr(json.dumps(data, sort_keys=True))).lstrip("\n")

    def profile_list(self) -> list[dict[str, Any]]:
        profiles = [s.profile() for s in self.server_sizes]
        if self.gpu is not None:
            profiles.append(self.gpu.profile())
        return profiles

    def proxy_service(self) -> dict[str, Any]:
        if self.https is None:
            return {"type": "ClusterIP"}
        service: dict[str, Any] = {
            "type": "LoadBalancer",
            "annotations": self.https.service_annotations(),
            # HTTPS only: the Service has no port 80 at all.
            "disableHttpPort": True,
        }
        if self.https.source_ranges:
            service["loadBalancerSourceRanges"] = list(self.https.source_ranges)
        return service

    def to_values(self) -> dict[str, Any]:
        core = pool_placement(self.core_pool)
        users = pool_placement(self.user_pool)
        hub_config = (self.auth.hub_config(self.https.domain) if isinstance(self.auth, CognitoAuth)
                      else self.auth.hub_config())
        hub_config["KubeSpawner"] = {
            # Merged by KubeSpawner with uid / allowPrivilegeEscalation below.
            "container_security_context": {
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }
        if self.teams_mode:
            # The teams' groups exist from the first start. load_groups only adds (JupyterHub 5.5, app.py init_groups:
            # a missing group is created, listed users are added, nobody is removed), so the members an admin adds
            # later stay across restarts.
            hub_config.setdefault("JupyterHub", {})["load_groups"] = {
                t.name: {"users": []} for t in self.ray_teams}
        hub: dict[str, Any] = {
            "config": hub_config,
            "nodeSelector": core["nodeSelector"],
            "tolerations": core["tolerations"],
            # The hub's database (NativeAuthenticator's accounts, server state) is always kept on destroy: its
            # claim exists from the first install, and a bound claim's class cannot change, so a class that
            # followed the homes' setting would fail every later `helm upgrade` (charts/storage.py).
            "db": {"pvc": {"storageClassName": HUB_DB_STORAGE_CLASS}},
            "networkPolicy": self.hub_network_policy(),
        }
        if self.https is not None and self.proxied:
            # Listed in the hub's Services menu; the hub adds each route to the proxy at start.
            hub["services"] = {svc.name: {"url": svc.url, "display": True} for svc in self.proxied}
        extra_config = dict(self.auth.extra_config())
        if self.teams_mode:
            extra_config["ray-teams"] = self.teams_extra_config()
        if extra_config:
            hub["extraConfig"] = extra_config
        hub_env = self.auth.hub_env()
        if hub_env:
            hub["extraEnv"] = hub_env
        hub_volumes, hub_mounts = self.auth.hub_volumes()
        if hub_volumes:
            hub["extraVolumes"] = hub_volumes
            hub["extraVolumeMounts"] = hub_mounts

        proxy: dict[str, Any] = {
            "service": self.proxy_service(),
            "chp": {
                "nodeSelector": core["nodeSelector"],
                "tolerations": core["tolerations"],
                "networkPolicy": self.proxy_network_policy(),
            },
        }
        if self.https is not None:
            proxy["https"] = {"enabled": True, "type": "offload", "hosts": [self.https.domain]}

        singleuser: dict[str, Any] = {
            "image": {"name": self.notebook_image.name, "tag": self.notebook_image.tag},
            "uid": NOTEBOOK_UID,
            "fsGid": NOTEBOOK_FS_GID,
            "allowPrivilegeEscalation": False,
            "startTimeout": self.start_timeout_seconds,
            "nodeSelector": users["nodeSelector"],
            "extraTolerations": users["tolerations"],
            "storage": {
                "type": "dynamic",
                "capacity": self.home_capacity,
                "homeMountPath": self.home_mount_path,
                "dynamic": {"storageClass": self.storage_class},
                # With teams the hub's modify_pod_hook adds the chosen team's token volume; without it the mount
                # names no volume and the pod is refused, so a notebook never starts with another team's token.
                "extraVolumes": [] if self.teams_mode else [self.singleuser_token_volume()[0]],
                "extraVolumeMounts": [self.singleuser_token_volume()[1]],
            },
            # No iptables init container: z2jh makes it privileged, root and NET_ADMIN, which the namespace's
            # Pod Security level (baseline) refuses, so every spawn would fail. The metadata service is out of
            # reach anyway: IMDSv2 with hop limit 1 on every node, and the egress policy below.
            "cloudMetadata": {"blockWithIptables": False, "ip": CLOUD_METADATA_IP},
            **(
                {"lifecycleHooks": {"postStart": {"exec": {"command": [
                    "sh", "-c", f"cp -n {shlex.quote(self.example_notebook)} \"$HOME/\" 2>/dev/null || true"]}}}}
                if self.example_notebook else {}
            ),
            "networkPolicy": {
                "enabled": True,
                "egressAllowRules": {
                    "cloudMetadataServer": False,
                    # EKS DNS is CoreDNS in kube-system, not the metadata server's address.
                    "dnsPortsCloudMetadataServer": False,
                    "dnsPortsKubeSystemNamespace": True,
                    "dnsPortsPrivateIPs": True,
                    # Internet for pip/conda/git; nothing else in the VPC.
                    "nonPrivateIPs": True,
                    "privateIPs": False,
                },
                "egress": self.singleuser_egress(),
            },
            "extraEnv": self.singleuser_env(),
            # Karpenter never moves a live notebook to pack nodes better or to expire its node: the kernel and
            # every variable in it would be lost. The culler (and the user) decide when a server ends.
            "extraAnnotations": {DO_NOT_DISRUPT: "true"},
            "profileList": self.profile_list(),
        }

        cull: dict[str, Any] = {
            "enabled": True,
            "timeout": self.cull_timeout_seconds,
            "every": self.cull_every_seconds,
        }
        if self.cull_max_age_seconds:
            cull["maxAge"] = self.cull_max_age_seconds

        return {
            "hub": hub,
            "proxy": proxy,
            "singleuser": singleuser,
            "scheduling": {
                # Packs user pods onto the fewest nodes, so Karpenter can consolidate the rest.
                "userScheduler": {
                    "enabled": True,
                    "nodeSelector": core["nodeSelector"],
                    "tolerations": core["tolerations"],
                },
            },
            "prePuller": {
                # The install-time hook waits for an image pull on every node; with Karpenter nodes come
                # and go, so only the continuous puller (a DaemonSet on user nodes) is useful.
                "hook": {"enabled": False},
                "continuous": {"enabled": True},
            },
            "cull": cull,
        }
