"""What the monitoring tests share: the files, promtool, and what PromQL names.

Metric names are read from expressions with a small scanner, not a PromQL parser (none is
packaged for Python): the syntax itself is left to ``promtool check rules``, which does parse it.
The scanner drops strings, label matchers, ranges and label lists, then keeps the identifiers
that are not called (functions, aggregations) and not keywords. ``test_alerts`` checks it on
expressions whose names are known.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tools import prerequisites

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "helm" / "plane-guard" / "files"
ALERTS = MONITORING / "alerts.yaml"
ALERT_TESTS = MONITORING / "alerts.test.yaml"
DASHBOARD = MONITORING / "dashboard.json"
README = REPO / "README.md"
#: The section of the README that holds the runbook entries.
SECTION = "## Alerts and dashboard"
#: What every plane-guard selector of ``up`` matches (the job-label convention).
JOB_MATCHER = 'job=~".*plane-guard.*"'
#: Names every Prometheus has without plane-guard exporting them.
PROMETHEUS_OWN = frozenset({"up"})
#: Labels the scrape adds to every series (a ServiceMonitor adds these), not the server.
TARGET_LABELS = frozenset({"job", "namespace", "instance", "pod", "service", "container", "endpoint"})

#: Sample names prometheus_client writes for each kind of metric (``_created`` left out: the
#: multiprocess mode of ``--workers`` > 1 does not export it, so no rule may use it).
_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum")}
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
                       "atan2", "inf", "nan"})
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*(?:\(|\bby\b|\bwithout\b))?")


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of alerts.yaml, all groups together."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    """Run the real promtool (tests that call this carry the ``promtool`` marker)."""
    command = prerequisites.find("promtool")
    assert command, "promtool is not on PATH: the promtool marker should have skipped this test"
    return subprocess.run([command, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def check_expressions(expressions: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``promtool check rules`` on the expressions, each one a recording rule named by its key."""
    rules = [{"record": name, "expr": expr} for name, expr in expressions.items()]
    with tempfile.TemporaryDirectory(prefix="plane-guard-promql-") as folder:
        path = Path(folder) / "expressions.yaml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "expressions", "rules": rules}]}, sort_keys=False))
        return promtool("check", "rules", str(path), cwd=Path(folder))


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", r" \1 ", text)
    return {
        match.group(1)
        for match in _IDENTIFIER.finditer(text)
        if not match.group(2) and match.group(1).lower() not in _KEYWORDS
    }


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric name, {label: (operator, value)}) for each selector with label matchers."""
    found = []
    for name, body in re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}", expr):
        matchers = {label: (op, value) for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', body)}
        found.append((name, matchers))
    return found


def exported_metric_names() -> set[str]:
    """Every sample name ``GET /metrics`` can carry, from the collectors webhook.serve.metrics defines."""
    from prometheus_client.metrics import MetricWrapperBase

    from webhook.serve import metrics

    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def exported_labels() -> dict[str, set[str]]:
    """Sample name -> the label names the server gives it (``le`` on histogram buckets)."""
    from prometheus_client.metrics import MetricWrapperBase

    from webhook.serve import metrics

    labels: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            # prometheus_client keeps a metric's label names in _labelnames; no public accessor.
            names = set(value._labelnames)
            for family in value.describe():
                for suffix in _SUFFIXES[family.type]:
                    labels[family.name + suffix] = names | ({"le"} if suffix == "_bucket" else set())
    return labels


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation out, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_section() -> str:
    """The README's "Alerts and dashboard" section, up to the next ``## `` heading."""
    text = README.read_text()
    start = text.find("\n" + SECTION + "\n")
    assert start >= 0, f"README.md has no section {SECTION!r}"
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def runbook_anchors() -> dict[str, str]:
    """Anchor -> heading text of the headings inside the runbook section."""
    headings = re.findall(r"^#{3,4} (.+)$", runbook_section(), flags=re.MULTILINE)
    return {github_anchor(heading): heading for heading in headings}
