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
#: A request body still arriving after this many seconds, below MIN_BODY_RATE on average, is slow:
#: it may give way to a new connection when the server is full. Real reviews arrive in one burst.
SLOW_BODY_SECONDS = 2.0
MIN_BODY_RATE = 64 * 1024
#: At shutdown, a connection this young that has not sent its request yet gets this long to do so.
LATE_REQUEST_GRACE = 1.0


# Phases of a connection; each but DONE has a deadline.
NEW, HEAD, BODY, DONE = "new", "head", "body", "done"

_MESSAGES = {
    "max-connections": "refused a new connection: the server holds its maximum of {max_connections} connections and "
    "none it may close is idle (raise --max-connections, or restrict who can reach the port)",
    "source-share": "refused a new connection: its address holds its share of {per_source} connections "
    "(--source-share of --max-connections) and none of them is idle",
    "idle-evicted": "closed an idle connection to admit a new one: the server, or the connection's address, holds "
    "its maximum (--max-connections {max_connections}, --source-share {per_source} per address)",
    "slow-body-evicted": "closed a connection whose request body arrived slowly to admit a new one: the server, or the "
    "connection's address, holds its maximum (--max-connections {max_connections}, --source-share {per_source} per address)",
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
    """The connections of one server process and what each may still do.

    Slots are shared fairly between client addresses: one address holds at most ``per_source``
    of them, and when the server is full a new connection only takes the slot of an idle
    connection from an address that holds more than an equal share, the largest first. So the
    API servers' connection pools survive a noisy client, whatever it sends.
    """

    def __init__(self, limits: ConnectionLimits):
        self.limits = limits
        self.handshakes: dict[asyncio.Future, tuple[Any, float, str]] = {}  # under way: (transport, since, source)
        self.open: dict[GuardedHttpProtocol, None] = {}  # in order of arrival
        self.sources: dict[str, dict[Any, None]] = {}  # address -> its handshakes and connections
        self.draining = False  # readiness is false and every answer closes its connection
        self.stopping = False  # the listener is closed; idle connections are being closed
        self._sweeper: asyncio.TimerHandle | None = None
        self._gauge: Any = None
        values = {**asdict(limits), "per_source": limits.per_source}
        self._messages = {limit: message.format(**values) for limit, message in _MESSAGES.items()}

    # -- accounting

    def admit(self, source: str) -> bool:
        """Room for one more connection from ``source``, made by closing an idle one if needed.

        An address at its share makes room among its own connections. A full server takes a slot
        from the addresses holding more than an equal share, the largest first, and otherwise
        from the new connection's own address; never from an address within its share.
        """
        own = self.sources.get(source, {})
        full = len(self.handshakes) + len(self.open) >= self.limits.max_connections
        if len(own) >= self.limits.per_source:
            return self._evict_from(own, source) or self._refuse("max-connections" if full else "source-share", source)
        if not full:
            return True
        equal_share = self.limits.max_connections / (len(self.sources) + (source not in self.sources))
        for other, members in sorted(self.sources.items(), key=lambda item: len(item[1]), reverse=True):
            if len(members) <= equal_share:
                break
            if self._evict_from(members, other):
                return True
        return self._evict_from(own, source) or self._refuse("max-connections", source)

    def _evict_from(self, members: dict[Any, None], source: str) -> bool:
        """Close the most idle of one address's connections; False when none may be closed."""
        best, best_rank = None, None
        for member in members:
            if isinstance(member, GuardedHttpProtocol):
                rank = member.idle_rank()
            else:
                rank = (0, self.handshakes[member][1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = member, rank
        if best is None or best_rank is None:
            return False
        self.hit("slow-body-evicted" if best_rank[0] == 3 else "idle-evicted", source)
        if isinstance(best, GuardedHttpProtocol):
            best.give_way()
        else:
            transport, _, _ = self.handshakes.pop(best)
            self._leave(source, best)
            transport.abort()
        return True

    def _refuse(self, limit: str, source: str) -> bool:
        self.hit(limit, source)
        return False

    def handshake_started(self, handshake: asyncio.Future, transport: Any, source: str) -> None:
        self.handshakes[handshake] = (transport, handshake.get_loop().time(), source)
        self.sources.setdefault(source, {})[handshake] = None

    def handshake_ended(self, handshake: asyncio.Future) -> bool:
        """False when it had given way to a newer connection already."""
        entry = self.handshakes.pop(handshake, None)
        if entry is None:
            return False
        self._leave(entry[2], handshake)
        return True

    def _leave(self, source: str, member: Any) -> None:
        members = self.sources.get(source)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self.sources[source]

    def opened(self, connection: GuardedHttpProtocol) -> None:
        self.open[connection] = None
        self.sources.setdefault(connection.source, {})[connection] = None
        self._count()
        if self._sweeper is None:
            self._sweeper = connection.loop.call_later(SWEEP_INTERVAL, self._sweep, connection.loop)

    def closed(self, connection: GuardedHttpProtocol) -> None:
        if self.open.pop(connection, 0) is None:
            self._leave(connection.source, connection)
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
        """Count and log a limit; ``client`` is an address or uvicorn's (address, port)."""
        address = client[0] if isinstance(client, tuple) else client
        fields = {"client": str(address)} if address else {}
        decision_log.limit_hit(limit, self._messages[limit], fields)

    # -- shutdown

    def begin_drain(self) -> None:
        """Readiness turns false; every connection closes after its next answer, none is dropped."""
        self.draining = True
        for connection in self.open:
            connection.close_after_answer()

    def begin_stop(self) -> None:
        self.draining = self.stopping = True


def source_of(transport: asyncio.BaseTransport) -> str:
    """The client address a connection counts against (its IP address, without the port)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


class _HeadTooLarge(Exception):
    def __init__(self, limit: str):
        self.limit = limit


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a bounded request head and a deadline for each phase."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        self.guard: ConnectionGuard = config.guard  # the ServeConfig of this process
        self.phase = NEW
        self.deadline = float("inf")
        self.since = 0.0
        self.closing = False
        self._extensions: dict | None = None
        self._head_bytes = 0  # bytes received since the head began (the parser buffers them)
        self._body_bytes = 0  # bytes of the request body received so far
        self.source = ""

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
        self.source = source_of(transport)
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
        if self.phase is BODY and self.slow_body():
            return (3, self.since)
        return None

    def slow_body(self) -> bool:
        """A body arriving for more than SLOW_BODY_SECONDS, below MIN_BODY_RATE on average."""
        elapsed = self.loop.time() - self.since
        return elapsed > SLOW_BODY_SECONDS and self._body_bytes < MIN_BODY_RATE * elapsed

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
        if self.phase is BODY:
            self._body_bytes += len(data)
        elif self.phase is HEAD:
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
        self._body_bytes = 0
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
        source = source_of(transport)
        if not self.guard.admit(source):
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
        self.guard.handshake_started(handshake, transport, source)
        handshake.add_done_callback(self._handshake_done)
        transport.set_protocol(tls)
        tls.connection_made(transport)

    def _handshake_done(self, handshake: asyncio.Future) -> None:
        error = None if handshake.cancelled() else handshake.exception()
        if not self.guard.handshake_ended(handshake):
            return  # given way to a newer connection (counted then)
        if isinstance(error, ConnectionAbortedError):
            self.guard.hit("tls-handshake-timeout")
        elif error is not None:  # ssl.SSLError included: not TLS, no client certificate, peer gone
            self.guard.hit("tls-handshake-failed")


class GuardedLoop(uvloop.Loop):
    """uvloop whose TLS servers admit each connection to ``guard`` before its handshake."""

    def __init__(self, guard: ConnectionGuard):
        super().__init__()
        self.guard = guard

    async def create_server(self, protocol_factory: Callable, *args: Any, ssl: Any = None, **kwargs: Any) -> Any:
        if ssl is not None:
            guard, http_protocol = self.guard, protocol_factory

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
