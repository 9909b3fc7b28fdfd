"""Bounds on every connection of ``plane-guard serve``: how many, how long, how large a request head.

uvicorn's httptools protocol reads a request head of any size, never closes a connection that
sends nothing or stops in the middle of a request, and its ``limit_concurrency`` still lets idle
connections take every slot (it only answers 503 to the *requests* that come after). Its h11
protocol has a head size limit (``h11_max_incomplete_event_size``) but none of the timeouts, and
parses in pure Python. This module closes those gaps around uvicorn instead of replacing it:

- ``GuardedLoop``, uvloop with one change: a new TCP connection is admitted (or refused at once,
  before any TLS work or memory is spent on it) and only then does its TLS handshake start;
- ``GuardedHttpProtocol``, uvicorn's httptools protocol plus a size and count limit on the
  request head and a deadline for each phase of a connection;
- ``ConnectionGuard``, per process: the count of connections, which idle connection gives way
  when the server is full, the deadlines, and the drain on shutdown.

Every limit that is hit is counted (``plane_guard_limit_hits_total``) and logged at warning
level, at most once a minute per limit with the number of hits since the previous line, so an
attack can neither go unseen nor flood the log.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import httptools
import uvloop
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvloop.loop import SSLProtocol  # type: ignore[attr-defined]  # uvloop ships no stub for the class it wraps connections in

from webhook.serve import decision_log
from webhook.serve.settings import ConnectionLimits

#: Per-connection read buffering: bytes the kernel queues (SO_RCVBUF, doubled by Linux) and
#: bytes of ciphertext the TLS layer holds before it stops reading. An admission request is tens
#: of kilobytes; a larger body only arrives in more reads.
RECEIVE_BUFFER = 32 * 1024
TLS_READ_BUFFER = 64 * 1024
#: How long a closing TLS connection waits for the peer's close_notify (uvloop's default is 30 s).
TLS_SHUTDOWN_TIMEOUT = 3.0
#: How often deadlines are checked; each is kept to within this much.
SWEEP_INTERVAL = 0.5
#: At shutdown, a connection this young that has not sent its request yet gets this long to do so.
LATE_REQUEST_GRACE = 1.0


# Phases of a connection; each but DONE has a deadline.
NEW, HEAD, BODY, DONE = "new", "head", "body", "done"

_MESSAGES = {
    "max-connections": "refused a new connection: the server holds its maximum of {max_connections} connections and "
    "none is idle (raise --max-connections, or restrict who can reach the port)",
    "idle-evicted": "closed an idle connection to admit a new one: the server holds its maximum of "
    "{max_connections} connections (--max-connections)",
    "idle-timeout": "closed a connection that sent no request within {idle_timeout:g} s (--idle-timeout)",
    "header-timeout": "closed a connection whose request head took longer than {header_timeout:g} s (--header-timeout)",
    "body-timeout": "closed a connection whose request body took longer than {body_timeout:g} s (--body-timeout)",
    "header-size": "refused a request head larger than {max_header_bytes} bytes (--max-header-bytes)",
    "header-count": "refused a request with more than {max_headers} headers (--max-headers)",
    "bad-request": "refused a request that is not valid HTTP/1.1",
    "tls-handshake-timeout": "closed a connection whose TLS handshake took longer than {header_timeout:g} s",
    "tls-handshake-failed": "a TLS handshake failed (a client without the CA, a client certificate that is not "
    "accepted, or not TLS at all)",
}


class ConnectionGuard:
    """The connections of one server process and what each may still do."""

    def __init__(self, limits: ConnectionLimits):
        self.limits = limits
        self.handshakes: dict[asyncio.Future, tuple[Any, float]] = {}  # under way: (transport, since)
        self.open: dict[GuardedHttpProtocol, None] = {}  # in order of arrival
        self.draining = False  # readiness is false and every answer closes its connection
        self.stopping = False  # the listener is closed; idle connections are being closed
        self._sweeper: asyncio.TimerHandle | None = None
        self._gauge: Any = None
        self._messages = {limit: message.format(**asdict(limits)) for limit, message in _MESSAGES.items()}

    # -- accounting

    def admit(self) -> bool:
        """Room for one more connection, made by closing the most idle one if needed.

        Most idle first: a TLS handshake or a connection without a request, oldest first (real
        clients finish a handshake in milliseconds and send at once); then a request head that is
        still arriving, oldest first; then a keep-alive connection, least recently used first.
        """
        if len(self.handshakes) + len(self.open) < self.limits.max_connections:
            return True
        best, best_rank = None, None
        for connection in self.open:
            rank = connection.idle_rank()
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = connection, rank
        handshake = next(iter(self.handshakes), None)
        if handshake is not None and (best_rank is None or (0, self.handshakes[handshake][1]) <= best_rank):
            transport, _ = self.handshakes.pop(handshake)
            self.hit("idle-evicted")
            transport.abort()
            return True
        if best is None:
            self.hit("max-connections")
            return False
        self.hit("idle-evicted", best.client)
        best.give_way()
        return True

    def opened(self, connection: GuardedHttpProtocol) -> None:
        self.open[connection] = None
        self._count()
        if self._sweeper is None:
            self._sweeper = connection.loop.call_later(SWEEP_INTERVAL, self._sweep, connection.loop)

    def closed(self, connection: GuardedHttpProtocol) -> None:
        if self.open.pop(connection, 0) is None:
            self._count()

    def _count(self) -> None:
        if self._gauge is None:
            from webhook.serve import metrics

            self._gauge = metrics.OPEN_CONNECTIONS
        self._gauge.set(len(self.open))

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for connection in [c for c in self.open if c.deadline <= now]:
            connection.expired()
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep, loop) if self.open else None

    def hit(self, limit: str, client: Any = None) -> None:
        fields = {"client": str(client[0])} if client else {}
        decision_log.limit_hit(limit, self._messages[limit], fields)

    # -- shutdown

    def begin_drain(self) -> None:
        """Readiness turns false; every connection closes after its next answer, none is dropped."""
        self.draining = True
        for connection in self.open:
            connection.close_after_answer()

    def begin_stop(self) -> None:
        self.draining = self.stopping = True


_GUARD: ConnectionGuard | None = None


def current() -> ConnectionGuard:
    """This process's guard, with the limits ``serve`` put in the environment."""
    global _GUARD
    if _GUARD is None:
        _GUARD = ConnectionGuard(ConnectionLimits.from_env())
    return _GUARD


