"""Targeted behaviours of the pod mutation that the golden fixtures do not pin down alone."""

from __future__ import annotations

import copy
import json

import kubernetes_validate
import pytest

from tests.fixtures import golden
from webhook.core import conventions as names
from webhook.core.mutation import apply_patch, escape, mutate_pod, pod_roles
from webhook.core.policy import default_policy, load_policy_text
from webhook.runtime import environment

POLICY = default_policy()
K8S_VERSION = kubernetes_validate.latest_version()


def api_pod(**container_fields) -> dict:
    pod = golden.load_input("api-envfrom-secret")
    pod["spec"]["containers"][0].update(container_fields)
    return pod


def env_of(pod: dict, index: int = 0) -> dict:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][index].get("env") or []}


def started_env(pod: dict, env_from: dict[str, str] | None = None, index: int = 0) -> dict:
    """What the container runs with: its env (over what envFrom brings), then the wrapper's decisions."""
    env = {**(env_from or {}), **env_of(pod, index)}
    exports, _ = environment.decide(env)
    return {**env, **exports}


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


def test_why_a_container_is_not_changed_is_told_apart():
    cases = {
        "migrator": (api_pod(command=["./bin/docker-entrypoint-migrator.sh"]), "skipped-role", "plane-api: role migrator: left unchanged: runs the database migrations"),
        "foreign": (api_pod(image="example.com/someone/api:1"), "no-role-matched", "plane-api: not a Plane backend image"),
        "unknown command": (
            api_pod(command=["/bin/bash", "-c", "exec ./bin/docker-entrypoint-something-new.sh --with " + "x" * 80]),
            "no-role-matched",
            "plane-api: Plane backend image, command not recognised: /bin/bash -c exec ./bin/docker-entrypoint-something-new.sh",
        ),
    }
    codes = {"migrator": "skipped-role", "foreign": "not-plane-image", "unknown command": "unrecognised-command"}
    for case, (pod, reason, note) in cases.items():
        outcome = mutate_pod(pod, POLICY)
        assert outcome.patch == [], case
        assert outcome.reasons == (reason, f"plane-api:{codes[case]}"), case
        assert len(outcome.notes) == 1 and outcome.notes[0].startswith(note), (case, outcome.notes)
    shown = mutate_pod(cases["unknown command"][0], POLICY).notes[0].split("not recognised: ")[1]
    assert len(shown) == 63 and shown.endswith("...")  # the first 60 characters of the command


def test_the_containers_own_variables_are_left_for_the_start_to_decide():
    """With the wrapper, the webhook adds the policy's values under reserved names and never edits
    the container's own entry: the container decides at start, where envFrom values are visible."""
    pod = api_pod(env=[{"name": "GUNICORN_MAX_REQUESTS", "value": "1200"}, {"name": "ROTATE", "value": "$(GUNICORN_MAX_REQUESTS)"}])
    outcome = mutate_pod(pod, POLICY)
    mutated = apply_patch(pod, outcome.patch)
    env = env_of(mutated)
    assert env["GUNICORN_MAX_REQUESTS"] == "1200" and env["ROTATE"] == "$(GUNICORN_MAX_REQUESTS)"
    assert env[names.ENV_OVERRIDE_PREFIX + "GUNICORN_MAX_REQUESTS"] == "0"
    assert env[names.ENV_DEFAULT_PREFIX + "CELERY_CONFIRM_PUBLISH"] == "1"
    assert ("plane-api", "GUNICORN_MAX_REQUESTS", "replace") in outcome.decided_at_start
    assert started_env(mutated)["GUNICORN_MAX_REQUESTS"] == "0"


