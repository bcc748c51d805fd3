"""Ray teams on the hub (issue #16): which RayCluster a notebook reaches, proved with the real libraries of the z2jh
4.4.0 hub image (JupyterHub 5.5.0, KubeSpawner 7.0.0).

* Routing: a real :class:`kubespawner.KubeSpawner` configured as z2jh configures it from our rendered values (the
  ``singleuser`` settings as the traits z2jh's jupyterhub_config.py maps them to, ``hub.config`` class by class,
  then ``hub.extraConfig`` executed), for a user whose JupyterHub groups are given. The spawn runs KubeSpawner's
  own steps up to the pod it would create: the options form, ``options_from_form``, the pre-spawn hook,
  ``load_user_options`` (the profile and its options' overrides), ``get_pod_manifest`` and the ``modify_pod_hook``;
  the pod is then serialized exactly as the Kubernetes client would send it. Nothing talks to a cluster (the
  kubeconfig names an address nothing listens on).
* Groups: a real JupyterHub starts twice on one SQLite database with the rendered ``load_groups``: the teams' groups
  exist after the first start, and a member an admin added in between is still there after the second.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("jupyterhub", minversion="5.5")
pytest.importorskip("kubespawner")

from charts import jupyterhub_values as jh  # noqa: E402
from charts import ray_teams as rt  # noqa: E402
from charts.karpenter_nodes import DEFAULT_ON_DEMAND_POOL  # noqa: E402

IMAGE = jh.notebook_image("111122223333.dkr.ecr.eu-west-1.amazonaws.com/dynamic-factory-notebook")
TEAMS = rt.ray_teams(("alpha", "beta"))
BY_NAME = {t.name: t for t in TEAMS}
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def values(teams=TEAMS) -> dict:
    return jh.JupyterHubValues(notebook_image=IMAGE, core_pool=DEFAULT_ON_DEMAND_POOL, user_pool=DEFAULT_ON_DEMAND_POOL,
                               auth=jh.NativeAuth(admin_user="admin"), ray_teams=teams).to_values()


def kubespawner_config(rendered: dict):
    """The KubeSpawner configuration z2jh builds from the values (zero-to-jupyterhub-k8s jupyterhub_config.py:
    singleuser.profileList -> profile_list, extraEnv -> environment, the dynamic home claim's volume and mount
    followed by storage.extraVolumes / extraVolumeMounts, extraLabels -> extra_labels; then hub.config, then
    hub.extraConfig in key order). The admin-account entry is left out: it configures the authenticator, which a
    spawner never sees."""
    from traitlets.config import Config

    c = Config()
    su = rendered["singleuser"]
    c.KubeSpawner.profile_list = su["profileList"]
    c.KubeSpawner.environment = su["extraEnv"]
    c.KubeSpawner.extra_labels = su.get("extraLabels", {})
    home = {"name": "volume-{user_server}", "persistentVolumeClaim": {"claimName": "claim-{username}"}}
    c.KubeSpawner.volumes = [home, *su["storage"]["extraVolumes"]]
    c.KubeSpawner.volume_mounts = [{"name": "volume-{user_server}", "mountPath": su["storage"]["homeMountPath"]},
                                   *su["storage"]["extraVolumeMounts"]]
    for app, cfg in rendered["hub"]["config"].items():
        c[app].update(cfg)
    for key, code in sorted(rendered["hub"].get("extraConfig", {}).items()):
        if key != "admin-account":
            exec(code, {"c": c})
    return c


class Group:
    def __init__(self, name):
        self.name = name


def user(name: str, *groups: str):
    return SimpleNamespace(name=name, id=7, url=f"/user/{name}/", escaped_name=name,
                           groups=[Group(g) for g in groups])


@pytest.fixture(autouse=True)
def no_cluster(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    # kubernetes_asyncio reads KUBECONFIG once, when imported: point its default at this file.
    monkeypatch.setattr("kubernetes_asyncio.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


def spawn(the_user, form: dict | None = None, api_options: dict | None = None, rendered: dict | None = None):
    """(options form HTML, the pod KubeSpawner would create as a dict) or the exception that stopped the spawn."""
    from jupyterhub.utils import maybe_future
    from kubernetes_asyncio.client import ApiClient
    from kubespawner import KubeSpawner

    config = kubespawner_config(rendered or values())

    async def run():
        spawner = KubeSpawner(config=config, _mock=True, user=the_user)
        try:
            html = await spawner.get_options_form()
            if form is not None:
                form_data = {k: [v] for k, v in form.items()}
                spawner.user_options = await maybe_future(spawner.run_options_from_form(form_data))
            elif api_options is not None:
                spawner.user_options = dict(api_options)
            try:
                await maybe_future(spawner.run_pre_spawn_hook())
                await spawner.load_user_options()
                pod = await spawner.get_pod_manifest()
                if spawner.modify_pod_hook:
                    pod = await maybe_future(spawner.modify_pod_hook(spawner, pod))
            except Exception as err:  # what JupyterHub would show as "Spawn failed: ..."
                return html, err
            async with ApiClient() as client:
                return html, client.sanitize_for_serialization(pod)
        finally:
            await spawner.api.api_client.close()

    return asyncio.run(run())


def _container(pod: dict) -> dict:
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "notebook"]
    return container


def _ray_wiring(pod: dict) -> tuple[str | None, str | None, str | None]:
    """(RAY_ADDRESS, the Secret mounted as the token file, the pod's team label)."""
    container = _container(pod)
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    token_dir, token_file = env["RAY_AUTH_TOKEN_PATH"].rsplit("/", 1)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == token_dir]
    volumes = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    secret = None
    if volumes:
        (volume,) = volumes
        (item,) = volume["secret"]["items"]
        assert item == {"key": rt.rc.TOKEN_KEY, "path": token_file}
        secret = volume["secret"]["secretName"]
    return env.get("RAY_ADDRESS"), secret, pod["metadata"]["labels"].get(rt.TEAM_LABEL)


