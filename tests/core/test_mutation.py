"""Targeted behaviours of the pod mutation that the golden fixtures do not pin down alone."""

from __future__ import annotations

import copy
import json

import kubernetes_validate
import pytest

from tests.fixtures import golden
from webhook import conventions as names
from webhook.mutation import apply_patch, escape, mutate_pod, pod_roles
from webhook.policy import default_policy, load_policy_text

POLICY = default_policy()
K8S_VERSION = kubernetes_validate.latest_version()


def api_pod(**container_fields) -> dict:
    pod = golden.load_input("api-envfrom-secret")
    pod["spec"]["containers"][0].update(container_fields)
    return pod


def env_of(pod: dict, index: int = 0) -> dict:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][index].get("env") or []}


@pytest.mark.parametrize("case", golden.CASES)
def test_mutated_fixtures_are_valid_kubernetes_pods(case):
    pod = golden.load_input(case)
    mutated = apply_patch(pod, mutate_pod(pod, POLICY).patch)
    kubernetes_validate.validate(mutated, K8S_VERSION, strict=True)


def test_roles_of_stock_chart_pods():
    assert pod_roles(golden.load_input("api-envfrom-secret"), POLICY) == {"plane-api": "api"}
    assert pod_roles(golden.load_input("worker"), POLICY) == {"plane-worker": "worker"}
    assert pod_roles(golden.load_input("beat"), POLICY) == {"plane-beat-worker": "beat"}
    assert pod_roles(golden.load_input("sidecar"), POLICY) == {"plane-api": "api"}


def test_sidecar_is_untouched():
    pod = golden.load_input("sidecar")
    outcome = mutate_pod(pod, POLICY)
    assert not [op for op in outcome.patch if op["path"].startswith("/spec/containers/1")]


def test_migrator_and_foreign_images_match_no_role():
    migrator = api_pod(command=["./bin/docker-entrypoint-migrator.sh"])
    foreign = api_pod(image="example.com/someone/api:1")
    for pod in (migrator, foreign):
        outcome = mutate_pod(pod, POLICY)
        assert outcome.patch == [] and outcome.reasons == ("no-role-matched",)


def test_env_override_replaces_in_place_so_later_references_still_resolve():
    pod = api_pod(env=[{"name": "GUNICORN_MAX_REQUESTS", "value": "1200"}, {"name": "ROTATE", "value": "$(GUNICORN_MAX_REQUESTS)"}])
    mutated = apply_patch(pod, mutate_pod(pod, POLICY).patch)
    env = mutated["spec"]["containers"][0]["env"]
    assert env[0] == {"name": "GUNICORN_MAX_REQUESTS", "value": "0"}
    assert env[1] == {"name": "ROTATE", "value": "$(GUNICORN_MAX_REQUESTS)"}


def test_keep_mode_leaves_existing_values():
    text = golden_policy_text().replace("existingEnv: replace", "existingEnv: keep", 1)
    policy = load_policy_text(text)
    pod = api_pod(env=[{"name": "GUNICORN_MAX_REQUESTS", "value": "5000"}])
    outcome = mutate_pod(pod, policy)
    assert env_of(apply_patch(pod, outcome.patch))["GUNICORN_MAX_REQUESTS"] == "5000"
    assert "plane-api:kept-env/GUNICORN_MAX_REQUESTS" in outcome.reasons


def golden_policy_text() -> str:
    from webhook.policy import default_policy_text

    return default_policy_text()


def test_literal_url_with_references_is_merged_at_runtime():
    pod = api_pod(env=[{"name": "AMQP_URL", "value": "amqp://$(RABBITMQ_USER):$(RABBITMQ_PASSWORD)@rabbit//"}])
    mutated = apply_patch(pod, mutate_pod(pod, POLICY).patch)
    env = env_of(mutated)
    assert env["AMQP_URL"] == "amqp://$(RABBITMQ_USER):$(RABBITMQ_PASSWORD)@rabbit//"
    assert env[names.ENV_AMQP_HEARTBEAT] == "60"


def test_prefixed_env_from_does_not_count_as_the_url():
    pod = api_pod(envFrom=[{"prefix": "PLANE_", "secretRef": {"name": "plane-app-secrets"}}])
    outcome = mutate_pod(pod, POLICY)
    assert "plane-api:amqp-url-absent" in outcome.reasons
    assert names.ENV_AMQP_HEARTBEAT not in env_of(apply_patch(pod, outcome.patch))


def test_override_annotations_apply_and_bad_values_warn():
    pod = api_pod()
    pod["metadata"]["annotations"].update(
        {names.HEARTBEAT_ANNOTATION: "15", names.MAX_REQUESTS_ANNOTATION: "lots", names.WRAP_ANNOTATION: "maybe"}
    )
    outcome = mutate_pod(pod, POLICY)
    env = env_of(apply_patch(pod, outcome.patch))
    assert env[names.ENV_AMQP_HEARTBEAT] == "15"
    assert env["GUNICORN_MAX_REQUESTS"] == "0"
    assert len(outcome.warnings) == 2 and all("ignored annotation" in w for w in outcome.warnings)


