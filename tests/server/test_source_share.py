"""Fair shares of the connection table: one client address cannot take the API servers' slots.

Client addresses are loopback addresses of their own (127.0.0.2, 127.0.0.3, ...): the whole of
127.0.0.0/8 reaches the server on 127.0.0.1.
"""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from tests.server.abuse import connect, head, read_answer, wait_closed
from tests.server.harness import WebhookProcess
from tests.server.pods import plane_pod, review
from webhook.core import conventions

CAP = 8
API_SERVER = "127.0.0.1"
NOISY = "127.0.0.2"


def _answered(sock: ssl.SSLSocket) -> bool:
    """One request on a kept connection: answered 200 (False when the server had closed it)."""
    try:
        sock.sendall(head())
        return read_answer(sock, timeout=5)[0] == 200
    except OSError:
        return False


def _pooled(server: WebhookProcess, source: str, count: int) -> list[ssl.SSLSocket]:
    """``count`` keep-alive connections from ``source``, each answered once (an API server's pool)."""
    pool = []
    for _ in range(count):
        sock = connect(server.port, server.ca_file, source=source)
        assert _answered(sock)
        pool.append(sock)
    return pool


def _close(*pools: list) -> None:
    for pool in pools:
        for sock in pool:
            sock.close()


@pytest.fixture
def shared_server(tmp_path, cert_dir):
    """8 slots, a quarter (2) per address."""
    server = WebhookProcess(cert_dir, tmp_path / "server.log", "--max-connections", str(CAP), "--source-share", "0.25").start()
    yield server
    server.stop()


def test_one_address_holds_at_most_its_share(shared_server):
    pool = _pooled(shared_server, NOISY, 2)
    third = connect(shared_server.port, shared_server.ca_file, source=NOISY)
    try:
        assert _answered(third)
        # The address made room among its own: its least recently used connection gave way.
        assert wait_closed(pool[0], seconds=5) is not None
        assert _answered(pool[1])
        assert shared_server.limit_hits("idle-evicted") >= 1
    finally:
        _close(pool, [third])


def test_a_noisy_address_never_takes_a_pooled_connection_of_another(shared_server):
    api_server = _pooled(shared_server, API_SERVER, 2)
    noisy: list = []
    try:
        for _ in range(4 * CAP):  # far more than the table holds, each with a request
            sock = connect(shared_server.port, shared_server.ca_file, source=NOISY)
            noisy.append(sock)
            _answered(sock)
        assert all(_answered(sock) for sock in api_server)
        assert sum(wait_closed(sock, seconds=0.05) is None for sock in noisy) <= 2
    finally:
        _close(api_server, noisy)


def test_when_full_the_address_above_an_equal_share_gives_way(tmp_path, cert_dir):
    """Half per address: 127.0.0.2 holds 4, two API servers 2 each, the table is full."""
    server = WebhookProcess(cert_dir, tmp_path / "server.log", "--max-connections", str(CAP), "--source-share", "0.5").start()
    large = _pooled(server, NOISY, 4)
    first, second = _pooled(server, "127.0.0.3", 2), _pooled(server, "127.0.0.4", 2)
    newcomer = connect(server.port, server.ca_file, source="127.0.0.3")
    try:
        assert _answered(newcomer)
        assert all(_answered(sock) for sock in first + second)  # within their share: untouched
        assert sum(wait_closed(sock, seconds=2) is not None for sock in large) == 1
    finally:
        _close(large, first, second, [newcomer])
        server.stop()


def test_slow_bodies_give_way_when_the_table_is_full(tmp_path, cert_dir):
    """Unfinished bodies once held every slot: a normal review found none."""
    server = WebhookProcess(cert_dir, tmp_path / "server.log", "--max-connections", str(CAP), "--source-share", "1").start()
    stuck = []
    try:
        for _ in range(CAP):
            sock = connect(server.port, server.ca_file, source=NOISY)
            sock.sendall(head("POST", conventions.PATH_MUTATE, [("Content-Type", "application/json"), ("Content-Length", "50000")]) + b"{")
            stuck.append(sock)
        time.sleep(2.5)  # past SLOW_BODY_SECONDS, at a byte in 2.5 s
        client = server.client()
        request = review(plane_pod())
        assert client.review("/mutate", request)["response"]["uid"] == request["request"]["uid"]
        client.close()
        assert server.limit_hits("slow-body-evicted") >= 1
        slow = [r for r in server.log_records() if r.get("limit") == "slow-body-evicted"]
        assert slow and slow[0]["client"] == NOISY
    finally:
        _close(stuck)
        server.stop()


def test_a_bad_share_is_refused_with_a_clear_message(tmp_path, cert_dir):
    server = WebhookProcess(cert_dir, tmp_path / "server.log", "--source-share", "1.5")
    with pytest.raises(RuntimeError, match="--source-share must be above 0 and at most 1"):
        server.start(timeout=15)
    server.stop()


def test_bare_connections_from_one_address_stay_within_its_share(shared_server):
    """No TLS at all: the share is counted before any handshake work."""
    bare = [socket.create_connection(("127.0.0.1", shared_server.port), timeout=5, source_address=(NOISY, 0)) for _ in range(3 * CAP)]
    try:
        time.sleep(0.5)
        open_ones = sum(wait_closed(sock, seconds=0.05) is None for sock in bare)
        assert open_ones <= 2, open_ones
        client = shared_server.client()
        request = review(plane_pod())
        assert client.review("/mutate", request)["response"]["uid"] == request["request"]["uid"]
        client.close()
        assert shared_server.limit_hits("idle-evicted") >= 1
    finally:
        _close(bare)
