"""Celery: the CELERY_* variables applied on top of the app's own configuration.

Plane configures Celery from Django settings that read only ``AMQP_URL``, so variables on the pod
reach nothing by themselves. When an app has loaded its configuration, these win:
``CELERY_TASK_PUBLISH_RETRY``, ``CELERY_TASK_PUBLISH_RETRY_POLICY``, ``CELERY_BROKER_POOL_LIMIT``,
``CELERY_BROKER_HEARTBEAT``, ``CELERY_BROKER_TRANSPORT_OPTIONS`` (JSON, merged) and
``CELERY_CONFIRM_PUBLISH`` (publisher confirms: what stops silent loss).

Receivers of Celery's ``on_after_configure`` signal see the values from before the override.
"""

import json

from plane_guard_hooks import accounting, boolean, count, publish_timeout, read, run_after, say, seconds

RETRY_POLICY_KEYS = frozenset({"max_retries", "interval_start", "interval_step", "interval_max"})


def _json_object(raw):
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(value, dict):
        raise ValueError(f"use a JSON object ({{...}}), not a JSON {type(value).__name__}")
    return value


def _retry_policy(raw):
    """kombu passes the policy as keyword arguments to ``ensure``: an unknown key would make every publish raise."""
    policy = _json_object(raw)
    unknown = sorted(set(policy) - RETRY_POLICY_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown}; allowed: {sorted(RETRY_POLICY_KEYS)}")
    for key, value in policy.items():
        if key == "max_retries" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{key} must be a number >= 0")
    return policy


#: (variable, Celery setting, parser); the transport options and confirm_publish are merged last.
SETTINGS = (
    ("CELERY_TASK_PUBLISH_RETRY", "task_publish_retry", boolean),
    ("CELERY_TASK_PUBLISH_RETRY_POLICY", "task_publish_retry_policy", _retry_policy),
    ("CELERY_BROKER_POOL_LIMIT", "broker_pool_limit", count),
    ("CELERY_BROKER_HEARTBEAT", "broker_heartbeat", seconds),
)


def _set_setting(conf, key, value):
    """Set ``key`` so that it wins over the app's own value, including a namespaced one.

    With ``config_from_object(..., namespace='CELERY')`` Celery looks up ``CELERY_<KEY>`` before
    ``<key>`` in every source, so both spellings are written to the topmost map.
    """
    conf[key] = value
    prefix = conf.__dict__.get("prefix")
    if prefix:
        namespaced = prefix + key
        conf[namespaced.upper() if prefix.isupper() else namespaced] = value


def overrides(conf):
    """The settings to apply from the environment: ({setting: value}, [variable names]).

    The retry policy and the transport options are merged into the app's own, so a partial JSON
    object changes only the keys it names.
    """
    settings, names = {}, []
    for name, key, parse in SETTINGS:
        value, ok = read(name, parse)
        if not ok:
            continue
        if key == "task_publish_retry_policy":
            value = {**(conf.get(key) or {}), **value}
        settings[key] = value
        names.append(name)

    options, options_ok = read("CELERY_BROKER_TRANSPORT_OPTIONS", _json_object)
    confirm, confirm_ok = read("CELERY_CONFIRM_PUBLISH", boolean)
    if options_ok or confirm_ok:
        merged = dict(conf.get("broker_transport_options") or {})
        if options_ok:
            merged.update(options)
            names.append("CELERY_BROKER_TRANSPORT_OPTIONS")
        if confirm_ok:
            merged["confirm_publish"] = confirm
            names.append("CELERY_CONFIRM_PUBLISH")
        settings["broker_transport_options"] = merged
    return settings, names


def apply(app, conf):
    settings, names = overrides(conf)
    if not settings:
        return
    for key, value in settings.items():
        _set_setting(conf, key, value)
    not_applied = [key for key, value in settings.items() if conf.get(key) != value]
    if not_applied:
        say(f"Celery app {app.main!r}: could not apply {', '.join(not_applied)}; the app's own values stay")
    bound = publish_timeout()
    suffix = f"; a publish waits at most {bound} s for the broker" if bound else ""
    say(f"Celery app {app.main!r}: applied {', '.join(names)}{suffix}")


def patch(module):
    run_after(getattr(module, "Celery", None), "_load_config", apply, "the CELERY_* variables")
    try:
        from celery import signals

        # Pool processes end with os._exit: their publish summary is printed on this signal.
        signals.worker_process_shutdown.connect(accounting.at_exit, weak=False)
    except Exception as exc:
        say(f"publish summaries of Celery pool processes are not printed ({type(exc).__name__})")
