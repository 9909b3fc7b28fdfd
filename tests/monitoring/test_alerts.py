"""manifests/helm/plane-guard/files/alerts.yaml: valid and unit-tested by the real promtool, each alert tested,
documented, and built on the names and label values the server really exports."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import jsonpatch
import pytest
import yaml

from tests.monitoring.support import (
    ALERT_TESTS,
    ALERTS,
    JOB_MATCHER,
    PROMETHEUS_OWN,
    README,
    TARGET_LABELS,
    alert_rules,
    check_expressions,
    exported_labels,
    exported_metric_names,
    github_anchor,
    metric_names,
    promtool,
    runbook_anchors,
    runbook_section,
    selectors,
)
from webhook.core.admission import Admission, parse_review
from webhook.core.policy import load_policy
from webhook.serve import metrics

EXAMPLE_REVIEW = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "admission-review.json"
RUNBOOK_BASE = "https://github.com/plane-guard/plane-guard/blob/main/README.md#"
SEVERITIES = {"critical", "warning"}


def _rule(name: str) -> dict:
    found = [rule for rule in alert_rules() if rule["alert"] == name]
    assert len(found) == 1, f"expected one alert {name} in {ALERTS.name}, found {len(found)}"
    return found[0]


def _matcher(name: str, metric: str, label: str) -> tuple[str, str]:
    """The (operator, value) every selector of ``metric`` in alert ``name`` uses for ``label``."""
    found = {m[label] for metric_name, m in selectors(_rule(name)["expr"]) if metric_name == metric and label in m}
    assert len(found) == 1, f"{name}: expected one matcher on {label} for {metric}, found {sorted(found)}"
    return found.pop()


def _matches(matcher: tuple[str, str], value: str) -> bool:
    op, pattern = matcher
    assert op in ("=", "=~"), f"unexpected matcher operator {op}"
    return value == pattern if op == "=" else re.fullmatch(pattern, value) is not None


# --------------------------------------------------------------------------- promtool


@pytest.mark.promtool
def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}{result.stderr}"
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout, result.stdout


@pytest.mark.promtool
def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout


@pytest.mark.promtool
def test_promtool_refuses_a_broken_expression() -> None:
    """The expression checks of these tests and of the dashboard's would catch a typo."""
    result = check_expressions({"broken:expr": 'sum by (job) (rate(up{job="x"}[5m])'})
    assert result.returncode != 0
    assert check_expressions({"fine:expr": 'sum by (job) (rate(up{job="x"}[5m]))'}).returncode == 0


# --------------------------------------------------------------------------- coverage and documentation


def test_every_alert_fires_and_stays_silent_in_a_unit_test() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            assert check["alertname"] in names, f"{case['name']!r} tests {check['alertname']}, which alerts.yaml does not define"
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert names - firing == set(), f"no unit test where these fire: {sorted(names - firing)}"
    assert names - silent == set(), f"no unit test where these stay silent: {sorted(names - silent)}"


def test_every_alert_has_severity_summary_description_and_a_runbook_entry() -> None:
    anchors = runbook_anchors()
    for rule in alert_rules():
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity must be one of {sorted(SEVERITIES)}"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name}: no {key} annotation"
        url = annotations["runbook_url"]
        assert url.startswith(RUNBOOK_BASE), f"{name}: runbook_url {url} does not point into the README"
        anchor = url.removeprefix(RUNBOOK_BASE)
        assert anchor in anchors, f"{name}: README section 'Alerts and dashboard' has no heading with the anchor #{anchor}"
        assert anchors[anchor] == name, f"{name}: its runbook entry is headed {anchors[anchor]!r}"


def test_no_runbook_entry_without_an_alert() -> None:
    names = {github_anchor(rule["alert"]) for rule in alert_rules()}
    entries = {anchor for anchor, heading in runbook_anchors().items() if heading.startswith("PlaneGuard")}
    assert entries == names


def test_github_anchors() -> None:
    assert github_anchor("PlaneGuardDown") == "planeguarddown"
    assert github_anchor("Serving under load and abuse") == "serving-under-load-and-abuse"
    assert github_anchor("See what is guarded: `plane-guard status`") == "see-what-is-guarded-plane-guard-status"


def test_the_readme_says_how_to_load_the_rules_and_the_job_convention() -> None:
    section = runbook_section()
    assert "manifests/helm/plane-guard/files/alerts.yaml" in section and "PrometheusRule" in section
    assert "manifests/helm/plane-guard/files/dashboard.json" in section
    assert JOB_MATCHER in section
    text = README.read_text()
    assert text.index("## Serving under load and abuse") < text.index("## Alerts and dashboard") < text.index("## Images")


# --------------------------------------------------------------------------- names and label values


def test_the_scanner_finds_metric_names() -> None:
    assert metric_names('sum by (job, le) (rate(a_total{x="b c", y=~"d|e"}[5m] offset 1h)) / on (job) group_left b') == {"a_total", "b"}
    assert metric_names("histogram_quantile(0.99, sum without (pod) (rate(x_bucket[$__rate_interval])))") == {"x_bucket"}
    assert metric_names("(c > 0) - time() < 14 * 86400 and on () count(up offset 15m) or vector(0)") == {"c", "up"}
    assert metric_names("absent(up{job=~\".*plane-guard.*\"})") == {"up"}


def test_every_metric_in_the_rules_is_one_the_server_exports() -> None:
    exported = exported_metric_names()
    assert "plane_guard_admission_requests_total" in exported and "plane_guard_admission_duration_seconds_bucket" in exported
    for rule in alert_rules():
        used = metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in its expression"
        unknown = used - exported - PROMETHEUS_OWN
        assert not unknown, f"{rule['alert']} uses {sorted(unknown)}, which webhook/serve/metrics.py does not export"


