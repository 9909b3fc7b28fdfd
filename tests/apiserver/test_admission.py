"""Opt-in and modes, read back from the real API server.

The expected pod is never written down: it is what ``plane-guard preview`` makes of the same
input, created (dry-run) in a namespace that is not opted in, so the API server's defaulting
applies to both sides. The reference for "unchanged" is the input created the same way.
"""

from __future__ import annotations

import json

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.apiserver import plane
from tests.apiserver.compare import differences, token_mounts, token_volumes
from tests.apiserver.stored import AUDIT, ENABLED, OFF, audit_annotations, create, decisions_for, read, reference
from tests.install.conftest import run_cli
from tests.server.harness import metric_samples
from webhook.core import conventions
from webhook.core.mutation import mutate_pod

TEMPLATES = {f"{chart}-{role}": plane.plane_template(chart, role) for chart, role in plane.PLANE_SHAPES}
TEMPLATES["web"] = plane.web_template()
PLANE = [name for name in TEMPLATES if name != "web"]


def preview(installed, pods: list[dict]) -> list[dict]:
    """``plane-guard preview`` on the pods, as a user runs it, with the installed policy."""
    result = run_cli("preview", "-f", "-", "--policy", str(installed.policy_file), input=yaml.safe_dump_all(pods))
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d is not None]


@pytest.fixture(scope="module")
def predicted(installed) -> dict[str, dict]:
    names = list(TEMPLATES)
    return dict(zip(names, preview(installed, [plane.pod(TEMPLATES[n], n) for n in names])))


@pytest.mark.parametrize("name", TEMPLATES)
def test_enabled_namespace_stores_what_preview_predicts(control_plane, installed, predicted, name):
    body = plane.pod(TEMPLATES[name], f"{name}-guarded")
    stored = create(control_plane, ENABLED, body)
    expected = reference(control_plane, dict(predicted[name], metadata={**predicted[name]["metadata"], "name": body["metadata"]["name"]}))
    assert differences(expected, stored) == []
    # The ServiceAccount token is the one the plugin gave the pod before plane-guard ran: one
    # volume, one mount per container. The server re-runs the plugin after a webhook changed
    # the pod, so a container plane-guard added has the token mounted too.
    unguarded = reference(control_plane, body)
    assert len(token_volumes(stored)) == 1 and token_volumes(stored) == token_volumes(unguarded)
    assert set(token_mounts(stored).values()) == {1}
    annotations = stored["metadata"].get("annotations", {})
    if name == "web":
        assert differences(unguarded, stored) == [] and conventions.STATUS_ANNOTATION not in annotations
    else:
        assert differences(unguarded, stored) != [] and conventions.STATUS_ANNOTATION in annotations
        # Stored guarded: plane-guard has nothing left to change.
        assert mutate_pod(stored, installed.policy).patch == []


@pytest.mark.parametrize("name", PLANE)
def test_unlabelled_namespace_and_opted_out_pods_are_stored_unchanged(control_plane, installed, name):
    body = plane.pod(TEMPLATES[name], f"{name}-plain")
    stored = create(control_plane, OFF, body)
    assert differences(reference(control_plane, body), stored) == []
    assert mutate_pod(stored, installed.policy).patch != []  # a pod plane-guard would have changed

    opted_out = plane.pod(TEMPLATES[name], f"{name}-opted-out")
    opted_out["metadata"]["labels"][conventions.INJECT] = "false"
    stored = create(control_plane, ENABLED, opted_out)
    assert differences(reference(control_plane, opted_out), stored) == []
    # Opted out by annotation: the object selector cannot see it, plane-guard says no.
    annotated = plane.pod(TEMPLATES[name], f"{name}-opted-out-annotation")
    annotated["metadata"]["annotations"][conventions.INJECT] = "false"
    stored = create(control_plane, ENABLED, annotated)
    assert differences(reference(control_plane, annotated), stored) == []

    # The namespace and object selectors were applied by the server: the first two never
    # reached plane-guard.
    assert decisions_for(installed.server, OFF, f"{name}-plain") == []
    assert decisions_for(installed.server, ENABLED, f"{name}-opted-out", settle=0) == []
    calls = decisions_for(installed.server, ENABLED, f"{name}-opted-out-annotation", settle=0)
    assert {d["webhook"] for d in calls} == {"mutate", "validate"} and "patched" not in {d["decision"] for d in calls}


