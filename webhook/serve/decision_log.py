"""Structured JSON logs: one line per admission decision, and JSON for every other log line.

What goes in is chosen by the caller and is names only (uid, namespace, pod, roles, decision,
reasons): never an env value, a URL or Secret data. Exceptions are logged as type and stack
frames without their message, because a message can quote the input. Names still come from the
request, so in a line longer than a few kilobytes every field is cut to a bounded length and
item count: one request cannot write a megabyte of log. Warnings a client can trigger at will
(limits hit) are throttled.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import time
import traceback
from itertools import islice
from typing import Any

import pydantic_core

DECISIONS = logging.getLogger("plane_guard.decision")
LOG = logging.getLogger("plane_guard")

#: Longest logged string, and most items of a logged list or map (the rest is summarised), in a
#: line longer than LINE_FAST_BYTES; shorter lines, every normal one, are written as they are.
FIELD_MAX_CHARS = 128
FIELD_MAX_ITEMS = 32
LINE_FAST_BYTES = 4096
#: A throttled warning is written at most once per this many seconds.
THROTTLE_SECONDS = 60.0


def bounded(value: Any) -> Any:
    """``value`` cut to FIELD_MAX_CHARS per string and FIELD_MAX_ITEMS per list or map."""
    if isinstance(value, str):
        return value if len(value) <= FIELD_MAX_CHARS else value[: FIELD_MAX_CHARS - 3] + "..."
    if isinstance(value, (list, tuple)):
        items = [bounded(item) for item in value[:FIELD_MAX_ITEMS]]
        if len(value) > FIELD_MAX_ITEMS:
            items.append(f"... and {len(value) - FIELD_MAX_ITEMS} more")
        return items
    if isinstance(value, dict):
        cut = {bounded(str(k)): bounded(v) for k, v in islice(value.items(), FIELD_MAX_ITEMS)}
        if len(value) > FIELD_MAX_ITEMS:
            cut["..."] = f"and {len(value) - FIELD_MAX_ITEMS} more"
        return cut
    return value


def _bounded_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: bounded(value) for key, value in fields.items()}


class JsonFormatter(logging.Formatter):
    """``{"ts":..., "level":..., "logger":..., "msg":..., **fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": bounded(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(_bounded_fields(fields))
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
            line["stack"] = "".join(traceback.format_tb(record.exc_info[2]))[-2000:]
        return pydantic_core.to_json(line, fallback=str).decode()


def configure(level: str = "info") -> None:
    """JSON lines on stderr for plane-guard and uvicorn; idempotent (workers call it again)."""
    root = logging.getLogger()
    if not any(getattr(h, "_plane_guard", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._plane_guard = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True


def decision(fields: dict[str, Any]) -> None:
    """Log one admission decision (the caller passes names only, never values).

    The hot path writes the line itself (same format as the formatter) instead of going
    through a LogRecord, and lines produced in one event-loop iteration leave in one write:
    under load that is one syscall for many decisions, idle it is one per decision, and no
    line waits longer than the iteration that produced it.
    """
    if not DECISIONS.isEnabledFor(logging.INFO):
        return
    line = {"ts": round(time.time(), 3), "level": "info", "logger": DECISIONS.name, "msg": "admission"}
    line.update(fields)
    raw = pydantic_core.to_json(line, fallback=str)
    if len(raw) > LINE_FAST_BYTES:
        line.update(_bounded_fields(fields))
        raw = pydantic_core.to_json(line, fallback=str)
    LINES.add(raw + b"\n")


class LineBuffer:
    """Decision lines waiting for the end of this event-loop iteration, then written together.

    One per process, as stderr is: ``LINES``.
    """

    #: Writes up to this size are atomic on a pipe, so worker processes sharing stderr never mix lines.
    ATOMIC = 4096

    def __init__(self) -> None:
        self.pending: list[bytes] = []

    def add(self, line: bytes) -> None:
        self.pending.append(line)
        if len(self.pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop (tests, tools): write now
                self.flush()

    def flush(self) -> None:
        """Write the pending lines, whole lines per write."""
        if not self.pending:
            return
        lines, self.pending = self.pending, []
        fd = _fd()
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > self.ATOMIC:
                _write(fd, b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        _write(fd, b"".join(chunk))


def _write(fd: int, data: bytes) -> None:
    try:
        while data:
            written = os.write(fd, data)
            data = data[written:]
    except OSError:
        pass  # a closed or full log pipe must not fail an admission


def _fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        return 2


LINES = LineBuffer()
flush = LINES.flush


atexit.register(flush)


def error(message: str, fields: dict[str, Any] | None = None) -> None:
    """Log an internal error with its stack but without the exception text."""
    LOG.error(message, exc_info=True, extra={"fields": fields or {}})




def limit_hit(limit: str, message: str, fields: dict[str, Any] | None = None) -> None:
    """A limit cut a connection or request short: count it, and log it (throttled)."""
    from webhook.serve import metrics

    metrics.limit_hit(limit)
    throttled_warning(limit, message, {"limit": limit, **(fields or {})})


class Throttle:
    """When each repeatable warning was last written, and how often it happened since."""

    def __init__(self, seconds: float = THROTTLE_SECONDS) -> None:
        self.seconds = seconds
        self.seen: dict[str, list] = {}  # key -> [time of the last line, hits not logged since]

    def admit(self, key: str) -> int | None:
        """None to stay silent, else how many hits were not logged since the previous line (-1: first)."""
        now = time.monotonic()
        state = self.seen.get(key)
        if state is not None and now - state[0] < self.seconds:
            state[1] += 1
            return None
        self.seen[key] = [now, 0]
        return -1 if state is None else state[1]


#: One per process, as the log is.
THROTTLE = Throttle()


def throttled_warning(key: str, message: str, fields: dict[str, Any] | None = None) -> None:
    """A warning for an event a client can repeat at will: the first, then one line a minute.

    Each line after the first carries ``not_logged``: how many times it happened in between.
    """
    not_logged = THROTTLE.admit(key)
    if not_logged is None:
        return
    extra = dict(fields or {})
    if not_logged >= 0:
        extra["not_logged"] = not_logged
    LOG.warning(message, extra={"fields": extra})
