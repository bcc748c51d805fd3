"""The NativeAuthenticator admin exists from the hub's first start, with a random password (issue #16).

Before: ``admin`` was in ``admin_users`` and sign-up was open, and NativeAuthenticator approves a sign-up under an
admin's name at once (``create_user`` pre-authorizes every name of ``get_authed_users()``, which includes
``admin_users`` and ``allowed_users``; jupyterhub-nativeauthenticator 1.3.0,
nativeauthenticator/nativeauthenticator.py). Until the operator signed up, any pod that could reach the proxy or
the hub could claim the admin account and with it every user's server.

Now:

1. A one-shot Job (:class:`HubAdminBootstrapChart`) creates the Secret ``jupyterhub-admin-password`` (key
   ``password``) in the ``jupyterhub`` namespace with a random password, unless it exists. The password never
   passes through a template, a Helm value or CloudFormation. The Job runs the hub's own image (Python, already
   pulled for the hub) under a service account whose Role may create Secrets and read this one.
2. The hub mounts that Secret as a read-only file (only the hub pod mounts it) and its ``hub.extraConfig``
   (:func:`hub_extra_config`) replaces NativeAuthenticator by a subclass that, at every start, makes the admin's
   NativeAuthenticator record exist, authorized, with the Secret's password: a sign-up under the admin's name is
   refused ("already in use") from the first second, and an account claimed before this change is taken back.
   The subclass also stops pre-authorizing sign-ups: every other account waits for the admin's approval, including
   names listed in ``allowed_users``.

The Secret is the admin password's source of truth: a password changed on the hub's change-password page lasts
until the hub restarts. To rotate it, replace the Secret's value and restart the hub.

Read it: ``kubectl -n jupyterhub get secret jupyterhub-admin-password -o jsonpath='{.data.password}' | base64 -d``.
"""

from __future__ import annotations

import json

import cdk8s
from constructs import Construct

import versions
from charts.k8s import api_object, secret_writer_rbac

SECRET_NAME = "jupyterhub-admin-password"
SECRET_KEY = "password"
SERVICE_ACCOUNT = "hub-admin-bootstrap"
# z2jh publishes its hub image with the chart's version as the tag (chartpress), so this is the image the hub of the
# pinned chart runs (zero-to-jupyterhub-k8s jupyterhub/values.yaml: hub.image quay.io/jupyterhub/k8s-hub).
HUB_IMAGE = f"quay.io/jupyterhub/k8s-hub:{versions.JUPYTERHUB_CHART_VERSION}"
# Where the hub container reads the password (a Secret volume: a file, not an environment variable, so it is not
# in the environment the hub's managed services and their subprocesses could inherit).
VOLUME_NAME = "hub-admin-password"
MOUNT_DIR = "/etc/dynamic-factory/hub-admin"
PASSWORD_FILE = f"{MOUNT_DIR}/{SECRET_KEY}"
# secrets.token_urlsafe(24): 32 characters from a 64-letter alphabet (192 bits).
PASSWORD_BYTES = 24
NOBODY = 65534

BOOTSTRAP_SCRIPT = r'''
import base64, json, os, secrets, ssl, sys, urllib.error, urllib.request
SA = os.environ.get("DF_SA_DIR") or "/var/run/secrets/kubernetes.io/serviceaccount"
API = os.environ.get("DF_API_URL") or "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"],
                                                          os.environ["KUBERNETES_SERVICE_PORT"])
NS, NAME, KEY = os.environ["DF_NAMESPACE"], os.environ["DF_SECRET_NAME"], os.environ["DF_SECRET_KEY"]
MIN_LENGTH = int(os.environ["DF_MIN_LENGTH"])
CTX = ssl.create_default_context(cafile=SA + "/ca.crt")
with open(SA + "/token") as fh:
    BEARER = fh.read().strip()

def call(method, path, body=None):
    req = urllib.request.Request(API + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + BEARER, "Accept": "application/json",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=CTX, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, None

def check(obj):
    value = (obj.get("data") or {}).get(KEY)
    password = base64.b64decode(value).decode().strip() if value else ""
    if len(password) < MIN_LENGTH:
        sys.exit("secret %s/%s has no key %r of at least %d characters: delete it to let this Job create a new "
                 "one, or put a longer password there" % (NS, NAME, KEY, MIN_LENGTH))
    print("secret %s/%s present" % (NS, NAME))

path = "/api/v1/namespaces/%s/secrets" % NS
status, obj = call("GET", "%s/%s" % (path, NAME))
if status == 200:
    check(obj)
    sys.exit(0)
if status != 404:
    sys.exit("GET secret %s/%s: HTTP %s" % (NS, NAME, status))
password = secrets.token_urlsafe(int(os.environ["DF_PASSWORD_BYTES"]))
body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": NAME, "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "hub-admin-bootstrap"}},
        "data": {KEY: base64.b64encode(password.encode()).decode()}}
status, _ = call("POST", path, body)
if status == 201:
    print("created secret %s/%s" % (NS, NAME))
elif status == 409:  # created concurrently: keep that one
    status, obj = call("GET", "%s/%s" % (path, NAME))
    if status != 200:
        sys.exit("GET secret %s/%s: HTTP %s" % (NS, NAME, status))
    check(obj)
else:
    sys.exit("create secret %s/%s: HTTP %s" % (NS, NAME, status))
'''

