"""Settings decided at container start by the real wrapper: keep, replace, and what the log says."""

from __future__ import annotations

import pytest

from tests.runtime.conftest import base_env, plane_guard_lines
from tests.runtime.test_entrypoint import PASSWORD, URL, _show
from webhook.core import conventions
from webhook.runtime import environment

DEFAULT, OVERRIDE = conventions.ENV_DEFAULT_PREFIX, conventions.ENV_OVERRIDE_PREFIX


def test_the_runtime_copy_uses_the_webhooks_names():
    assert (environment.DEFAULT_PREFIX, environment.OVERRIDE_PREFIX) == (DEFAULT, OVERRIDE)


def test_chart_values_from_env_from_meet_the_default_policy(shell, runtime_dir):
    """plane-enterprise 3.5.1's ConfigMap (1000/150, retry "1", pool 10) under the default policy."""
    env = base_env(
        GUNICORN_MAX_REQUESTS="1000",
        GUNICORN_MAX_REQUESTS_JITTER="150",
        CELERY_TASK_PUBLISH_RETRY="1",
        CELERY_BROKER_POOL_LIMIT="20",
        **{
            f"{OVERRIDE}GUNICORN_MAX_REQUESTS": "0",
            f"{OVERRIDE}GUNICORN_MAX_REQUESTS_JITTER": "0",
            f"{DEFAULT}CELERY_TASK_PUBLISH_RETRY": "1",
            f"{DEFAULT}CELERY_BROKER_POOL_LIMIT": "10",
            f"{DEFAULT}CELERY_CONFIRM_PUBLISH": "1",
        },
    )
    seen, stderr = _show(shell, runtime_dir, env)
    started = {k: seen["env"].get(k) for k in ("GUNICORN_MAX_REQUESTS", "GUNICORN_MAX_REQUESTS_JITTER", "CELERY_TASK_PUBLISH_RETRY", "CELERY_BROKER_POOL_LIMIT", "CELERY_CONFIRM_PUBLISH")}
    assert started == {
        "GUNICORN_MAX_REQUESTS": "0",
        "GUNICORN_MAX_REQUESTS_JITTER": "0",
        "CELERY_TASK_PUBLISH_RETRY": "1",
        "CELERY_BROKER_POOL_LIMIT": "20",
        "CELERY_CONFIRM_PUBLISH": "1",
    }
    assert sorted(plane_guard_lines(stderr)) == sorted(
        [
            "plane-guard: GUNICORN_MAX_REQUESTS: replaced the container's 1000 with 0 (policy, existingEnv: replace)",
            "plane-guard: GUNICORN_MAX_REQUESTS_JITTER: replaced the container's 150 with 0 (policy, existingEnv: replace)",
            "plane-guard: CELERY_TASK_PUBLISH_RETRY: the container's value is already the policy's (1)",
            "plane-guard: CELERY_BROKER_POOL_LIMIT: kept the container's 20 (policy default 10, existingEnv: keep)",
            "plane-guard: CELERY_CONFIRM_PUBLISH: set to 1 (the container has none; policy)",
        ]
    )


def test_keep_gives_the_operators_value_and_an_empty_value_counts_as_unset(shell, runtime_dir):
    env = base_env(GUNICORN_MAX_REQUESTS="5000", CELERY_BROKER_POOL_LIMIT="", **{f"{DEFAULT}GUNICORN_MAX_REQUESTS": "0", f"{DEFAULT}CELERY_BROKER_POOL_LIMIT": "10"})
    seen, _ = _show(shell, runtime_dir, env)
    assert seen["env"]["GUNICORN_MAX_REQUESTS"] == "5000"
    assert seen["env"]["CELERY_BROKER_POOL_LIMIT"] == "10"


def test_values_of_other_variables_are_never_logged(shell, runtime_dir):
    secret = "s3cret-transport-option"
    env = base_env(
        CELERY_BROKER_TRANSPORT_OPTIONS='{"sasl_password": "' + secret + '"}',
        **{f"{OVERRIDE}CELERY_BROKER_TRANSPORT_OPTIONS": '{"confirm_timeout": 5}', f"{DEFAULT}MY_TOKEN": secret},
    )
    seen, stderr = _show(shell, runtime_dir, env)
    assert seen["env"]["CELERY_BROKER_TRANSPORT_OPTIONS"] == '{"confirm_timeout": 5}'
    assert seen["env"]["MY_TOKEN"] == secret
    assert secret not in stderr and "confirm_timeout" not in stderr
    assert "CELERY_BROKER_TRANSPORT_OPTIONS: replaced the container's (value not shown)" in stderr


@pytest.mark.parametrize("value", ["it's", 'two "words"', "$(whoami)", "`id`", "line\nbreak", "\\n", "'; touch /tmp/pg-pwned; '"])
def test_any_value_reaches_the_app_exactly_and_nothing_is_executed(shell, runtime_dir, value):
    seen, _ = _show(shell, runtime_dir, base_env(**{f"{OVERRIDE}SOME_SETTING": value}))
    assert seen["env"]["SOME_SETTING"] == value


def test_a_name_a_shell_cannot_export_is_reported_and_ignored():
    """Kubernetes allows '-' and '.' in names (the policy does not); shells drop such variables."""
    exports, messages = environment.decide({f"{OVERRIDE}WITH-DASH": "1", f"{OVERRIDE}GOOD": "2"})
    assert exports == {"GOOD": "2"}
    assert f"{OVERRIDE}WITH-DASH: 'WITH-DASH' is not a name a shell can export; ignored" in messages


def test_the_heartbeat_is_merged_into_the_url_after_the_settings(shell, runtime_dir):
    env = base_env(AMQP_URL=URL, PLANE_GUARD_AMQP_HEARTBEAT="60", **{f"{DEFAULT}CELERY_CONFIRM_PUBLISH": "1"})
    seen, stderr = _show(shell, runtime_dir, env)
    assert seen["env"]["AMQP_URL"] == URL + "?heartbeat=60" and seen["env"]["CELERY_CONFIRM_PUBLISH"] == "1"
    assert PASSWORD not in stderr
