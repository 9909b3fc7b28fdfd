"""``make bench``: /mutate next to a raw ASGI floor, same TLS set-up, 1/8/64 keep-alive connections.

Both servers run as real processes on 127.0.0.1 (plane-guard through its CLI, with its default
policy, decision logs and metrics on); each load step is bounded in time and request count.
The floor is a minimal correct webhook (parses the review, allows it under its uid); the
request carries a fresh uid per run, so an answer with any other uid counts as an error.
Targets (benchmark, not a test): p99 <= 5 ms at 8 connections, throughput >= 0.5x the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.bench import startup
from tests.bench.load import drive, percentile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples" / "admission-review.json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(port: int, ca_file: str, process: subprocess.Popen, timeout: float = 20.0) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                with context.wrap_socket(raw, server_hostname="plane-guard.plane-guard.svc"):
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not start within {timeout} s")


def _cpu_seconds(pid: int) -> float:
    """User+system CPU of a process from /proc (0 where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    """Resident memory of a process from /proc (0 where there is no /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per step (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--connections", default="1,8,64")
    parser.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--max-requests", type=int, default=300_000, help="cap per step")
    parser.add_argument("--workers", type=int, default=1,
                        help="plane-guard server processes (default 1, like the floor; more is not a like-for-like ratio)")
    args = parser.parse_args()

    review = json.loads(EXAMPLE.read_bytes())
    review["request"]["uid"] = str(uuid.uuid4())
    body = json.dumps(review).encode()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="plane-guard-bench-") as scratch:
        certs = Path(scratch)
        subprocess.run(
            [python, "-m", "webhook.cli", "certs", "generate", "--out", str(certs)], check=True, cwd=ROOT, capture_output=True
        )
        ca, cert, key = str(certs / "ca.crt"), str(certs / "tls.crt"), str(certs / "tls.key")
        floor_port, guard_port = _free_port(), _free_port()
        log = open(certs / "plane-guard.log", "wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        servers = [
            subprocess.Popen(
                [python, "-m", "tests.bench.floor", "--port", str(floor_port), "--cert-file", cert, "--key-file", key],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [python, "-m", "webhook.cli", "serve", "--host", "127.0.0.1", "--port", str(guard_port),
                 "--cert-file", cert, "--key-file", key, "--workers", str(args.workers)],
                cwd=ROOT, env=env, stdout=log, stderr=log,
            ),
        ]
        try:
            _wait_ready(floor_port, ca, servers[0])
            _wait_ready(guard_port, ca, servers[1])
            rows = []
            for connections in [int(c) for c in args.connections.split(",")]:
                row = {"connections": connections}
                for name, port, server in (("floor", floor_port, servers[0]), ("mutate", guard_port, servers[1])):
                    cpu_before = _cpu_seconds(server.pid) if args.workers == 1 or name == "floor" else 0.0
                    result = drive(port, ca, "/mutate", body, connections, args.processes,
                                   args.warmup, args.duration, args.max_requests)
                    cpu_used = _cpu_seconds(server.pid) - cpu_before if cpu_before or name == "floor" else float("nan")
                    ok = len(result.latencies)
                    row[name] = {
                        # Server CPU per request (warm-up included in both terms): the cost that
                        # does not depend on how much CPU the load generator leaves over.
                        "cpu_us": cpu_used / max(1, result.requests + result.warm) * 1e6,
                        "rps": ok / result.seconds if result.seconds else 0.0,
                        "p50": percentile(result.latencies, 0.50) * 1000,
                        "p99": percentile(result.latencies, 0.99) * 1000,
                        "errors": result.errors,
                        "requests": result.requests,
                    }
                rows.append(row)
            rss = {"floor": _rss_mib(servers[0].pid), "mutate": _rss_mib(servers[1].pid)}
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
            log.close()

    print(f"plane-guard /mutate vs a minimal correct webhook as floor (uvicorn+uvloop+httptools, TLS, keep-alive; {os.cpu_count()} CPUs, "
          f"{args.processes} client processes, {args.workers} plane-guard worker(s), {args.duration:g} s per step)")
    header = (f"{'conns':>5} | {'floor rps':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu us':>6} | "
              f"{'mutate rps':>10} {'p50 ms':>7} {'p99 ms':>7} {'cpu us':>6} {'errors':>6} | {'ratio':>5}")
    print(header)
    print("-" * len(header))
    for row in rows:
        floor, mutate = row["floor"], row["mutate"]
        ratio = mutate["rps"] / floor["rps"] if floor["rps"] else 0.0
        print(f"{row['connections']:>5} | {floor['rps']:>9.0f} {floor['p50']:>7.2f} {floor['p99']:>7.2f} {floor['cpu_us']:>6.0f} | "
              f"{mutate['rps']:>10.0f} {mutate['p50']:>7.2f} {mutate['p99']:>7.2f} {mutate['cpu_us']:>6.0f} "
              f"{mutate['errors'] + floor['errors']:>6} | {ratio:>5.2f}")
    print("cpu us = server CPU time per request (user+system); ratio = mutate rps / floor rps")
    print(f"resident memory after the run: floor {rss['floor']:.0f} MiB, plane-guard {rss['mutate']:.0f} MiB")
    print()
    print("\n".join(startup.report()))
    print()
    eight = next((r for r in rows if r["connections"] == 8), rows[-1])
    ratio = eight["mutate"]["rps"] / eight["floor"]["rps"] if eight["floor"]["rps"] else 0.0
    print(f"targets at 8 connections: p99 <= 5 ms ({'met' if eight['mutate']['p99'] <= 5 else 'MISSED'}), "
          f"ratio >= 0.5 ({'met' if ratio >= 0.5 else 'MISSED'})")
    print(f"mutate_rps={eight['mutate']['rps']:.0f} floor_rps={eight['floor']['rps']:.0f} ratio={ratio:.2f} "
          f"p99_ms={eight['mutate']['p99']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
