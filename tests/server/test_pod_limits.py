"""Bounded work per request: a pod above the policy limits is admitted unchanged, and request
bodies held in memory at once are bounded (a request past that bound gets 503 at once)."""

from __future__ import annotations

import json

import pytest

from tests.server.abuse import connect, head, many_containers_review, post, read_answer
from tests.server.harness import WebhookProcess, labels, metric_samples
from tests.server.pods import plane_pod, review
from webhook.core import conventions
from webhook.core.policy import default_policy_text

LIMITS = "limits:\n  containersPerPod: 4\n  envPerContainer: 10\n  patchBytes: 4096\n"


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory, cert_dir):
    text = default_policy_text()
    assert "\nlimits:\n" in text
    policy = tmp_path_factory.mktemp("policy") / "limits.yaml"
    policy.write_text(text[: text.index("\nlimits:\n") + 1] + LIMITS)
    server = WebhookProcess(cert_dir, tmp_path_factory.mktemp("limited") / "server.log", "--policy", str(policy)).start()
    yield server
    server.stop()


def _over_limit(server, path: str, request: dict) -> dict:
    client = server.client()
    try:
        response = client.review(path, request)["response"]
    finally:
        client.close()
    assert response["uid"] == request["request"]["uid"]
    assert response["allowed"] is True
    assert "patch" not in response
    return response


@pytest.mark.parametrize("path", [conventions.PATH_MUTATE, conventions.PATH_VALIDATE, conventions.PATH_MUTATE_AUDIT])
def test_too_many_containers(limited_server, path):
    request = json.loads(many_containers_review(5))
    response = _over_limit(limited_server, path, request)
    assert response["warnings"] == ["plane-guard left this pod unchanged: 5 containers, above limits.containersPerPod (4)"]
    decision = limited_server.decision(request["request"]["uid"])
    assert decision["decision"] == "over-limit" and decision["reasons"] == ["limit-containers"]


def test_too_many_env_entries(limited_server):
    pod = plane_pod(env=[{"name": f"SECRET_{i}", "value": f"value-{i}-not-echoed"} for i in range(11)])
    request = review(pod)
    response = _over_limit(limited_server, conventions.PATH_MUTATE, request)
    assert "11 env entries in a container, above limits.envPerContainer (10)" in response["warnings"][0]
    assert "not-echoed" not in json.dumps(response)


def test_patch_too_large(limited_server):
    pod = plane_pod()
    pod["spec"]["containers"][0]["command"].append("--option=" + "x" * 5000)  # copied into the wrapped command
    request = review(pod)
    response = _over_limit(limited_server, conventions.PATH_MUTATE, request)
    assert "-byte patch, above limits.patchBytes (4096)" in response["warnings"][0]
    client = limited_server.client()
    try:
        reasons = metric_samples(client.get("/metrics")[1].decode(), "plane_guard_admission_reasons_total")
    finally:
        client.close()
    assert reasons[labels(webhook="mutate", reason="limit-patch-bytes")] >= 1


def test_pods_within_the_limits_are_still_patched(limited_server):
    client = limited_server.client()
    try:
        response = client.review(conventions.PATH_MUTATE, review(plane_pod()))["response"]
    finally:
        client.close()
    assert response["patchType"] == "JSONPatch"


def test_the_default_limits_admit_a_huge_review_unchanged(client):
    """The measured case: a 3 MB review of tens of thousands of containers gets a short answer."""
    body = many_containers_review(25_000)
    assert 2_000_000 < len(body) < 3 * 1024 * 1024
    status, headers, data = client.request("POST", conventions.PATH_MUTATE, body, {"Content-Type": "application/json"})
    assert status == 200
    assert len(data) < 2000
    response = json.loads(data)["response"]
    assert "patch" not in response and "limits.containersPerPod (64)" in response["warnings"][0]


BODY_LIMIT = 65536


@pytest.fixture
def small_body_server(tmp_path, cert_dir):
    server = WebhookProcess(cert_dir, tmp_path / "server.log", "--max-body-bytes", str(BODY_LIMIT)).start()
    yield server
    server.stop()


def test_bodies_in_memory_are_bounded(small_body_server):
    """Four unfinished bodies just under --max-body-bytes fill the budget (4 x the limit); the fifth gets 503."""
    server = small_body_server
    partial = BODY_LIMIT - 1000
    held = []
    try:
        for _ in range(4):
            sock = connect(server.port, server.ca_file)
            sock.sendall(head("POST", "/mutate", [("Content-Type", "application/json"), ("Content-Length", str(partial + 500))]))
            sock.sendall(b" " * partial)
            held.append(sock)
        last = connect(server.port, server.ca_file)
        held.append(last)
        last.sendall(head("POST", "/mutate", [("Content-Type", "application/json"), ("Content-Length", str(partial + 500))]))
        last.sendall(b" " * (partial + 500))
        status, headers, body = read_answer(last)
        assert status == 503, body[:200]
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
    finally:
        for sock in held:
            sock.close()
    # Given back when the requests end: a normal review goes through.
    with connect(server.port, server.ca_file) as sock:
        sock.sendall(post("/mutate", json.dumps(review(plane_pod())).encode()))
        assert read_answer(sock)[0] == 200
    assert '"limit":"body-memory"' in server.log()


def test_huge_requests_never_turn_away_a_normal_one(enforce_server):
    """Unfinished 3 MiB bodies fill what large bodies may take (one of four gets 503); a normal review still gets 200."""
    limit = 3 * 1024 * 1024
    held = []
    try:
        for _ in range(4):
            sock = connect(enforce_server.port, enforce_server.ca_file)
            sock.sendall(head("POST", "/mutate", [("Content-Type", "application/json"), ("Content-Length", str(limit))]))
            sock.sendall(b" " * (limit - 4096))
            held.append(sock)
        with connect(enforce_server.port, enforce_server.ca_file) as normal:
            normal.sendall(post("/mutate", json.dumps(review(plane_pod())).encode()))
            assert read_answer(normal)[0] == 200
        statuses = [read_answer(sock, timeout=2)[0] for sock in held]
        assert statuses.count(503) == 1, statuses  # the others wait for the rest of their body
    finally:
        for sock in held:
            sock.close()


def test_limits_must_be_positive():
    from webhook.core.policy import PolicyError, load_policy_text

    text = default_policy_text().replace("containersPerPod: 64", "containersPerPod: 0")
    with pytest.raises(PolicyError, match="limits.containersPerPod"):
        load_policy_text(text)
