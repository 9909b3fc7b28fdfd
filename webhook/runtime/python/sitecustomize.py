"""plane-guard start-up hook, imported by Python's ``site`` module from the front of PYTHONPATH.

Why it exists: Plane's image hard-codes gunicorn's ``--max-requests`` on the command line, and
its Celery app reads only Django settings, so variables set on the pod reach neither. This hook
applies them from inside the process, after the application configured itself:

* gunicorn: ``GUNICORN_MAX_REQUESTS`` and ``GUNICORN_MAX_REQUESTS_JITTER`` are set on gunicorn's
  ``Config`` after it has read argv, the config file and ``GUNICORN_CMD_ARGS``.
* Celery: ``CELERY_TASK_PUBLISH_RETRY``, ``CELERY_TASK_PUBLISH_RETRY_POLICY``,
  ``CELERY_BROKER_POOL_LIMIT``, ``CELERY_BROKER_HEARTBEAT``, ``CELERY_BROKER_TRANSPORT_OPTIONS``
  and ``CELERY_CONFIRM_PUBLISH`` are applied when an app has loaded its own configuration.

Nothing is imported or patched until the application itself imports ``gunicorn.app.base`` or
``celery.app.base``, so other processes (shell steps, manage.py, scripts) only pay for installing
an import finder. A value that cannot be used costs one line on stderr and is ignored: the hook
must never stop the application from starting. Standard library only.

Known limits: ``python -I`` / ``-S`` / ``-E`` skip this file; receivers of Celery's
``on_after_configure`` signal see the values from before the override.
"""

import os
import sys

_NAME = "plane-guard"
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_RETRY_POLICY_KEYS = frozenset({"max_retries", "interval_start", "interval_step", "interval_max"})


