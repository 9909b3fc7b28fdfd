"""Structured JSON logs: one line per admission decision, and JSON for every other log line.

What goes in is chosen by the caller and is names only (uid, namespace, pod, roles, decision,
reasons): never an env value, a URL or Secret data. Exceptions are logged as type and stack
frames without their message, because a message can quote the input.
"""

from __future__ import annotations

import logging
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
    """Log one admission decision (the caller passes names only, never values)."""
    if DECISIONS.isEnabledFor(logging.INFO):
        DECISIONS.info("admission", extra={"fields": fields})


def error(message: str, fields: dict[str, Any] | None = None) -> None:
    """Log an internal error with its stack but without the exception text."""
    LOG.error(message, exc_info=True, extra={"fields": fields or {}})


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
