"""The webhook over real TLS, called like kube-apiserver calls it, with stock Plane pods."""

from __future__ import annotations

import copy
import json

import jsonpatch
import kubernetes_validate
import pytest

from tests.server.harness import decode_patch, labels, metric_samples
from tests.server.pods import IMAGES, plane_pod, review
from webhook.core import conventions

K8S_VERSION = "1.30"
API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


def _env(pod: dict, container: int = 0) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][container].get("env", [])}


@pytest.mark.parametrize("api_version", API_VERSIONS)
@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("role", ["api", "worker", "beat"])
def test_mutate_stock_plane_pod(client, api_version, image, role):
    pod = plane_pod(role, image)
    request = review(pod, api_version)
    answer = client.review("/mutate", request)

    assert answer["apiVersion"] == api_version
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == request["request"]["uid"]
    assert response["allowed"] is True
    patched = jsonpatch.apply_patch(pod, decode_patch(response))
    kubernetes_validate.validate(patched, K8S_VERSION, strict=True)

    env = _env(patched)
    if role == "api":
        assert env[conventions.ENV_OVERRIDE_PREFIX + "GUNICORN_MAX_REQUESTS"] == "0"
    assert env[conventions.ENV_DEFAULT_PREFIX + "CELERY_TASK_PUBLISH_RETRY"] == "1"
    assert env[conventions.ENV_AMQP_HEARTBEAT] == "60"
    status = json.loads(patched["metadata"]["annotations"][conventions.STATUS_ANNOTATION])
    assert status["roles"] == {pod["spec"]["containers"][0]["name"]: role}
    # Nothing the API server sent was dropped.
    assert patched["metadata"]["managedFields"] == pod["metadata"]["managedFields"]
    assert patched["spec"]["tolerations"] == pod["spec"]["tolerations"]
    assert client.connections_opened == 1


def test_keep_alive_many_requests_one_connection(client):
    pod = plane_pod()
    for _ in range(50):
        request = review(pod)
        assert client.review("/mutate", request)["response"]["uid"] == request["request"]["uid"]
    assert client.connections_opened == 1


def test_mutated_pod_passes_validation_and_unmutated_is_flagged(client):
    pod = plane_pod()
    response = client.review("/mutate", review(pod))["response"]
    final = jsonpatch.apply_patch(pod, decode_patch(response))

    clean = client.review(conventions.PATH_VALIDATE, review(final))["response"]
    assert clean["allowed"] is True
    assert "warnings" not in clean

    flagged = client.review(conventions.PATH_VALIDATE, review(pod))["response"]
    assert flagged["allowed"] is True
    text = " ".join(flagged["warnings"])
    assert "not hardened" in text and "GUNICORN_MAX_REQUESTS" in text
    assert all(len(w) <= 120 for w in flagged["warnings"])


def test_second_pass_is_a_no_op(client):
    """Reinvocation: the mutated pod comes back and nothing more is patched."""
    pod = plane_pod()
    first = client.review("/mutate", review(pod))["response"]
    again = jsonpatch.apply_patch(pod, decode_patch(first))
    second = client.review("/mutate", review(again))["response"]
    assert second["allowed"] is True
    assert "patch" not in second


@pytest.mark.parametrize(
    "name, build, reason",
    [
        ("deployment", lambda: review({"kind": "Deployment", "spec": {}}, kind="Deployment", resource="deployments"), "not-a-pod"),
        ("update", lambda: review(plane_pod(), operation="UPDATE"), "not-create"),
        ("ephemeral", lambda: {**(r := review(plane_pod())), "request": {**r["request"], "subResource": "ephemeralcontainers"}}, "subresource"),
        ("nginx", lambda: review(_nginx_pod()), "no-role-matched"),
        ("opted-out", lambda: review(_opted_out()), "opted-out"),
    ],
)
def test_skipped_requests_are_allowed_unchanged(enforce_server, client, name, build, reason):
    before = metric_samples(client.get("/metrics")[1].decode(), "plane_guard_admission_reasons_total")
    request = build()
    response = client.review("/mutate", request)["response"]
    assert response == {"uid": request["request"]["uid"], "allowed": True}
    after = metric_samples(client.get("/metrics")[1].decode(), "plane_guard_admission_reasons_total")
    key = labels(webhook="mutate", reason=reason)
    assert after.get(key, 0) == before.get(key, 0) + 1
    logged = [d for d in enforce_server.decisions() if d["uid"] == request["request"]["uid"]]
    assert len(logged) == 1 and reason in logged[0]["reasons"]


def _nginx_pod() -> dict:
    pod = plane_pod()
    pod["spec"]["containers"][0].update(name="web", image="nginx:1.27", command=["nginx", "-g", "daemon off;"])
    return pod


def _opted_out() -> dict:
    pod = plane_pod()
    pod["metadata"]["labels"][conventions.INJECT] = "disabled"
    return pod