def _say(message):
    try:
        sys.stderr.write(f"{_NAME}: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass


def _env(name):
    """The variable's value, or None when it is unset or blank (an empty value means "not set")."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def _boolean(raw):
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("use true/false, 1/0 or yes/no")


def _count(raw):
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValueError("use a whole number >= 0") from None
    if value < 0:
        raise ValueError("use a whole number >= 0")
    return value


def _seconds(raw):
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("use a number of seconds >= 0") from None
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise ValueError("use a number of seconds >= 0")
    return int(value) if value.is_integer() else value


def _json_object(raw):
    import json

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
    unknown = sorted(set(policy) - _RETRY_POLICY_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown}; allowed: {sorted(_RETRY_POLICY_KEYS)}")
    for key, value in policy.items():
        if key == "max_retries" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{key} must be a number >= 0")
    return policy


# ---------------------------------------------------------------------------------------------
# Celery


#: (variable, Celery setting, parser); the transport options and confirm_publish are merged last.
_CELERY_SETTINGS = (
    ("CELERY_TASK_PUBLISH_RETRY", "task_publish_retry", _boolean),
    ("CELERY_TASK_PUBLISH_RETRY_POLICY", "task_publish_retry_policy", _retry_policy),
    ("CELERY_BROKER_POOL_LIMIT", "broker_pool_limit", _count),
    ("CELERY_BROKER_HEARTBEAT", "broker_heartbeat", _seconds),
)


def _read(name, parse):
    raw = _env(name)
    if raw is None:
        return None, False
    try:
        return parse(raw), True
    except ValueError as exc:
        # The value is not echoed: transport options may carry credentials.
        _say(f"ignoring {name}: {exc}")
        return None, False


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


def _celery_overrides(conf):
    """The settings to apply from the environment: ({setting: value}, [variable names]).

    The retry policy and the transport options are merged into the app's own, so a partial JSON
    object changes only the keys it names.
    """
    settings, names = {}, []
    for name, key, parse in _CELERY_SETTINGS:
        value, ok = _read(name, parse)
        if not ok:
            continue
        if key == "task_publish_retry_policy":
            value = {**(conf.get(key) or {}), **value}
        settings[key] = value
        names.append(name)

    options, options_ok = _read("CELERY_BROKER_TRANSPORT_OPTIONS", _json_object)
    confirm, confirm_ok = _read("CELERY_CONFIRM_PUBLISH", _boolean)
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


def _apply_celery(app, conf):
    settings, names = _celery_overrides(conf)
    if not settings:
        return
    for key, value in settings.items():
        _set_setting(conf, key, value)
    not_applied = [key for key, value in settings.items() if conf.get(key) != value]
    if not_applied:
        _say(f"Celery app {app.main!r}: could not apply {', '.join(not_applied)}; the app's own values stay")
    _say(f"Celery app {app.main!r}: applied {', '.join(names)}")


def _patch_celery(module):
    _run_after(getattr(module, "Celery", None), "_load_config", _apply_celery, "the CELERY_* variables")


# ---------------------------------------------------------------------------------------------
# gunicorn

_GUNICORN_SETTINGS = (
    ("GUNICORN_MAX_REQUESTS", "max_requests"),
    ("GUNICORN_MAX_REQUESTS_JITTER", "max_requests_jitter"),
)


def _apply_gunicorn(cfg):
    changes = []
    for name, key in _GUNICORN_SETTINGS:
        raw = _env(name)
        if raw is None:
            continue
        before = getattr(cfg, key)
        try:
            value = _count(raw)
        except ValueError as exc:
            _say(f"ignoring {name}={raw!r}: {exc}; gunicorn keeps {key}={before}")
            continue
        cfg.set(key, value)
        changes.append(f"{key}={value} (was {before}, from {name})")
    if changes:
        _say("gunicorn " + ", ".join(changes))


def _patch_gunicorn(module):
    _run_after(
        getattr(module, "BaseApplication", None),
        "do_load_config",
        lambda application, _: _apply_gunicorn(application.cfg),
        "GUNICORN_MAX_REQUESTS*",
    )


def _run_after(owner, method_name, apply, what):
    """Wrap ``owner.method_name`` so ``apply(self, result)`` runs after the app configured itself.

    Idempotent, and ``apply`` failing only costs a line on stderr: the app's own settings stay.
    """
    original = getattr(owner, method_name, None)
    if original is None:
        _say(f"{method_name} not found in this version; {what} are not applied")
        return
    if getattr(original, "_plane_guard", False):
        return

    def wrapper(self):
        result = original(self)
        try:
            apply(self, result)
        except Exception as exc:
            _say(f"could not apply {what} ({type(exc).__name__}: {exc}); the app's own settings stay")
        return result

    wrapper._plane_guard = True
    wrapper.__wrapped__ = original
    wrapper.__name__ = original.__name__
    wrapper.__doc__ = original.__doc__
    setattr(owner, method_name, wrapper)


# ---------------------------------------------------------------------------------------------
# Lazy import hook


class _PatchingLoader:
    """Runs the real loader, then the patch; everything else is the real loader's."""

    def __init__(self, loader, patch):
        self._loader = loader
        self._patch = patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            self._patch(module)
        except Exception as exc:
            _say(f"could not prepare {module.__name__} ({type(exc).__name__}: {exc}); continuing without it")

    def __getattr__(self, name):
        if name in ("_loader", "_patch"):
            raise AttributeError(name)
        return getattr(self._loader, name)


class _Finder:
    """A ``sys.meta_path`` entry that only reacts to the few modules plane-guard patches."""

    plane_guard = True

    def __init__(self, patches):
        self._patches = patches

    def find_spec(self, fullname, path=None, target=None):
        patch = self._patches.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or getattr(finder, "plane_guard", False):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


_PATCHES = {
    "celery.app.base": _patch_celery,
    "gunicorn.app.base": _patch_gunicorn,
}


def _install():
    if any(getattr(finder, "plane_guard", False) for finder in sys.meta_path):
        return
    for name, patch in _PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _Finder(_PATCHES))


# ---------------------------------------------------------------------------------------------
# Chaining: the image may ship its own sitecustomize further along sys.path.


def _chain():
    """Run the next ``sitecustomize`` on sys.path, as ``site`` would have without plane-guard."""
    from importlib.machinery import PathFinder
    from importlib.util import module_from_spec

    here = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    me = os.path.realpath(os.path.abspath(__file__))
    entries = list(sys.path)
    later = [p for i, p in enumerate(entries) if i > _index_of(entries, here)]
    later = [p for p in later if os.path.realpath(os.path.abspath(p or os.curdir)) != here]
    spec = PathFinder.find_spec("sitecustomize", later)
    if spec is None or spec.loader is None or (spec.origin and os.path.realpath(spec.origin) == me):
        return None
    module = module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        # The same message site.py prints for a failing sitecustomize; start-up goes on.
        print(
            f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
    return module


def _index_of(entries, directory):
    for index, entry in enumerate(entries):
        if os.path.realpath(os.path.abspath(entry or os.curdir)) == directory:
            return index
    return -1


try:
    _install()
except Exception as _exc:
    _say(f"start-up hook not installed ({type(_exc).__name__}: {_exc}); the application runs unchanged")

try:
    chained = _chain()
except Exception as _exc:
    chained = None
    _say(f"could not look for another sitecustomize ({type(_exc).__name__}: {_exc})")
