"""Every CloudWatch alarm of a stage watches a real metric of a real resource and notifies a real topic.

An alarm on a misspelt metric, on a dimension the service does not publish, or on a queue name nobody created
deploys without a word and then sits in INSUFFICIENT_DATA (or OK) forever. :func:`alarm_problems` reads the
synthesized templates of one stage and, for every ``AWS::CloudWatch::Alarm`` (single metric or metric math), checks:

(a) the metric is in ``cdk_constructs.alarms.AWS_METRICS`` (namespace, name and exactly the documented dimension
    names), or is published by an ``AWS::Logs::MetricFilter`` of these templates (same namespace and name, and the
    filter's own dimension keys), whose log group is itself real;
(b) every dimension value points at a real resource: a ``Ref``/``Fn::GetAtt`` of a resource in the same template,
    a cross-stack reference (``Fn::ImportValue`` of an export, or ``Fn::GetStackOutput`` of an output: the stage's
    ``@aws-cdk/core:defaultCrossStackReferences`` is ``weak``) whose value in the other template is such a
    reference, or the response of a custom resource (``AwsCustomResource``) whose properties reference an
    ``AWS::EKS::Nodegroup``. For the dimensions of AWS_METRICS the resource must also be of the right type and the
    reference must return its name (``GetAtt QueueName`` of a queue: its ``Ref`` is the URL). A literal is accepted
    only when it equals the physical name set on a resource of that type in the templates (a queue's ``QueueName``);
(c) at least one ``AlarmActions`` entry is an SNS topic of these templates (its ``Ref``, or a cross-stack reference
    to it).

Metric math expressions may only name the alarm's own metric ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from cdk_constructs.alarms import AWS_METRICS

ALARM = "AWS::CloudWatch::Alarm"
METRIC_FILTER = "AWS::Logs::MetricFilter"
NODEGROUP = "AWS::EKS::Nodegroup"
TOPIC = "AWS::SNS::Topic"

# Dimension name -> (resource type, how the name is read: "Ref" or the GetAtt attribute, physical-name property).
# Ref of an AWS::SQS::Queue is its URL; of an AWS::CodeBuild::Project and of an AWS::AutoScaling::AutoScalingGroup,
# its name (CloudFormation resource reference, "Return values" of each type).
NAMED_BY = {
    "QueueName": ("AWS::SQS::Queue", "QueueName", "QueueName"),
    "ProjectName": ("AWS::CodeBuild::Project", "Ref", "Name"),
    "AutoScalingGroupName": ("AWS::AutoScaling::AutoScalingGroup", "Ref", "AutoScalingGroupName"),
    "LogGroupName": ("AWS::Logs::LogGroup", "Ref", "LogGroupName"),  # a metric filter's log group
}
# Properties that set a resource's physical name, for literal dimension values of other dimensions.
PHYSICAL_NAME_PROPERTIES = {
    "AWS::SQS::Queue": "QueueName",
    "AWS::CodeBuild::Project": "Name",
    "AWS::AutoScaling::AutoScalingGroup": "AutoScalingGroupName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::EKS::Nodegroup": "NodegroupName",
    "AWS::EKS::Cluster": "Name",
}
_EXPRESSION_ID = re.compile(r"\b[a-z][A-Za-z0-9_]*\b")  # metric ids start lower-case; functions are upper-case


@dataclass(frozen=True)
class _Target:
    """What a reference resolved to: the template it lives in, its logical id and how it was read."""

    stack: str
    logical_id: str
    type: str
    read: str  # "Ref" or the GetAtt attribute


class _Stage:
    def __init__(self, templates: Mapping[str, dict]) -> None:
        self.templates = templates
        self.exports: dict[str, tuple[str, Any]] = {}  # export name -> (template, value)
        self.outputs: dict[str, list[tuple[str, Any]]] = {}  # output name -> [(template, value)]
        for stack, template in templates.items():
            for output_name, output in template.get("Outputs", {}).items():
                self.outputs.setdefault(output_name, []).append((stack, output.get("Value")))
                name = output.get("Export", {}).get("Name")
                if isinstance(name, str):
                    self.exports[name] = (stack, output.get("Value"))
        self.filters: dict[tuple[str, str], list[tuple[str, str, dict]]] = {}
        self.physical_names: dict[str, set[str]] = {}
        for stack, logical_id, res in self.resources():
            props = res.get("Properties", {})
            if res["Type"] == METRIC_FILTER:
                for transformation in props.get("MetricTransformations", []):
                    key = (transformation.get("MetricNamespace"), transformation.get("MetricName"))
                    self.filters.setdefault(key, []).append((stack, logical_id, transformation))
            name_property = PHYSICAL_NAME_PROPERTIES.get(res["Type"])
            if name_property and isinstance(props.get(name_property), str):
                self.physical_names.setdefault(res["Type"], set()).add(props[name_property])

    def resources(self) -> Iterator[tuple[str, str, dict]]:
        for stack, template in self.templates.items():
            for logical_id, res in template.get("Resources", {}).items():
                yield stack, logical_id, res

    def resource(self, stack: str, logical_id: str) -> dict | None:
        return self.templates[stack].get("Resources", {}).get(logical_id)

    # ------------------------------------------------------------------ references

    def target(self, stack: str, value: Any) -> tuple[_Target | None, str | None]:
        """Resolve a Ref / GetAtt / ImportValue to the resource it reads, or say why it is not one."""
        if not isinstance(value, dict) or len(value) != 1:
            return None, f"{_show(value)} is not a reference to a resource"
        (fn, arg), = value.items()
        if fn == "Ref":
            res = self.resource(stack, arg) if isinstance(arg, str) else None
            if res is None:
                return None, f"Ref {arg!r} names no resource of {stack}"
            return _Target(stack, arg, res["Type"], "Ref"), None
        if fn == "Fn::GetAtt":
            logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else (arg[0], arg[1])
            res = self.resource(stack, logical_id)
            if res is None:
                return None, f"GetAtt {logical_id}.{attribute} names no resource of {stack}"
            return _Target(stack, logical_id, res["Type"], attribute), None
        if fn == "Fn::ImportValue":
            if not isinstance(arg, str) or arg not in self.exports:
                return None, f"import {_show(arg)} is exported by no template of the stage"
            exporter, exported = self.exports[arg]
            found, problem = self.target(exporter, exported)
            if found is None:
                return None, f"export {arg} of {exporter}: {problem}"
            return found, None
        if fn == "Fn::GetStackOutput":
            source = self.stack_output(arg)
            if source is None:
                return None, f"output {_show(arg)} is defined by no template of the stage"
            exporter, exported = source
            found, problem = self.target(exporter, exported)
            if found is None:
                return None, f"output {arg.get('OutputName')} of {exporter}: {problem}"
            return found, None
        return None, f"{_show(value)} is not a reference to a resource"

    def stack_output(self, arg: Any) -> tuple[str, Any] | None:
        """(template, value) of the output a ``Fn::GetStackOutput`` reads. Its StackName is the deployed stack name;
        the templates may be keyed by it or by construct id, so an output name found in exactly one template counts."""
        if not isinstance(arg, dict) or not isinstance(arg.get("OutputName"), str):
            return None
        candidates = self.outputs.get(arg["OutputName"], [])
        named = [c for c in candidates if c[0] == arg.get("StackName")]
        if named:
            return named[0]
        return candidates[0] if len(candidates) == 1 else None

    def references_nodegroup(self, stack: str, value: Any) -> bool:
        """True when ``value`` (any property tree) contains a reference to an AWS::EKS::Nodegroup."""
        if isinstance(value, list):
            return any(self.references_nodegroup(stack, v) for v in value)
        if not isinstance(value, dict):
            return False
        if len(value) == 1:
            (fn, arg), = value.items()
            if fn in ("Ref", "Fn::GetAtt"):
                found, _ = self.target(stack, value)
                return found is not None and found.type == NODEGROUP
            # Follow a cross-stack reference into the template that defines it (its value may be a Fn::Select of
            # a Ref, say, rather than a plain reference).
            if fn == "Fn::ImportValue":
                source = self.exports.get(arg) if isinstance(arg, str) else None
                return source is not None and self.references_nodegroup(*source)
            if fn == "Fn::GetStackOutput":
                source = self.stack_output(arg)
                return source is not None and self.references_nodegroup(*source)
        return any(self.references_nodegroup(stack, v) for v in value.values())

    def dimension_problem(self, stack: str, name: str, value: Any) -> str | None:
        """Why ``value`` of dimension ``name`` is not the name of a real resource (None when it is)."""
        expected = NAMED_BY.get(name)
        if isinstance(value, str):
            types = [expected[0]] if expected else list(self.physical_names)
            if any(value in self.physical_names.get(t, ()) for t in types):
                return None
            kind = f"no {expected[0]}" if expected else "no resource"
            return f"dimension {name} is the literal {value!r}, the name of {kind} in these templates"
        found, problem = self.target(stack, value)
        if found is None:
            return f"dimension {name}: {problem}"
        if found.type.startswith("Custom::") or found.type == "AWS::CloudFormation::CustomResource":
            props = self.resource(found.stack, found.logical_id).get("Properties", {})
            if not self.references_nodegroup(found.stack, props):
                return (f"dimension {name} is read from custom resource {found.logical_id}, "
                        f"which references no {NODEGROUP}")
            return None
        if expected is not None and (found.type, found.read) != expected[:2]:
            how = "Ref" if expected[1] == "Ref" else f"GetAtt {expected[1]}"
            return (f"dimension {name} reads {found.read} of {found.type} {found.logical_id}; "
                    f"the name is the {how} of an {expected[0]}")
        return None


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, dict) else str(value)


def _label(stack: str, logical_id: str, res: dict) -> str:
    """The alarm's construct path (from the stack on, when the templates are keyed by construct id), without the
    trailing ``Resource``; ``Stack/LogicalId`` when the template carries no path metadata."""
    parts = [p for p in res.get("Metadata", {}).get("aws:cdk:path", "").split("/") if p]
    if parts and parts[-1] == "Resource":
        parts = parts[:-1]
    if stack in parts:
        parts = parts[parts.index(stack):]
    return "/".join(parts) if parts else f"{stack}/{logical_id}"


def _alarm_metrics(props: dict) -> Iterator[tuple[str | None, dict]]:
    """(metric id or None, {Namespace, MetricName, Dimensions}) of every metric the alarm reads."""
    if "Metrics" in props:
        for query in props["Metrics"]:
            stat = query.get("MetricStat")
            if stat:
                yield query.get("Id"), stat.get("Metric", {})
    else:
        yield None, {k: props.get(k) for k in ("Namespace", "MetricName", "Dimensions")}


def _metric_problems(stage: _Stage, stack: str, metric: dict) -> list[str]:
    namespace, metric_name = metric.get("Namespace"), metric.get("MetricName")
    dimensions = metric.get("Dimensions") or []
    if not isinstance(namespace, str) or not isinstance(metric_name, str):
        return [f"metric namespace/name {namespace!r}/{metric_name!r} are not literal strings"]
    full = f"{namespace}/{metric_name}"
    names = sorted(d.get("Name") for d in dimensions)
    problems = []
    known = next((m for m in AWS_METRICS if (m.namespace, m.metric_name) == (namespace, metric_name)), None)
    if known is not None:
        if names != sorted(known.dimensions):
            problems.append(f"metric {full} has dimensions {names}; {known.doc} documents {sorted(known.dimensions)}")
    elif namespace.startswith("AWS/"):
        problems.append(f"metric {full} is not in AWS_METRICS (cdk_constructs/alarms.py): review it against "
                        "the AWS documentation and add it there")
    else:
        filters = stage.filters.get((namespace, metric_name), [])
        if not filters:
            problems.append(f"metric {full} has no MetricFilter")
        else:
            for filter_stack, filter_id, transformation in filters:
                filter_dims = sorted(d.get("Key") for d in transformation.get("Dimensions", []))
                if filter_dims != names:
                    problems.append(f"metric {full} has dimensions {names}; MetricFilter {filter_id} publishes "
                                    f"{filter_dims}")
                group = stage.resource(filter_stack, filter_id).get("Properties", {}).get("LogGroupName")
                group_problem = stage.dimension_problem(filter_stack, "LogGroupName", group)
                if group_problem is not None:
                    problems.append(f"MetricFilter {filter_id} of {full}: log group: {group_problem}")
    for dimension in dimensions:
        problem = stage.dimension_problem(stack, dimension.get("Name"), dimension.get("Value"))
        if problem is not None:
            problems.append(f"metric {full}: {problem}")
    return problems


def _action_problems(stage: _Stage, stack: str, props: dict) -> list[str]:
    actions = props.get("AlarmActions") or []
    if not actions:
        return ["has no AlarmActions: nobody hears when it fires"]
    for action in actions:
        found, _ = stage.target(stack, action)
        if found is not None and found.type == TOPIC and found.read == "Ref":
            return []
    return [f"no AlarmActions entry is an SNS topic of these templates: {', '.join(_show(a) for a in actions)}"]


def alarm_problems(templates: Mapping[str, dict]) -> list[str]:
    """Readable problems of every CloudWatch alarm in ``templates`` (stack name -> template), empty when none."""
    stage = _Stage(templates)
    problems: list[str] = []
    for stack, logical_id, res in stage.resources():
        if res["Type"] != ALARM:
            continue
        label = _label(stack, logical_id, res)
        props = res.get("Properties", {})
        found: list[str] = []
        ids = set()
        for metric_id, metric in _alarm_metrics(props):
            ids.add(metric_id)
            found += _metric_problems(stage, stack, metric)
        for query in props.get("Metrics", []):
            expression = query.get("Expression")
            if isinstance(expression, str):
                unknown = sorted(set(_EXPRESSION_ID.findall(expression)) - ids)
                if unknown:
                    found.append(f"expression {expression!r} names {unknown}, which are not metrics of the alarm")
        if not list(_alarm_metrics(props)):
            found.append("reads no metric")
        found += _action_problems(stage, stack, props)
        problems += [f"{label}: {problem}" for problem in found]
    return problems
