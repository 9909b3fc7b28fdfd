"""The validating rules on final pods (pure functions, no server)."""

from __future__ import annotations

import json

import pytest

from tests.server.pods import plane_pod
from webhook.core import conventions
from webhook.core.admission import build_response, valid_audit_key
from webhook.core.mutation import apply_patch, mutate_pod
from webhook.core.policy import default_policy, default_policy_text, load_policy_text
from webhook.core.validation import validate_pod

PASSWORD = "pw-never-shown"


def _policy(**rules: str):
    text = default_policy_text()
    for rule, action in rules.items():
        text = text.replace(f"{rule}: warn", f"{rule}: {action}")
    return load_policy_text(text)


def _final(pod):
    return apply_patch(pod, mutate_pod(pod, default_policy()).patch)


def _url(query: str) -> list:
    return [{"name": "AMQP_URL", "value": f"amqp://plane:{PASSWORD}@rabbit:5672/plane{query}"}]


def _rules(verdict) -> list[str]:
    return sorted(f.rule for f in verdict.findings)


def test_a_mutated_stock_pod_is_clean():
    for role in ("api", "worker", "beat"):
        verdict = validate_pod(_final(plane_pod(role)), default_policy())
        assert verdict.findings == () and verdict.allowed and verdict.decision == "allowed"


def test_an_unmutated_api_pod_is_flagged():
    verdict = validate_pod(plane_pod(), default_policy())
    assert _rules(verdict) == ["gunicornMaxRequestsOutOfBounds", "notMutated"]
    assert verdict.allowed and verdict.decision == "warned"


@pytest.mark.parametrize(
    "query, expected",
    [
        ("?heartbeat=0", ["amqpHeartbeatDisabled"]),
        ("?heartbeat=abc", ["amqpHeartbeatDisabled"]),
        ("?heartbeat=30", []),
        ("?heartbeat=30&foo=bar", ["unknownAmqpQueryKey"]),
        ("?heartbeat=30&ssl_cert_reqs=0", []),
    ],
)
def test_literal_amqp_url_rules(query, expected):
    pod = plane_pod("worker", env=_url(query))
    pod["metadata"]["annotations"][conventions.STATUS_ANNOTATION] = "{}"  # judged as if mutated
    verdict = validate_pod(pod, default_policy())
    assert _rules(verdict) == expected
    assert PASSWORD not in json.dumps([f.message for f in verdict.findings])
    assert "rabbit" not in json.dumps([f.message for f in verdict.findings])


def test_mutation_repairs_what_validation_flags():
    for query in ("", "?heartbeat=abc"):
        assert validate_pod(_final(plane_pod(env=_url(query))), default_policy()).findings == ()


def test_missing_heartbeat_counts_unless_the_runtime_adds_it():
    pod = plane_pod(env=_url(""))
    pod["metadata"].setdefault("annotations", {})[conventions.STATUS_ANNOTATION] = "{}"
    bare = validate_pod(pod, default_policy())
    assert "amqpHeartbeatDisabled" in _rules(bare)
    container = pod["spec"]["containers"][0]
    container["command"] = ["/bin/sh", "/plane-guard/entrypoint.sh", *container["command"]]
    container["env"].append({"name": conventions.ENV_AMQP_HEARTBEAT, "value": "60"})
    assert "amqpHeartbeatDisabled" not in _rules(validate_pod(pod, default_policy()))


def _messages(verdict) -> list[str]:
    return [f.message for f in verdict.findings if f.rule == "gunicornMaxRequestsOutOfBounds"]


@pytest.mark.parametrize("value, flagged", [("0", False), ("1200", True), ("-1", True), ("many", True)])
def test_gunicorn_bounds_of_a_literal_value(value, flagged):
    """An unmutated pod: its own literal value is what gunicorn gets."""
    pod = plane_pod(env=[{"name": "GUNICORN_MAX_REQUESTS", "value": value}])
    pod["spec"]["containers"][0].pop("envFrom")
    assert bool(_messages(validate_pod(pod, default_policy()))) is flagged


def test_the_policys_override_is_what_a_wrapped_container_runs_with():
    pod = _final(plane_pod(env=[{"name": "GUNICORN_MAX_REQUESTS", "value": "1200"}]))
    assert _messages(validate_pod(pod, default_policy())) == []
    for entry in pod["spec"]["containers"][0]["env"]:
        if entry["name"] == conventions.ENV_OVERRIDE_PREFIX + "GUNICORN_MAX_REQUESTS":
            entry["value"] = "5000"
    assert _messages(validate_pod(pod, default_policy())) == [
        "GUNICORN_MAX_REQUESTS=5000 (policy) outside allowed [0, 0]: gunicorn rotation drops AMQP connections"
    ]


