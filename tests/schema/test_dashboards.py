"""Grafana dashboards: every query parses as PromQL and names only metrics the scraped components really expose.

For every dashboard of ``charts.dashboards.all_dashboards`` (Ray, Karpenter, Cilium/Hubble, the factory):

* the JSON round-trips and has a uid and a title;
* every target ``expr`` (panels, rows' nested panels) and every query variable parses with ``promql-parser`` (the
  Rust PromQL parser), after Grafana's variables are replaced by valid values (:func:`substitute`);
* every metric name found by walking the AST is in a reviewed list (``dashboards/metrics/<component>.yaml``) or, for
  an upstream dashboard, a reviewed gap (``dashboards/metrics/upstream_gaps.yaml``); every gap is still needed.

Also: the committed Ray dashboards equal a fresh generation by ``tools/ray_dashboards.py``; the factory dashboard
has its panels, and its cost query, evaluated over a few fake series by a small PromQL evaluator (:class:`Eval`),
prices them as the table says; the ConfigMaps are labelled for the Grafana sidecar and under the size limit; and the
checker itself fails on a query that does not parse and on an unknown metric name.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import promql_parser as pp
import pytest
import yaml

from charts import dashboards as dash
from charts import factory_dashboard as fd

REPO = Path(__file__).resolve().parents[2]
METRICS_DIR = REPO / "dashboards" / "metrics"
GAPS_FILE = METRICS_DIR / "upstream_gaps.yaml"

SAMPLE = dict(
    node_prices={"m7i.large": 0.1008, "m7i.xlarge": 0.2016, "g5.xlarge": 1.006},
    spot_discount=0.7,
    fixed_usd_per_hour=0.25,
    ray_namespaces=("ray", "ray-team-a"),
)


# ---------------------------------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------------------------------

def iter_panels(panels: list[Mapping[str, Any]] | None) -> Iterator[Mapping[str, Any]]:
    for panel in panels or []:
        yield panel
        yield from iter_panels(panel.get("panels"))


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', re.S)
_VAR = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
# Grafana's built-in variables: durations, or numbers for the *_s / *_ms forms.
_BUILTIN_NUMBER = re.compile(r"^__\w+_(s|ms)$")


def variable_samples(model: Mapping[str, Any]) -> dict[str, str]:
    """A value Grafana could give each template variable outside a string: an interval or custom variable's
    first option (or current value), a constant's value, and for query variables an identifier (``var_<name>``:
    valid where a label name is expected, e.g. ``by ($label)``)."""
    samples: dict[str, str] = {}
    for var in model.get("templating", {}).get("list", []):
        name, kind = var.get("name"), var.get("type")
        value = None
        if kind in ("interval", "custom", "constant", "textbox"):
            current = (var.get("current") or {}).get("value")
            if isinstance(current, list):
                current = current[0] if current else None
            if current and current != "$__all" and not str(current).startswith("$"):
                value = str(current)
            else:
                query = var.get("query")
                if isinstance(query, str) and query.strip():
                    value = query.split(",")[0].strip()
            if kind == "interval" and value and value.startswith("$__auto"):
                value = "5m"
        samples[name] = value or f"var_{name}"
    return samples


def substitute(expr: str, samples: Mapping[str, str]) -> str:
    """Replace Grafana variables (``$var``, ``${var}``, ``${var:fmt}``, ``[[var]]``, ``$__interval``...) with valid
    PromQL: inside a string literal by a plain word (any word is a valid label value and regex), outside by a
    duration / number for built-ins and the variable's sample value for template variables."""

    def outside(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name.startswith("__"):
            return "300" if _BUILTIN_NUMBER.match(name) else "5m"
        return samples.get(name, f"var_{name}")

    def inside(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return "5m" if name.startswith("__") else "placeholder"

    out, last = [], 0
    for string in _STRING.finditer(expr):
        out.append(_VAR.sub(outside, expr[last:string.start()]))
        out.append(_VAR.sub(inside, string.group(0)))
        last = string.end()
    out.append(_VAR.sub(outside, expr[last:]))
    return "".join(out)


_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*$", re.S)
_LABEL_VALUES_ONLY = re.compile(r"^\s*label_values\(\s*[A-Za-z_]\w*\s*\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.S)
_NO_METRIC = re.compile(r"^\s*(metrics|label_names)\(.*\)\s*$", re.S)


def variable_query(query: str) -> str | None:
    """The PromQL inside a Grafana Prometheus variable query, or None if it names no series."""
    if _LABEL_VALUES_ONLY.match(query) or _NO_METRIC.match(query):
        return None
    for pattern in (_LABEL_VALUES, _QUERY_RESULT):
        match = pattern.match(query)
        if match:
            return match.group(1)
    return query


def queries(model: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL as written) for every target and query variable of a dashboard."""
    for panel in iter_panels(model.get("panels")):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if isinstance(expr, str) and expr.strip():
                yield f"panel {panel.get('id')} {panel.get('title')!r} ref {target.get('refId')}", expr
    for var in model.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and query.strip():
            inner = variable_query(query)
            if inner is not None:
                yield f"variable {var.get('name')}", inner


def metric_names(ast: Any) -> set[str]:
    """Metric names the AST selects: a selector's name or an exact ``__name__`` matcher. A regex on ``__name__``
    is reported as ``__name__=~<regex>`` (it cannot be checked against a list)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, pp.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    exact = str(matcher.op).endswith("Equal") and not str(matcher.op).endswith("NotEqual")
                    names.add(matcher.value if exact else f"__name__{matcher.op}{matcher.value}")

    pp.walk(ast, visit)
    return names


def load_reviewed() -> dict[str, set[str]]:
    """{component: exposed names} from dashboards/metrics/*.yaml (histograms and summaries expanded)."""
    known: dict[str, set[str]] = {}
    for path in sorted(METRICS_DIR.glob("*.yaml")):
        if path == GAPS_FILE:
            continue
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        names = set(doc.get("metrics") or [])
        for base in doc.get("histograms") or []:
            names.update(f"{base}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        for base in doc.get("summaries") or []:
            names.update((base, f"{base}_sum", f"{base}_count"))
        known[doc["component"]] = names
    return known


def load_gaps() -> dict[tuple[str, str], str]:
    doc = yaml.safe_load(GAPS_FILE.read_text(encoding="utf-8"))
    return {(g["dashboard"], g["metric"]): g["why"] for g in doc["gaps"]}


def check_dashboard(name: str, model: Mapping[str, Any], known: set[str],
                    gaps: Mapping[tuple[str, str], str] = {}) -> tuple[list[str], set[str]]:
    """(problems, gaps used): a query that does not parse, or a metric neither known nor a reviewed gap."""
    problems: list[str] = []
    used: set[str] = set()
    samples = variable_samples(model)
    for where, expr in queries(model):
        text = substitute(expr, samples)
        try:
            ast = pp.parse(text)
        except Exception as error:  # promql-parser raises ValueError with the position
            problems.append(f"{name}: {where}: does not parse: {error}: {text!r}")
            continue
        for metric in sorted(metric_names(ast)):
            if metric in known:
                continue
            if (name, metric) in gaps:
                used.add(metric)
                continue
            problems.append(f"{name}: {where}: metric {metric!r} is in no reviewed list")
    return problems, used


# ---------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def factory() -> dict[str, Any]:
    return fd.factory_dashboard(**SAMPLE)


@pytest.fixture(scope="module")
def dashboards(factory: dict[str, Any]) -> list[dash.Dashboard]:
    return dash.all_dashboards(factory=factory)


@pytest.fixture(scope="module")
def known() -> set[str]:
    return set().union(*load_reviewed().values())


@pytest.fixture(scope="module")
def config_maps(factory: dict[str, Any]) -> list[dict[str, Any]]:
    return dash.dashboard_config_maps("monitoring", factory=factory)


# ---------------------------------------------------------------------------------------------------------------
# Every dashboard
# ---------------------------------------------------------------------------------------------------------------

def test_reviewed_lists_are_complete_documents() -> None:
    components = set()
    for path in sorted(METRICS_DIR.glob("*.yaml")):
        if path == GAPS_FILE:
            continue
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert {"component", "version", "sources", "metrics"} <= set(doc), path.name
        assert doc["sources"] and doc["metrics"], path.name
        names = list(doc["metrics"]) + list(doc.get("histograms") or []) + list(doc.get("summaries") or [])
        assert len(names) == len(set(names)), f"{path.name}: duplicates"
        assert all(re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", n) for n in names), path.name
        components.add(doc["component"])
    assert {"ray", "karpenter", "cilium", "hubble", "kube-state-metrics", "kubelet", "prometheus"} <= components


def test_every_dashboard_is_json_with_uid_and_title(dashboards: list[dash.Dashboard]) -> None:
    assert [d.name for d in dashboards][-1] == "dynamic-factory"
    for d in dashboards:
        text = json.dumps(d.model)
        assert json.loads(text) == d.model, d.name
        assert d.model.get("uid") and d.model.get("title"), d.name
        assert d.folder in dash.FOLDERS
        if d.source:
            raw = (dash.DASHBOARDS_DIR / d.source).read_text(encoding="utf-8")
            assert json.loads(raw) == d.model


@pytest.mark.parametrize("name", [n for n, _, _ in dash.UPSTREAM] + [dash.FACTORY_NAME])
def test_queries_parse_and_name_only_exposed_metrics(name: str, dashboards: list[dash.Dashboard],
                                                     known: set[str]) -> None:
    (d,) = [d for d in dashboards if d.name == name]
    gaps = load_gaps() if d.source else {}  # the factory dashboard gets no exceptions
    problems, _ = check_dashboard(name, d.model, known, gaps)
    assert not problems, "\n".join(problems)
    assert list(queries(d.model)), f"{name}: no query found"


def test_every_gap_is_reviewed_and_still_needed(dashboards: list[dash.Dashboard], known: set[str]) -> None:
    gaps = load_gaps()
    assert all(why.strip() for why in gaps.values())
    used: set[tuple[str, str]] = set()
    for d in dashboards:
        if d.source:
            _, names = check_dashboard(d.name, d.model, known, gaps)
            used |= {(d.name, m) for m in names}
    assert set(gaps) - used == set(), "gaps no dashboard needs any more (remove them)"
    assert not {m for _, m in gaps} & known, "a gap names a metric that a reviewed list has"


# ---------------------------------------------------------------------------------------------------------------
# The checker fails when it should
# ---------------------------------------------------------------------------------------------------------------

def _one_query(expr: str) -> dict[str, Any]:
    return {"uid": "t", "title": "t", "panels": [{"id": 1, "title": "p", "targets": [{"refId": "A", "expr": expr}]}]}


def test_checker_rejects_a_query_that_does_not_parse() -> None:
    problems, _ = check_dashboard("t", _one_query('sum(rate(up{job="a"}[$__rate_interval])'), {"up"})
    assert len(problems) == 1 and "does not parse" in problems[0]


def test_checker_rejects_an_unknown_metric() -> None:
    problems, _ = check_dashboard("t", _one_query("sum(up) + sum(node_boot_time_seconds)"), {"up"})
    assert len(problems) == 1 and "'node_boot_time_seconds'" in problems[0]


def test_checker_reads_rows_variables_and_grafana_syntax() -> None:
    model = {
        "uid": "t", "title": "t",
        "panels": [{"type": "row", "id": 1, "panels": [{"id": 2, "title": "nested", "targets": [
            {"refId": "A", "expr": 'sum by ($group) (rate(a_total{x=~"${x:regex}", y="[[y]]"}[$__rate_interval]))'
                                   ' / $__range_s'}]}]}],
        "templating": {"list": [
            {"name": "group", "type": "custom", "query": "pod,node"},
            {"name": "x", "type": "query", "query": {"query": "label_values(b{z=\"$group\"}, x)"}},
            {"name": "y", "type": "query", "query": "query_result(topk(3, c))"},
            {"name": "w", "type": "query", "query": "label_values(w)"},
        ]},
    }
    assert [w for w, _ in queries(model)] == ["panel 2 'nested' ref A", "variable x", "variable y"]
    problems, _ = check_dashboard("t", model, {"a_total", "b", "c"})
    assert problems == []
    problems, _ = check_dashboard("t", model, {"a_total", "b"})
    assert problems == ["t: variable y: metric 'c' is in no reviewed list"]


# ---------------------------------------------------------------------------------------------------------------
# Ray: the committed files are what Ray's factory generates
# ---------------------------------------------------------------------------------------------------------------

def test_ray_dashboards_equal_a_fresh_generation() -> None:
    from tools import ray_dashboards

    generated = ray_dashboards.generate()
    on_disk = {p.stem for p in ray_dashboards.OUTPUT_DIR.glob("*.json")}
    assert on_disk == set(generated)
    for stem, model in generated.items():
        committed = (ray_dashboards.OUTPUT_DIR / f"{stem}.json").read_text(encoding="utf-8")
        assert committed == ray_dashboards.render(model), f"dashboards/ray/{stem}.json: python -m tools.ray_dashboards"
    assert {m["uid"] for m in generated.values()} == {"rayDefaultDashboard", "rayDataDashboard", "rayTrainDashboard"}
    for model in generated.values():
        (ds,) = [v for v in model["templating"]["list"] if v["name"] == "datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus"
        assert ds["current"]["value"] == dash.DATASOURCE_UID and ds["current"]["text"] == dash.DATASOURCE_NAME


# ---------------------------------------------------------------------------------------------------------------
# The factory dashboard
# ---------------------------------------------------------------------------------------------------------------

def test_factory_dashboard_has_its_panels(factory: dict[str, Any]) -> None:
    assert factory["uid"] == "dynamic-factory"
    panels = {p["title"]: p for p in factory["panels"]}
    assert list(panels) == list(fd.PANEL_TITLES)
    for panel in panels.values():
        assert panel["description"] and "\n" not in panel["description"], panel["title"]
        assert panel["targets"] and all(t["datasource"] == fd.DATASOURCE for t in panel["targets"])
    exprs = {title: " ".join(t["expr"] for t in p["targets"]) for title, p in panels.items()}
    assert "kube_pod_status_unschedulable" in exprs["Pending pods by reason"]
    assert "kube_pod_container_status_waiting_reason" in exprs["Pending pods by reason"]
    assert fd.POOL_LABEL in exprs["Nodes by pool and capacity type"]
    assert "karpenter_interruption_received_messages_total" in exprs["Spot interruptions and replacements"]
    assert "karpenter_nodepools_limit" in exprs["NodePool usage vs limits"]
    for title in ("Ray worker nodes per cluster", "Ray tasks by state per cluster"):
        assert "ray_io_cluster" in exprs[title] and "namespace" in exprs[title]
    variables = {v["name"]: v for v in factory["templating"]["list"]}
    assert variables["ray_namespace"]["allValue"] == "ray|ray\\-team\\-a"
    assert variables["datasource"]["current"]["value"] == dash.DATASOURCE_UID


def test_factory_dashboard_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError) as error:
        fd.factory_dashboard(node_prices={"m7i": -1}, spot_discount=1.2, fixed_usd_per_hour=-3, ray_namespaces=["A"])
    message = str(error.value)
    for part in ("'m7i' is not an EC2 instance type", "node_prices['m7i']", "spot_discount", "fixed_usd_per_hour",
                 "'A' is not a namespace"):
        assert part in message


def test_ksm_allowlist_covers_the_labels_the_factory_reads(factory: dict[str, Any]) -> None:
    labels = set()
    for _, expr in queries(factory):
        labels |= set(re.findall(r"\blabel_[a-z0-9_]+", expr))
    sanitized = {"label_" + re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", re.sub(r"[^a-zA-Z0-9_]", "_", k)).lower()
                 for k in fd.KSM_NODE_LABELS}
    assert labels - {"label_replace"} <= sanitized
    assert fd.KSM_LABELS_ALLOWLIST == ("nodes=[" + ",".join(fd.KSM_NODE_LABELS) + "]",)


class Eval:
    """A PromQL evaluator for the instant-vector subset the cost query uses: selectors, vector(), label_replace,
    sum/count [by], * + with on()/group_left, or, unless, parentheses and numbers. Series are (labels, value)."""

    def __init__(self, series: list[tuple[dict[str, str], float]]):
        self.series = series

    def __call__(self, node: Any) -> Any:
        method = getattr(self, type(node).__name__)
        return method(node)

    def ParenExpr(self, node: Any) -> Any:
        return self(node.expr)

    def NumberLiteral(self, node: Any) -> float:
        return node.val

    def StringLiteral(self, node: Any) -> str:
        return node.val

    def VectorSelector(self, node: Any) -> list:
        out = []
        for labels, value in self.series:
            if labels.get("__name__") != node.name:
                continue
            ok = True
            for m in node.matchers.matchers:
                have, op = labels.get(m.name, ""), str(m.op).rsplit(".", 1)[-1]
                ok &= {"Equal": have == m.value, "NotEqual": have != m.value,
                       "Re": re.fullmatch(m.value, have) is not None,
                       "NotRe": re.fullmatch(m.value, have) is None}[op]
            if ok:
                out.append((dict(labels), value))
        return out

    def Call(self, node: Any) -> list:
        args = [self(a) for a in node.args]
        if node.func.name == "vector":
            return [({}, float(args[0]))]
        if node.func.name == "label_replace":
            vector, dst, repl, src, regex = args
            out = []
            for labels, value in vector:
                labels = dict(labels)
                match = re.fullmatch(regex, labels.get(src, ""))
                if match:
                    new = re.sub(r"\$(\d+)", lambda g: match.group(int(g.group(1))) or "", repl)
                    if new:
                        labels[dst] = new
                    else:
                        labels.pop(dst, None)
                out.append((labels, value))
            return out
        raise NotImplementedError(node.func.name)

    def AggregateExpr(self, node: Any) -> list:
        by = list(node.modifier.labels) if node.modifier else []
        groups: dict[tuple, float] = {}
        for labels, value in self(node.expr):
            key = tuple((k, labels.get(k, "")) for k in by)
            add = 1.0 if str(node.op) == "count" else value
            groups[key] = groups.get(key, 0.0) + add
        return [({k: v for k, v in key if v}, value) for key, value in groups.items()]

    def BinaryExpr(self, node: Any) -> Any:
        op = str(node.op)
        lhs, rhs = self(node.lhs), self(node.rhs)
        on = list(node.modifier.matching.labels) if node.modifier and node.modifier.matching else None

        def key(labels: dict[str, str]) -> tuple:
            names = on if on is not None else sorted(k for k in labels if k != "__name__")
            return tuple((k, labels.get(k, "")) for k in names)

        if op == "or":
            keys = {key(l) for l, _ in lhs}
            return lhs + [(l, v) for l, v in rhs if key(l) not in keys]
        if op == "unless":
            keys = {key(l) for l, _ in rhs}
            return [(l, v) for l, v in lhs if key(l) not in keys]
        apply = {"*": lambda a, b: a * b, "+": lambda a, b: a + b, "-": lambda a, b: a - b}[op]
        if isinstance(lhs, float) and isinstance(rhs, float):
            return apply(lhs, rhs)
        if isinstance(rhs, float):
            return [({k: v for k, v in l.items() if k != "__name__"}, apply(x, rhs)) for l, x in lhs]
        if isinstance(lhs, float):
            return [({k: v for k, v in l.items() if k != "__name__"}, apply(lhs, x)) for l, x in rhs]
        index: dict[tuple, float] = {}
        for labels, value in rhs:
            assert key(labels) not in index, f"many-to-many on {key(labels)}"
            index[key(labels)] = value
        return [({k: v for k, v in l.items() if k != "__name__"}, apply(x, index[key(l)]))
                for l, x in lhs if key(l) in index]


def _node(name: str, instance_type: str, karpenter: str | None, eks: str | None, pool: str) -> tuple[dict, float]:
    labels = {"__name__": "kube_node_labels", "node": name, fd.POOL_LABEL: pool, fd.INSTANCE_TYPE_LABEL: instance_type}
    if karpenter:
        labels["label_karpenter_sh_capacity_type"] = karpenter
    if eks:
        labels["label_eks_amazonaws_com_capacity_type"] = eks
    return labels, 1.0


FAKE_NODES = [
    _node("sys-1", "m7i.large", None, "ON_DEMAND", "system"),
    _node("sys-2", "m7i.large", None, "ON_DEMAND", "system"),
    _node("spot-1", "m7i.xlarge", "spot", None, "spot"),
    _node("spot-2", "m7i.xlarge", "spot", None, "spot"),
    _node("spot-3", "m7i.large", "spot", None, "spot"),
    _node("od-1", "m7i.xlarge", "on-demand", None, "on-demand"),
    _node("gpu-1", "g5.xlarge", "spot", None, "gpu"),
    _node("odd-1", "c7g.medium", "spot", None, "spot"),  # not in the price table
]


def test_cost_query_prices_a_sample_correctly() -> None:
    cost = fd.cost_expressions(SAMPLE["node_prices"], SAMPLE["spot_discount"], SAMPLE["fixed_usd_per_hour"])
    ev = Eval(FAKE_NODES)
    p, spot = SAMPLE["node_prices"], 1 - SAMPLE["spot_discount"]
    expected_nodes = (2 * p["m7i.large"] + 2 * p["m7i.xlarge"] * spot + p["m7i.large"] * spot
                      + p["m7i.xlarge"] + p["g5.xlarge"] * spot)
    [(labels, nodes)] = ev(pp.parse(cost["nodes"]))
    assert labels == {} and math.isclose(nodes, expected_nodes, rel_tol=1e-12)
    [(_, total)] = ev(pp.parse(cost["total"]))
    assert math.isclose(total, expected_nodes + SAMPLE["fixed_usd_per_hour"], rel_tol=1e-12)
    [(_, fixed)] = ev(pp.parse(cost["fixed"]))
    assert fixed == SAMPLE["fixed_usd_per_hour"]
    [(_, unpriced)] = ev(pp.parse(cost["unpriced"]))
    assert unpriced == 1.0
    # no node at all: 0 USD/h from nodes, the fixed part still shows, nothing unpriced
    assert [v for _, v in Eval([])(pp.parse(cost["total"]))] == [SAMPLE["fixed_usd_per_hour"]]
    assert [v for _, v in Eval([])(pp.parse(cost["unpriced"]))] == [0.0]


def test_cost_query_holds_only_the_given_instance_types() -> None:
    cost = fd.cost_expressions({"m7i.large": 0.1008}, 0.5, 0.0)
    assert "m7i.large" in cost["nodes"] and "g5" not in cost["nodes"]
    [(_, nodes)] = Eval(FAKE_NODES)(pp.parse(cost["nodes"]))
    assert math.isclose(nodes, 2 * 0.1008 + 0.1008 * 0.5)


def test_nodes_by_pool_and_capacity_type(factory: dict[str, Any]) -> None:
    (panel,) = [p for p in factory["panels"] if p["title"] == "Nodes by pool and capacity type"]
    result = Eval(FAKE_NODES)(pp.parse(panel["targets"][0]["expr"]))
    got = {(l[fd.POOL_LABEL], l[fd.CAPACITY_LABEL]): v for l, v in result}
    assert got == {("system", "on-demand"): 2, ("spot", "spot"): 4, ("on-demand", "on-demand"): 1, ("gpu", "spot"): 1}


# ---------------------------------------------------------------------------------------------------------------
# ConfigMaps for the Grafana sidecar
# ---------------------------------------------------------------------------------------------------------------

def test_config_maps_are_labelled_and_small_enough(config_maps: list[dict[str, Any]],
                                                   dashboards: list[dash.Dashboard]) -> None:
    assert len(config_maps) == len(dashboards)
    folders = {}
    for cm, d in zip(config_maps, dashboards):
        meta = cm["metadata"]
        assert cm["kind"] == "ConfigMap" and meta["namespace"] == "monitoring"
        assert meta["labels"][dash.LABEL_KEY] == dash.LABEL_VALUE == "1"
        assert meta["annotations"] == {dash.FOLDER_ANNOTATION: d.folder}
        assert list(cm["data"]) == [f"{d.name}.json"]
        text = cm["data"][f"{d.name}.json"]
        assert "\n" not in text and json.loads(text)["uid"] == d.model["uid"]
        assert dash.manifest_bytes(cm) < dash.MAX_CONFIGMAP_BYTES < 262144, meta["name"]
        folders[d.name] = d.folder
    assert set(folders.values()) == set(dash.FOLDERS)
    assert len({cm["metadata"]["name"] for cm in config_maps}) == len(config_maps)


def test_import_inputs_resolved_only_where_no_variable_defines_them(config_maps: list[dict[str, Any]]) -> None:
    by_name = {cm["metadata"]["name"]: json.loads(next(iter(cm["data"].values()))) for cm in config_maps}
    operator = json.dumps(by_name[dash.config_map_name("cilium-operator")])
    assert "${DS_PROMETHEUS}" not in operator and '"uid":"prometheus"' in operator.replace(" ", "")
    hubble = json.dumps(by_name[dash.config_map_name("hubble-dns")])
    assert "${DS_PROMETHEUS}" in hubble  # a template variable of that name exists: left to Grafana


def test_oversized_dashboard_is_refused() -> None:
    big = {"uid": "x", "title": "x", "panels": [], "description": "y" * dash.MAX_CONFIGMAP_BYTES}
    with pytest.raises(ValueError, match="dynamic-factory: .* bytes > 250000"):
        dash.dashboard_config_maps("monitoring", factory=big)
