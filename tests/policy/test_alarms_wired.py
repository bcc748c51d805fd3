"""The platform's CloudWatch alarms, as synthesized: each watches a real metric of a real resource and tells the
platform's topic (tests/support/alarms.py), and each thing issue #14 asks to be alarmed on has its alarm."""

from __future__ import annotations

from tests.support.alarms import alarm_problems

ALARM = "AWS::CloudWatch::Alarm"


def _templates(synthesized) -> dict[str, dict]:
    return {stack_id: template.to_json() for stack_id, template in synthesized.templates.items()}


def _alarms(templates: dict[str, dict]) -> list[tuple[str, dict]]:
    return [(stack, res["Properties"]) for stack, tpl in templates.items()
            for res in tpl.get("Resources", {}).values() if res["Type"] == ALARM]


def _metric_names(props: dict) -> set[str]:
    if "MetricName" in props:
        return {props["MetricName"]}
    return {m["MetricStat"]["Metric"]["MetricName"] for m in props.get("Metrics", []) if "MetricStat" in m}


def test_every_alarm_watches_a_real_metric_of_a_real_resource_and_notifies_the_topic(any_platform):
    templates = _templates(any_platform)
    assert len(_alarms(templates)) == 5
    assert alarm_problems(templates) == []


def test_the_issue_s_alarms_each_exist_where_their_resource_lives(platform):
    """Interruption queue age and depth, Karpenter errors and system nodes below desired in the observability stack;
    the validation job failing in the Ray stack (where its runner is)."""
    by_stack: dict[str, set[str]] = {}
    for stack, props in _alarms(_templates(platform)):
        by_stack.setdefault(stack, set()).update(_metric_names(props))
    assert by_stack == {
        "Observability": {"ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesVisible", "KarpenterErrors",
                          "GroupDesiredCapacity", "GroupInServiceInstances"},
        "Ray": {"FailedBuilds"},
    }


def test_alarm_e_mails_come_from_the_config(platform, variant):
    """Each configured address is one e-mail subscription of the alarm topic; none configured, none subscribed."""
    def subscriptions(synthesized):
        return sorted((res["Properties"]["Protocol"], res["Properties"]["Endpoint"])
                      for res in synthesized.template_json("Observability")["Resources"].values()
                      if res["Type"] == "AWS::SNS::Subscription")

    assert subscriptions(platform) == []
    assert subscriptions(variant) == [("email", e) for e in sorted(variant.config.observability.alarm_emails)]
    assert variant.config.observability.alarm_emails