def test_max_requests_annotation_within_policy_bounds():
    text = golden_policy_text().replace("    max: 0 ", "    max: 100000 ")
    policy = load_policy_text(text)
    pod = api_pod()
    pod["metadata"]["annotations"][names.MAX_REQUESTS_ANNOTATION] = "50000"
    assert env_of(apply_patch(pod, mutate_pod(pod, policy).patch))["GUNICORN_MAX_REQUESTS"] == "50000"
    pod["metadata"]["annotations"][names.MAX_REQUESTS_ANNOTATION] = "500000"
    outcome = mutate_pod(pod, policy)
    assert env_of(apply_patch(pod, outcome.patch))["GUNICORN_MAX_REQUESTS"] == "0" and outcome.warnings


def test_wrap_disabled_by_annotation_keeps_command_and_skips_runtime():
    pod = api_pod()
    pod["metadata"]["annotations"][names.WRAP_ANNOTATION] = "false"
    outcome = mutate_pod(pod, POLICY)
    mutated = apply_patch(pod, outcome.patch)
    assert mutated["spec"]["containers"][0]["command"] == ["./bin/docker-entrypoint-api-ee.sh"]
    assert "initContainers" not in mutated["spec"]
    assert "plane-api:amqp-url-needs-wrapper" in outcome.reasons


@pytest.mark.parametrize("value", ["false", "disabled", "FALSE", " off "])
def test_opt_out_by_label_or_annotation(value):
    for where in ("labels", "annotations"):
        pod = api_pod()
        pod["metadata"].setdefault(where, {})[names.INJECT] = value
        assert mutate_pod(pod, POLICY).patch == []


def test_existing_runtime_pieces_are_reused_and_the_mount_path_conflict_is_reported():
    pod = api_pod(volumeMounts=[{"name": "other", "mountPath": "/plane-guard"}])
    outcome = mutate_pod(pod, POLICY)
    assert "plane-api:mount-path-taken" in outcome.reasons
    assert not any(op["path"].endswith("/command") for op in outcome.patch)


def test_status_annotation_names_changes_never_values():
    pod = api_pod(env=[{"name": "AMQP_URL", "value": "amqp://plane:Zq9topsecret@rabbit//"}])
    mutated = apply_patch(pod, mutate_pod(pod, POLICY).patch)
    raw = mutated["metadata"]["annotations"][names.STATUS_ANNOTATION]
    status = json.loads(raw)
    assert status["version"] and status["policy"] == POLICY.digest
    assert "plane-api:amqp-url/heartbeat" in status["changed"]
    assert "Zq9topsecret" not in raw and "rabbit" not in raw


def test_reinvocation_after_another_webhook_added_a_container_is_a_no_op_for_ours():
    pod = api_pod()
    mutated = apply_patch(pod, mutate_pod(pod, POLICY).patch)
    mutated["spec"]["containers"].append({"name": "istio-proxy", "image": "istio/proxyv2:1.24"})
    assert mutate_pod(mutated, POLICY).patch == []


def test_keys_with_slash_and_tilde_are_escaped():
    assert escape("plane-guard.io/status") == "plane-guard.io~1status"
    assert escape("a~b/c") == "a~0b~1c"
    pod = api_pod()
    pod["metadata"]["annotations"] = {"a~b/c": "x"}
    mutated = apply_patch(pod, mutate_pod(pod, POLICY).patch)
    assert mutated["metadata"]["annotations"]["a~b/c"] == "x"
    assert names.STATUS_ANNOTATION in mutated["metadata"]["annotations"]


@pytest.mark.parametrize(
    "pod",
    [
        None,
        [],
        "pod",
        {},
        {"spec": None},
        {"spec": {"containers": "x"}},
        {"spec": {"containers": [None, 1, "x", {"name": 1, "image": []}]}},
        {"spec": {"containers": [{"name": "plane-api", "image": "makeplane/plane-backend:1", "env": "oops"}]}},
        {"spec": {"containers": [{"name": "plane-api", "image": "makeplane/plane-backend:1", "command": "./bin/docker-entrypoint-api.sh"}]}},
        {"spec": {"volumes": "x", "containers": [{"name": "plane-api", "image": "makeplane/plane-backend:1"}]}},
        {"metadata": None, "spec": {"containers": [{"name": "plane-api", "image": "makeplane/plane-backend:1"}]}},
        {"metadata": {"annotations": None}, "spec": {"containers": [{"name": "plane-api", "image": "makeplane/plane-backend:1", "env": None}]}},
    ],
)
def test_odd_pods_get_a_patch_that_applies_or_none(pod):
    original = copy.deepcopy(pod)
    outcome = mutate_pod(pod, POLICY)
    assert pod == original
    if outcome.patch:
        mutated = apply_patch(pod, outcome.patch)
        assert mutate_pod(mutated, POLICY).patch == []
    else:
        assert outcome.reasons


def test_a_null_heartbeat_leaves_the_url_alone():
    policy = load_policy_text(golden_policy_text().replace("amqpHeartbeat: 60", "amqpHeartbeat: null", 1))
    pod = api_pod(env=[{"name": "AMQP_URL", "value": "amqp://plane:pw@rabbit//"}])
    outcome = mutate_pod(pod, policy)
    env = env_of(apply_patch(pod, outcome.patch))
    assert env["AMQP_URL"] == "amqp://plane:pw@rabbit//" and names.ENV_AMQP_HEARTBEAT not in env
    assert not [c for c in outcome.changes if "amqp-url" in c]
