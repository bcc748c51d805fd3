"""Ray tenancy: who shares which RayCluster (issue #16).

By default every hub user shares one RayCluster in namespace ``ray``: one trust domain (SECURITY.md says so).
With teams configured (``ray.teams``), each team gets its own namespace ``ray-<team>`` holding its own
RayCluster (workers from zero), its own Ray token and its own checkpoint prefix; a notebook reaches only the
cluster of a team its user belongs to (JupyterHub group of the same name).

This module is the naming contract between the Ray charts, the hub's values, the network policies, the IAM
of the checkpoint bucket and the tests: everything that needs a team's namespace, address or token Secret
asks a :class:`RayTeam` for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from charts import raycluster as rc

# A team name is a JupyterHub group name and part of a namespace (ray-<team>): a short DNS label.
TEAM_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$")
TEAM_NAME_RULE = "a lowercase DNS label of at most 20 characters (a-z, 0-9, '-'), starting with a letter"
# The label the hub puts on a notebook pod of a team; a team namespace admits notebook pods carrying its team's
# value only. Users cannot set labels on their own pods (the spawner does).
TEAM_LABEL = "dynamic-factory.io/ray-team"
# In the notebook namespace, the shared cluster's token copy keeps its historical name.
NOTEBOOK_TOKEN_SECRET_PREFIX = rc.TOKEN_SECRET


@dataclass(frozen=True)
class RayTeam:
    """One RayCluster and who may use it.

    ``name``: the team (also the JupyterHub group whose members reach it); ``None`` for the shared cluster of
    the default, team-less platform.
    """

    name: str | None

    def __post_init__(self) -> None:
        if self.name is not None and not TEAM_NAME_RE.match(self.name):
            raise ValueError(f"ray team name {self.name!r} must be {TEAM_NAME_RULE}")

    @property
    def shared(self) -> bool:
        return self.name is None

    @property
    def namespace(self) -> str:
        return rc.NAMESPACE if self.name is None else f"{rc.NAMESPACE}-{self.name}"

    @property
    def head_service(self) -> str:
        return rc.HEAD_SERVICE

    @property
    def dashboard_url(self) -> str:
        return f"http://{rc.HEAD_SERVICE}.{self.namespace}.svc.cluster.local:{rc.DASHBOARD_PORT}"

    @property
    def token_secret(self) -> str:
        """The token Secret's name in the team's own namespace (KubeRay's authOptions.secretName)."""
        return rc.TOKEN_SECRET

    @property
    def notebook_token_secret(self) -> str:
        """The name of the team's token copy in the notebook namespace."""
        return NOTEBOOK_TOKEN_SECRET_PREFIX if self.name is None else f"{NOTEBOOK_TOKEN_SECRET_PREFIX}-{self.name}"

    @property
    def checkpoint_prefix(self) -> str:
        """The key prefix of the team's checkpoints in the bucket: its namespace, which the Ray pods' AWS role
        may write under only (IAM condition on the Pod Identity session tag ``kubernetes-namespace``)."""
        return f"{self.namespace}/{rc.CHECKPOINT_PREFIX}"

    @property
    def notebook_label(self) -> dict[str, str]:
        """Labels a notebook pod of this team carries (none for the shared cluster: every notebook may reach it)."""
        return {} if self.name is None else {TEAM_LABEL: self.name}


def ray_teams(names: tuple[str, ...] | list[str] = ()) -> tuple[RayTeam, ...]:
    """The RayClusters of a platform: the shared one when ``names`` is empty, else one per team."""
    if not names:
        return (RayTeam(None),)
    duplicates = sorted({n for n in names if list(names).count(n) > 1})
    if duplicates:
        raise ValueError(f"ray teams {duplicates} are listed more than once")
    return tuple(RayTeam(n) for n in names)
