"""Hostile clients for the server tests and ``make stress``, each bounded in connections, bytes and time.

They speak raw HTTP/1.1 over the same TLS set-up as ``ApiServerClient`` (the CA bundle, the
Service name as SNI, 127.0.0.1), so they can stop at any byte: a head never finished, a body
never sent, a connection that never says a word.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.server.harness import SNI
from tests.server.pods import plane_pod, review

MINIMAL_CONTAINER = {"name": "c", "image": "makeplane/backend-commercial:v2.6.3", "command": ["./bin/docker-entrypoint-worker.sh"]}


def tls_context(ca_file: str | Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def connect(
    port: int, ca_file: str | Path, timeout: float = 10.0, context: ssl.SSLContext | None = None, source: str = "127.0.0.1"
) -> ssl.SSLSocket:
    """A TLS connection to the webhook, handshake done, from the loopback address ``source``."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return (context or tls_context(ca_file)).wrap_socket(raw, server_hostname=SNI)
    except BaseException:
        raw.close()
        raise


def head(method: str = "GET", path: str = "/healthz", headers: Iterable[tuple[str, str]] = (), body: bytes | None = None) -> bytes:
    """A request head (with the body when given, and its Content-Length)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {SNI}", *(f"{k}: {v}" for k, v in headers)]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def post(path: str, body: bytes) -> bytes:
    return head("POST", path, [("Content-Type", "application/json")], body)


def read_answer(sock: socket.socket, timeout: float = 10.0) -> tuple[int | None, dict[str, str], bytes]:
    """The next answer: status, headers (lower-case names), body. Status None: none within ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None, {}, data
            data += chunk
            if len(data) > 1 << 20:
                raise AssertionError("answer head larger than 1 MiB")
        raw_head, _, body = data.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (OSError, ssl.SSLError):  # reset, or no answer within ``timeout``
        return None, {}, data
    return int(lines[0].split(" ", 2)[1]), headers, body


def wait_closed(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (what it sends is read and dropped); None: still open."""
    started = time.monotonic()
    deadline = started + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            return None
        except (ConnectionError, ssl.SSLError, OSError):
            return time.monotonic() - started


def send_until_closed(sock: socket.socket, chunks: Iterable[bytes], seconds: float) -> int:
    """Send ``chunks`` until the server stops taking them, they run out, or ``seconds`` pass; bytes sent."""
    sent = 0
    deadline = time.monotonic() + seconds
    for chunk in chunks:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            sock.sendall(chunk)
        except (OSError, ssl.SSLError):  # closed, reset, or stopped reading (timeout)
            break
        sent += len(chunk)
    return sent


def repeat(piece: bytes, total: int) -> Iterable[bytes]:
    """``total`` bytes as repeats of ``piece``, without holding them all."""
    while total > 0:
        yield piece[:total]
        total -= len(piece)


def many_containers_review(count: int, container: dict[str, Any] | None = None) -> bytes:
    """An AdmissionReview of a Plane pod with ``count`` small Plane containers."""
    pod = plane_pod()
    template = container or MINIMAL_CONTAINER
    pod["spec"]["containers"] = [dict(template, name=f"c{i}") for i in range(count)]
    return json.dumps(review(pod), separators=(",", ":")).encode()


async def hold_connections(
    port: int,
    ca_file: str | Path | None,
    count: int,
    first_bytes: bytes = b"",
    seconds: float = 30.0,
    source: str = "127.0.0.1",
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Open up to ``count`` connections (TLS when ``ca_file`` is given, else bare TCP) and keep them.

    Each sends ``first_bytes`` and then nothing. Stops early at the first connection that fails
    or when ``seconds`` pass; the caller closes what it got (``close_all``).
    """
    context = tls_context(ca_file) if ca_file else None
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    deadline = time.monotonic() + seconds
    while len(held) < count and time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, server_hostname=SNI if context else None, local_addr=(source, 0)
                ),
                timeout=max(0.1, deadline - time.monotonic()),
            )
        except (TimeoutError, OSError):
            break
        if first_bytes:
            writer.write(first_bytes)
        held.append((reader, writer))
    return held


def still_open(held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> int:
    """How many of ``held`` the server has not closed (call from the loop that holds them)."""
    return sum(1 for reader, writer in held if not reader.at_eof() and not writer.is_closing() and reader.exception() is None)


def close_all(held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in held:
        writer.transport.abort()


class KeepAliveClient(threading.Thread):
    """Reviews without pause on one keep-alive connection, reconnecting when the server says close.

    A request counts as lost when it was sent and no answer came: what kube-apiserver would
    report as a failed webhook call. Failing to connect is no loss: nothing was sent (the API
    server sends it to another endpoint), and the client stops there.
    """

    def __init__(self, port: int, ca_file: str | Path, seconds: float = 60.0):
        super().__init__(daemon=True)
        self.port, self.ca_file, self.seconds = port, ca_file, seconds
        self.answered = self.lost = self.closes = 0
        self.stop = threading.Event()

    def run(self) -> None:
        body = post("/mutate", json.dumps(review(plane_pod())).encode())
        sock = None
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            if sock is None:
                try:
                    sock = connect(self.port, self.ca_file, timeout=5)
                except OSError:
                    return  # the listener is gone
            try:
                sock.sendall(body)
                status, headers, _ = read_answer(sock, timeout=15)
            except OSError:
                status, headers = None, {}
            if status == 200:
                self.answered += 1
                if headers.get("connection") != "close":
                    continue
                self.closes += 1
            else:
                self.lost += 1
            sock.close()
            sock = None
        if sock is not None:
            sock.close()


async def _answer(reader: asyncio.StreamReader, timeout: float) -> int:
    """Read one answer (head and Content-Length body); its status."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = raw.decode("latin-1").split("\r\n")
    length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
    if length:
        await asyncio.wait_for(reader.readexactly(length), timeout)
    return int(lines[0].split(" ", 2)[1])


async def noisy_clients(
    port: int, ca_file: str | Path, count: int, seconds: float, source: str, request: bytes, every: float | None
) -> dict[str, int]:
    """``count`` TLS clients from ``source``, each on a connection of its own for ``seconds``.

    With ``every``, each sends ``request`` and reads the answer, again every ``every`` seconds
    (a busy keep-alive client); without, it sends ``request`` once and never finishes it (an
    unfinished body). Each reconnects at once when the server closes its connection. Returns
    counts: connected, refused (no TLS connection), dropped (closed by the server), answered.
    """
    counts = {"connected": 0, "refused": 0, "dropped": 0, "answered": 0}
    context = tls_context(ca_file)
    deadline = time.monotonic() + seconds

    async def one(index: int) -> None:
        await asyncio.sleep(index * (every or 1.0) / count)  # spread over one period
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=SNI, local_addr=(source, 0)), 5
                )
            except (TimeoutError, OSError):
                counts["refused"] += 1
                await asyncio.sleep(0.05)
                continue
            counts["connected"] += 1
            try:
                while time.monotonic() < deadline:
                    writer.write(request)
                    if every is None:  # wait for the close (a 408 or an eviction), or the end
                        while await asyncio.wait_for(reader.read(65536), max(0.1, deadline - time.monotonic())):
                            pass
                        raise ConnectionResetError
                    await _answer(reader, 10)
                    counts["answered"] += 1
                    await asyncio.sleep(every)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                if time.monotonic() < deadline:
                    counts["dropped"] += 1
            finally:
                writer.transport.abort()

    await asyncio.gather(*(one(index) for index in range(count)))
    return counts