def test_keep_and_replace_are_decided_against_what_env_from_brings():
    """plane-enterprise's ConfigMap sets 1000/150 and the publish settings through envFrom."""
    chart = {"GUNICORN_MAX_REQUESTS": "1000", "GUNICORN_MAX_REQUESTS_JITTER": "150", "CELERY_TASK_PUBLISH_RETRY": "1", "CELERY_BROKER_POOL_LIMIT": "20"}
    mutated = apply_patch(api_pod(), mutate_pod(api_pod(), POLICY).patch)
    env = started_env(mutated, chart)
    assert (env["GUNICORN_MAX_REQUESTS"], env["GUNICORN_MAX_REQUESTS_JITTER"]) == ("0", "0")  # replace
    assert (env["CELERY_BROKER_POOL_LIMIT"], env["CELERY_TASK_PUBLISH_RETRY"]) == ("20", "1")  # keep
    assert env["CELERY_CONFIRM_PUBLISH"] == "1"  # keep, and the chart sets none

    keep_all = load_policy_text(golden_policy_text().replace("existing: replace", "existing: keep"))
    mutated = apply_patch(api_pod(), mutate_pod(api_pod(), keep_all).patch)
    assert started_env(mutated, {"GUNICORN_MAX_REQUESTS": "5000"})["GUNICORN_MAX_REQUESTS"] == "5000"
    assert started_env(mutated)["GUNICORN_MAX_REQUESTS"] == "0"


def test_keep_mode_names_a_visible_value_it_keeps():
    pod = api_pod(env=[{"name": "CELERY_BROKER_POOL_LIMIT", "value": "50"}])
    outcome = mutate_pod(pod, POLICY)
    assert started_env(apply_patch(pod, outcome.patch))["CELERY_BROKER_POOL_LIMIT"] == "50"
    assert "plane-api:kept-env/CELERY_BROKER_POOL_LIMIT" in outcome.reasons


def test_without_the_wrapper_the_variables_are_written_at_admission():
    pod = api_pod(env=[{"name": "GUNICORN_MAX_REQUESTS", "value": "1200"}, {"name": "CELERY_BROKER_POOL_LIMIT", "value": "50"}])
    pod["metadata"]["annotations"][names.WRAP_ANNOTATION] = "false"
    outcome = mutate_pod(pod, POLICY)
    env = env_of(apply_patch(pod, outcome.patch))
    assert env["GUNICORN_MAX_REQUESTS"] == "0" and env["CELERY_BROKER_POOL_LIMIT"] == "50"
    assert not [name for name in env if name.startswith(names.RESERVED_ENV_PREFIX)]
    assert "plane-api:env-decided-at-admission" in outcome.reasons and outcome.decided_at_start == ()


def test_publish_bound_and_pika_confirms_reach_the_wrapped_container():
    env = env_of(apply_patch(api_pod(), mutate_pod(api_pod(), POLICY).patch))
    assert env[names.ENV_PUBLISH_TIMEOUT] == "10" and env[names.ENV_PIKA_CONFIRM] == "1"
    off = load_policy_text(golden_policy_text().replace("publishTimeoutSeconds: 10", "publishTimeoutSeconds: null", 1))
    assert names.ENV_PUBLISH_TIMEOUT not in env_of(apply_patch(api_pod(), mutate_pod(api_pod(), off).patch))


def test_status_annotation_says_what_is_decided_at_start():
    mutated = apply_patch(api_pod(), mutate_pod(api_pod(), POLICY).patch)
    status = json.loads(mutated["metadata"]["annotations"][names.STATUS_ANNOTATION])
    assert status["atStart"] == {
        "plane-api": {
            "CELERY_BROKER_POOL_LIMIT": "keep",
            "CELERY_CONFIRM_PUBLISH": "keep",
            "CELERY_TASK_PUBLISH_RETRY": "keep",
            "GUNICORN_MAX_REQUESTS": "replace",
            "GUNICORN_MAX_REQUESTS_JITTER": "replace",
        }
    }


def golden_policy_text() -> str:
    from webhook.core.policy import default_policy_text

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
    pod["metadata"]["annotations"][names.MAX_REQUESTS_JITTER_ANNOTATION] = "hunter2-not-a-number"
    outcome = mutate_pod(pod, POLICY)
    env = env_of(apply_patch(pod, outcome.patch))
    assert env[names.ENV_AMQP_HEARTBEAT] == "15"
    assert env[names.ENV_OVERRIDE_PREFIX + "GUNICORN_MAX_REQUESTS"] == "0"
    assert len(outcome.warnings) == 3 and all("ignored annotation" in w for w in outcome.warnings)
    assert not [w for w in outcome.warnings if "lots" in w or "maybe" in w or "hunter2" in w]  # values are never quoted