@pytest.mark.parametrize("name", PLANE)
def test_audit_namespace_keeps_the_pod_and_records_what_would_change(control_plane, installed, name):
    body = plane.pod(TEMPLATES[name], f"{name}-audited")
    created = control_plane.kubectl("-n", AUDIT, "create", "-f", "-", input=json.dumps(body))
    stored = read(control_plane, AUDIT, body["metadata"]["name"])
    unguarded = reference(control_plane, body)
    assert differences(unguarded, stored) == []
    would_change = mutate_pod(unguarded, installed.policy).changes
    assert would_change
    assert "Warning: plane-guard audit: would change" in created.stderr

    annotations = audit_annotations(control_plane, AUDIT, body["metadata"]["name"])
    assert annotations["audit.mutate.plane-guard.io/would-change"].split(",") == list(would_change)
    assert "mutate.plane-guard.io/changed" not in annotations


def test_kubectl_prints_the_warnings_of_an_enabled_namespace(control_plane, installed):
    body = plane.pod(TEMPLATES["ee-api"], "ee-api-bad-override")
    body["metadata"]["annotations"][conventions.MAX_REQUESTS_ANNOTATION] = "lots"
    created = control_plane.kubectl("-n", ENABLED, "create", "-f", "-", input=json.dumps(body))
    warnings = mutate_pod(reference(control_plane, body), installed.policy).warnings
    assert warnings
    printed = [line.removeprefix("Warning: ") for line in created.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(printed) == len(warnings)
    assert all(p.removesuffix("...") in w for p, w in zip(printed, warnings)), (printed, warnings)


def test_server_dry_run_shows_the_mutation_and_stores_nothing(control_plane, installed):
    body = plane.pod(TEMPLATES["ce-worker"], "ce-worker-dry-run")
    before = _requests(installed)
    shown = control_plane.kubectl("-n", ENABLED, "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(body))
    guarded = create(control_plane, ENABLED, plane.pod(TEMPLATES["ce-worker"], "ce-worker-not-dry-run"))
    assert differences(guarded, json.loads(shown.stdout)) == []
    with pytest.raises(ApiException) as missing:
        control_plane.request("GET", f"/api/v1/namespaces/{ENABLED}/pods/ce-worker-dry-run")
    assert missing.value.status == 404
    # plane-guard saw the dry run as one; a re-invocation (after the server re-ran its own
    # plugins on the changed pod) finds nothing left to change.
    calls = [d for d in decisions_for(installed.server, ENABLED, "ce-worker-dry-run") if d["webhook"] == "mutate"]
    assert [d["decision"] for d in calls][:1] == ["patched"] and {d["decision"] for d in calls[1:]} <= {"unchanged"}
    assert all(d["dry_run"] is True for d in calls)
    # Only the real creation was counted.
    after = _requests(installed)
    assert after.get('decision="patched",mode="enforce",webhook="mutate"', 0) == before.get('decision="patched",mode="enforce",webhook="mutate"', 0) + 1


def test_match_conditions_keep_other_pods_away_from_the_webhook(control_plane, installed):
    def exclusions() -> dict[str, float]:
        text = control_plane.kubectl("get", "--raw", "/metrics").stdout
        samples = metric_samples(text, "apiserver_admission_match_condition_exclusions_total")
        return {k: v for k, v in samples.items() if 'name="mutate.plane-guard.io"' in k or 'name="validate.plane-guard.io"' in k}

    before = exclusions()
    create(control_plane, ENABLED, plane.pod(TEMPLATES["web"], "web-excluded"))
    after = exclusions()
    assert sum(after.values()) - sum(before.values()) == 2, (before, after)  # the mutating and the validating webhook
    assert decisions_for(installed.server, ENABLED, "web-excluded") == []


def _requests(installed) -> dict[str, float]:
    status, body = installed.server.client().get("/metrics")
    assert status == 200
    return metric_samples(body.decode(), "plane_guard_admission_requests_total")
