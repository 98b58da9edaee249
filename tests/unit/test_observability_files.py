"""deploy/grafana/*.json and deploy/prometheus/rules.yml name only metrics /metrics exposes, and
the dashboard has a panel for every metric family. (`promtool check rules` runs in .ci/run.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT

DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
METRIC = re.compile(r"\bsteering_[a-z0-9_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exposed() -> dict[str, str]:
    """Every series name /metrics can carry -> its family (families with no sample yet included)."""
    text = Client().get("/metrics").content.decode()
    names = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.name
    return names


def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        out.append(item)
        out += panels(item.get("panels", []))
    return out


def exprs_of(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", []) if "expr" in t]


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS


@pytest.mark.django_db
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_expr_names_an_exposed_metric_and_every_family_has_a_panel(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    names = exposed()
    used: set[str] = set()
    for expr in exprs_of(dashboard):
        found = METRIC.findall(expr)
        assert found, expr
        for name in found:
            assert name in names, f"{path.name}: {name} is not exposed by /metrics ({expr})"
            used.add(names[name])
    families = {f for f in names.values() if f.startswith("steering_")}
    assert families - used == set(), "families with no panel"
    for panel in panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["title"] and panel["datasource"]["type"] == "prometheus", panel["title"]
    ids = [p["id"] for p in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))


@pytest.mark.django_db
def test_every_alert_names_an_exposed_metric() -> None:
    names = exposed()
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules}
    for wanted in ("SteeringDataPlaneNotApplying", "SteeringProbesStale", "SteeringPoolInPanic",
                   "SteeringGuardOverridden", "SteeringDrainStuck"):
        assert wanted in alerts
    for rule in rules:
        for name in METRIC.findall(rule["expr"]):
            assert name in names, f"{rule['alert']}: {name} is not exposed by /metrics"
