"""Structured JSON logs: one line per admission decision, and JSON for every other log line.

What goes in is chosen by the caller and is names only (uid, namespace, pod, roles, decision,
reasons): never an env value, a URL or Secret data. Exceptions are logged as type and stack
frames without their message, because a message can quote the input.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import time
import traceback
from typing import Any

import pydantic_core

DECISIONS = logging.getLogger("plane_guard.decision")
LOG = logging.getLogger("plane_guard")


class JsonFormatter(logging.Formatter):
    """``{"ts":..., "level":..., "logger":..., "msg":..., **fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
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
    _PENDING.append(pydantic_core.to_json(line, fallback=str) + b"\n")
    if len(_PENDING) == 1:
        try:
            asyncio.get_running_loop().call_soon(flush)
        except RuntimeError:  # no event loop (tests, tools): write now
            flush()


_PENDING: list[bytes] = []
#: Writes up to this size are atomic on a pipe, so worker processes sharing stderr never mix lines.
_ATOMIC = 4096


def flush() -> None:
    """Write the pending decision lines, whole lines per write."""
    if not _PENDING:
        return
    lines = _PENDING[:]
    _PENDING.clear()
    fd = _fd()
    chunk: list[bytes] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) > _ATOMIC:
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


atexit.register(flush)


def error(message: str, fields: dict[str, Any] | None = None) -> None:
    """Log an internal error with its stack but without the exception text."""
    LOG.error(message, exc_info=True, extra={"fields": fields or {}})

