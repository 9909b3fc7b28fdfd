"""What the chart shares with the rest of the repository has one home each.

- matchConditions: generated from the default policy by ``make manifests`` into
  ``files/match-conditions.yaml`` as into manifests/base (tests/install's regeneration test covers
  every file tools/match_conditions.py writes); the chart reads that file.
- the alert rules and the dashboard live in the chart's ``files/`` (tests/monitoring checks them
  with promtool); the PrometheusRule and the dashboard ConfigMap carry them unchanged.
- the default policy: ``files/policy.yaml`` is the embedded default, byte for byte, as
  manifests/base/policy/policy.yaml is.
"""

from __future__ import annotations

import json

import yaml

from tests.chart.support import CHART, FILES, REPO, only, policy_text, template
from tests.monitoring import support as monitoring
from tools import match_conditions
from webhook.core.policy import MATCH_CONDITION_NAME, default_policy

EMBEDDED = REPO / "webhook" / "core" / "default_policy.yaml"
MONITORING = CHART / "ci" / "monitoring-values.yaml"


def test_make_manifests_writes_the_charts_match_conditions() -> None:
    path = FILES / "match-conditions.yaml"
    assert path in match_conditions.FILES
    text = path.read_text()
    assert match_conditions.rewrite(text, default_policy().match_condition()) == text, (
        f"{path.relative_to(REPO)} is stale: run `make manifests`"
    )


def test_every_webhook_carries_the_generated_match_conditions() -> None:
    expected = yaml.safe_load((FILES / "match-conditions.yaml").read_text())
    assert [c["name"] for c in expected] == [MATCH_CONDITION_NAME]
    docs = template()
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        webhooks = only(docs, kind)["webhooks"]
        assert len(webhooks) == 2 and all(w["matchConditions"] == expected for w in webhooks)
    assert " ".join(expected[0]["expression"].split()) == " ".join(default_policy().match_condition().split())


def test_match_conditions_from_the_values_replace_the_generated_ones() -> None:
    docs = template(sets=("webhooks.matchConditions[0].name=mine", "webhooks.matchConditions[0].expression=has(object.spec)"))
    webhooks = only(docs, "ValidatingWebhookConfiguration")["webhooks"]
    assert all(w["matchConditions"] == [{"name": "mine", "expression": "has(object.spec)"}] for w in webhooks)


def test_the_prometheus_rule_is_the_rule_file() -> None:
    rule = only(template(MONITORING), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(monitoring.ALERTS.read_text())
    assert monitoring.ALERTS.parent == FILES, "tests/monitoring must check the chart's own rule file"


def test_the_dashboard_is_the_dashboard_file() -> None:
    (config_map,) = [d for d in template(MONITORING) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert json.loads(config_map["data"]["plane-guard.json"]) == json.loads(monitoring.DASHBOARD.read_text())
    assert monitoring.DASHBOARD.parent == FILES


def test_the_default_policy_is_the_embedded_one() -> None:
    copy = FILES / "policy.yaml"
    assert copy.read_bytes() == EMBEDDED.read_bytes(), (
        f"{copy.relative_to(REPO)} differs from {EMBEDDED.relative_to(REPO)}: copy it again "
        f"(cp {EMBEDDED.relative_to(REPO)} {copy.relative_to(REPO)})"
    )
    assert policy_text(template()) == EMBEDDED.read_text()
