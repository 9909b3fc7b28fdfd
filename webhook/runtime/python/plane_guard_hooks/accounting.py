"""Every publish that is not a plain success leaves one JSON line on stderr.

A publish that raised is one traceback in one pod's log, and one that a start-up step let go past
the bound is not even that: nobody could count them. Here each guarded publish is followed from
start to end, and the ones that were not a quick, confirmed success are written as one line of
a stable schema (version ``SCHEMA``) that ``plane-guard publishes`` reads back:

``{"plane_guard":"publish","v":1,"outcome":...,"library":"kombu"|"pika","task":...,"id":...,
"exchange":...,"routing_key":...,"waited_s":...,"attempts":...,"bound_s":...,"error":...,
"workload":...,"pod":...,"pid":...,"ts":...}``

Outcomes: ``late`` (confirmed after more than ``LATE_SECONDS``), ``retried`` (confirmed after a
retry on a new connection), ``raised`` (the caller got the error), ``continued`` (a start-up step
went on past the bound: the message may be lost), ``unconfirmed`` (the process exited while the
publish still waited for its confirmation). Names and ids only: never arguments, bodies, URLs or
exception messages. Lines are rate-limited (``dropped`` counts what was left out since the last
line), and a process that published prints a ``publish-summary`` line with complete counts when
it exits.
"""

import atexit
import json
import os
import re
import sys
import threading
import time

from plane_guard_hooks import STARTUP_STEPS_VARIABLE, env, say

SCHEMA = 1
LATE_SECONDS = 1.0
OUTCOMES = ("late", "retried", "raised", "continued", "unconfirmed")
#: The rate limit: a burst of this many lines, then one more per ``REFILL_SECONDS``.
BURST = 20
REFILL_SECONDS = 1.0
WORKLOAD_VARIABLE = "PLANE_GUARD_WORKLOAD"
POD_VARIABLE = "PLANE_GUARD_POD"
#: Longest text taken from a message's metadata (a task name, a routing key).
_TEXT_LIMIT = 200


class _Ledger:
    """Per-process counts, the publishes still waiting, and the rate limit's state."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.published = 0
        self.dropped = 0
        self.dropped_since_line = 0
        self.tokens = float(BURST)
        self.refilled = time.monotonic()
        self.waiting = {}
        self.next_token = 0
        self.exit_registered = False
        self.summarised = False


_ledger = _Ledger()
_startup_step = []


def _reset_after_fork():
    """A forked child (a gunicorn or Celery pool worker) counts its own publishes."""
    global _ledger
    registered = _ledger.exit_registered
    _ledger = _Ledger()
    _ledger.exit_registered = registered


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def text(value):
    """A short string for the line (never a body): names and ids are strings; bytes are decoded."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        value = getattr(value, "name", None)
        if not isinstance(value, str):
            return None
    return value[:_TEXT_LIMIT]


def is_startup_step(argv=None):
    """Whether this process is a start-up step of the entrypoint (``PLANE_GUARD_STARTUP_STEPS``).

    The variable holds a JSON list of regular expressions (the policy's ``startupSteps``); the
    process is a step when one of them matches its command line, ``sys.argv`` joined by spaces.
    Decided once per process.
    """
    if argv is None and _startup_step:
        return _startup_step[0]
    found = False
    raw = env(STARTUP_STEPS_VARIABLE)
    if raw is not None:
        try:
            patterns = json.loads(raw)
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise ValueError("use a JSON list of regular expressions")
            line = " ".join(str(a) for a in (sys.argv if argv is None else argv))
            found = any(re.search(p, line) for p in patterns)
        except (ValueError, re.error) as exc:
            say(f"ignoring {STARTUP_STEPS_VARIABLE}: {exc}; a publish past the bound raises in every process")
    if argv is None:
        _startup_step.append(found)
    return found


def _now():
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _identity():
    return {"workload": env(WORKLOAD_VARIABLE), "pod": env(POD_VARIABLE), "pid": os.getpid(), "ts": _now()}


def _write(record):
    try:
        sys.stderr.write(json.dumps(record, separators=(",", ":"), ensure_ascii=True) + "\n")
        sys.stderr.flush()
    except Exception:
        pass


def _take_token(ledger):
    now = time.monotonic()
    ledger.tokens = min(float(BURST), ledger.tokens + (now - ledger.refilled) / REFILL_SECONDS)
    ledger.refilled = now
    if ledger.tokens < 1:
        return False
    ledger.tokens -= 1
    return True


def _register_exit(ledger):
    if not ledger.exit_registered:
        ledger.exit_registered = True
        atexit.register(at_exit)


def start(library, fields):
    """A publish begins: returns its token for ``finish``. ``fields``: task, id, exchange, routing_key."""
    ledger = _ledger
    with ledger.lock:
        _register_exit(ledger)
        ledger.published += 1
        ledger.next_token += 1
        token = ledger.next_token
        ledger.waiting[token] = (library, fields, time.monotonic())
    return token


def finish(token, outcome=None, attempts=1, bound=None, error=None):
    """The publish ``token`` ended; ``outcome`` None is a plain success (no line)."""
    ledger = _ledger
    with ledger.lock:
        entry = ledger.waiting.pop(token, None)
    if entry is None:
        return
    library, fields, started = entry
    waited = time.monotonic() - started
    if outcome is None and attempts > 1:
        outcome = "retried"
    if outcome is None and waited > LATE_SECONDS:
        outcome = "late"
    if outcome is not None:
        record(outcome, library, fields, waited, attempts, bound, error)


def record(outcome, library, fields, waited, attempts=1, bound=None, error=None):
    ledger = _ledger
    line = {
        "plane_guard": "publish",
        "v": SCHEMA,
        "outcome": outcome,
        "library": library,
        "task": fields.get("task"),
        "id": fields.get("id"),
        "exchange": fields.get("exchange"),
        "routing_key": fields.get("routing_key"),
        "waited_s": round(waited, 3),
        "attempts": attempts,
        "bound_s": bound,
        "error": error,
        **_identity(),
    }
    with ledger.lock:
        ledger.counts[outcome] = ledger.counts.get(outcome, 0) + 1
        if not _take_token(ledger):
            ledger.dropped += 1
            ledger.dropped_since_line += 1
            return
        if ledger.dropped_since_line:
            line["dropped"] = ledger.dropped_since_line
            ledger.dropped_since_line = 0
    _write(line)


def at_exit(*_args, **_kwargs):
    """Publishes still waiting are reported ``unconfirmed``; then the summary, if anything was published.

    Runs at interpreter exit, and from Celery's ``worker_process_shutdown`` signal: a prefork pool
    process ends with ``os._exit``, which skips ``atexit``.
    """
    ledger = _ledger
    with ledger.lock:
        waiting = list(ledger.waiting.items())
        ledger.waiting.clear()
    for _, (library, fields, started) in waiting:
        record("unconfirmed", library, fields, time.monotonic() - started)
    with ledger.lock:
        if not ledger.published or ledger.summarised:
            return
        ledger.summarised = True
        summary = {
            "plane_guard": "publish-summary",
            "v": SCHEMA,
            "published": ledger.published,
            "counts": dict(ledger.counts),
            "dropped": ledger.dropped,
            **_identity(),
        }
    _write(summary)
