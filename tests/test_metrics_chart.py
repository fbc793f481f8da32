"""The chart's metrics: the operator's flag and port, the Service, the ServiceMonitor, and the
Grafana dashboard, whose queries may only name metrics the operator exports; and the example
alerts of docs/observability.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from localcluster import REPO

from agenttask_operator.effects import metrics
from packaging_helpers import (
    CHART,
    docs,
    helm_binary,
    helm_template,
    only,
    run,
    set_flags,
    tool_env,
)
from prometheus import lint_rules

DASHBOARD = CHART / "files" / "dashboard.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
PROMQL_WORDS |= {"unless", "bool", "offset", "inf", "nan"}


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = only(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = c
    return found


def flag(c: dict[str, Any], name: str) -> str | None:
    args: list[str] = c["args"]
    return args[args.index(name) + 1] if name in args else None


def test_metrics_are_served_on_a_port_of_their_own_with_a_service(tmp_path: Path) -> None:
    objs = docs(helm_template(tmp_path, "ops", release="rel"))
    c = container(objs)
    assert flag(c, "--metrics-port") == "9090"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}  # the liveness probe keeps its own
    svc = only(objs, "Service")
    pod_labels = only(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["metadata"]["name"] == "rel-agenttask-operator-metrics"
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    kinds = {o["kind"] for o in objs}
    assert "ServiceMonitor" not in kinds  # off by default, like the dashboard
    assert not [o for o in objs if o["kind"] == "ConfigMap"]


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    values = {"metrics": {"enabled": False}}
    objs = docs(helm_template(tmp_path, "ops", values))
    c = container(objs)
    assert flag(c, "--metrics-port") is None
    assert [p["name"] for p in c["ports"]] == ["health"]
    assert not [o for o in objs if o["kind"] in ("Service", "ServiceMonitor")]


def test_service_monitor_selects_the_metrics_service(tmp_path: Path) -> None:
    values = {
        "metrics": {
            "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kps"}}
        }
    }
    objs = docs(helm_template(tmp_path, "ops", values, release="rel"))
    sm = only(objs, "ServiceMonitor")
    svc = only(objs, "Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    # Only the metrics Service matches it (app.kubernetes.io/component: metrics).
    assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"


def test_dashboard_configmap_carries_the_sidecar_label_and_the_json(tmp_path: Path) -> None:
    values = {
        "metrics": {
            "dashboard": {
                "enabled": True,
                "namespace": "monitoring",
                "annotations": {"grafana_folder": "Operators"},
            }
        }
    }
    cm = only(docs(helm_template(tmp_path, "ops", values, release="rel")), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Operators"}
    assert json.loads(cm["data"]["agenttask-operator.json"]) == json.loads(DASHBOARD.read_text())


def test_chart_refuses_mistakes(tmp_path: Path) -> None:
    env, helm = tool_env(tmp_path), str(helm_binary())
    cases: list[tuple[dict[str, Any], str]] = [
        ({"metrics": {"port": 8080}}, "metrics.port must differ from health.port"),
        ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "does not match pattern"),
        ({"metrics": {"dashboards": {}}}, "additional properties 'dashboards' not allowed"),
    ]
    for bad, complaint in cases:
        proc = run([helm, "template", "x", str(CHART), *set_flags(bad)], env, check=False)
        assert proc.returncode != 0 and complaint in proc.stderr, (bad, proc.stderr)


# --- the dashboard -----------------------------------------------------------------------------


def exported() -> set[str]:
    """Every series name the operator's registry exposes (histograms: _bucket, _count, _sum)."""
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords,
    label names (in braces or grouping lists), strings or durations.
    """
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    bare = re.sub(r"\{[^}]*\}", "", bare)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # ranges
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\b\d[\w.]*", "", bare)  # numbers and durations (offset 5m)
    found = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
        after = bare[m.end() :].lstrip()
        if after.startswith("(") or m.group().lower() in PROMQL_WORDS:
            continue
        found.add(m.group())
    return found


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, model) (rate(agenttask_llm_request_duration_seconds"
        '_bucket{job=~"$job", model!="x"}[$__rate_interval]))) / on (model) group_left '
        "sum(up offset 5m)"
    )
    assert metric_names(expr) == {"agenttask_llm_request_duration_seconds_bucket", "up"}


def test_dashboard_queries_name_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "agenttask-operator" and dashboard["title"]
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):  # label_values(metric, label)
            exprs.append(re.sub(r"label_values\((\w+),.*\)", r"\1", query["query"]))
    assert all(p.get("targets") for p in panels(dashboard) if p["type"] != "row")
    named = set().union(*(metric_names(e) for e in exprs))
    assert named, exprs
    unknown = named - exported()
    assert not unknown, f"the dashboard reads metrics the operator does not export: {unknown}"
    # ...and it shows every metric of the operator's own.
    ours = {n for n in exported() if n.startswith("agenttask_") and not n.endswith("_sum")}
    ours -= {n for n in ours if n.endswith("_count") and n[: -len("_count")] + "_bucket" in ours}
    missing = {n for n in ours if n not in named}
    assert not missing, f"metrics missing from the dashboard: {missing}"


@pytest.mark.parametrize("name", sorted(n for n in exported() if n.startswith("agenttask_")))
def test_exported_names_follow_prometheus_conventions(name: str) -> None:
    assert re.fullmatch(r"agenttask_[a-z0-9_]+", name)
    if "duration" in name:
        assert "_seconds_" in name  # base units


# --- the example alerts ------------------------------------------------------------------------

ALERTS = REPO / "docs" / "alerts.yaml"
OBSERVABILITY = REPO / "docs" / "observability.md"


def test_example_alerts_are_valid_rules_on_exported_metrics(tmp_path: Path) -> None:
    """docs/alerts.yaml is what docs/observability.md shows, promtool accepts it, and its
    expressions read only metrics the operator exports (and Prometheus's own ``up``).
    """
    rules = "".join(
        line for line in ALERTS.read_text().splitlines(True) if not line.startswith("#")
    )
    shown = re.search(r"### Alerts\n\n```yaml\n(.*?)```", OBSERVABILITY.read_text(), re.S)
    assert shown is not None and shown.group(1) == rules
    assert lint_rules(ALERTS) == ""
    exprs = [r["expr"] for g in yaml.safe_load(rules)["groups"] for r in g["rules"]]
    named = set().union(*(metric_names(e) for e in exprs))
    assert named - exported() == {"up"}
