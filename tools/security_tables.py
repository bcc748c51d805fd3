"""Who can reach what: SECURITY.md's reach tables, computed from the synthesized platform (issue #16).

* :func:`notebook_reach` and :func:`ray_job_reach`: the network flows of a notebook pod and of a Ray pod (where a
  job's code runs) to everything a user might aim at, judged by the first-boot model's policy evaluator over the
  platform's NetworkPolicies, CiliumNetworkPolicies and the z2jh policies (tools/boot/netpol.py), and what each
  holds in credentials (Kubernetes token, AWS role, Ray token) read from the pod specs and templates.
* :func:`runner_reach` and :func:`pipeline_reach`: the validation runner's and the delivery pipeline's AWS,
  Kubernetes and network reach, from the templates.

``tests/policy/test_security_tables.py`` checks that SECURITY.md holds exactly what these compute (and rewrites it
with ``DF_UPDATE_SECURITY_MD=1``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from cdk_constructs import validation_runner as vr
from charts.ray_teams import RayTeam
from tools.boot import netpol
from tools.boot.model import BootModel
from tools.boot.workloads import SINGLEUSER_LABELS, Workload
from tools.render import MANIFEST_TYPE, join

CLUSTER = "dynamic-factory"
Template = Mapping[str, Any]


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]



@dataclass(frozen=True)
class Row:
    kind: str  # "AWS API", "Kubernetes", "network", "started by", "key"
    what: str  # actions / verbs+resources / ports
    where: str  # resources / namespace / peers
    evidence: str  # template logical id or RBAC object


def reach_table(rows: Iterable[Row], title: str) -> str:
    """Markdown table of reach rows (logical ids without CDK's hash suffix, so the table survives unrelated edits)."""
    lines = [f"### {title}", "", "| kind | what | where | evidence |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.kind} | {r.what} | {r.where} | {_unhashed(r.evidence)} |".replace("\n", " ") for r in rows]
    return "\n".join(lines) + "\n"


def _unhashed(text: str) -> str:
    return re.sub(r"\b([A-Za-z][A-Za-z0-9]*?)[0-9A-F]{8}\b", r"\1", text)


def _resources(templates: Mapping[str, Template], type_: str) -> Iterable[tuple[str, str, dict]]:
    for stack, template in templates.items():
        for logical_id, res in template.get("Resources", {}).items():
            if res["Type"] == type_:
                yield stack, logical_id, res


def _ref_id(value: Any) -> str | None:
    """The logical id a Ref / GetAtt points at."""
    if isinstance(value, dict) and "Ref" in value:
        return value["Ref"]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return value["Fn::GetAtt"][0]
    return None


def _conditions(statement: dict) -> str:
    cond = statement.get("Condition")
    if not cond:
        return ""
    parts = []
    for op, keys in cond.items():
        shown = ", ".join(f"{k}={'|'.join(join(x) for x in as_list(v))}" for k, v in list(keys.items())[:3])
        more = f" (+{len(keys) - 3} more keys)" if len(keys) > 3 else ""
        parts.append(f"{op}: {shown}{more}")
    return " if " + "; ".join(parts)


def _role_statements(templates: Mapping[str, Template], role_id: str) -> list[tuple[str, dict]]:
    """(policy logical id, Allow statement) of every policy attached to the role (same stack)."""
    found = []
    for _, logical_id, res in _resources(templates, "AWS::IAM::Policy"):
        if role_id in [_ref_id(r) for r in res["Properties"].get("Roles", [])]:
            for statement in as_list(res["Properties"]["PolicyDocument"]["Statement"]):
                if statement.get("Effect", "Allow") == "Allow":
                    found.append((logical_id, statement))
    return found


def _kube_objects(templates: Mapping[str, Template]) -> list[dict]:
    return [obj for _, _, res in _resources(templates, MANIFEST_TYPE) for obj in json.loads(join(res["Properties"]["Manifest"]))]


def _rbac_rows(objects: list[dict], groups: set[str]) -> list[Row]:
    """Rules of every (Cluster)Role bound to one of ``groups`` (plus system:authenticated, which every
    authenticated identity has)."""
    subjects = groups | {"system:authenticated"}
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    rows = []
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        bound = [s["name"] for s in binding.get("subjects", []) if s.get("kind") == "Group" and s["name"] in subjects]
        if not bound:
            continue
        ns = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"]))
        evidence = f"{binding['kind']} {ns + '/' if ns else ''}{binding['metadata']['name']} -> {ref['kind']} {ref['name']}"
        if role is None:  # a built-in ClusterRole: not in our manifests
            rows.append(Row("Kubernetes", f"built-in {ref['kind']} {ref['name']}", ns or "cluster-wide", evidence))
            continue
        for rule in role["rules"]:
            names = f" named {', '.join(rule['resourceNames'])}" if rule.get("resourceNames") else ""
            what = f"{'/'.join(rule['verbs'])} {', '.join(rule['resources'])}{names}"
            rows.append(Row("Kubernetes", what, f"namespace {ns}" if ns else "cluster-wide", evidence))
    return rows


def runner_reach(templates: Mapping[str, Template], cluster_name: str = CLUSTER) -> list[Row]:
    """What the validation runner can reach and do, computed from one stage's templates (and their manifests).

    AWS: every Allow statement on the runner project's service role. Kubernetes: its access entry's groups and
    the RBAC rules bound to them (plus anything bound to system:authenticated in our manifests). Network: its
    security group's egress and the ingress rules that name it as source. Who can start it: the invoker's trust
    and its StartBuild conditions. Key: the project's encryption key and its policy's principals.
    """
    projects = [(s, lid, r) for s, lid, r in _resources(templates, "AWS::CodeBuild::Project")
                if r["Properties"].get("Name") == vr.project_name(cluster_name)]
    (stack, project_id, project), = projects
    props = project["Properties"]
    role_id = _ref_id(props["ServiceRole"])
    rows = [Row("AWS API", ", ".join(as_list(s["Action"])) + _conditions(s), ", ".join(join(r) for r in as_list(s["Resource"])),
                f"{stack}/{pid} (role {role_id})") for pid, s in _role_statements(templates, role_id)]

    groups: set[str] = set()
    for _, entry_id, entry in _resources(templates, "AWS::EKS::AccessEntry"):
        if _ref_id(entry["Properties"]["PrincipalArn"]) == role_id:
            groups |= set(entry["Properties"].get("KubernetesGroups", []))
            for policy in entry["Properties"].get("AccessPolicies", []):
                rows.append(Row("Kubernetes", f"EKS access policy {join(policy['PolicyArn'])}",
                                json.dumps(policy.get("AccessScope")), f"{stack}/{entry_id}"))
            rows.append(Row("Kubernetes", f"authenticates as groups {', '.join(sorted(groups))}", "the cluster API",
                            f"{stack}/{entry_id}"))
    rows += _rbac_rows(_kube_objects(templates), groups)

    for sg in props.get("VpcConfig", {}).get("SecurityGroupIds", []):
        sg_id = _ref_id(sg)
        group = templates[stack]["Resources"][sg_id]["Properties"]
        for egress in group.get("SecurityGroupEgress", []):
            port = "all ports" if egress.get("IpProtocol") == "-1" else f"{egress['IpProtocol']} {egress.get('FromPort')}-{egress.get('ToPort')}"
            rows.append(Row("network", f"egress {port}", egress.get("CidrIp", join(egress.get("DestinationSecurityGroupId"))),
                            f"{stack}/{sg_id}"))
        for s, ing_id, ingress in _resources(templates, "AWS::EC2::SecurityGroupIngress"):
            if _ref_id(ingress["Properties"].get("SourceSecurityGroupId")) == sg_id:
                p = ingress["Properties"]
                rows.append(Row("network", f"{p['IpProtocol']} {p['FromPort']}-{p['ToPort']}", f"into {join(p['GroupId'])}",
                                f"{s}/{ing_id}"))

    for s, invoker_id, invoker in _resources(templates, "AWS::IAM::Role"):
        if not str(invoker["Properties"].get("RoleName", "")).endswith("-invoker"):
            continue
        for trust in invoker["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
            principal = ", ".join(join(p) for p in as_list(trust["Principal"].get("AWS", [])))
            starts = [st for _, st in _role_statements(templates, invoker_id) if "codebuild:StartBuild" in as_list(st["Action"])]
            overrides = sorted(k for st in starts for k, v in st.get("Condition", {}).get("Null", {}).items() if v == "true")
            rows.append(Row("started by", f"{principal} through {invoker['Properties']['RoleName']}",
                            f"StartBuild only without overrides ({len(overrides)} request keys must be absent)",
                            f"{s}/{invoker_id}"))

    key_id = _ref_id(props.get("EncryptionKey"))
    if key_id is None and props.get("EncryptionKey"):  # another stack's key: the platform's logs key
        rows.append(Row("key", "encrypts its artifacts and logs with the platform's logs key (the cluster stack's, "
                        "not the Kubernetes secrets key)", _unhashed(join(props["EncryptionKey"])), f"{stack}/{project_id}"))
    if key_id and key_id in templates[stack]["Resources"]:
        key = templates[stack]["Resources"][key_id]["Properties"]
        for statement in key["KeyPolicy"]["Statement"]:
            principal = ", ".join(join(v) for p in as_list(statement["Principal"]) for v in as_list(p if isinstance(p, str) else list(p.values())[0]))
            rows.append(Row("key", ", ".join(as_list(statement["Action"])) + _conditions(statement), principal,
                            f"{stack}/{key_id} (rotation {key.get('EnableKeyRotation')})"))
    return rows


def pipeline_reach(template: Template) -> list[Row]:
    """Every role of the pipeline stack: who assumes it and every Allow statement on it."""
    templates = {"Pipeline": template}
    rows = []
    for _, role_id, role in _resources(templates, "AWS::IAM::Role"):
        trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        who = "; ".join(", ".join(join(v) for v in as_list(list(t["Principal"].values())[0])) for t in trust)
        name = role["Properties"].get("RoleName")
        rows.append(Row("role", f"assumed by {who}", f"named {join(name)}" if name else "generated name", f"Pipeline/{role_id}"))
        for pid, statement in _role_statements(templates, role_id):
            rows.append(Row("AWS API", ", ".join(as_list(statement["Action"])) + _conditions(statement),
                            ", ".join(join(r) for r in as_list(statement["Resource"])), f"Pipeline/{pid} (role {role_id})"))
    return rows




# ============================================================================ pods: notebooks and Ray jobs

HEAD = {"ray.io/cluster": "ray", "ray.io/node-type": "head"}
WORKER = {"ray.io/cluster": "ray", "ray.io/node-type": "worker"}


@dataclass(frozen=True)
class Target:
    what: str
    port: int
    protocol: str = "TCP"


def _targets(model: BootModel, own: RayTeam, other: RayTeam | None) -> list[tuple[Target, netpol.Endpoint | None]]:
    """Everything a notebook user or a job might aim at, as endpoints of the synthesized platform."""
    def pod(ns: str | None, labels: Mapping[str, str]) -> netpol.Endpoint | None:
        w = model._find(ns, labels)
        return netpol.Endpoint.pod(w.namespace, w.labels) if w else None

    rows: list[tuple[Target, netpol.Endpoint | None]] = [
        (Target("their Ray head: Jobs API and dashboard", 8265), pod(own.namespace, HEAD)),
        (Target("their Ray head: Ray Client", 10001), pod(own.namespace, HEAD)),
        (Target("their Ray head: GCS", 6379), pod(own.namespace, HEAD)),
        (Target("their Ray workers (object manager, worker ports)", 10002), pod(own.namespace, WORKER)),
    ]
    if other is not None:
        rows.append((Target("another team's Ray head: Jobs API", 8265), pod(other.namespace, HEAD)))
    rows += [
        (Target("the hub's API", 8081), pod("jupyterhub", {"component": "hub"})),
        (Target("the proxy (the hub's web entry)", 8000), pod("jupyterhub", {"component": "proxy"})),
        (Target("another user's notebook server", 8888), pod("jupyterhub", {"component": SINGLEUSER_LABELS["component"]})),
        (Target("the KubeRay operator", 8080), pod("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"})),
        (Target("Hubble relay (every flow of the cluster)", 4245), pod("kube-system", {"k8s-app": "hubble-relay"})),
        (Target("Prometheus (every metric of the cluster)", 9090), pod("monitoring", {"app.kubernetes.io/name": "prometheus"})),
        (Target("Grafana", 3000), pod("monitoring", {"app.kubernetes.io/name": "grafana"})),
        (Target("DNS (CoreDNS)", 53, "UDP"), pod("kube-system", {"k8s-app": "kube-dns"})),
        (Target("the Kubernetes API", 443), netpol.Endpoint(entity="kube-apiserver")),
        (Target("the EKS Pod Identity agent on the node", 80), netpol.Endpoint(entity="host")),
        (Target("the instance metadata service (IMDS)", 80), netpol.Endpoint.world(address="169.254.169.254")),
        (Target("a VPC address outside the cluster (e.g. a database)", 5432), netpol.Endpoint.world(address="10.0.200.10")),
        (Target("S3 (checkpoints)", 443), netpol.Endpoint.world("s3.amazonaws.com")),
        (Target("PyPI (pip installs)", 443), netpol.Endpoint.world("files.pythonhosted.org")),
        (Target("any other internet address", 443), netpol.Endpoint.world("example.org")),
    ]
    return rows


def _verdict(policies, src: netpol.Endpoint, dst: netpol.Endpoint | None, target: Target) -> str:
    if dst is None:
        return "—"
    ok, _ = netpol.flow_allowed(policies, src, dst, target.port, target.protocol)
    return "yes" if ok else "no"


def _teams(model: BootModel) -> list[RayTeam]:
    namespaces = sorted({w.namespace for w in model.workloads if w.labels.get("ray.io/node-type") == "head"})
    return [RayTeam(None) if ns == RayTeam(None).namespace else RayTeam(ns.removeprefix("ray-")) for ns in namespaces]


def _source(model: BootModel, kind: str, team: RayTeam) -> netpol.Endpoint:
    if kind == "notebook":
        w = model._find(None, {"component": SINGLEUSER_LABELS["component"]})
        return netpol.Endpoint.pod(w.namespace, {**w.labels, **team.notebook_label})
    w = model._find(team.namespace, WORKER)
    return netpol.Endpoint.pod(w.namespace, w.labels)


def _network_rows(kind: str, shared: BootModel, teams: BootModel) -> list[tuple[str, str, str, str]]:
    """(target, port, shared platform, with teams) for ``kind`` ``notebook`` or ``ray``."""
    out = []
    team_list = _teams(teams)
    own_t, other_t = team_list[0], (team_list[1] if len(team_list) > 1 else None)
    own_s = _teams(shared)[0]
    shared_targets = dict((t, e) for t, e in _targets(shared, own_s, None))
    policies_s, policies_t = shared.network_policies(), teams.network_policies()
    src_s, src_t = _source(shared, kind, own_s), _source(teams, kind, own_t)
    for target, endpoint in _targets(teams, own_t, other_t):
        in_shared = _verdict(policies_s, src_s, shared_targets.get(target), target) if target in shared_targets else "—"
        port = f"{target.protocol} {target.port}"
        out.append((target.what, port, in_shared, _verdict(policies_t, src_t, endpoint, target)))
    return out


def _network_table(kind: str, shared: BootModel, teams: BootModel) -> str:
    source = "a notebook pod" if kind == "notebook" else "a Ray worker pod (a job's code)"
    lines = [f"| from {source} to | port | default | teams + domain |", "| --- | --- | --- | --- |"]
    lines += [f"| {what} | {port} | {a} | {b} |" for what, port, a, b in _network_rows(kind, shared, teams)]
    if kind == "ray":
        lines += ["", _head_differences(shared)]
    return "\n".join(lines) + "\n"


def _head_differences(model: BootModel) -> str:
    """Where the head pod (a job's driver runs there) differs from a worker, as a sentence."""
    team = _teams(model)[0]
    policies = model.network_policies()
    worker, head = _source(model, "ray", team), netpol.Endpoint.pod(team.namespace, model._find(team.namespace, HEAD).labels)
    diffs = [f"{t.what} ({t.protocol} {t.port}): {_verdict(policies, head, e, t)}"
             for t, e in _targets(model, team, None)
             if e is not None and e != head and _verdict(policies, head, e, t) != _verdict(policies, worker, e, t)]
    return ("The head pod, where a job's driver runs, reaches the same, except: " + "; ".join(diffs) + "."
            if diffs else "The head pod, where a job's driver runs, reaches the same.")


def _credential_rows(model: BootModel, templates: Mapping[str, Template]) -> list[tuple[str, str, str, str]]:
    """(pod, Kubernetes token, AWS, Ray token) for the notebook and the Ray pods of the first cluster."""
    team = _teams(model)[0]

    def k8s_token(w: Workload | None, containers: str = "") -> str:
        if w is None:
            return "—"
        spec = w.pod_spec
        mounted = spec.get("automountServiceAccountToken", True) is not False
        return "mounted" if mounted else ("none" + containers)

    def aws(w: Workload | None) -> str:
        if w is None or (w.namespace, w.service_account) not in model.associations:
            return "none (no Pod Identity association; IMDS unreachable)"
        return _ray_role_actions(templates)

    su = model._find(None, {"component": SINGLEUSER_LABELS["component"]})
    head, worker = model._find(team.namespace, HEAD), model._find(team.namespace, WORKER)
    ray_token = f"its team's, as a file ({team.notebook_token_secret if not team.shared else 'ray-auth-token'})"
    return [
        ("notebook", k8s_token(su), aws(su), ray_token),
        ("Ray head", k8s_token(head, " in the Ray container (the autoscaler container alone has one)"), aws(head),
         "its cluster's (KubeRay injects it)"),
        ("Ray worker", k8s_token(worker), aws(worker), "its cluster's (KubeRay injects it)"),
    ]


def _ray_role_actions(templates: Mapping[str, Template]) -> str:
    """The Ray pods' AWS actions (the checkpoint role's Allow statements), compactly."""
    parts = []
    for _, logical_id, res in _resources(templates, "AWS::IAM::Policy"):
        if "StoragePodIdentity" not in logical_id:
            continue
        for st in as_list(res["Properties"]["PolicyDocument"]["Statement"]):
            if st.get("Effect", "Allow") != "Allow":
                continue
            resources = ", ".join("its namespace's prefix of the checkpoint bucket"
                                  if "PrincipalTag/kubernetes-namespace" in join(r) else "the checkpoint bucket"
                                  for r in as_list(st["Resource"]))
            parts.append(f"{', '.join(as_list(st['Action']))} on {resources}")
    return "; ".join(parts) + " (no delete)"


def pod_tables(shared: BootModel, teams: BootModel, shared_templates: Mapping[str, Template]) -> str:
    """SECURITY.md's tables of a notebook user's and a Ray job's reach."""
    creds = ["| pod | Kubernetes API token | AWS | Ray token |", "| --- | --- | --- | --- |"]
    creds += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _credential_rows(shared, shared_templates)]
    return "\n".join([
        "### A notebook user's reach", "", _network_table("notebook", shared, teams),
        "### A Ray job's reach", "", _network_table("ray", shared, teams),
        "### What each pod holds", "", "\n".join(creds) + "\n",
    ])


# ============================================================================ SECURITY.md

BEGIN, END = "<!-- reach-tables:begin (generated by tests/policy/test_security_tables.py) -->", "<!-- reach-tables:end -->"


def security_block(shared: BootModel, teams: BootModel, shared_templates: Mapping[str, Template],
                   stage_templates: Mapping[str, Template], pipeline_template: Template) -> str:
    """The generated part of SECURITY.md, between its markers."""
    return "\n".join([
        BEGIN, "",
        pod_tables(shared, teams, shared_templates),
        reach_table(_runner_rows(stage_templates), "The validation runner's reach"),
        reach_table(pipeline_reach(pipeline_template), "The delivery pipeline's reach"),
        END,
    ])


def _runner_rows(stage_templates: Mapping[str, Template]) -> list[Row]:
    return runner_reach(stage_templates)


def replace_block(text: str, block: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + block + text[end:]
