"""Regenerate ``dashboards/ray/*.json`` from the installed Ray (``python -m tools.ray_dashboards``).

The files are what Ray 2.60.0's own factory (``ray.dashboard.modules.metrics.grafana_dashboard_factory``) writes
into a session's Grafana folder, so Ray's dashboard UI finds the panels it embeds under the uids it expects
(``rayDefaultDashboard``, ``rayDataDashboard``, ``rayTrainDashboard``). Two things are ours:

* the factory is run with none of its ``RAY_GRAFANA_<NAME>_DASHBOARD_{UID,GLOBAL_FILTERS,LOG_LINK_URL}``
  overrides set, whatever the calling shell has, so the output depends on the Ray version alone;
* the hidden ``datasource`` variable Ray declares (type ``datasource``, plugin ``prometheus``) gets the platform's
  data source as its current value (:data:`DATASOURCE_NAME` / :data:`DATASOURCE_UID`, kube-prometheus-stack's
  defaults). Ray's UI passes ``var-datasource=<RAY_PROMETHEUS_NAME>`` in every embed URL, which the head sets
  to the same name; the default only matters when someone opens the dashboards in Grafana directly and another
  data source is Grafana's default.

Output is deterministic (sorted keys, two-space indent, newline at the end): ``tests/schema/test_dashboards.py``
compares the committed files with a fresh generation, so a Ray upgrade that changes the dashboards shows up as a
failing test until this module is run again and the diff reviewed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable
from unittest import mock

OUTPUT_DIR = Path(__file__).resolve().parent.parent / "dashboards" / "ray"

DATASOURCE_NAME = "Prometheus"
DATASOURCE_UID = "prometheus"

# file stem -> name of the generator in Ray's factory module. Serve and LLM dashboards are left out: the platform
# runs no Ray Serve and no vLLM, so every panel of theirs would stay empty.
DASHBOARDS: dict[str, str] = {
    "default": "generate_default_grafana_dashboard",
    "data": "generate_data_grafana_dashboard",
    "train": "generate_train_grafana_dashboard",
}

_OVERRIDE_PREFIX = "RAY_GRAFANA_"


def _clean_environ() -> dict[str, str]:
    """The environment without Ray's per-dashboard overrides (uid, global filters, log link URL)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_OVERRIDE_PREFIX)}


def _pin_datasource(dashboard: dict[str, Any]) -> dict[str, Any]:
    variables = dashboard.get("templating", {}).get("list", [])
    found = [v for v in variables if v.get("type") == "datasource" and v.get("name") == "datasource"]
    if len(found) != 1:
        raise RuntimeError(f"{dashboard.get('uid')}: expected one `datasource` variable, found {len(found)}")
    found[0]["current"] = {"selected": False, "text": DATASOURCE_NAME, "value": DATASOURCE_UID}
    return dashboard


def generate() -> dict[str, dict[str, Any]]:
    """{file stem: dashboard dict} as the installed Ray generates them, with the data source pinned."""
    with mock.patch.dict(os.environ, _clean_environ(), clear=True):
        from ray.dashboard.modules.metrics import grafana_dashboard_factory as factory

        out: dict[str, dict[str, Any]] = {}
        for stem, func_name in DASHBOARDS.items():
            func: Callable[[], tuple[str, str]] = getattr(factory, func_name)
            content, uid = func()
            dashboard = json.loads(content)
            if dashboard.get("uid") != uid:
                raise RuntimeError(f"{func_name}: uid {dashboard.get('uid')!r} != {uid!r}")
            out[stem] = _pin_datasource(dashboard)
    return out


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    for stem, dashboard in generate().items():
        path = OUTPUT_DIR / f"{stem}.json"
        path.write_text(render(dashboard), encoding="utf-8")
        print(f"{path.relative_to(OUTPUT_DIR.parent.parent)}  uid={dashboard['uid']}  {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
