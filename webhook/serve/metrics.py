"""Prometheus metrics of the webhook.

Labels stay low-cardinality: reasons are reduced to their code (``plane-api:amqp-url-absent``
counts as ``amqp-url-absent``), so container names never multiply the series.
With ``--workers`` > 1 the server sets ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's own
setting) before it starts the worker processes, and ``/metrics`` aggregates all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Content type of ``GET /metrics``.
CONTENT_TYPE = CONTENT_TYPE_LATEST

REQUESTS = Counter(
    "plane_guard_admission_requests_total",
    "Admission decisions (dry-run requests are not counted).",
    ["webhook", "mode", "decision"],
)
REASONS = Counter(
    "plane_guard_admission_reasons_total",
    "Why a pod was skipped, left unchanged or flagged (reason codes, not values).",
    ["webhook", "reason"],
)
DURATION = Histogram(
    "plane_guard_admission_duration_seconds",
    "Time spent deciding one admission request (parse to response bytes).",
    ["webhook"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
ERRORS = Counter(
    "plane_guard_internal_errors_total",
    "Internal errors while deciding; the pod was admitted (or denied with --on-error deny).",
    ["webhook"],
)
BAD_REQUESTS = Counter(
    "plane_guard_bad_requests_total",
    "Requests refused before any decision (malformed body, too large, wrong content type...).",
    ["status"],
)
LIMIT_HITS = Counter(
    "plane_guard_limit_hits_total",
    "Connections or requests cut short by a limit (timeouts, head size, connection cap, memory).",
    ["limit"],
)
OPEN_CONNECTIONS = Gauge(
    "plane_guard_open_connections",
    "Open client connections (TLS established).",
    multiprocess_mode="livesum",
)
CERT_RELOADS = Counter(
    "plane_guard_certificate_reloads_total",
    "Serving certificate reloads after the files changed.",
    ["result"],
)
CERT_EXPIRY = Gauge(
    "plane_guard_certificate_expiry_timestamp_seconds",
    "notAfter of the serving certificate in use (Unix time).",
    multiprocess_mode="max",
)
POLICY = Gauge(
    "plane_guard_policy_info",
    "The policy in use (value 1, digest as label).",
    ["digest", "mode"],
    multiprocess_mode="max",
)


def reason_code(reason: str) -> str:
    """``plane-api:amqp-url-absent`` -> ``amqp-url-absent``; bounded length."""
    return reason.rpartition(":")[2][:48] or "unknown"


_CHILDREN: dict[tuple, object] = {}


def _child(metric, *values: str):
    """Labelled child, looked up once: ``labels()`` costs more than the increment itself."""
    key = (metric, *values)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*values)
    return child


def record_decision(webhook: str, mode: str, decision: str, reasons: tuple[str, ...] | list[str], seconds: float) -> None:
    _child(REQUESTS, webhook, mode, decision).inc()
    for code in {reason_code(r) for r in reasons}:
        _child(REASONS, webhook, code).inc()
    _child(DURATION, webhook).observe(seconds)


def limit_hit(limit: str) -> None:
    _child(LIMIT_HITS, limit).inc()


def render() -> bytes:
    """The exposition text for ``GET /metrics``."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()

