"""Change impact, offline: what deploying a changed configuration would do to each resource.

Synthesize the current configuration and a changed one, and classify every resource that differs as
updated in place, replaced, added or deleted, by CloudFormation's own resource schemas (create-only
properties, shipped with cfn-lint); name what a user would lose (stateful resources, Kubernetes volumes,
the hub database) and what cannot work (a replacement that keeps a fixed name collides with the resource
it replaces). Custom resources whose properties change are re-applied, with the Kubernetes objects and
Helm releases they change.

    python -m tools.impact -c platform.network.nat_gateways=2      # exit 1 on a stateful replacement or collision

    from tools.impact import impact
    changes = impact("before/cdk.out", "after/cdk.out")            # list[Change]
"""

from tools.impact.classify import (
    ACTIONS,
    STACK_TYPE,
    Change,
    compare,
    counts,
    errors,
    from_templates,
    impact,
    load_stacks,
)
from tools.impact.report import render

__all__ = ["ACTIONS", "STACK_TYPE", "Change", "compare", "counts", "errors", "from_templates", "impact",
           "load_stacks", "render"]
