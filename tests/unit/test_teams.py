"""Teams (issue #16): two teams configured give two isolated RayClusters, tokens, checkpoint prefixes and
policies, and the boot model and the cost estimate count both. The variant configuration has teams alpha and beta;
the default has none (one shared cluster in `ray`)."""

from __future__ import annotations

import pytest

import config as config_mod
from charts.ray_teams import TEAM_LABEL, RayTeam, ray_teams
from app import stage_estimate
from cost.estimate import render
from tests.conftest import VARIANT_OVERRIDES
from tools.boot import netpol
from tools.boot.model import BootModel

TEAMS = tuple(VARIANT_OVERRIDES["platform.ray.teams"])
NOTEBOOK = {"component": "singleuser-server", "app": "jupyterhub"}


def _objects(platform, kind):
    return [o for o in platform.assembly.kube_objects() if o["kind"] == kind]


def test_the_variant_has_two_teams():
    assert len(TEAMS) == 2


def test_default_is_one_shared_cluster_in_ray(platform):
    (rc,) = _objects(platform, "RayCluster")
    assert rc["metadata"]["namespace"] == "ray"


def test_each_team_has_its_own_cluster_namespace_and_token(variant):
    clusters = {o["metadata"]["namespace"]: o for o in _objects(variant, "RayCluster")}
    assert set(clusters) == {f"ray-{t}" for t in TEAMS}
    for team in ray_teams(TEAMS):
        rc = clusters[team.namespace]
        assert rc["spec"]["authOptions"] == {"mode": "token", "secretName": team.token_secret}
        (job,) = [o for o in _objects(variant, "Job")
                  if o["metadata"]["namespace"] == team.namespace and "token" in o["metadata"]["name"]]
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["DF_TARGETS"] == f"{team.namespace}/{team.token_secret},jupyterhub/{team.notebook_token_secret}"
        for group in [rc["spec"]["headGroupSpec"]] + rc["spec"]["workerGroupSpecs"]:
            for c in group["template"]["spec"]["containers"]:
                uri = {e["name"]: e.get("value") for e in c["env"]}["DF_CHECKPOINT_URI"]
                assert f"/{team.namespace}/checkpoints" in uri, (team.name, c["name"])
    # Two different copies in the notebook namespace: one team's notebooks never get the other's token.
    assert len({t.notebook_token_secret for t in ray_teams(TEAMS)}) == len(TEAMS)


def test_every_team_namespace_gets_the_ray_role_through_pod_identity(variant):
    associations = [r["Properties"] for _, _, r in variant.assembly.resources("AWS::EKS::PodIdentityAssociation")
                    if r["Properties"].get("ServiceAccount") == "ray"]
    assert sorted(a["Namespace"] for a in associations) == sorted(f"ray-{t}" for t in TEAMS)
    assert len({str(a["RoleArn"]) for a in associations}) == 1  # one role, the prefix comes from the session tag


def _policies(platform):
    return _objects(platform, "NetworkPolicy") + [netpol.cilium_policy(o) for o in _objects(platform, "CiliumNetworkPolicy")]


@pytest.mark.parametrize("port", [8265, 10001])
def test_a_notebook_reaches_its_own_teams_head_only(variant, port):
    policies = _policies(variant)
    teams = ray_teams(TEAMS)
    for team in teams:
        head = netpol.Endpoint.pod(team.namespace, {"ray.io/cluster": "ray", "ray.io/node-type": "head"})
        for member_of in teams:
            notebook = netpol.Endpoint.pod("jupyterhub", {**NOTEBOOK, **member_of.notebook_label})
            ok, why = netpol.flow_allowed(policies, notebook, head, port)
            assert ok == (member_of == team), (member_of.name, team.name, why)
        # A notebook without a team label (a user in no team) reaches no team's head.
        assert not netpol.flow_allowed(policies, netpol.Endpoint.pod("jupyterhub", NOTEBOOK), head, port)[0]


def test_one_teams_ray_pods_cannot_reach_the_other_teams(variant):
    policies = _policies(variant)
    a, b = ray_teams(TEAMS)
    worker_a = netpol.Endpoint.pod(a.namespace, {"ray.io/cluster": "ray", "ray.io/node-type": "worker"})
    head_b = netpol.Endpoint.pod(b.namespace, {"ray.io/cluster": "ray", "ray.io/node-type": "head"})
    for port in (6379, 8265, 10001):
        assert not netpol.flow_allowed(policies, worker_a, head_b, port)[0]


def test_the_boot_model_places_and_networks_both_teams(variant):
    verdicts = BootModel(variant.outdir).run()
    heads = [v for v in verdicts if v.check == "schedulable" and "head" in v.subject and v.subject.startswith("ray-")]
    assert sorted({v.subject.split("/")[0] for v in heads}) == sorted(f"ray-{t}" for t in TEAMS), heads
    assert all(v.ok for v in heads)


def test_the_cost_estimate_counts_every_teams_head(variant):
    est = stage_estimate(variant.outdir, variant.config.cost.price_region)
    text = render(est)
    assert text.count("Ray head") >= len(TEAMS), text


@pytest.mark.parametrize("teams, message", [
    (["Alpha"], "not valid team names"),
    (["a" * 21], "not valid team names"),
    (["alpha", "alpha"], "more than once"),
    (["-x"], "not valid team names"),
])
def test_bad_team_names_are_refused_at_synth(teams, message):
    with pytest.raises(config_mod.ConfigError, match=message) as err:
        config_mod.build_config({}, {"platform.ray.teams": teams})
    assert "ray.teams" in str(err.value)


def test_team_naming_contract():
    assert RayTeam(None).namespace == "ray" and RayTeam(None).notebook_label == {}
    alpha = RayTeam("alpha")
    assert (alpha.namespace, alpha.notebook_token_secret, alpha.notebook_label) == (
        "ray-alpha", "ray-auth-token-alpha", {TEAM_LABEL: "alpha"})
    assert alpha.dashboard_url == "http://ray-head-svc.ray-alpha.svc.cluster.local:8265"
