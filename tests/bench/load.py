"""Load generator: keep-alive TLS connections like kube-apiserver's, spread over processes.

Each connection sends one request, waits for the whole response, and sends the next (no
pipelining, as the API server does). Every loop is bounded by a deadline and a request count.
A response counts only when it allows the request under the request's own uid, as the API
server requires; anything else is an error.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import ssl
import time
from array import array
from dataclasses import dataclass

SNI = "plane-guard.plane-guard.svc"


@dataclass
class Result:
    requests: int
    errors: int
    warm: int  # warm-up requests (not measured)
    seconds: float
    latencies: array  # seconds, one per successful request


def _request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {SNI}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _expected(body: bytes) -> tuple[bytes, ...]:
    """What every correct answer to ``body`` contains (compact JSON, as both servers write it)."""
    uid = json.loads(body)["request"]["uid"]
    return b'"allowed":true', f'"uid":"{uid}"'.encode()


async def _connection(port, context, request, expected, deadline, budget, latencies, counters):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=SNI)
    try:
        while time.perf_counter() < deadline and counters[0] < budget:
            counters[0] += 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200") or not all(part in body for part in expected):
                counters[1] += 1
                continue
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def _run(port, ca_file, path, body, connections, warmup, duration, budget):
    context = ssl.create_default_context(cafile=ca_file)
    request = _request(path, body)
    expected = _expected(body)
    # Warm up: handshakes, server caches, CPU frequency; not measured.
    warm: array = array("d")
    warm_counters = [0, 0]
    await asyncio.gather(
        *[_connection(port, context, request, expected, time.perf_counter() + warmup, budget, warm, warm_counters) for _ in range(connections)]
    )
    latencies: array = array("d")
    counters = [0, 0]
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *[_connection(port, context, request, expected, deadline, budget, latencies, counters) for _ in range(connections)]
    )
    return counters[0], counters[1], warm_counters[0], time.perf_counter() - started, latencies.tobytes()


def _worker(args):
    import uvloop

    return uvloop.run(_run(*args))


def drive(port, ca_file, path, body, connections, processes, warmup=0.5, duration=3.0, max_requests=300_000) -> Result:
    """Run ``connections`` keep-alive connections from ``processes`` processes; bounded in time and count."""
    processes = max(1, min(processes, connections))
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    budget = max_requests // processes
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        parts = pool.map(_worker, [(port, ca_file, path, body, share, warmup, duration, budget) for share in shares])
    latencies = array("d")
    requests = errors = warm = 0
    seconds = 0.0
    for count, failed, warmed, elapsed, raw in parts:
        requests += count
        errors += failed
        warm += warmed
        seconds = max(seconds, elapsed)
        chunk = array("d")
        chunk.frombytes(raw)
        latencies.extend(chunk)
    return Result(requests, errors, warm, seconds, latencies)


def percentile(values, fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]