def test_audit_path_changes_nothing_and_says_what_it_would_do(client):
    request = review(plane_pod())
    response = client.review(conventions.PATH_MUTATE_AUDIT, request)["response"]
    assert response["allowed"] is True
    assert "patch" not in response and "patchType" not in response
    assert any("would change" in w for w in response["warnings"])
    would = response["auditAnnotations"]["would-change"]
    assert "plane-api:env/GUNICORN_MAX_REQUESTS" in would
    assert "/" not in next(iter(response["auditAnnotations"]))  # the API server adds "<webhook>/"


def test_global_audit_mode_overrides_the_enforce_path(audit_server):
    client = audit_server.client()
    try:
        response = client.review(conventions.PATH_MUTATE, review(plane_pod()))["response"]
        assert "patch" not in response and "would-change" in response["auditAnnotations"]
        ready = json.loads(client.get(conventions.PATH_READYZ)[1])
        assert ready["mode"] == "audit"
    finally:
        client.close()


def test_dry_run_answers_the_same_without_side_effects(enforce_server, client):
    def counters() -> dict:
        text = client.get("/metrics")[1].decode()
        return {
            name: metric_samples(text, name)
            for name in (
                "plane_guard_admission_requests_total",
                "plane_guard_admission_reasons_total",
                "plane_guard_admission_duration_seconds_count",
            )
        }

    client.review("/mutate", review(plane_pod()))  # make sure every series exists
    before = counters()
    request = review(plane_pod(), dry_run=True)
    response = client.review("/mutate", request)["response"]
    client.review(conventions.PATH_VALIDATE, review(plane_pod(), dry_run=True))
    client.review(conventions.PATH_MUTATE_AUDIT, review(plane_pod(), dry_run=True))
    assert decode_patch(response)  # the API server applies the patch to the dry-run object
    assert counters() == before
    logged = [d for d in enforce_server.decisions() if d["uid"] == request["request"]["uid"]]
    assert logged and logged[0]["dry_run"] is True


def test_decisions_are_counted(client):
    def patched() -> float:
        samples = metric_samples(client.get("/metrics")[1].decode(), "plane_guard_admission_requests_total")
        return samples.get(labels(webhook="mutate", mode="enforce", decision="patched"), 0)

    before = patched()
    client.review("/mutate", review(plane_pod()))
    assert patched() == before + 1


def test_decision_log_has_names_never_values(enforce_server, client):
    secret = "s3cr3t-broker-password"
    pod = plane_pod(env=[{"name": "AMQP_URL", "value": f"amqp://plane:{secret}@rabbit:5672/plane?foo=bar"}])
    request = review(pod)
    response = client.review("/mutate", request)["response"]
    assert secret not in json.dumps(response.get("warnings", []))
    client.review(conventions.PATH_VALIDATE, review(pod))
    log = enforce_server.log()
    assert secret not in log and "rabbit:5672" not in log
    record = next(d for d in enforce_server.decisions() if d["uid"] == request["request"]["uid"])
    assert record["namespace"] == "plane"
    assert record["pod"] == "plane-api-wl-7d9f8b6c5-"
    assert record["roles"] == {"plane-api": "api"}
    assert record["decision"] == "patched"
    assert isinstance(record["duration_ms"], float)


def test_validate_deny_policy(deny_server):
    client = deny_server.client()
    try:
        request = review(plane_pod(), "admission.k8s.io/v1beta1")
        answer = client.review(conventions.PATH_VALIDATE, request)
        assert answer["apiVersion"] == "admission.k8s.io/v1beta1"
        response = answer["response"]
        assert response["allowed"] is False
        assert response["status"]["code"] == 403
        assert "notMutated" in response["status"]["message"]
        assert "gunicornMaxRequestsOutOfBounds" in response["status"]["message"]

        # Per-namespace audit: deny becomes warn.
        audited = client.review(conventions.PATH_VALIDATE_AUDIT, review(plane_pod()))["response"]
        assert audited["allowed"] is True and len(audited["warnings"]) == 2

        # unknownAmqpQueryKey is "audit" in this policy: an audit annotation, no warning.
        pod = plane_pod(env=[{"name": "AMQP_URL", "value": "amqp://u:p@rabbit//?heartbeat=30&foo=1"}])
        mutated = jsonpatch.apply_patch(pod, decode_patch(client.review("/mutate", review(pod))["response"]))
        final = client.review(conventions.PATH_VALIDATE, review(mutated))["response"]
        assert final["allowed"] is True
        assert "foo" in final["auditAnnotations"]["unknownAmqpQueryKey"]
        assert "p@rabbit" not in json.dumps(final)
    finally:
        client.close()


def test_healthz_readyz_metrics(client):
    assert client.get(conventions.PATH_HEALTHZ)[0] == 200
    status, body = client.get(conventions.PATH_READYZ)
    ready = json.loads(body)
    assert status == 200 and ready["ready"] is True and ready["policy"]
    status, body = client.get(conventions.PATH_METRICS)
    assert status == 200 and b"plane_guard_certificate_expiry_timestamp_seconds" in body


def test_response_never_modifies_request_fields(client):
    pod = plane_pod()
    original = copy.deepcopy(pod)
    request = review(pod)
    client.review("/mutate", request)
    assert request["request"]["object"] == original