def _expected(team: rt.RayTeam) -> tuple[str, str, str]:
    return team.dashboard_url, team.notebook_token_secret, team.notebook_label[rt.TEAM_LABEL]


def test_a_member_of_one_team_gets_that_teams_cluster():
    html, pod = spawn(user("ana", "beta"), form={"profile": "cpu-small"})
    assert isinstance(pod, dict), pod
    assert _ray_wiring(pod) == _expected(BY_NAME["beta"])
    assert "team beta" in html and "team alpha" not in html


@pytest.mark.parametrize("choice", ["alpha", "beta"])
def test_a_member_of_several_teams_picks_one_on_the_form_with_any_size(choice):
    html, pod = spawn(user("bo", "alpha", "beta", "unrelated"),
                      form={"profile": "cpu-large", f"profile-option-cpu-large--{jh.TEAM_PROFILE_OPTION}": choice})
    assert isinstance(pod, dict), pod
    assert _ray_wiring(pod) == _expected(BY_NAME[choice])
    assert _container(pod)["resources"]["limits"]["cpu"] in ("4", 4, "4.0")  # the size is the chosen profile's
    for profile in ("cpu-small", "cpu-large"):
        for team in ("alpha", "beta"):
            assert f'name="profile-option-{profile}--{jh.TEAM_PROFILE_OPTION}"' in html
            assert f"team {team}" in html


def test_a_user_in_no_team_is_refused_with_the_teams_and_who_can_help():
    _, err = spawn(user("cy", "unrelated"), form={"profile": "cpu-small"})
    assert isinstance(err, Exception)
    message = err.jupyterhub_message  # what the spawn page shows
    assert "cy is in no Ray team" in message and "alpha, beta" in message and "admin adds you" in message


def test_a_team_the_user_is_not_in_cannot_be_asked_for():
    _, err = spawn(user("dee", "alpha"), api_options={"profile": "cpu-small", jh.TEAM_PROFILE_OPTION: "beta"})
    assert isinstance(err, Exception) and "not in the Ray team 'beta'" in err.jupyterhub_message


def test_without_the_form_the_users_first_team_is_used():
    _, pod = spawn(user("eve", "beta", "alpha"))
    assert _ray_wiring(pod) == _expected(BY_NAME["alpha"])


def test_the_shared_cluster_needs_no_team():
    """The default platform: one cluster, every user, no groups, no hooks; the pod is wired from the values."""
    _, pod = spawn(user("fay"), form={"profile": "cpu-small"}, rendered=values(rt.ray_teams(())))
    assert _ray_wiring(pod) == (jh.RAY_ADDRESS, jh.RAY_AUTH_SECRET_NAME, None)


# ------------------------------------------------------------------ the groups, in a real JupyterHub

GROUPS_DRIVER = r'''
import asyncio, json, sys
from jupyterhub.app import JupyterHub

async def main(config):
    app = JupyterHub()
    await app.initialize(["-f", config])
    print(json.dumps({g.name: sorted(u.name for u in g.users) for g in app.db.query(__import__("jupyterhub.orm",
        fromlist=["Group"]).Group)}))

asyncio.run(main(sys.argv[1]))
'''

ADD_MEMBER = r'''
import sys
from jupyterhub import orm
db = orm.new_session_factory(sys.argv[1])()
user = orm.User(name=sys.argv[3])
db.add(user)
group = orm.Group.find(db, sys.argv[2])
group.users.append(user)
db.commit()
'''


def test_the_teams_groups_exist_from_the_first_start_and_keep_their_members(tmp_path):
    rendered = values()
    db_url = f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}"
    jupyterhub_config = rendered["hub"]["config"]
    config = tmp_path / "jupyterhub_config.py"
    config.write_text("\n".join([
        "import json",
        f"c.JupyterHub.db_url = {db_url!r}",
        f"c.JupyterHub.cookie_secret = bytes.fromhex({os.urandom(32).hex()!r})",
        f"c.ConfigurableHTTPProxy.auth_token = {os.urandom(16).hex()!r}",
        f"for app, cfg in json.loads({json.dumps(jupyterhub_config)!r}).items():",
        "    c[app].update(cfg)",
    ]) + "\n")

    def start() -> dict:
        result = subprocess.run([sys.executable, "-c", GROUPS_DRIVER, str(config)], cwd=tmp_path, capture_output=True,
                                text=True, timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    assert start() == {"alpha": [], "beta": []}
    added = subprocess.run([sys.executable, "-c", ADD_MEMBER, db_url, "beta", "ana"], capture_output=True, text=True,
                           timeout=120)
    assert added.returncode == 0, added.stderr[-3000:]
    assert start() == {"alpha": [], "beta": ["ana"]}
