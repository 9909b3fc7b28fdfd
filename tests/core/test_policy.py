"""Policy loading: the embedded default is valid, and a bad policy gets a precise message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from webhook.core.policy import PolicyError, default_policy, default_policy_text, load_policy_text

VALID_HEAD = "apiVersion: plane-guard.io/v1\nkind: Policy\n"
ROLE = "roles:\n  api:\n    match: {images: [backend], commands: [api]}\n"


def check(text: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "webhook.cli", "policy", "check", "-"],
        input=text, capture_output=True, text=True, timeout=60, check=False,
    )


def test_default_policy_covers_every_role_and_is_stable():
    policy = default_policy()
    assert list(policy.roles) == [
        "api", "beat", "worker", "automation-consumer", "outbox-poller", "webhook-consumer", "agent-consumer", "migrator",
    ]
    assert policy.roles["api"].settings["GUNICORN_MAX_REQUESTS"] == ("0", "replace")
    publishers = [r for r in policy.roles.values() if not r.skip]
    assert all(r.settings["CELERY_CONFIRM_PUBLISH"] == ("1", "keep") for r in publishers)
    assert all(r.publish_timeout_seconds == 10 and r.pika_confirm_delivery for r in publishers)
    assert policy.roles["migrator"].skip and not policy.roles["migrator"].env
    assert policy.digest == load_policy_text(default_policy_text()).digest


def test_policy_check_accepts_the_default():
    result = check(default_policy_text())
    assert result.returncode == 0 and "valid" in result.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just\n- a list\n", "a policy is a YAML mapping"),
        ("roles: [\n", "not valid YAML"),
        (VALID_HEAD + ROLE + "colour: blue\n", "colour: unknown key; allowed here: apiVersion, kind"),
        (VALID_HEAD + ROLE + "    existingEnv: sometimes\n", "roles.api.existingEnv: 'sometimes' is not allowed; use one of 'replace' or 'keep'"),
        (VALID_HEAD + ROLE + "    amqpHeartbeat: -5\n", "roles.api.amqpHeartbeat: Input should be greater than or equal to 0"),
        (VALID_HEAD + ROLE + "    env: {GUNICORN_MAX_REQUESTS: lots}\n", "GUNICORN_MAX_REQUESTS must be a whole number >= 0"),
        (VALID_HEAD + ROLE + "    env: {CELERY_CONFIRM_PUBLISH: maybe}\n", "CELERY_CONFIRM_PUBLISH must be a boolean (1/0, true/false, yes/no)"),
        (VALID_HEAD + ROLE + "    env: {GUNICORN_MAX_REQUESTS: {value: x, existing: keep}}\n", "GUNICORN_MAX_REQUESTS must be a whole number >= 0"),
        (VALID_HEAD + ROLE + "    env: {GUNICORN_MAX_REQUESTS: {value: '1', existing: always}}\n", "'always' is not allowed; use one of 'replace' or 'keep'"),
        (VALID_HEAD + ROLE + "    env: {'WITH-DASH': '1'}\n", "not a variable name a shell can export"),
        (VALID_HEAD + ROLE + "    publishTimeoutSeconds: 0\n", "roles.api.publishTimeoutSeconds: Input should be greater than 0"),
        (VALID_HEAD + ROLE + "    env: {CELERY_BROKER_TRANSPORT_OPTIONS: '[1]'}\n", "must be a JSON object"),
        (VALID_HEAD + ROLE + "    env: {PLANE_GUARD_AMQP_HEARTBEAT: '1'}\n", "reserved for plane-guard"),
        (VALID_HEAD + ROLE + "    env: {'BAD=NAME': '1'}\n", "not a variable name a shell can export"),
        (VALID_HEAD + "roles:\n  api:\n    match: {images: ['('], commands: [api]}\n", "roles.api.match.images.0: not a valid regular expression"),
        (VALID_HEAD + "roles:\n  Web_API:\n    match: {images: [b], commands: [c]}\n", "role name 'Web_API' must be lower-case letters, digits and '-'"),
        (VALID_HEAD + "roles:\n  web: {}\n", "roles.web.match: required key is missing"),
        (VALID_HEAD + ROLE + "runtime: {mountPath: relative}\n", "runtime.mountPath: mountPath must be an absolute path"),
        (VALID_HEAD + ROLE + "validation: {rules: {notMutated: shout}}\n", "validation.rules.notMutated: 'shout' is not allowed; use one of 'deny', 'warn' or 'audit'"),
        (VALID_HEAD + ROLE + "validation: {gunicornMaxRequests: {min: 5, max: 1}}\n", "max (1) must be >= min (5)"),
        ("kind: Policy\n" + ROLE, "apiVersion: required key is missing"),
        (VALID_HEAD + ROLE + "workloads: [{match: {}}]\n", "workloads.0.match: give podLabels or workloads (or both)"),
        (VALID_HEAD + ROLE + "workloads: [{match: {workloads: [x]}, match_me: 1}]\n", "workloads.0.match_me: unknown key; allowed here: match, inject, reason"),
        (VALID_HEAD + ROLE + "runtime: {resources: {limits: {cpu: lots, memory: 64Mi}}}\n", "'lots' is not a Kubernetes quantity"),
        (VALID_HEAD + ROLE + "runtime: {resources: {limits: {cpu: '0', memory: 64Mi}}}\n", "'0' must be greater than zero"),
        (VALID_HEAD + ROLE + "runtime: {resources: {requests: {cpu: '1', memory: 1Mi}}}\n", "requests.cpu must not exceed limits.cpu"),
    ],
)
def test_bad_policies_exit_2_with_a_message_naming_the_field(text, message):
    with pytest.raises(PolicyError) as raised:
        load_policy_text(text)
    assert message in str(raised.value)
    result = check(text)
    assert result.returncode == 2
    assert message in result.stderr


def test_yaml_numbers_and_booleans_become_env_strings():
    policy = load_policy_text(
        VALID_HEAD + ROLE + "    env: {GUNICORN_MAX_REQUESTS: 0, CELERY_CONFIRM_PUBLISH: true, CELERY_BROKER_POOL_LIMIT: {value: 10}}\n"
    )
    assert policy.roles["api"].settings == {
        "GUNICORN_MAX_REQUESTS": ("0", "replace"),
        "CELERY_CONFIRM_PUBLISH": ("true", "replace"),
        "CELERY_BROKER_POOL_LIMIT": ("10", "replace"),
    }


@pytest.mark.parametrize("word", ["1", "0", "true", "false", "True", "False", "yes", "no", "YES"])
def test_booleans_accept_every_usual_spelling(word):
    policy = load_policy_text(VALID_HEAD + ROLE + f"    env: {{CELERY_TASK_PUBLISH_RETRY: '{word}'}}\n")
    assert policy.roles["api"].settings["CELERY_TASK_PUBLISH_RETRY"][0] == word


def test_missing_policy_file_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "policy", "check", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2 and "cannot read the policy file" in result.stderr