def test_max_requests_annotation_within_policy_bounds():
    text = golden_policy_text().replace("    max: 0 ", "    max: 100000 ")
    policy = load_policy_text(text)
    pod = api_pod()
    pod["metadata"]["annotations"][names.MAX_REQUESTS_ANNOTATION] = "50000"
    assert started_env(apply_patch(pod, mutate_pod(pod, policy).patch), {"GUNICORN_MAX_REQUESTS": "1000"})["GUNICORN_MAX_REQUESTS"] == "50000"
    pod["metadata"]["annotations"][names.MAX_REQUESTS_ANNOTATION] = "500000"
    outcome = mutate_pod(pod, policy)
    assert started_env(apply_patch(pod, outcome.patch))["GUNICORN_MAX_REQUESTS"] == "0" and outcome.warnings


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


WORKLOAD_RULES = """
workloads:
  - match: {podLabels: {app.name: '-worker-importers$'}}
    inject: false
    reason: the importers are restarted by hand after each import
  - match: {workloads: ['^plane-api-wl$']}
    env: {GUNICORN_MAX_REQUESTS: {value: "5000", existing: replace}}
    amqpHeartbeat: null
    publishTimeoutSeconds: 5
"""


def _from_replica_set(pod: dict, deployment: str, template_hash: str = "7d9f8b6c5") -> dict:
    pod = copy.deepcopy(pod)
    pod["metadata"]["labels"]["pod-template-hash"] = template_hash
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{deployment}-{template_hash}", "uid": "u", "controller": True}
    ]
    return pod


def test_a_workload_rule_opts_out_by_the_charts_pod_label():
    policy = load_policy_text(golden_policy_text() + WORKLOAD_RULES)
    pod = api_pod(name="plane-worker-importers", command=["./bin/docker-entrypoint-worker.sh", "celery.importer"])
    pod["metadata"]["labels"]["app.name"] = "plane-plane-worker-importers"
    outcome = mutate_pod(pod, policy)
    assert outcome.patch == [] and outcome.reasons == ("opted-out-by-policy",)
    assert outcome.notes == ("left unchanged by the policy: the importers are restarted by hand after each import",)
    pod["metadata"]["labels"]["app.name"] = "plane-plane-worker"
    assert mutate_pod(pod, policy).patch  # the plain worker is not covered


def test_a_workload_rule_by_owner_changes_settings_of_that_deployment_only():
    policy = load_policy_text(golden_policy_text() + WORKLOAD_RULES)
    api = _from_replica_set(api_pod(), "plane-api-wl")
    env = env_of(apply_patch(api, mutate_pod(api, policy).patch))
    assert env[names.ENV_OVERRIDE_PREFIX + "GUNICORN_MAX_REQUESTS"] == "5000"
    assert env[names.ENV_PUBLISH_TIMEOUT] == "5" and names.ENV_AMQP_HEARTBEAT not in env  # amqpHeartbeat: null
    assert env[names.ENV_DEFAULT_PREFIX + "CELERY_CONFIRM_PUBLISH"] == "1"  # the rest of the role stays

    other = _from_replica_set(api_pod(), "plane-external-api-wl")
    env = env_of(apply_patch(other, mutate_pod(other, policy).patch))
    assert env[names.ENV_OVERRIDE_PREFIX + "GUNICORN_MAX_REQUESTS"] == "0" and env[names.ENV_AMQP_HEARTBEAT] == "60"


def test_the_workload_name_of_a_pod():
    from webhook.core.mutation import workload_name

    assert workload_name(_from_replica_set(api_pod(), "plane-api-wl")) == "plane-api-wl"
    job = api_pod()
    job["metadata"]["ownerReferences"] = [{"kind": "Job", "name": "plane-api-migrate-1", "controller": True}]
    assert workload_name(job) == "plane-api-migrate-1"
    bare = api_pod()
    del bare["metadata"]["ownerReferences"]
    assert workload_name(bare) is None
