"""Rotate a RayCluster's auth token in place: ``make rotate-ray-token [TEAM=<team>]``.

Runs with the operator's own kubectl context (a cluster admin). For the shared cluster (or one team's):

1. reads the token Secret in the RayCluster's namespace and its copy in the notebook namespace; both must exist
   (the bootstrap Job made them on the first deploy);
2. writes one new random token into both with ``kubectl replace``, each carrying the ``resourceVersion`` it read:
   the Secrets are never deleted, so there is no moment in which someone else could create one with a token of
   their choosing, and a concurrent change makes the replace fail instead of being overwritten;
3. restarts the Ray pods (KubeRay recreates them; they read the token at start). Running jobs are lost: rotate
   between jobs. Notebooks read the token from a mounted file, which the kubelet refreshes within about a minute;
   a kernel started before that may need a restart.

The token travels from this process to kubectl on stdin only: never an argument, a file or a log line.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import subprocess
import sys
from typing import Any, Callable, Sequence

from charts import raycluster as rc
from charts.ray_teams import RayTeam

Kubectl = Callable[[Sequence[str], str | None], str]


def kubectl(args: Sequence[str], stdin: str | None = None) -> str:
    result = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:4])}...: {result.stderr.strip()}")
    return result.stdout


def targets(team: RayTeam) -> list[tuple[str, str]]:
    """(namespace, Secret name) of the token: the RayCluster's own first, then the notebooks' copy."""
    return [(team.namespace, team.token_secret), (rc.NOTEBOOK_NAMESPACE, team.notebook_token_secret)]


def rotate(team: RayTeam, run: Kubectl = kubectl, *, restart: bool = True) -> list[str]:
    """Replace the token everywhere; returns what was done (names only)."""
    current: list[dict[str, Any]] = []
    for ns, name in targets(team):
        obj = json.loads(run(["get", "secret", name, "-n", ns, "-o", "json"], None))
        if not obj.get("metadata", {}).get("resourceVersion"):
            raise RuntimeError(f"secret {ns}/{name} came back without a resourceVersion")
        current.append(obj)
    token = secrets.token_urlsafe(32)
    encoded = base64.b64encode(token.encode()).decode()
    done = []
    for obj in current:
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        replacement = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": obj.get("type", "Opaque"),
            # name, namespace, labels and the resourceVersion read above (optimistic concurrency)
            "metadata": {k: v for k, v in obj["metadata"].items()
                         if k in ("name", "namespace", "labels", "annotations", "resourceVersion")},
            "data": {key: encoded for key in (rc.TOKEN_KEY, rc.KUBERAY_TOKEN_KEY)},
        }
        run(["replace", "-f", "-"], json.dumps(replacement))
        done.append(f"replaced secret {ns}/{name}")
    if restart:
        run(["delete", "pod", "-n", team.namespace, "-l", f"ray.io/cluster={rc.CLUSTER_NAME}", "--wait=false"], None)
        done.append(f"restarting the Ray pods of {team.namespace}/{rc.CLUSTER_NAME}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.rotate_ray_token", description=__doc__.splitlines()[0])
    parser.add_argument("--team", default="", help="the team whose cluster to rotate (default: the shared cluster)")
    parser.add_argument("--no-restart", action="store_true", help="replace the Secrets, leave the pods running")
    args = parser.parse_args(argv)
    try:
        team = RayTeam(args.team or None)
        for line in rotate(team, restart=not args.no_restart):
            print(line)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