def test_a_value_env_from_may_bring_is_decided_at_start_not_called_unset():
    keep = load_policy_text(default_policy_text().replace("existing: replace", "existing: keep"))
    guarded = apply_patch(plane_pod(), mutate_pod(plane_pod(), keep).patch)
    assert validate_pod(guarded, keep).findings == ()  # the wrapper keeps envFrom's value or applies 0, and logs it

    unguarded = plane_pod()
    messages = _messages(validate_pod(unguarded, default_policy()))
    assert messages and "decided at container start" in messages[0] and "unset" not in messages[0]

    unguarded["spec"]["containers"][0].pop("envFrom")
    assert _messages(validate_pod(unguarded, default_policy())) == [
        "GUNICORN_MAX_REQUESTS unset: image default 1200 outside allowed [0, 0]: gunicorn rotation drops AMQP connections"
    ]


def test_gunicorn_from_a_config_map_key_is_not_judged():
    pod = plane_pod(env=[{"name": "GUNICORN_MAX_REQUESTS", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "y"}}}])
    assert _messages(validate_pod(pod, default_policy())) == []
    assert _messages(validate_pod(_final(pod), default_policy())) == []


def test_worker_is_not_judged_on_gunicorn():
    pod = plane_pod("worker")
    assert _rules(validate_pod(pod, default_policy())) == ["notMutated"]


def test_opted_out_and_foreign_pods_are_not_judged():
    pod = plane_pod()
    pod["metadata"]["annotations"][conventions.INJECT] = "false"
    assert validate_pod(pod, default_policy()).reasons == ("opted-out",)
    nginx = plane_pod()
    nginx["spec"]["containers"][0].update(image="nginx:1.27", name="web", command=["nginx"])
    assert validate_pod(nginx, default_policy()).reasons == ("no-role-matched",)
    assert validate_pod({"kind": "Pod"}, default_policy()).reasons == ("not-a-pod",)


def test_actions_deny_warn_audit():
    policy = _policy(notMutated="deny", gunicornMaxRequestsOutOfBounds="audit")
    verdict = validate_pod(plane_pod(), policy)
    assert not verdict.allowed and verdict.decision == "denied"
    assert "notMutated" in verdict.deny_message() and "set the rule to warn" in verdict.deny_message()
    assert list(verdict.audit_annotations()) == ["gunicornMaxRequestsOutOfBounds"]
    assert verdict.warnings() == []

    audited = validate_pod(plane_pod(), policy, audit=True)
    assert audited.allowed and len(audited.warnings()) == 1


def test_response_envelope_rules():
    body = json.loads(
        build_response("admission.k8s.io/v1beta1", "u-1", patch=[{"op": "add", "path": "/x", "value": 1}], warnings=["w" * 300])
    )
    assert body["apiVersion"] == "admission.k8s.io/v1beta1"
    assert body["response"]["patchType"] == "JSONPatch"
    assert len(body["response"]["warnings"][0]) == 120
    assert valid_audit_key("would-change") and valid_audit_key("notMutated")
    assert not valid_audit_key("plane-guard.io/would-change")  # the API server adds the prefix
    with pytest.raises(ValueError):
        build_response("admission.k8s.io/v1", "u", audit_annotations={"a/b": "x"})


def test_a_workload_the_policy_leaves_alone_is_not_judged():
    policy = load_policy_text(default_policy_text() + "workloads:\n  - match: {podLabels: {app.name: '-api$'}}\n    inject: false\n")
    assert validate_pod(plane_pod(), policy).reasons == ("opted-out",)
    assert _rules(validate_pod(plane_pod(), default_policy())) == ["gunicornMaxRequestsOutOfBounds", "notMutated"]


@pytest.mark.parametrize("action", ["warn", "deny", "audit"])
def test_audit_mode_names_what_the_mutating_webhook_would_change(action):
    """Left unchanged on purpose: every name is recorded, the warning fits, nothing says "failed"."""
    policy = _policy(notMutated=action)
    pod = plane_pod(env=_url(""))
    changes = mutate_pod(pod, policy).changes
    verdict = validate_pod(pod, policy, audit=True)
    (finding,) = [f for f in verdict.findings if f.rule == "notMutated"]
    assert finding.names == changes and verdict.would_change == changes
    assert finding.action == ("warn" if action == "deny" else action)
    assert verdict.allowed
    annotations = verdict.audit_annotations()
    assert annotations["would-change"] == ",".join(changes)
    text = json.dumps([verdict.warnings(), annotations])
    assert "skipped or failed" not in text and PASSWORD not in text
    if action == "audit":
        assert all(c in annotations["notMutated"] for c in changes) and verdict.warnings() == [
            w for w in verdict.warnings() if "audit mode" not in w
        ]
    else:
        (line,) = [w for w in verdict.warnings() if "audit mode" in w]
        assert len(line) <= 120 and f"would change {len(changes)}: plane-api: entrypoint" in line


def test_audit_mode_with_nothing_to_change_reports_nothing():
    rule = "workloads:\n  - match: {podLabels: {app.name: '-api$'}}\n    inject: false\n"
    policy = load_policy_text(default_policy_text() + rule)
    assert validate_pod(plane_pod(), policy, audit=True).findings == ()
    assert validate_pod(_final(plane_pod("worker")), default_policy(), audit=True).findings == ()
