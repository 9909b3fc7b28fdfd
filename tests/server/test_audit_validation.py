"""The validating webhook in audit mode, over real TLS: an unmutated pod there was left alone on
purpose, so the answer names what the mutating webhook would have changed, never "skipped or failed".

Expectations come from ``mutate_pod`` on the same pod while the test runs, so they follow the mutation."""

from __future__ import annotations

import json

import jsonpatch
import pytest

from tests.server.harness import decode_patch
from tests.server.pods import plane_pod, review
from webhook.core import conventions
from webhook.core.admission import WARNING_MAX_CHARS
from webhook.core.mutation import mutate_pod
from webhook.core.policy import default_policy

SKIPPED_OR_FAILED = "skipped or failed"
PASSWORD = "audit-pw-never-shown"


def _would_change(pod: dict) -> tuple[str, ...]:
    changes = mutate_pod(pod, default_policy()).changes
    assert changes  # a pod plane-guard would change, or the test proves nothing
    return changes


def _check_audit_answer(response: dict, pod: dict) -> None:
    """Allowed, names the changes (whole names, in order, counted), and never guesses a failure."""
    changes = _would_change(pod)
    assert response["allowed"] is True and "patch" not in response
    assert SKIPPED_OR_FAILED not in json.dumps(response)
    (line,) = [w for w in response["warnings"] if "audit mode" in w]
    assert len(line) <= WARNING_MAX_CHARS and not line.endswith("...")  # the API server would cut it
    head, _, listed = line.partition(f"would change {len(changes)}: ")
    assert head and listed, line
    container, _, first = changes[0].partition(":")
    assert listed.startswith(f"{container}: {first}, "), line
    shown = [name for name in listed.split(", ") if not name.endswith(" more")]
    more = len(changes) - len(shown)
    assert shown and (listed.endswith(f", +{more} more") or more == 0), line
    plain = [name.split(": ", 1)[-1] for name in shown]
    assert plain == [c.partition(":")[2] for c in changes[: len(shown)]], line
    assert response["auditAnnotations"]["would-change"].split(",") == list(changes)


def _answer(server, path: str, request: dict) -> dict:
    """The server's response to one review, on a connection of its own."""
    client = server.client()
    try:
        return client.review(path, request)["response"]
    finally:
        client.close()


@pytest.mark.parametrize("role", ["api", "worker", "beat"])
def test_audit_namespace_names_what_would_change(enforce_server, role):
    pod = plane_pod(role)
    request = review(pod)
    response = _answer(enforce_server, conventions.PATH_VALIDATE_AUDIT, request)
    _check_audit_answer(response, pod)
    record = enforce_server.decision(request["request"]["uid"])
    assert record["mode"] == "audit" and record["webhook"] == "validate"
    assert record["would_change"] == list(_would_change(pod))


def test_global_audit_mode_says_the_same_on_the_enforce_path(audit_server):
    pod = plane_pod()
    response = _answer(audit_server, conventions.PATH_VALIDATE, review(pod))
    _check_audit_answer(response, pod)


def test_enforce_mode_still_says_the_mutating_webhook_was_skipped_or_failed(client):
    """The contrast: where plane-guard should have changed the pod, an unmutated pod is news."""
    response = client.review(conventions.PATH_VALIDATE, review(plane_pod()))["response"]
    assert any(SKIPPED_OR_FAILED in w for w in response["warnings"])
    assert "would-change" not in response.get("auditAnnotations", {})


def test_a_pod_already_hardened_is_not_reported_in_audit_mode(client):
    """A pod mutated earlier (the namespace was enabled, then switched to audit) has nothing to report."""
    pod = plane_pod("worker")
    hardened = jsonpatch.apply_patch(pod, decode_patch(client.review(conventions.PATH_MUTATE, review(pod))["response"]))
    response = client.review(conventions.PATH_VALIDATE_AUDIT, review(hardened))["response"]
    assert "warnings" not in response and "auditAnnotations" not in response


def test_a_deny_policy_in_audit_mode_warns_with_the_names(deny_server):
    pod = plane_pod()
    response = _answer(deny_server, conventions.PATH_VALIDATE_AUDIT, review(pod))
    _check_audit_answer(response, pod)


def test_names_never_values(enforce_server):
    pod = plane_pod("worker", env=[{"name": "AMQP_URL", "value": f"amqp://plane:{PASSWORD}@rabbit:5672/plane"}])
    request = review(pod)
    response = _answer(enforce_server, conventions.PATH_VALIDATE_AUDIT, request)
    _check_audit_answer(response, pod)
    assert PASSWORD not in json.dumps(response) and "rabbit" not in json.dumps(response)
    assert PASSWORD not in json.dumps(enforce_server.decision(request["request"]["uid"]))
