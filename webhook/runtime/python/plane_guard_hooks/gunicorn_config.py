"""gunicorn: ``GUNICORN_MAX_REQUESTS`` and ``GUNICORN_MAX_REQUESTS_JITTER`` win over the command line.

Plane's image hard-codes ``--max-requests 1200 --max-requests-jitter 1000``; the values are set
on gunicorn's ``Config`` after it has read argv, the config file and ``GUNICORN_CMD_ARGS``.
"""

from plane_guard_hooks import count, env, run_after, say

SETTINGS = (
    ("GUNICORN_MAX_REQUESTS", "max_requests"),
    ("GUNICORN_MAX_REQUESTS_JITTER", "max_requests_jitter"),
)


def apply(cfg):
    changes = []
    for name, key in SETTINGS:
        raw = env(name)
        if raw is None:
            continue
        before = getattr(cfg, key)
        try:
            value = count(raw)
        except ValueError as exc:
            say(f"ignoring {name}={raw!r}: {exc}; gunicorn keeps {key}={before}")
            continue
        cfg.set(key, value)
        changes.append(f"{key}={value} (was {before}, from {name})")
    if changes:
        say("gunicorn " + ", ".join(changes))


def patch(module):
    run_after(
        getattr(module, "BaseApplication", None),
        "do_load_config",
        lambda application, _: apply(application.cfg),
        "GUNICORN_MAX_REQUESTS*",
    )
