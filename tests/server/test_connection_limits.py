"""Connections that never finish a request are closed, and a full server still answers real clients."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.server.abuse import connect, head, post, read_answer, wait_closed
from tests.server.harness import WebhookProcess
from tests.server.pods import plane_pod, review


def test_a_connection_that_sends_nothing_is_closed(tight_server):
    before = tight_server.limit_hits("idle-timeout")
    with connect(tight_server.port, tight_server.ca_file) as sock:
        assert wait_closed(sock, seconds=10) is not None
    assert tight_server.limit_hits("idle-timeout") == before + 1


def test_a_bare_tcp_connection_is_closed(tight_server):
    """No TLS handshake at all: --header-timeout covers the handshake too."""
    with socket.create_connection(("127.0.0.1", tight_server.port), timeout=10) as sock:
        assert wait_closed(sock, seconds=10) is not None


def test_a_stuck_body_gets_408(tight_server):
    before = tight_server.limit_hits("body-timeout")
    with connect(tight_server.port, tight_server.ca_file) as sock:
        sock.sendall(head("POST", "/mutate", [("Content-Type", "application/json"), ("Content-Length", "5000")]) + b"{")
        status, headers, _ = read_answer(sock, timeout=10)
    assert status == 408 and headers["connection"] == "close"
    assert tight_server.limit_hits("body-timeout") == before + 1


def test_idle_keep_alive_connections_are_not_cut_by_the_idle_timeout(tight_server):
    """--idle-timeout is for the first request only; the API server's pooled connections stay."""
    with connect(tight_server.port, tight_server.ca_file) as sock:
        sock.sendall(head())
        assert read_answer(sock)[0] == 200
        assert wait_closed(sock, seconds=2.5) is None  # > --idle-timeout and --header-timeout
        sock.sendall(head())
        assert read_answer(sock)[0] == 200


CAP = 8


@pytest.fixture
def capped_server(tmp_path, cert_dir):
    """8 slots, all of which one address may take (the fair shares are test_source_share.py's)."""
    server = WebhookProcess(
        cert_dir, tmp_path / "server.log", "--max-connections", str(CAP), "--source-share", "1", "--body-timeout", "3"
    ).start()
    yield server
    server.stop()


def _mutate_ok(server) -> bool:
    client = server.client()
    try:
        request = review(plane_pod())
        return client.review("/mutate", request)["response"]["uid"] == request["request"]["uid"]
    finally:
        client.close()


def test_idle_connections_give_way_to_a_real_client(capped_server):
    idle = [connect(capped_server.port, capped_server.ca_file) for _ in range(CAP)]
    try:
        assert _mutate_ok(capped_server)
        assert wait_closed(idle[0], seconds=5) is not None  # the oldest idle one gave way
        assert capped_server.limit_hits("idle-evicted") >= 1
    finally:
        for sock in idle:
            sock.close()


def test_handshakes_that_never_start_give_way_too(capped_server):
    bare = [socket.create_connection(("127.0.0.1", capped_server.port), timeout=10) for _ in range(3 * CAP)]
    try:
        assert _mutate_ok(capped_server)
    finally:
        for sock in bare:
            sock.close()


def test_when_nothing_is_idle_new_connections_are_refused_and_counted(capped_server):
    busy = []
    try:
        for _ in range(CAP):
            sock = connect(capped_server.port, capped_server.ca_file)
            sock.sendall(head("POST", "/mutate", [("Content-Type", "application/json"), ("Content-Length", "5000")]) + b"{")
            busy.append(sock)
        time.sleep(0.5)  # every head read by the server, no body finished
        with pytest.raises((ConnectionError, OSError)):
            with connect(capped_server.port, capped_server.ca_file, timeout=5) as sock:
                sock.sendall(head())
                if read_answer(sock)[0] is None:
                    raise ConnectionResetError("closed without an answer")
    finally:
        for sock in busy:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the server sees the closes a moment later
        try:
            assert _mutate_ok(capped_server)
            break
        except (ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert capped_server.limit_hits("max-connections") >= 1


def test_a_low_open_file_limit_lowers_the_connection_cap(tmp_path, cert_dir):
    """The measured failure: at a 1024-descriptor limit, 1010 idle connections made every request fail."""
    server = WebhookProcess(cert_dir, tmp_path / "server.log", open_files=160).start()
    idle = []
    try:
        lowered = [r for r in server.log_records() if r.get("msg", "").startswith("--max-connections lowered")]
        assert lowered and lowered[0]["level"] == "warning" and lowered[0]["max_connections"] == 96
        for _ in range(150):
            idle.append(connect(server.port, server.ca_file))
        assert _mutate_ok(server)
        assert server.limit_hits("idle-evicted") >= 1
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_a_request_in_progress_when_the_cap_is_reached_is_answered(capped_server):
    body = post("/mutate", json.dumps(review(plane_pod())).encode())
    with connect(capped_server.port, capped_server.ca_file) as first:
        first.sendall(body[:100])  # a head still arriving
        idle = [connect(capped_server.port, capped_server.ca_file) for _ in range(CAP)]
        try:
            first.sendall(body[100:])
            status, _, _ = read_answer(first)
        finally:
            for sock in idle:
                sock.close()
    # The oldest connection without an answer in progress gives way: here the head still arriving
    # ranks after the connections that sent nothing, so it is never chosen while they exist.
    assert status == 200
