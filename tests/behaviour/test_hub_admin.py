"""Nobody can claim the JupyterHub admin account (issue #16), proved with the real code on both sides:

* the admin password comes from the bootstrap Job's own script (``charts/hub_admin_bootstrap.py``), run against a
  fake Kubernetes API that keeps Secrets;
* the hub is a real JupyterHub 5.5.0 with NativeAuthenticator 1.3.0 (the versions of the z2jh 4.4.0 hub image:
  docs/source/changelog.md of zero-to-jupyterhub-k8s, "4.4.0 upgrades JupyterHub to 5.5.0"; NativeAuthenticator
  1.3.0 since chart 4.0.0), in its own process, with a SQLite database, configured as z2jh configures it from our
  rendered values: ``hub.config`` applied class by class, then every ``hub.extraConfig`` entry executed in key
  order (the z2jh hub image's jupyterhub_config.py). The Secret reaches the hub as the file the rendered
  ``hub.extraVolumes`` / ``hub.extraVolumeMounts`` put it at (the test only moves that directory under a temporary
  one). The test talks HTTP to the hub's own pages (/hub/signup, /hub/login), as a pod on the network would.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("jupyterhub", minversion="5.5")
pytest.importorskip("nativeauthenticator")

from charts import hub_admin_bootstrap as hub_admin  # noqa: E402
from charts import jupyterhub_values as jh  # noqa: E402
from charts.karpenter_nodes import DEFAULT_ON_DEMAND_POOL  # noqa: E402

IMAGE = jh.notebook_image("111122223333.dkr.ecr.eu-west-1.amazonaws.com/dynamic-factory-notebook")
ADMIN = "admin"


def values(**auth) -> dict:
    return jh.JupyterHubValues(notebook_image=IMAGE, core_pool=DEFAULT_ON_DEMAND_POOL, user_pool=DEFAULT_ON_DEMAND_POOL,
                               auth=jh.NativeAuth(admin_user=ADMIN, **auth)).to_values()


# ------------------------------------------------------------------ the bootstrap Job's script, against a fake API


class _FakeSecretsApi(BaseHTTPRequestHandler):
    store: dict[tuple[str, str], dict] = {}
    bearer = "sa-bearer"

    def log_message(self, *args):
        pass

    def _reply(self, code, body=None):
        data = json.dumps(body or {}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.headers.get("Authorization") != f"Bearer {self.bearer}":
            return self._reply(401)
        _, _, _, ns, _, name = self.path.strip("/").split("/")
        obj = self.store.get((ns, name))
        return self._reply(200, obj) if obj else self._reply(404)

    def do_POST(self):
        if self.headers.get("Authorization") != f"Bearer {self.bearer}":
            return self._reply(401)
        _, _, _, ns, _ = self.path.strip("/").split("/")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = (ns, body["metadata"]["name"])
        if key in self.store:
            return self._reply(409)
        assert body["metadata"]["namespace"] == ns and body["type"] == "Opaque"
        self.store[key] = body
        return self._reply(201, body)


def _job_env(chart_objects: list[dict]) -> dict[str, str]:
    (job,) = [o for o in chart_objects if o["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["python3", "-c"]
    return {e["name"]: e["value"] for e in container["env"]}


@pytest.fixture()
def secrets_api(tmp_path):
    """Runs the Job's script (with the environment the chart gives it) against a fake API server."""
    import cdk8s

    _FakeSecretsApi.store = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeSecretsApi)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(_FakeSecretsApi.bearer + "\n")
    import certifi  # any CA bundle: the fake API is plain HTTP

    (sa / "ca.crt").write_text(Path(certifi.where()).read_text())
    chart = hub_admin.HubAdminBootstrapChart(cdk8s.App(), "bootstrap", namespace="jupyterhub", placement={},
                                             minimum_password_length=12)
    job_env = _job_env(chart.to_json())

    def run():
        env = {**os.environ, **job_env, "DF_SA_DIR": str(sa), "DF_API_URL": f"http://127.0.0.1:{server.server_port}"}
        return subprocess.run([sys.executable, "-c", hub_admin.BOOTSTRAP_SCRIPT], env=env, capture_output=True,
                              text=True, timeout=60)

    yield run, _FakeSecretsApi.store
    server.shutdown()


def _password(store) -> str:
    secret = store[("jupyterhub", hub_admin.SECRET_NAME)]
    assert set(secret["data"]) == {hub_admin.SECRET_KEY}
    return base64.b64decode(secret["data"][hub_admin.SECRET_KEY]).decode()