def test_every_label_in_the_rules_is_one_the_metric_has() -> None:
    labels = exported_labels()
    for rule in alert_rules():
        for metric, matchers in selectors(rule["expr"]):
            if metric in PROMETHEUS_OWN:
                continue
            unknown = set(matchers) - labels[metric] - TARGET_LABELS
            assert not unknown, f"{rule['alert']}: {metric} has no label {sorted(unknown)}"


def test_up_is_always_selected_by_the_job_convention() -> None:
    for rule in alert_rules():
        if "up" not in metric_names(rule["expr"]):
            continue
        # count(up offset 15m) only asks whether Prometheus has data from then: any job does.
        plain = re.sub(r"count\(up offset 15m\)", "", rule["expr"])
        for match in re.finditer(r"\bup\b(\{[^}]*\})?", plain):
            assert match.group(1) == "{" + JOB_MATCHER + "}", f"{rule['alert']}: `up` without {JOB_MATCHER}"


def _decide(webhook: str, audit: bool, review_body: bytes, *, mode: str = "enforce") -> dict:
    admission = Admission(load_policy(), mode=mode, on_error="allow")
    _, fields = admission.decide(webhook, audit, parse_review(review_body))
    return fields


def test_unguarded_alert_counts_what_the_validating_webhook_records() -> None:
    """Through the real core: an unmutated Plane pod in an enabled namespace carries the reason the
    alert counts; in an audit namespace it is counted under the decisions the alert subtracts; once
    mutated it carries no such reason."""
    name = "PlaneGuardUnguardedPlanePods"
    reason = _matcher(name, "plane_guard_admission_reasons_total", "reason")
    audit_mode = _matcher(name, "plane_guard_admission_requests_total", "mode")
    audit_decisions = _matcher(name, "plane_guard_admission_requests_total", "decision")
    for metric in ("plane_guard_admission_reasons_total", "plane_guard_admission_requests_total"):
        assert _matcher(name, metric, "webhook") == ("=", "validate")

    body = EXAMPLE_REVIEW.read_bytes()
    enforced = _decide("validate", False, body)
    assert enforced["mode"] == "enforce"
    assert any(_matches(reason, metrics.reason_code(r)) for r in enforced["reasons"]), enforced
    for audit, mode in ((True, "enforce"), (False, "audit")):  # an audit namespace, or serve --mode audit
        audited = _decide("validate", audit, body, mode=mode)
        assert _matches(audit_mode, audited["mode"]) and _matches(audit_decisions, audited["decision"]), audited
        assert any(_matches(reason, metrics.reason_code(r)) for r in audited["reasons"]), audited

    review = json.loads(body)
    patch = json.loads(Admission(load_policy(), mode="enforce", on_error="allow").decide("mutate", False, parse_review(body))[0])
    operations = json.loads(base64.b64decode(patch["response"]["patch"]))
    review["request"]["object"] = jsonpatch.apply_patch(review["request"]["object"], operations)
    mutated = _decide("validate", False, json.dumps(review).encode())
    assert not any(_matches(reason, metrics.reason_code(r)) for r in mutated["reasons"]), mutated


@pytest.mark.parametrize(("alert", "on_error"), [("PlaneGuardFailingOpen", "allow"), ("PlaneGuardDenyingOnError", "deny")])
def test_error_alerts_count_the_on_error_decisions(alert: str, on_error: str) -> None:
    decision = _matcher(alert, "plane_guard_admission_requests_total", "decision")
    review = parse_review(EXAMPLE_REVIEW.read_bytes())
    _, fields = Admission(load_policy(), mode="enforce", on_error=on_error).error_answer(review, "mutate", False)
    assert _matches(decision, fields["decision"]), (alert, fields["decision"])
    other = "deny" if on_error == "allow" else "allow"
    _, fields = Admission(load_policy(), mode="enforce", on_error=other).error_answer(review, "mutate", False)
    assert not _matches(decision, fields["decision"])


def test_the_limit_runbook_names_every_limit() -> None:
    """Each limit the server counts (connections.py's messages, the body budget in app.py)."""
    root = Path(__file__).resolve().parents[2] / "webhook" / "serve"
    from webhook.serve.connections import _MESSAGES

    limits = set(_MESSAGES) | set(re.findall(r'limit_hit\(\s*"([\w-]+)"', (root / "app.py").read_text()))
    assert "body-memory" in limits and "max-connections" in limits
    section = runbook_section()
    entry = section[section.index("### PlaneGuardLimitHits"):]
    entry = entry[: entry.find("\n### ", 1) if "\n### " in entry[1:] else len(entry)]
    missing = {limit for limit in limits if f"`{limit}`" not in entry}
    assert not missing, f"the PlaneGuardLimitHits runbook entry does not name {sorted(missing)}"


def test_the_readme_prometheusrule_recipe_keeps_the_groups() -> None:
    """The README indents the rule file by two spaces under ``spec:``; nothing in it may break that."""
    section = runbook_section()
    assert "sed 's/^/  /' manifests/helm/plane-guard/files/alerts.yaml" in section
    header = re.search(r"printf '([^']*)'", section)
    assert header, "the README's PrometheusRule recipe has no printf header"
    indented = "".join("  " + line for line in ALERTS.read_text().splitlines(keepends=True))
    rule = yaml.safe_load(header.group(1).replace("\\n", "\n") + indented)
    assert rule["kind"] == "PrometheusRule" and rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
