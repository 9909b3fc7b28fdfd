"""Decide, at container start, the settings the webhook could not decide at admission.

The webhook sees the pod spec, not the values that ``envFrom`` ConfigMaps and Secrets bring, so
it cannot know whether the operator already set, say, ``GUNICORN_MAX_REQUESTS`` in the chart's
ConfigMap. It passes each policy value under a name that says how to treat the container's own:

* ``PLANE_GUARD_DEFAULT_<NAME>=<value>`` (``existingEnv: keep``): used only when the container
  has no value of its own for ``<NAME>``, from ``env`` or ``envFrom``;
* ``PLANE_GUARD_OVERRIDE_<NAME>=<value>`` (``existingEnv: replace``): the policy wins.

It also merges the AMQP heartbeat into a broker URL that came from a Secret (``amqp_url.py``).

The wrapper runs this with ``python3 -I`` and ``eval``s stdout, which holds only
``export NAME='value'`` lines. stderr says which names were kept, set or replaced; it shows a
value only for the numeric and boolean settings below, never a URL or anything else.
An empty value counts as "not set", as in the start-up hook. Standard library only.
"""

from __future__ import annotations

import os
import re
import sys

# The prefixes are webhook.core.conventions.ENV_DEFAULT_PREFIX / ENV_OVERRIDE_PREFIX (a test checks).
DEFAULT_PREFIX = "PLANE_GUARD_DEFAULT_"
OVERRIDE_PREFIX = "PLANE_GUARD_OVERRIDE_"
#: Settings whose values are numbers or booleans, never secrets: these are shown in the log.
SHOWN_VALUES = frozenset(
    {
        "GUNICORN_MAX_REQUESTS",
        "GUNICORN_MAX_REQUESTS_JITTER",
        "GUNICORN_WORKERS",
        "CELERY_TASK_PUBLISH_RETRY",
        "CELERY_BROKER_POOL_LIMIT",
        "CELERY_BROKER_HEARTBEAT",
        "CELERY_CONFIRM_PUBLISH",
    }
)
_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _shown(name: str, value: str) -> str:
    return value if name in SHOWN_VALUES else "(value not shown)"


def decide(environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """``({name: value to export}, [messages])`` for every policy setting in ``environ``."""
    exports: dict[str, str] = {}
    messages: list[str] = []
    for variable in sorted(environ):
        for prefix, mode in ((OVERRIDE_PREFIX, "replace"), (DEFAULT_PREFIX, "keep")):  # noqa: B007 - read after the loop
            if variable.startswith(prefix):
                break
        else:
            continue
        name, wanted = variable[len(prefix) :], environ[variable]
        if not _SHELL_NAME.match(name):
            messages.append(f"{variable}: {name!r} is not a name a shell can export; ignored")
            continue
        own = environ.get(name, "")
        if not own.strip():
            exports[name] = wanted
            messages.append(f"{name}: set to {_shown(name, wanted)} (the container has none; policy)")
        elif own == wanted:
            messages.append(f"{name}: the container's value is already the policy's ({_shown(name, own)})")
        elif mode == "keep":
            messages.append(
                f"{name}: kept the container's {_shown(name, own)} (policy default {_shown(name, wanted)}, existingEnv: keep)"
            )
        else:
            exports[name] = wanted
            messages.append(
                f"{name}: replaced the container's {_shown(name, own)} with {_shown(name, wanted)} (policy, existingEnv: replace)"
            )
    return exports, messages


def merge_url(environ: dict[str, str], exports: dict[str, str], messages: list[str]) -> None:
    """Add the heartbeat to the broker URL the container got (from a Secret), if the policy asks."""
    if not environ.get("PLANE_GUARD_AMQP_HEARTBEAT"):
        return
    name = environ.get("PLANE_GUARD_AMQP_URL_VAR") or "AMQP_URL"
    if not _SHELL_NAME.match(name):
        messages.append("PLANE_GUARD_AMQP_URL_VAR is not a variable name; AMQP heartbeat not added")
        return
    current = {**environ, **exports}
    if not current.get(name):
        messages.append(
            f"{name} is not set in this container; the AMQP heartbeat is added by the start-up hook "
            "to the connection the app builds itself (e.g. from RABBITMQ_*)"
        )
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from amqp_url import from_environment

    merged = from_environment(current)
    if merged is None:
        messages.append(f"keeping {name} as it is")
    else:
        exports[name] = merged[1]


def main(environ: dict[str, str] | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    exports, messages = decide(env)
    merge_url(env, exports, messages)
    for message in messages:
        print(f"plane-guard: {message}", file=sys.stderr)
    sys.stdout.write("".join(f"export {name}={_quote(value)}\n" for name, value in exports.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
