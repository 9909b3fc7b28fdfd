"""The HTTPS admission server: FastAPI app and uvicorn over TLS (certificates reload via webhook.serve.tls).

The four admission paths are the hot path: a small ASGI endpoint, called before FastAPI's own
middleware stack, reads the body under a size limit, parses the envelope once, calls the pure
core and writes the response bytes itself. Everything else (health, readiness, metrics,
404/405) is ordinary FastAPI.

A plane-guard bug must never block a pod: a failure inside the core answers ``allowed`` with a
warning (or a deny with ``--on-error deny``); a request that is not an AdmissionReview gets a
clear 4xx. Only a bug in the HTTP layer itself, before a uid is known, can answer 500 (the
webhook's failurePolicy then decides).

Memory stays bounded whatever clients send: each connection is bounded by webhook.serve.connections,
and the request bodies held at once by all requests together are bounded here (a request that
would pass that bound gets 503 at once instead of waiting in memory).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from webhook.core import conventions
from webhook.core.admission import Admission, EnvelopeError, parse_review
from webhook.serve import decision_log
from webhook.serve.connections import ConnectionGuard
from webhook.serve.settings import Settings
from webhook.serve.tls import ServingCertificate

if TYPE_CHECKING:
    from webhook.serve.config import ServeConfig

#: Request bodies held in memory at once, all requests together, in units of --max-body-bytes.
BODIES_IN_MEMORY = 4
#: A body this small (a real review is tens of kilobytes) may use the last --max-body-bytes of
#: that budget, which large bodies may not: a burst of huge requests never turns away a normal one.
SMALL_BODY = 256 * 1024
#: File descriptors kept free beyond --max-connections (listener, logs, certificate reads, pipes).
SPARE_FILE_DESCRIPTORS = 64
ADMISSION_PATHS = {
    conventions.PATH_MUTATE: ("mutate", False),
    conventions.PATH_MUTATE_AUDIT: ("mutate", True),
    conventions.PATH_VALIDATE: ("validate", False),
    conventions.PATH_VALIDATE_AUDIT: ("validate", True),
}


# --------------------------------------------------------------------------- HTTP


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class _Busy(Exception):
    pass


class BodyBudget:
    """Bytes of request bodies held in memory by this process, all requests together.

    The last ``reserved`` bytes are kept for small bodies.
    """

    def __init__(self, limit: int, reserved: int):
        self.limit, self.reserved = limit, reserved
        self.used = 0

    def take(self, size: int, small: bool) -> bool:
        if self.used + size > (self.limit if small else self.limit - self.reserved):
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _client_certificate(scope: dict) -> bool:
    """A verified client certificate came with this connection (ASGI TLS extension)."""
    return bool(scope.get("extensions", {}).get("tls", {}).get("client_cert_chain"))


class AdmissionEndpoint:
    """ASGI endpoint for the four admission paths: body under a limit, one parse, one answer."""

    def __init__(self, admission: Admission, max_body_bytes: int, client_certificate_required: bool = False):
        self.admission = admission
        self.max_body_bytes = max_body_bytes
        self.budget = BodyBudget(BODIES_IN_MEMORY * max_body_bytes, reserved=max_body_bytes)
        self.client_certificate_required = client_certificate_required

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        try:
            await self._serve(ADMISSION_PATHS[scope["path"]], scope, receive, send)
        except Exception:  # noqa: BLE001 - a bug in this HTTP layer, before any uid is known
            decision_log.error("unexpected error in the admission endpoint")
            try:
                await self._refuse(send, 500, "plane-guard internal error before a decision; see the plane-guard logs")
            except Exception:  # noqa: BLE001 - the response had started or the client left
                pass

    async def _serve(self, route: tuple[str, bool], scope: dict, receive: Callable, send: Callable) -> None:
        started = time.perf_counter()
        if self.client_certificate_required and not _client_certificate(scope):
            await self._refuse(send, 403, "a client certificate issued by the CA in --client-ca-file is required")
            return
        if scope["method"] != "POST":
            await self._refuse(send, 405, "use POST with an AdmissionReview body", [(b"allow", b"POST")])
            return
        content_type, length = b"", None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
        if content_type.split(b";", 1)[0].strip().lower() != b"application/json":
            await self._refuse(send, 415, "Content-Type must be application/json (an AdmissionReview)")
            return
        if length is not None:
            if not length.isdigit():
                await self._refuse(send, 400, "invalid Content-Length header")
                return
            if int(length) > self.max_body_bytes:
                await self._refuse(send, 413, f"body larger than {self.max_body_bytes} bytes (--max-body-bytes)")
                return
        held = [0]
        small = length is not None and int(length) <= SMALL_BODY
        try:
            body = await self._read_body(receive, held, small)
            status, answer = self._decide(route, body, started)
        except _TooLarge:
            status, answer = 413, f"body larger than {self.max_body_bytes} bytes (--max-body-bytes)"
        except _Busy:
            decision_log.limit_hit(
                "body-memory",
                f"answered 503: request bodies held in memory reached {self.budget.limit} bytes "
                f"({BODIES_IN_MEMORY} x --max-body-bytes); many large requests at once",
            )
            await self._refuse(send, 503, "server busy: too many large requests at once; retry", [(b"retry-after", b"1")])
            return
        except _Disconnected:
            return
        finally:
            self.budget.give(held[0])
        if status != 200:
            await self._refuse(send, status, answer)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    def _decide(self, route: tuple[str, bool], body: bytes, started: float) -> tuple[int, Any]:
        """(200, response bytes), or (4xx, message) for a body that is not an AdmissionReview."""
        if not body:
            return 400, "empty body: send an AdmissionReview (admission.k8s.io/v1) as JSON"
        webhook, audit = route
        try:
            review = parse_review(body)
        except EnvelopeError as exc:
            return 400, str(exc)
        try:
            payload, fields = self.admission.decide(webhook, audit, review)
        except EnvelopeError as exc:
            return 400, str(exc)
        except Exception:  # noqa: BLE001 - any bug once the uid is known gets the --on-error answer
            decision_log.error("internal error while deciding", {"uid": review.request.uid, "webhook": webhook})
            if not review.request.dryRun:
                from webhook.serve import metrics

                metrics.ERRORS.labels(webhook).inc()
            payload, fields = self.admission.error_answer(review, webhook, audit)
        seconds = time.perf_counter() - started
        fields["duration_ms"] = round(seconds * 1000, 3)
        if not fields["dry_run"]:
            from webhook.serve import metrics

            metrics.record_decision(webhook, fields["mode"], fields["decision"], fields.get("reasons", ()), seconds)
        decision_log.decision(fields)
        return 200, payload

    async def _read_body(self, receive: Callable, held: list[int], small: bool) -> bytes:
        """The whole body; ``held[0]`` is what it took from the budget (the caller gives it back)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise _TooLarge
                if not self.budget.take(len(chunk), small):
                    raise _Busy
                held[0] += len(chunk)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _refuse(self, send: Callable, status: int, message: str, headers: list | None = None) -> None:
        from webhook.serve import metrics

        metrics.BAD_REQUESTS.labels(str(status)).inc()
        body = _json_bytes({"status": status, "message": message})
        extra = list(headers or [])
        if status in (403, 413, 503):
            extra.append((b"connection", b"close"))  # the rest of the body is not read
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(
    settings: Settings | None = None,
    policy: Any = None,
    *,
    certificate: Callable[[], ServingCertificate | None] = lambda: None,
    guard: ConnectionGuard | None = None,
    mutate: Callable | None = None,
    validate: Callable | None = None,
) -> FastAPI:
    """The webhook app. ``certificate`` and ``guard`` are the serving process's (readiness reads
    them); ``mutate``/``validate`` replace the core (tests inject failures)."""
    from webhook.core.policy import load_policy
    from webhook.serve import metrics

    settings = settings or Settings()
    guard = guard or ConnectionGuard(settings.connection_limits())
    policy = policy if policy is not None else load_policy(settings.policy)

    def decide(policy: Any) -> Admission:
        return Admission(policy, mode=settings.mode, on_error=settings.on_error, mutate=mutate, validate=validate)

    admission = decide(policy)
    metrics.POLICY.labels(policy.digest, settings.mode).set(1)

    endpoint = AdmissionEndpoint(admission, settings.max_body_bytes, client_certificate_required=bool(settings.client_ca_file))
    app = WebhookApp(endpoint, decide, title="plane-guard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.policy = policy
    app.state.settings = settings

    @app.get(conventions.PATH_HEALTHZ)
    async def healthz() -> Response:
        """Alive: the event loop answers."""
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get(conventions.PATH_READYZ)
    async def readyz(request: Request) -> JSONResponse:
        """Ready: a valid certificate is loaded, the policy is valid, this came over HTTPS, not draining."""
        serving = certificate()
        problems = []
        if serving is None or not serving.healthy:
            problems.append("no valid serving certificate loaded")
        if request.url.scheme != "https":
            problems.append("not serving over HTTPS")
        if guard.draining:
            problems.append("shutting down: draining connections")
        body = {
            "ready": not problems,
            "problems": problems,
            "policy": app.state.policy.digest,
            "mode": settings.mode,
            "certificate": {
                "not_after": serving.not_after if serving else None,
                "reloads": serving.reloads if serving else 0,
                "pending_error": serving.error if serving else None,
            },
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get(conventions.PATH_METRICS)
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    return app


class WebhookApp(FastAPI):
    """FastAPI with the admission paths served before its middleware stack.

    The generic stack (exception middleware, telemetry, routing, request objects) costs more
    than the admission decision itself; the admission endpoint needs none of it.
    """

    def __init__(self, endpoint: AdmissionEndpoint, decide: Callable[[Any], Admission], **kwargs: Any):
        super().__init__(**kwargs)
        self.admission_endpoint = endpoint
        self.decide = decide

    def reload_policy(self) -> tuple[str, str | None]:
        """Read the policy file again (SIGHUP): (digest in use, why the new one was refused or None).

        A bad file changes nothing: the policy in use stays, and the error says what to fix.
        """
        from webhook.core.policy import PolicyError, load_policy
        from webhook.serve import metrics

        settings, old = self.state.settings, self.state.policy
        try:
            policy = load_policy(settings.policy)
        except PolicyError as exc:
            return old.digest, str(exc)
        self.admission_endpoint.admission = self.decide(policy)
        self.state.policy = policy
        if policy.digest != old.digest:
            metrics.POLICY.remove(old.digest, settings.mode)
            metrics.POLICY.labels(policy.digest, settings.mode).set(1)
        return policy.digest, None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[override]
        if scope["type"] == "http" and scope["path"] in ADMISSION_PATHS:
            await self.admission_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


# --------------------------------------------------------------------------- command


def process_app(config: ServeConfig) -> FastAPI:
    """uvicorn's app factory in each server process, with the settings its config carries."""
    settings = config.settings
    decision_log.configure(settings.log_level)
    app = create_app(settings, certificate=lambda: config.certificate, guard=config.guard)
    config.webhook_app = app
    # Everything loaded so far lives as long as the process: keep it out of every GC pass.
    gc.collect()
    gc.freeze()
    return app


def preflight(settings: Settings) -> str | None:
    """Why the server cannot start, or None. Checked before binding so the message is clear."""
    from webhook.core.policy import PolicyError, load_policy

    try:
        load_policy(settings.policy)
    except PolicyError as exc:
        return f"invalid policy, not starting:\n{exc}"
    missing = [path for path in (settings.cert_file, settings.key_file) if not Path(path).is_file()]
    if missing:
        return (
            f"certificate file(s) not found: {', '.join(missing)}.\n"
            "Run `plane-guard certs generate --out certs` (or mount the TLS Secret) and pass "
            "--cert-file/--key-file."
        )
    if settings.client_ca_file and not Path(settings.client_ca_file).is_file():
        return f"--client-ca-file {settings.client_ca_file} not found: pass the CA that issues the API server's client certificate."
    try:
        ServingCertificate(settings.cert_file, settings.key_file)
    except (ssl.SSLError, ValueError, OSError) as exc:
        return (
            f"cannot load the serving certificate ({type(exc).__name__}): check that {settings.cert_file} and "
            f"{settings.key_file} are a matching PEM pair, or regenerate them with `plane-guard certs generate --force`."
        )
    if settings.client_ca_file:
        try:
            ServingCertificate(settings.cert_file, settings.key_file, client_ca_file=settings.client_ca_file)
        except (ssl.SSLError, ValueError, OSError) as exc:
            return f"cannot load --client-ca-file {settings.client_ca_file} ({type(exc).__name__}): it must hold PEM CA certificates."
    if settings.max_body_bytes < 1024:
        return "--max-body-bytes must be at least 1024"
    if settings.workers < 1:
        return "--workers must be at least 1"
    if settings.max_connections < 1 or settings.max_headers < 1 or settings.max_header_bytes < 1024:
        return "--max-connections and --max-headers must be at least 1, --max-header-bytes at least 1024"
    if not 0 < settings.source_share <= 1:
        return "--source-share must be above 0 and at most 1 (0.25: one client address holds at most a quarter of the connections)"
    timeouts = (settings.header_timeout, settings.body_timeout, settings.idle_timeout, settings.keep_alive_timeout)
    if min(timeouts) <= 0 or settings.drain_seconds < 0:
        return "--header-timeout, --body-timeout, --idle-timeout and --keep-alive-timeout must be above 0, --drain-seconds 0 or more"
    return None


def fit_open_file_limit(max_connections: int) -> int:
    """Raise the open-file limit to fit ``max_connections``, or lower the cap to fit the limit.

    Running out of file descriptors is worse than refusing connections: the event loop cannot
    accept any more and closes its listener without a word.
    """
    import resource

    wanted = max_connections + SPARE_FILE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    fitted = max(1, soft - SPARE_FILE_DESCRIPTORS)
    decision_log.LOG.warning(
        "--max-connections lowered to fit the open-file limit (raise `ulimit -n` to allow more)",
        extra={"fields": {"max_connections": fitted, "open_file_limit": soft}},
    )
    return fitted


def serve_command(settings: Settings) -> int:
    """``plane-guard serve``: refuse bad settings with exit 2, else run uvicorn until SIGTERM."""
    decision_log.configure(settings.log_level)
    problem = preflight(settings)
    if problem:
        print(f"plane-guard serve: {problem}", file=sys.stderr)
        return 2
    settings = replace(settings, max_connections=fit_open_file_limit(settings.max_connections))
    metrics_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="plane-guard-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    from uvicorn.config import STARTUP_FAILURE

    from webhook.serve import lifecycle
    from webhook.serve.config import ServeConfig

    config = ServeConfig(settings)
    code = 0
    if settings.workers > 1:
        lifecycle.Supervisor(config, sockets=[config.bind_socket()]).run()
    else:
        server = lifecycle.Server(config)
        server.run()
        code = 0 if server.started else STARTUP_FAILURE
    decision_log.flush()
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return code
