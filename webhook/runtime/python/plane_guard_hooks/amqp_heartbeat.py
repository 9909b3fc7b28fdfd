"""kombu: the policy's AMQP heartbeat on a broker connection the application builds by itself.

The wrapper merges the heartbeat into the ``AMQP_URL`` variable. Plane's settings build the
broker URL from ``RABBITMQ_HOST/PORT/USER/PASSWORD/VHOST`` when ``AMQP_URL`` is unset (an
enterprise chart branch blanks it), and that URL carries no heartbeat: kombu's default of 0
switches off the 60 s the broker proposes. Every Celery connection is a ``kombu.Connection``,
so this is where the URL paths meet: when the container has no URL variable of its own, an AMQP
connection without a heartbeat gets the policy's (``existingHeartbeat: replace``: any it has).
Nothing is read from or written to the URL itself, so no credential is ever seen here.
"""

import os

from plane_guard_hooks import run_after, say, seconds

HEARTBEAT_VARIABLE = "PLANE_GUARD_AMQP_HEARTBEAT"
EXISTING_VARIABLE = "PLANE_GUARD_AMQP_HEARTBEAT_EXISTING"
URL_VARIABLE = "PLANE_GUARD_AMQP_URL_VAR"
AMQP_TRANSPORTS = frozenset({"amqp", "amqps", "pyamqp"})
_announced = []


def _policy():
    """(heartbeat, replace) when the hook must act, else None: only without a URL variable."""
    url_variable = os.environ.get(URL_VARIABLE) or "AMQP_URL"
    if (os.environ.get(url_variable) or "").strip():
        return None  # the wrapper merged it into that URL already
    raw = (os.environ.get(HEARTBEAT_VARIABLE) or "").strip()
    if not raw:
        return None
    try:
        heartbeat = seconds(raw)
    except ValueError:
        say(f"ignoring {HEARTBEAT_VARIABLE}: use a number of seconds >= 0")
        return None
    return heartbeat, os.environ.get(EXISTING_VARIABLE, "keep").strip() == "replace"


def apply(connection, _result):
    wanted = _policy()
    if wanted is None or str(getattr(connection, "transport_cls", "")) not in AMQP_TRANSPORTS:
        return
    heartbeat, replace = wanted
    if connection.heartbeat and not replace:
        return
    connection.heartbeat = float(heartbeat)
    if not _announced:
        _announced.append(True)
        say(f"AMQP heartbeat {heartbeat} s on connections the app builds itself (no {os.environ.get(URL_VARIABLE) or 'AMQP_URL'})")


def patch(module):
    """``kombu.connection``: after ``Connection._init_params`` set the heartbeat it left at 0."""
    run_after(getattr(module, "Connection", None), "_init_params", apply, "the AMQP heartbeat")