class _HeadTooLarge(Exception):
    def __init__(self, limit: str):
        self.limit = limit


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a bounded request head and a deadline for each phase."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.guard = current()
        self.phase = NEW
        self.deadline = float("inf")
        self.since = 0.0
        self.closing = False
        self._extensions: dict | None = None
        self._head_bytes = 0  # bytes received since the head began (the parser buffers them)

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        try:
            transport.set_read_buffer_limits(high=TLS_READ_BUFFER)  # type: ignore[attr-defined]
        except (AttributeError, NotImplementedError):
            pass
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        # ASGI TLS extension, only for a client certificate (verified during the handshake).
        self._extensions = {"tls": {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)]}} if der else None
        self.guard.opened(self)
        now = self.loop.time()
        self._enter(NEW, now, self.guard.limits.idle_timeout)
        if self.guard.stopping:
            self.closing = True
            self.deadline = min(self.deadline, now + LATE_REQUEST_GRACE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed(self)
        self.deadline = float("inf")
        super().connection_lost(exc)

    def _enter(self, phase: str, now: float, timeout: float | None) -> None:
        self.phase, self.since = phase, now
        self.deadline = now + timeout if timeout else float("inf")

    def idle_rank(self) -> tuple[int, float] | None:
        """How readily this connection gives way to a new one (lowest first); None when it must not."""
        if self.closing or self.transport.is_closing():
            return None
        answered = self.cycle is None or self.cycle.response_complete
        if self.phase is NEW:
            return (0, self.since)
        if self.phase is HEAD and answered:
            return (1, self.since)
        if self.phase is DONE and answered and not self.pipeline:
            return (2, self.since)
        return None

    def give_way(self) -> None:
        self.closing = True
        self.transport.abort()

    def expired(self) -> None:
        """The deadline of the current phase passed."""
        self.deadline = float("inf")
        if self.transport.is_closing():
            return
        if self.phase is NEW:
            if not self.closing:
                self.guard.hit("idle-timeout", self.client)
            self.transport.abort()
        elif self.phase is HEAD:
            self.guard.hit("header-timeout", self.client)
            self._refuse(408, "request head not received in time")
        elif self.phase is BODY:
            self.guard.hit("body-timeout", self.client)
            self._refuse(408, "request body not received in time")

    # -- shutdown

    def close_after_answer(self) -> None:
        self.closing = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False

    def shutdown(self) -> None:
        """uvicorn's shutdown: a request already started still gets its answer; idle ones close."""
        self.close_after_answer()
        if self.phase in (HEAD, BODY) or (self.cycle is not None and not self.cycle.response_complete):
            return
        if self.phase is NEW and self.loop.time() - self.since < LATE_REQUEST_GRACE:
            self.deadline = self.since + LATE_REQUEST_GRACE  # its request may be on the way
            return
        self.transport.close()

    # -- data

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol switch is offered: the request is answered, then the connection closes.
            if self.cycle is not None:
                self.cycle.keep_alive = False
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadTooLarge):
                self.guard.hit(cause.limit, self.client)
                self._refuse(431, "request head too large: send fewer and shorter headers")
            else:
                self.guard.hit("bad-request", self.client)
                self._refuse(400, "invalid HTTP/1.1 request")
            return
        if self.phase is HEAD:
            # Still inside the head: everything fed since it began was head (the parser buffers it).
            self._head_bytes += len(data)
            if self._head_bytes > self.guard.limits.max_header_bytes:
                self.guard.hit("header-size", self.client)
                self._refuse(431, "request head too large: send fewer and shorter headers")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._extensions is not None:
            self.scope["extensions"] = self._extensions
        self._head_bytes = 0
        self._enter(HEAD, self.loop.time(), self.guard.limits.header_timeout)

    def on_headers_complete(self) -> None:
        # Raising stops the parser; data_received answers 431. (A head still arriving is bounded
        # in data_received; this is for a whole head that arrived in one read.)
        limits = self.guard.limits
        if len(self.headers) > limits.max_headers:
            raise _HeadTooLarge("header-count")
        if len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) > limits.max_header_bytes:
            raise _HeadTooLarge("header-size")
        self._enter(BODY, self.loop.time(), self.guard.limits.body_timeout)
        super().on_headers_complete()
        if (self.closing or self.guard.draining) and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        self._enter(DONE, self.loop.time(), None)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.phase is DONE:
            self.since = self.loop.time()
        super().on_response_complete()

    def _refuse(self, status: int, message: str) -> None:
        """Answer with an error and close, unless an answer to this request has begun."""
        cycle = self.cycle
        if cycle is None or (cycle.response_complete if self.phase is not BODY else not cycle.response_started):
            body = json.dumps({"status": status, "message": message}).encode()
            self.transport.write(
                b"".join(
                    (
                        STATUS_LINE[status],
                        b"content-type: application/json\r\ncontent-length: ",
                        str(len(body)).encode(),
                        b"\r\nconnection: close\r\n\r\n",
                        body,
                    )
                )
            )
        self.phase = DONE
        self.closing = True
        self.transport.close()
        # Then reset it: a closing TLS connection reads (and drops) whatever the peer still sends,
        # at hundreds of MB/s, for up to TLS_SHUTDOWN_TIMEOUT. The answer was written already.
        self.loop.call_soon(self.transport.abort)


