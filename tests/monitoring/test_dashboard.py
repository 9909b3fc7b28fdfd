"""manifests/helm/plane-guard/files/dashboard.json: a Grafana dashboard whose every query is valid PromQL
(checked by the real promtool) over names the server exports, with the panels operators need."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.monitoring.support import (
    DASHBOARD,
    PROMETHEUS_OWN,
    alert_rules,
    check_expressions,
    exported_metric_names,
    metric_names,
)

#: Grafana's own variables, each replaced by a value of its kind before promtool reads the query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in panels:
        found.append(panel)
        found += _panels(panel.get("panels", []))
    return found


def _queries() -> dict[str, str]:
    """``panel<id>_<refId>`` -> the query with Grafana's variables replaced."""
    queries = {}
    for panel in _panels(_dashboard()["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"panel {panel['title']!r}: unknown variable in {target['expr']}"
            queries[f"panel{panel['id']}_{target['refId']}"] = expr
    return queries


def _normal(expr: str) -> str:
    return " ".join(expr.split())


def test_the_dashboard_is_a_grafana_model_with_a_datasource_variable() -> None:
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in _panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]


def test_panel_ids_and_titles_are_unique() -> None:
    panels = _panels(_dashboard()["panels"])
    ids = [p["id"] for p in panels]
    titles = [p["title"] for p in panels]
    assert all(isinstance(i, int) for i in ids)
    assert len(set(ids)) == len(ids), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    assert len(set(titles)) == len(titles), f"duplicate panel titles: {sorted({t for t in titles if titles.count(t) > 1})}"
    for panel in panels:
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(set(refs)) == len(refs), panel["title"]


@pytest.mark.promtool
def test_every_query_is_valid_promql() -> None:
    queries = _queries()
    result = check_expressions(queries)
    assert result.returncode == 0, f"promtool rejects a dashboard query:\n{result.stdout}{result.stderr}"
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout, result.stdout


def test_every_metric_in_the_queries_is_one_the_server_exports() -> None:
    exported = exported_metric_names()
    for key, expr in _queries().items():
        used = metric_names(expr)
        assert used, f"{key}: no metric in {expr}"
        unknown = used - exported - PROMETHEUS_OWN
        assert not unknown, f"{key} uses {sorted(unknown)}, which webhook/serve/metrics.py does not export"


def test_the_unguarded_panel_shows_the_alert_expression() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "PlaneGuardUnguardedPlanePods"]
    assert _normal(rule["expr"]) in {_normal(e) for e in _queries().values()}


def test_the_panels_operators_need_are_there() -> None:
    queries = [_normal(e) for e in _queries().values()]

    def has(pattern: str) -> bool:
        return any(re.search(pattern, q) for q in queries)

    assert has(r"sum by \(decision\) \(rate\(plane_guard_admission_requests_total\[")
    assert has(r"sum by \(webhook, mode\) \(rate\(plane_guard_admission_requests_total\[")
    for quantile in ("0.5", "0.95", "0.99"):
        assert has(rf"histogram_quantile\({quantile}, sum by \(le\b[^)]*\) \(rate\(plane_guard_admission_duration_seconds_bucket\["), quantile
    assert has(r"sum by \(limit\) \(rate\(plane_guard_limit_hits_total\[")
    assert has(r"plane_guard_certificate_expiry_timestamp_seconds.*- time\(\)\) / 86400")
    assert has(r"plane_guard_open_connections")
    assert has(r"plane_guard_internal_errors_total")
