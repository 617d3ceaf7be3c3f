"""deploy/grafana/: the committed dashboard is what the generator writes, and its expressions
read the metrics that metrics.yaml declares or that the monitor exports."""

import json
import re

import yaml

from deploy.grafana import dashboard
from serve.config import ROOT


def test_committed_json_is_the_generators_output():
    assert dashboard.OUT.read_text() == dashboard.to_json() + "\n", (
        "run `python -m deploy.grafana.dashboard`"
    )


def test_every_panel_has_a_prometheus_query_and_a_unique_id():
    panels = [p for p in json.loads(dashboard.OUT.read_text())["panels"] if p["type"] != "row"]
    assert len(panels) == len(dashboard.PANELS)
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        assert p["datasource"] == dashboard.DATASOURCE and p["targets"], p["title"]
        assert all(t["expr"] for t in p["targets"])


def test_model_metrics_in_the_dashboard_are_declared_in_metrics_yaml():
    declared = {
        m["name"]
        for kind in yaml.safe_load((ROOT / "metrics.yaml").read_text())["model_metrics"].values()
        for m in kind
    }
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for p in dashboard.PANELS
        for expr, _ in p.targets
        for name in re.findall(r"\bbundle_[a-z0-9_]+", expr)
        if not p.needs_monitor
    }
    assert used and used <= declared, used - declared
