"""Token rotation (tools/rotate_ray_token.py): in place, never through a missing Secret, token only on stdin."""

from __future__ import annotations

import base64
import json

import pytest

from charts.ray_teams import RayTeam
from tools import rotate_ray_token as rot


class FakeCluster:
    """kubectl over an in-memory API with resourceVersions, as the API server checks them on replace."""

    def __init__(self, secrets: dict[tuple[str, str], str]):
        self.objects = {
            key: {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": key[1], "namespace": key[0], "resourceVersion": "1",
                               "labels": {"app.kubernetes.io/managed-by": "ray-token-bootstrap"}},
                  "data": {"token": base64.b64encode(v.encode()).decode(),
                           "auth_token": base64.b64encode(v.encode()).decode()}}
            for key, v in secrets.items()}
        self.calls: list[tuple[list[str], str | None]] = []
        self.interfere: tuple[str, str] | None = None

    def __call__(self, args, stdin=None):
        self.calls.append((list(args), stdin))
        if args[:2] == ["get", "secret"]:
            key = (args[args.index("-n") + 1], args[2])
            if key not in self.objects:
                raise RuntimeError(f"secrets {key[1]!r} not found")
            if self.interfere == key:  # someone changes it between our read and our write
                obj = json.loads(json.dumps(self.objects[key]))
                self.objects[key]["metadata"]["resourceVersion"] = "2"
                return json.dumps(obj)
            return json.dumps(self.objects[key])
        if args[:2] == ["replace", "-f"]:
            new = json.loads(stdin)
            key = (new["metadata"]["namespace"], new["metadata"]["name"])
            if key not in self.objects:
                raise RuntimeError("not found")
            if new["metadata"]["resourceVersion"] != self.objects[key]["metadata"]["resourceVersion"]:
                raise RuntimeError("Operation cannot be fulfilled: the object has been modified")
            new["metadata"]["resourceVersion"] = str(int(new["metadata"]["resourceVersion"]) + 1)
            self.objects[key] = new
            return ""
        if args[0] == "delete":
            return ""
        raise AssertionError(f"unexpected kubectl {args}")

    def token(self, key):
        data = self.objects[key]["data"]
        values = {base64.b64decode(v).decode() for v in data.values()}
        assert set(data) == {"token", "auth_token"} and len(values) == 1
        return values.pop()


@pytest.mark.parametrize("team, own, copy", [
    (RayTeam(None), ("ray", "ray-auth-token"), ("jupyterhub", "ray-auth-token")),
    (RayTeam("alpha"), ("ray-alpha", "ray-auth-token"), ("jupyterhub", "ray-auth-token-alpha")),
])
def test_rotation_replaces_both_copies_in_place_and_restarts_the_ray_pods(team, own, copy):
    cluster = FakeCluster({own: "old-token", copy: "old-token"})
    done = rot.rotate(team, cluster)
    new = cluster.token(own)
    assert new != "old-token" and len(new) >= 32 and cluster.token(copy) == new
    verbs = [c[0][0] for c in cluster.calls]
    assert "delete" in verbs and verbs.count("replace") == 2
    # Never deleted, never created: no moment in which the Secret is missing.
    assert not [c for c in cluster.calls if c[0][0] in ("create", "apply") or c[0][:2] == ["delete", "secret"]]
    (restart,) = [c[0] for c in cluster.calls if c[0][0] == "delete"]
    assert restart[:3] == ["delete", "pod", "-n"] and restart[3] == team.namespace and "ray.io/cluster=ray" in restart
    # The token is only ever on stdin: not in an argument, not in what the tool prints.
    assert all(new not in " ".join(args) for args, _ in cluster.calls)
    assert all(new not in line for line in done)


def test_a_concurrent_change_makes_rotation_fail_instead_of_overwriting():
    own, copy = ("ray", "ray-auth-token"), ("jupyterhub", "ray-auth-token")
    cluster = FakeCluster({own: "t", copy: "t"})
    cluster.interfere = copy
    with pytest.raises(RuntimeError, match="modified"):
        rot.rotate(RayTeam(None), cluster)


def test_a_missing_secret_is_an_error_not_a_create():
    cluster = FakeCluster({("ray", "ray-auth-token"): "t"})
    with pytest.raises(RuntimeError, match="not found"):
        rot.rotate(RayTeam(None), cluster)
    assert [c for c in cluster.calls if c[0][0] == "replace"] == []


def test_cli_refuses_a_bad_team_name(capsys):
    assert rot.main(["--team", "Not_A_Team"]) == 1
    assert "ray team name" in capsys.readouterr().err
