"""Request heads are bounded: size, number of headers, and time (uvicorn's httptools has no limit)."""

from __future__ import annotations

import json

import pytest

from tests.server.abuse import connect, head, read_answer, repeat, send_until_closed, wait_closed


def _warnings(server, limit: str) -> list[dict]:
    return [record for record in server.log_records() if record.get("limit") == limit]


@pytest.mark.parametrize("size", [5_000, 100_000, 1_000_000])
def test_a_long_header_value_gets_431(tight_server, size):
    with connect(tight_server.port, tight_server.ca_file) as sock:
        sent = send_until_closed(sock, [head(headers=[("X-Padding", "a" * size)])], seconds=10)
        status, headers, body = read_answer(sock)
    assert status == 431, body[:200]
    assert headers["connection"] == "close"
    assert "request head too large" in json.loads(body)["message"]
    assert sent <= size + 200


def test_a_hundred_thousand_headers_get_431(tight_server):
    many = [(f"X-H{i}", "v") for i in range(100_000)]
    with connect(tight_server.port, tight_server.ca_file) as sock:
        send_until_closed(sock, [head(headers=many)], seconds=10)
        status, _, _ = read_answer(sock)
    assert status == 431


def test_more_headers_than_allowed_get_431(tight_server):
    """21 short headers: within --max-header-bytes 4096, above --max-headers 20."""
    before = tight_server.limit_hits("header-count")
    with connect(tight_server.port, tight_server.ca_file) as sock:
        sock.sendall(head(headers=[(f"X-H{i}", "v") for i in range(20)]))
        status, _, _ = read_answer(sock)
    assert status == 431
    assert tight_server.limit_hits("header-count") == before + 1


def test_headers_at_the_limit_are_fine(tight_server):
    with connect(tight_server.port, tight_server.ca_file) as sock:
        sock.sendall(head(headers=[(f"X-H{i}", "v" * 150) for i in range(18)]))
        status, _, _ = read_answer(sock)
    assert status == 200


def test_an_endless_head_is_cut_off_early(tight_server):
    """A head that never ends: the server stops reading soon after the limit, not after 50 MB."""
    before = tight_server.limit_hits("header-size")
    with connect(tight_server.port, tight_server.ca_file) as sock:
        chunks = [b"GET /healthz HTTP/1.1\r\nX-Endless: ", *repeat(b"a" * 65536, 50 * 1024 * 1024)]
        sent = send_until_closed(sock, chunks, seconds=20)
        status, _, _ = read_answer(sock)
    assert status in (431, None)  # the answer may be lost when the server resets a writer
    assert sent < 8 * 1024 * 1024, f"the server read {sent} bytes of a head limited to 4096"
    assert tight_server.limit_hits("header-size") == before + 1


def test_a_head_that_stops_half_way_gets_408(tight_server):
    with connect(tight_server.port, tight_server.ca_file) as sock:
        sock.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Ty")
        status, headers, body = read_answer(sock, timeout=15)
    assert status == 408
    assert headers["connection"] == "close"
    assert tight_server.limit_hits("header-timeout") >= 1


def test_a_head_trickled_byte_by_byte_is_timed_out(tight_server):
    """Each byte resets nothing: the deadline runs from the head's first byte."""
    with connect(tight_server.port, tight_server.ca_file) as sock:
        sent = send_until_closed(sock, (bytes([b]) for b in b"GET /healthz HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 100), seconds=10)
        assert wait_closed(sock, seconds=10) is not None
    assert sent < 200


def test_limit_hits_are_logged_once_then_throttled(tight_server):
    for _ in range(3):
        with connect(tight_server.port, tight_server.ca_file) as sock:
            send_until_closed(sock, [head(headers=[("X-Padding", "a" * 10_000)])], seconds=10)
            read_answer(sock)
    lines = _warnings(tight_server, "header-size")
    assert len(lines) == 1
    assert lines[0]["level"] == "warning" and "--max-header-bytes" in lines[0]["msg"]
    assert tight_server.limit_hits("header-size") >= 3


def test_not_http_gets_400_and_is_counted(tight_server):
    before = tight_server.limit_hits("bad-request")
    with connect(tight_server.port, tight_server.ca_file) as sock:
        sock.sendall(b"\x00\x01 this is not HTTP\r\n\r\n")
        status, headers, _ = read_answer(sock)
    assert status == 400 and headers["connection"] == "close"
    assert tight_server.limit_hits("bad-request") == before + 1