# hub.extraConfig: z2jh executes each entry, sorted by key, after it has applied hub.config (the z2jh hub image's
# jupyterhub_config.py ends with `for key, config_py in sorted(get_config("hub.extraConfig", {}).items()):
# exec(config_py)`), so the authenticator class set here is the one the hub uses.
# JupyterHub 5.5 creates the authenticator after its database (JupyterHub._authenticator_default passes the
# session); NativeAuthenticator 1.3.0 keeps its accounts in the table users_info (nativeauthenticator/orm.py,
# UserInfo: username, bcrypt password, is_authorized, has_2fa, otp_secret).
_HUB_CONFIG = r'''
import json as _df_json

import bcrypt as _df_bcrypt
from nativeauthenticator import NativeAuthenticator as _DfNativeAuthenticator
from nativeauthenticator.orm import UserInfo as _DfUserInfo

_DF_ADMIN = _df_json.loads(__DF_ADMIN_JSON__)


class DynamicFactoryNativeAuthenticator(_DfNativeAuthenticator):
    """NativeAuthenticator whose admin account exists, authorized, with the password of a Kubernetes Secret (mounted
    as a file), and which pre-authorizes no sign-up."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ensure_admin_account()

    def admin_password(self):
        path = _DF_ADMIN["password_file"]
        try:
            with open(path) as fh:
                password = fh.read().strip()
        except OSError as err:
            raise RuntimeError("the admin password file %s cannot be read (%s): the hub mounts it from the "
                               "Secret %s" % (path, err, _DF_ADMIN["secret"])) from None
        if len(password) < self.minimum_password_length:
            raise RuntimeError("the admin password in the Secret %s is shorter than minimum_password_length (%d)"
                               % (_DF_ADMIN["secret"], self.minimum_password_length))
        return password

    def ensure_admin_account(self):
        name = self.normalize_username(_DF_ADMIN["name"])
        password = self.admin_password()
        info = _DfUserInfo.find(self.db, name)
        if info is None:
            info = _DfUserInfo(username=name, password=_df_bcrypt.hashpw(password.encode(), _df_bcrypt.gensalt()),
                               is_authorized=True)
            self.db.add(info)
            self.log.info("Created the NativeAuthenticator account of admin %s", name)
        else:
            if not info.is_valid_password(password):
                info.password = _df_bcrypt.hashpw(password.encode(), _df_bcrypt.gensalt())
                self.log.warning("Reset the password of admin %s to the one in the Secret %s", name,
                                 _DF_ADMIN["secret"])
            info.is_authorized = True
            if not self.allow_2fa:
                info.has_2fa = False
        self.db.commit()

    def get_authed_users(self):
        # Upstream adds admin_users and allowed_users here, and create_user() approves a sign-up under any of
        # those names at once: whoever signs up first owns the name. Only accounts an admin approved (and the admin
        # account above) count.
        return {info.username for info in _DfUserInfo.all_users(self.db) if info.is_authorized}


c.JupyterHub.authenticator_class = DynamicFactoryNativeAuthenticator
'''


def hub_extra_config(admin_user: str, password_file: str = PASSWORD_FILE, secret_name: str = SECRET_NAME) -> str:
    """The ``hub.extraConfig`` entry that installs :class:`DynamicFactoryNativeAuthenticator` for ``admin_user``."""
    data = json.dumps({"name": admin_user, "password_file": password_file, "secret": secret_name}, sort_keys=True)
    return _HUB_CONFIG.replace("__DF_ADMIN_JSON__", repr(data)).lstrip("\n")


def hub_volume(secret_name: str = SECRET_NAME) -> tuple[dict, dict]:
    """The Secret as a read-only file in the hub container (volume, mount): the key only, readable by the hub's
    group (z2jh's hub pod has fsGroup 1000)."""
    volume = {"name": VOLUME_NAME, "secret": {"secretName": secret_name,
                                              "items": [{"key": SECRET_KEY, "path": SECRET_KEY}],
                                              "defaultMode": 0o440}}
    mount = {"name": VOLUME_NAME, "mountPath": MOUNT_DIR, "readOnly": True}
    return volume, mount


class HubAdminBootstrapChart(cdk8s.Chart):
    """Service account, Role, RoleBinding and the Job that creates the admin password Secret (if missing)."""

    def __init__(self, scope: Construct, construct_id: str, *, namespace: str, placement: dict,
                 minimum_password_length: int, secret_name: str = SECRET_NAME) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        sa, role, binding = secret_writer_rbac(self, namespace=namespace, service_account=SERVICE_ACCOUNT,
                                               secret_name=secret_name)
        job = api_object(self, "job", {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
            "spec": {
                "backoffLimit": 6,
                "ttlSecondsAfterFinished": 600,
                "template": {
                    "spec": {
                        "serviceAccountName": SERVICE_ACCOUNT,
                        "restartPolicy": "OnFailure",
                        "securityContext": {"runAsNonRoot": True, "runAsUser": NOBODY, "runAsGroup": NOBODY,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        **placement,
                        "containers": [{
                            "name": "bootstrap",
                            "image": HUB_IMAGE,
                            "imagePullPolicy": "Always",
                            "command": ["python3", "-c", BOOTSTRAP_SCRIPT],
                            "env": [
                                {"name": "DF_NAMESPACE", "value": namespace},
                                {"name": "DF_SECRET_NAME", "value": secret_name},
                                {"name": "DF_SECRET_KEY", "value": SECRET_KEY},
                                {"name": "DF_PASSWORD_BYTES", "value": str(PASSWORD_BYTES)},
                                {"name": "DF_MIN_LENGTH", "value": str(minimum_password_length)},
                                {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                                {"name": "HOME", "value": "/tmp"},
                            ],
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                          "limits": {"cpu": "200m", "memory": "128Mi"}},
                            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "privileged": False, "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }],
                        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}],
                    },
                },
            },
        })
        for child in (role, binding, job):
            child.add_dependency(sa)
        job.add_dependency(binding)
        job.add_dependency(role)