def test_the_job_creates_a_random_password_once(secrets_api):
    run, store = secrets_api
    first = run()
    assert first.returncode == 0, first.stderr
    password = _password(store)
    assert len(password) == 32 and re.fullmatch(r"[A-Za-z0-9_-]+", password)
    assert password not in first.stdout + first.stderr
    again = run()
    assert again.returncode == 0, again.stderr
    assert _password(store) == password and "present" in again.stdout
    # Another run elsewhere draws another password: it is random, not derived from anything in the template.
    store.clear()
    assert run().returncode == 0 and _password(store) != password


def test_the_job_refuses_a_short_password_it_did_not_make(secrets_api):
    run, store = secrets_api
    store[("jupyterhub", hub_admin.SECRET_NAME)] = {"data": {hub_admin.SECRET_KEY: base64.b64encode(b"short").decode()}}
    result = run()
    assert result.returncode != 0
    assert hub_admin.SECRET_NAME in result.stderr and "at least 12" in result.stderr and "short" not in result.stderr


# ------------------------------------------------------------------ a real hub with the rendered configuration

DRIVER = r'''
import asyncio, sys
from jupyterhub.app import JupyterHub
from tornado.httpserver import HTTPServer

async def main(config, port):
    app = JupyterHub()
    await app.initialize(["-f", config])
    server = HTTPServer(app.tornado_application, xheaders=True)
    server.listen(port, "127.0.0.1")
    print("READY", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _password_file(rendered: dict, root: Path) -> Path:
    """Where the rendered hub pod has the Secret's key, moved under ``root``."""
    (volume,) = [v for v in rendered["hub"]["extraVolumes"] if "secret" in v]
    (mount,) = [m for m in rendered["hub"]["extraVolumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    (item,) = volume["secret"]["items"]
    assert volume["secret"]["secretName"] == hub_admin.SECRET_NAME and item["key"] == hub_admin.SECRET_KEY
    return root / mount["mountPath"].lstrip("/") / item["path"]


def _config_file(rendered: dict, workdir: Path, port: int) -> Path:
    """A jupyterhub_config.py doing what z2jh's does with hub.config and hub.extraConfig, plus what only this test
    needs (database, cookie secret, where to listen); the admin password path moved under ``workdir``."""
    moved = str(_password_file(rendered, workdir))
    extra = {key: code.replace(json.dumps(hub_admin.PASSWORD_FILE)[1:-1], moved)
             for key, code in rendered["hub"].get("extraConfig", {}).items()}
    lines = [
        "import json",
        f"c.JupyterHub.db_url = {('sqlite:///' + str(workdir / 'jupyterhub.sqlite'))!r}",
        f"c.JupyterHub.cookie_secret = bytes.fromhex({os.urandom(32).hex()!r})",
        f"c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{port}'",
        f"c.ConfigurableHTTPProxy.auth_token = {os.urandom(16).hex()!r}",
        "c.ConfigurableHTTPProxy.should_start = False",
        f"c.JupyterHub.pid_file = {str(workdir / 'hub.pid')!r}",
        f"for app, cfg in json.loads({json.dumps(rendered['hub']['config'])!r}).items():",
        "    c[app].update(cfg)",
        f"for key, code in sorted(json.loads({json.dumps(extra)!r}).items()):",
        "    exec(code)",
    ]
    path = workdir / "jupyterhub_config.py"
    path.write_text("\n".join(lines) + "\n")
    return path


class Hub:
    """A hub process and a browser-like client (cookies, the form's _xsrf field)."""

    def __init__(self, rendered: dict, workdir: Path, password: str | None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.db = workdir / "jupyterhub.sqlite"
        if password is not None:
            target = _password_file(rendered, workdir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(password)
        self.port = _free_port()
        config = _config_file(rendered, workdir, self.port)
        self.log = open(workdir / "hub.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(config), str(self.port)], cwd=workdir,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            line = self.proc.stdout.readline()
            if line.strip() == "READY":
                break
        if line.strip() != "READY":
            self.stop()
            raise AssertionError("the hub did not start:\n" + (workdir / "hub.log").read_text()[-4000:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def _client(self):
        jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())

    def _post_form(self, path: str, fields: dict) -> tuple[int, str, dict]:
        client = self._client()
        url = f"http://127.0.0.1:{self.port}/hub/{path}"
        page = client.open(url, timeout=30).read().decode()
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page)
        assert xsrf, page[:2000]
        data = urllib.parse.urlencode({**fields, "_xsrf": xsrf.group(1)}).encode()
        try:
            with client.open(url, data=data, timeout=30) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(), dict(err.headers)

    def sign_up(self, username: str, password: str) -> str:
        status, body, _ = self._post_form("signup", {"username": username, "signup_password": password,
                                                     "signup_password_confirmation": password})
        assert status == 200, body[:2000]
        return body

    def logs_in(self, username: str, password: str) -> bool:
        status, body, headers = self._post_form("login", {"username": username, "password": password})
        if status == 302:
            return True
        assert status in (200, 403), (status, body[:2000])
        return False

    def account(self, username: str) -> tuple[int, bytes] | None:
        with sqlite3.connect(self.db) as db:
            return db.execute("SELECT is_authorized, password FROM users_info WHERE username = ?",
                              (username,)).fetchone()


@pytest.fixture(scope="module")
def admin_password(tmp_path_factory):
    """The password the bootstrap Job's script generated into the (fake) cluster."""
    _FakeSecretsApi.store = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeSecretsApi)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    sa = tmp_path_factory.mktemp("sa")
    (sa / "token").write_text(_FakeSecretsApi.bearer)
    import certifi

    (sa / "ca.crt").write_text(Path(certifi.where()).read_text())
    import cdk8s

    job_env = _job_env(hub_admin.HubAdminBootstrapChart(cdk8s.App(), "bootstrap", namespace="jupyterhub",
                                                        placement={}, minimum_password_length=12).to_json())
    env = {**os.environ, **job_env, "DF_SA_DIR": str(sa), "DF_API_URL": f"http://127.0.0.1:{server.server_port}"}
    result = subprocess.run([sys.executable, "-c", hub_admin.BOOTSTRAP_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=60)
    server.shutdown()
    assert result.returncode == 0, result.stderr
    return _password(_FakeSecretsApi.store)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, admin_password):
    running = Hub(values(), tmp_path_factory.mktemp("hub"), admin_password)
    yield running
    running.stop()


def test_the_admin_account_exists_authorized_with_the_secrets_password(hub, admin_password):
    authorized, _ = hub.account(ADMIN)
    assert authorized == 1
    assert hub.logs_in(ADMIN, admin_password)
    assert not hub.logs_in(ADMIN, admin_password[::-1])


@pytest.mark.parametrize("name", [ADMIN, ADMIN.upper()])
def test_a_sign_up_as_the_admin_is_refused(hub, admin_password, name):
    before = hub.account(ADMIN)
    page = hub.sign_up(name, "Claimed-by-a-pod-2024!")
    assert "already in use" in page
    assert hub.account(ADMIN) == before
    assert not hub.logs_in(ADMIN, "Claimed-by-a-pod-2024!")
    assert hub.logs_in(ADMIN, admin_password)


def test_other_sign_ups_wait_for_the_admins_approval(hub):
    page = hub.sign_up("bo", "Bo-signs-up-2024!")
    assert "sent to the admin" in page
    assert hub.account("bo")[0] == 0
    assert not hub.logs_in("bo", "Bo-signs-up-2024!")


def test_names_on_the_allow_list_are_not_approved_by_signing_up(tmp_path, admin_password):
    """Upstream approves a sign-up under any allowed_users name at once (get_authed_users): whoever signs up first
    owns it. With the allow list, a sign-up still waits for the admin."""
    running = Hub(values(allowed_users=("ana",)), tmp_path / "hub", admin_password)
    try:
        assert "sent to the admin" in running.sign_up("ana", "Not-really-ana-2024!")
        assert running.account("ana")[0] == 0
        assert not running.logs_in("ana", "Not-really-ana-2024!")
        assert running.logs_in(ADMIN, admin_password)
    finally:
        running.stop()


def test_an_admin_account_claimed_before_is_taken_back(tmp_path, admin_password):
    """A deployment from before this change, where a pod signed up as the admin first (upstream NativeAuthenticator
    approves that sign-up at once), is repaired at the next start: the Secret's password, and only it, logs in."""
    old = values()
    old["hub"]["extraConfig"] = {k: v for k, v in old["hub"]["extraConfig"].items() if k != "admin-account"}
    before = Hub(old, tmp_path / "hub", None)
    try:
        assert "successful" in before.sign_up(ADMIN, "Claimed-by-a-pod-2024!")
        assert before.logs_in(ADMIN, "Claimed-by-a-pod-2024!")  # the hole this issue closes
    finally:
        before.stop()
    after = Hub(values(), tmp_path / "hub", admin_password)
    try:
        assert not after.logs_in(ADMIN, "Claimed-by-a-pod-2024!")
        assert after.logs_in(ADMIN, admin_password)
    finally:
        after.stop()


def test_the_hub_does_not_start_without_the_password(tmp_path):
    with pytest.raises(AssertionError, match="admin password file"):
        Hub(values(), tmp_path / "hub", None)
