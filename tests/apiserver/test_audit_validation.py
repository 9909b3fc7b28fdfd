"""The validating webhook in an ``audit`` namespace, through the real API server: the pod is left
unchanged on purpose, so what kubectl prints, the audit log and plane-guard's log name what the
mutating webhook would have changed, and nothing says it was skipped or failed.

Expectations come from the core on the pod as stored, while the test runs."""

from __future__ import annotations

import json

import pytest

from tests.apiserver import plane
from tests.apiserver.stored import AUDIT, audit_annotations, decisions_for, read
from webhook.core.admission import short_warning
from webhook.core.mutation import mutate_pod
from webhook.core.validation import validate_pod

SHAPES = [("ee", "api"), ("ce", "worker")]


@pytest.mark.parametrize("chart, role", SHAPES)
def test_audit_namespace_validation_names_what_would_change(control_plane, installed, chart, role):
    name = f"{chart}-{role}-audit-validated"
    body = plane.pod(plane.plane_template(chart, role), name)
    created = control_plane.kubectl("-n", AUDIT, "create", "-f", "-", input=json.dumps(body))
    stored = read(control_plane, AUDIT, name)
    would_change = mutate_pod(stored, installed.policy).changes
    assert would_change  # a pod plane-guard would change, or the test proves nothing

    printed = [line.removeprefix("Warning: ") for line in created.stderr.splitlines() if line.startswith("Warning: ")]
    assert not any("skipped or failed" in line for line in printed), printed
    verdict = validate_pod(stored, installed.policy, audit=True)
    assert all(short_warning(w) in printed for w in verdict.warnings()), (printed, verdict.warnings())
    (line,) = [p for p in printed if "audit mode" in p]
    assert f"would change {len(would_change)}: {would_change[0].replace(':', ': ', 1)}" in line

    annotations = audit_annotations(control_plane, AUDIT, name)
    assert annotations["audit.validate.plane-guard.io/would-change"].split(",") == list(would_change)
    assert "skipped or failed" not in json.dumps(annotations)
    (record,) = [d for d in decisions_for(installed.server, AUDIT, name) if d["webhook"] == "validate"]
    assert record["mode"] == "audit" and record["would_change"] == list(would_change)
