"""plane-guard start-up hook, imported by Python's ``site`` module from the front of PYTHONPATH.

Why it exists: Plane's image hard-codes gunicorn's ``--max-requests`` on the command line, its
Celery app reads only Django settings, and its pika publishers use no publisher confirms, so
variables set on the pod change none of them. This hook adjusts them from inside the process,
after the application configured itself; each library has its module in ``plane_guard_hooks``:

* ``gunicorn_config``: ``GUNICORN_MAX_REQUESTS`` / ``_JITTER`` win over the command line;
* ``celery_config``: the CELERY_* variables win over the app's own configuration;
* ``publish_deadline``: a kombu publish waits at most ``PLANE_GUARD_PUBLISH_TIMEOUT`` seconds;
* ``pika_confirms``: pika channels publish with confirms, within the same bound;
* ``amqp_heartbeat``: the policy's heartbeat on a broker URL the app built itself (``RABBITMQ_*``);
* ``accounting``: one JSON line for each publish that was not a plain success.

Nothing is imported or patched until the application itself imports one of the modules in
``_PATCHES``, so other processes (shell steps, manage.py, scripts) only pay for installing an
import finder. The hook must never stop the application from starting. Standard library only.

Known limits: ``python -I`` / ``-S`` / ``-E`` skip this file.
"""

import os
import sys

#: Module the application imports -> (hook module, function) that adjusts it once it is loaded.
_PATCHES = {
    "celery.app.base": ("celery_config", "patch"),
    "gunicorn.app.base": ("gunicorn_config", "patch"),
    "kombu.connection": ("amqp_heartbeat", "patch"),
    "kombu.messaging": ("publish_deadline", "patch_producer"),
    "amqp.abstract_channel": ("publish_deadline", "patch_wait"),
    "amqp.connection": ("publish_deadline", "patch_connect"),
    "pika.adapters.blocking_connection": ("pika_confirms", "patch"),
}


def _say(message):
    """Only on trouble, so the hook package is imported only then (and never stops start-up)."""
    try:
        from plane_guard_hooks import say
    except Exception:
        return
    say(message)


def _run_patch(name, module):
    """Import the hook module for ``name`` (only now) and let it adjust the loaded ``module``."""
    from importlib import import_module

    hook, function = _PATCHES[name]
    getattr(import_module(f"plane_guard_hooks.{hook}"), function)(module)


# ---------------------------------------------------------------------------------------------
# Lazy import hook


class _PatchingLoader:
    """Runs the real loader, then the patch; everything else is the real loader's."""

    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            _run_patch(self._name, module)
        except Exception as exc:
            _say(f"could not prepare {module.__name__} ({type(exc).__name__}: {exc}); continuing without it")

    def __getattr__(self, name):
        if name in ("_loader", "_name"):
            raise AttributeError(name)
        return getattr(self._loader, name)


class _Finder:
    """A ``sys.meta_path`` entry that only reacts to the few modules plane-guard patches."""

    plane_guard = True

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _PATCHES:
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
            spec.loader = _PatchingLoader(spec.loader, fullname)
        return spec


def _install():
    if any(getattr(finder, "plane_guard", False) for finder in sys.meta_path):
        return
    for name in _PATCHES:
        if name in sys.modules:
            _run_patch(name, sys.modules[name])
    sys.meta_path.insert(0, _Finder())


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
