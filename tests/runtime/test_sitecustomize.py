"""The start-up hook in real interpreters: Celery settings, bad values, chaining, inertness, limits."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.proof import broker
from tests.runtime.conftest import hook_env, plane_guard_lines, run_python

#: Loads the Plane-shaped app's Celery configuration and prints what Celery will use.
SHOW_PLANE_CONF = textwrap.dedent(
    """
    import json, sys
    from plane.celery import app
    conf = app.conf
    print(json.dumps({
        "task_publish_retry": conf.task_publish_retry,
        "task_publish_retry_policy": conf.task_publish_retry_policy,
        "broker_pool_limit": conf.broker_pool_limit,
        "broker_heartbeat": conf.broker_heartbeat,
        "broker_transport_options": conf.broker_transport_options,
        "write_transport_options": app.connection_for_write().transport_options,
    }))
    """
)
DEFAULTS = {
    "task_publish_retry": True,
    "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0, "interval_max": 1, "interval_step": 0.2},
    "broker_pool_limit": 10,
    "broker_heartbeat": 120,
    "broker_transport_options": {},
}


def _conf(runtime_dir, **env):
    done = run_python(SHOW_PLANE_CONF, hook_env(runtime_dir, AMQP_URL="amqp://guest:guest@127.0.0.1:5672//", **env))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), plane_guard_lines(done.stderr)


def test_without_variables_the_app_keeps_its_own_configuration(runtime_dir):
    conf, lines = _conf(runtime_dir)
    assert {k: conf[k] for k in DEFAULTS} == DEFAULTS
    assert lines == []


def test_variables_are_applied_after_the_apps_configuration(runtime_dir):
    conf, lines = _conf(
        runtime_dir,
        CELERY_TASK_PUBLISH_RETRY="false",
        CELERY_TASK_PUBLISH_RETRY_POLICY='{"max_retries": 5, "interval_max": 2}',
        CELERY_BROKER_POOL_LIMIT="1",
        CELERY_BROKER_HEARTBEAT="20",
        CELERY_BROKER_TRANSPORT_OPTIONS='{"confirm_timeout": 5}',
        CELERY_CONFIRM_PUBLISH="TRUE",
    )
    assert conf["task_publish_retry"] is False
    assert conf["task_publish_retry_policy"] == {"max_retries": 5, "interval_start": 0, "interval_max": 2, "interval_step": 0.2}
    assert conf["broker_pool_limit"] == 1
    assert conf["broker_heartbeat"] == 20
    assert conf["broker_transport_options"] == {"confirm_timeout": 5, "confirm_publish": True}
    assert conf["write_transport_options"] == {"confirm_timeout": 5, "confirm_publish": True}
    assert lines == [
        "plane-guard: Celery app 'plane': applied CELERY_TASK_PUBLISH_RETRY, CELERY_TASK_PUBLISH_RETRY_POLICY, "
        "CELERY_BROKER_POOL_LIMIT, CELERY_BROKER_HEARTBEAT, CELERY_BROKER_TRANSPORT_OPTIONS, CELERY_CONFIRM_PUBLISH"
    ]


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("TRUE", True), ("Yes", True), ("1", True), (" true ", True), ("false", False), ("No", False), ("0", False)],
)
def test_booleans_are_case_insensitive(runtime_dir, raw, value):
    conf, _ = _conf(runtime_dir, CELERY_TASK_PUBLISH_RETRY=raw, CELERY_CONFIRM_PUBLISH=raw)
    assert conf["task_publish_retry"] is value
    assert conf["broker_transport_options"] == {"confirm_publish": value}


@pytest.mark.parametrize(
    ("name", "raw", "reason"),
    [
        ("CELERY_TASK_PUBLISH_RETRY", "maybe", "use true/false, 1/0 or yes/no"),
        ("CELERY_BROKER_POOL_LIMIT", "ten", "use a whole number >= 0"),
        ("CELERY_BROKER_POOL_LIMIT", "-1", "use a whole number >= 0"),
        ("CELERY_BROKER_HEARTBEAT", "nan", "use a number of seconds >= 0"),
        ("CELERY_TASK_PUBLISH_RETRY_POLICY", '{"max_retries": 3, "retry_forever": true}', "unknown keys ['retry_forever']"),
        ("CELERY_TASK_PUBLISH_RETRY_POLICY", '{"interval_max": "1s"}', "interval_max must be a number >= 0"),
        ("CELERY_BROKER_TRANSPORT_OPTIONS", '{"sasl_password": "hunter2"', "not valid JSON"),
        ("CELERY_BROKER_TRANSPORT_OPTIONS", '["hunter2"]', "use a JSON object"),
        ("CELERY_CONFIRM_PUBLISH", "hunter2", "use true/false"),
    ],
)
def test_a_bad_value_is_one_line_and_ignored(runtime_dir, name, raw, reason):
    """The bad variable is reported (without its value) and skipped; a good one next to it still applies."""
    good = "CELERY_BROKER_HEARTBEAT" if name == "CELERY_BROKER_POOL_LIMIT" else "CELERY_BROKER_POOL_LIMIT"
    conf, lines = _conf(runtime_dir, **{name: raw, good: "7"})
    untouched = [k for k in DEFAULTS if k not in ("broker_pool_limit", "broker_heartbeat")]
    assert {k: conf[k] for k in untouched} == {k: DEFAULTS[k] for k in untouched}
    assert conf["broker_pool_limit" if good == "CELERY_BROKER_POOL_LIMIT" else "broker_heartbeat"] == 7
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"plane-guard: ignoring {name}: {reason}")
    assert lines[1] == f"plane-guard: Celery app 'plane': applied {good}"
    assert "hunter2" not in "\n".join(lines)


def test_namespaced_settings_of_the_app_are_overridden(runtime_dir, tmp_path):
    """With namespace='CELERY' Celery reads CELERY_<KEY> first; the override must still win."""
    code = textwrap.dedent(
        """
        import json
        from celery import Celery
        class Settings:
            CELERY_TASK_PUBLISH_RETRY = False
            CELERY_BROKER_POOL_LIMIT = 50
            CELERY_BROKER_TRANSPORT_OPTIONS = {"max_retries": 2, "confirm_publish": False}
        app = Celery("shadow")
        app.config_from_object(Settings, namespace="CELERY")
        c = app.conf
        print(json.dumps([c.task_publish_retry, c.broker_pool_limit, c.broker_transport_options, c["CELERY_TASK_PUBLISH_RETRY"]]))
        """
    )
    env = hook_env(runtime_dir, CELERY_TASK_PUBLISH_RETRY="yes", CELERY_BROKER_POOL_LIMIT="10", CELERY_CONFIRM_PUBLISH="1")
    done = run_python(code, env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, 10, {"max_retries": 2, "confirm_publish": True}, True]


def test_hook_is_inert_in_other_processes(runtime_dir, tmp_path):
    """A process that never imports Celery or gunicorn gets no output and no extra imports."""
    code = "import json, os, sys; print(json.dumps([sorted(sys.modules), dict(os.environ)]))"
    env = hook_env(runtime_dir, CELERY_CONFIRM_PUBLISH="true", GUNICORN_MAX_REQUESTS="0")
    plain = run_python(code, {k: v for k, v in env.items() if k != "PYTHONPATH"}, cwd=tmp_path)
    hooked = run_python(code, env, cwd=tmp_path)
    assert hooked.returncode == 0 and hooked.stderr == ""
    (plain_modules, _), (hooked_modules, hooked_environ) = json.loads(plain.stdout), json.loads(hooked.stdout)
    assert set(hooked_modules) - set(plain_modules) <= {"sitecustomize", "importlib.util", "importlib.machinery"}
    assert not [m for m in hooked_modules if m.split(".")[0] in ("celery", "gunicorn", "kombu", "django")]
    assert hooked_environ == env


def test_importing_celery_without_configuring_an_app_says_nothing(runtime_dir, tmp_path):
    done = run_python("import celery.app.base, plane", hook_env(runtime_dir, CELERY_CONFIRM_PUBLISH="true"))
    assert done.returncode == 0 and done.stderr == ""


def test_the_images_own_sitecustomize_still_runs(runtime_dir, tmp_path):
    image = tmp_path / "image"
    image.mkdir()
    (image / "sitecustomize.py").write_text("import os\nIMAGE = True\nos.environ['IMAGE_HOOK'] = __name__\n")
    code = "import os, sitecustomize; print(os.environ.get('IMAGE_HOOK'), sitecustomize.chained.IMAGE)"
    env = hook_env(runtime_dir, PYTHONPATH=f"{runtime_dir / 'python'}:{image}")
    done = run_python(code, env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["sitecustomize", "True"]


def test_a_failing_image_sitecustomize_is_reported_like_site_does_and_the_hook_still_works(runtime_dir, tmp_path):
    image = tmp_path / "image"
    image.mkdir()
    (image / "sitecustomize.py").write_text("raise RuntimeError('image hook broke')\n")
    done = run_python(SHOW_PLANE_CONF, hook_env(runtime_dir, PYTHONPATH=str(image), CELERY_BROKER_POOL_LIMIT="3"))
    assert done.returncode == 0, done.stderr
    assert "Error in sitecustomize; set PYTHONVERBOSE for traceback:\nRuntimeError: image hook broke" in done.stderr
    assert json.loads(done.stdout)["broker_pool_limit"] == 3


def test_the_hook_directory_twice_on_the_path_does_not_loop(runtime_dir, tmp_path):
    hook = str(runtime_dir / "python")
    env = hook_env(runtime_dir, PYTHONPATH=f"{hook}:{hook}")
    done = run_python("import sitecustomize; print(sitecustomize.chained)", env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"


def test_isolated_mode_skips_the_hook(runtime_dir):
    """A documented limit: ``python -I`` / ``-S`` / ``-E`` never load sitecustomize from PYTHONPATH."""
    env = hook_env(runtime_dir, CELERY_BROKER_POOL_LIMIT="3")
    for flag in ("-I", "-E", "-S"):
        done = run_python("import sys; print('sitecustomize' in sys.modules)", env, args=[flag])
        assert done.stdout.strip() == "False", flag


@pytest.mark.broker
def test_confirm_publish_reaches_py_amqp_on_a_real_connection(runtime_dir):
    """The merged transport options are what kombu hands to py-amqp's Connection."""
    broker.require_broker()
    code = textwrap.dedent(
        """
        import json
        from plane.celery import app
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            amqp = connection.connection
            print(json.dumps([amqp.confirm_publish, amqp.heartbeat]))
        """
    )
    env = hook_env(runtime_dir, AMQP_URL=broker.url("/", "heartbeat=15"), CELERY_CONFIRM_PUBLISH="true")
    done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, 15]