class TlsAdmission(asyncio.Protocol):
    """The first protocol of every TCP connection: refuse it, or hand it to TLS and then HTTP.

    What uvloop does for a TLS server, with the admission check first: the TLS layer takes over
    the transport inside ``connection_made``, before the first byte is read.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, http_protocol: Callable[[], asyncio.Protocol], context: Any, guard: ConnectionGuard):
        self.loop, self.http_protocol, self.context, self.guard = loop, http_protocol, context, guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.guard.admit():
            transport.abort()  # type: ignore[attr-defined]
            return
        handshake = self.loop.create_future()
        tls = SSLProtocol(
            self.loop,
            self.http_protocol(),
            self.context,
            handshake,
            server_side=True,
            ssl_handshake_timeout=self.guard.limits.header_timeout,
            ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
        )
        self.guard.handshakes[handshake] = (transport, self.loop.time())
        handshake.add_done_callback(self._handshake_done)
        transport.set_protocol(tls)
        tls.connection_made(transport)

    def _handshake_done(self, handshake: asyncio.Future) -> None:
        error = None if handshake.cancelled() else handshake.exception()
        if self.guard.handshakes.pop(handshake, None) is None:
            return  # given way to a newer connection (counted then)
        if isinstance(error, ConnectionAbortedError):
            self.guard.hit("tls-handshake-timeout")
        elif error is not None:  # ssl.SSLError included: not TLS, no client certificate, peer gone
            self.guard.hit("tls-handshake-failed")


class GuardedLoop(uvloop.Loop):
    """uvloop whose TLS servers admit each connection before its handshake (``serve --loop``)."""

    async def create_server(self, protocol_factory: Callable, *args: Any, ssl: Any = None, **kwargs: Any) -> Any:
        if ssl is not None:
            guard, http_protocol = current(), protocol_factory

            def admission() -> asyncio.Protocol:
                return TlsAdmission(self, http_protocol, ssl, guard)

            protocol_factory = admission
        server = await super().create_server(protocol_factory, *args, **kwargs)
        for sock in server.sockets:  # type: ignore[attr-defined]
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except OSError:
                pass
        return server
