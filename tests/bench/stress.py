"""``make stress``: ``plane-guard serve`` under each abuse case, with memory and time measured.

Every case runs against a real ``plane-guard serve`` on 127.0.0.1 with its default limits. During
the attacks on the main server a probe process sends one normal review every 100 ms the way
kube-apiserver does (one keep-alive connection, reopened when closed). Every attack is bounded in
connections, bytes and seconds. The report ends with the targets: resident memory under 200 MB
whatever a client sends, a normal review answered in under 1 s while the attacks run, and no
request lost on SIGTERM.

``--root DIR`` runs the same cases against another checkout's ``plane-guard serve`` (only options
every version has are passed), to compare with an earlier version.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import resource
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import trustme

from tests import processes
from tests.server import abuse
from tests.server.harness import ApiServerClient, SecretVolume, free_port
from tests.server.pods import plane_pod, review
from webhook.ops import certs

ROOT = Path(__file__).resolve().parents[2]
RSS_TARGET_MIB = 200
LATENCY_TARGET = 1.0
#: How long each attack keeps going (each single try is bounded on its own too).
ATTACK_SECONDS = 5.0
MAX_BODY = 3 * 1024 * 1024
MB = 1024 * 1024


# --------------------------------------------------------------------------- server and meters


class Server:
    """``plane-guard serve`` from ``root`` in a subprocess; its memory sampled every 20 ms."""

    def __init__(self, root: Path, cert_dir: Path, log_path: Path, *args: str, open_files: int | None = None):
        self.root, self.cert_dir, self.log_path = root, cert_dir, log_path
        self.ca_file = cert_dir / "ca.crt"
        self.port = free_port()
        self.args = args
        self.open_files = open_files
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()

    def start(self) -> Server:
        command = [
            sys.executable, "-m", "webhook.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--cert-file", str(self.cert_dir / "tls.crt"), "--key-file", str(self.cert_dir / "tls.key"), *self.args,
        ]
        self._log = open(self.log_path, "ab")
        limit = self.open_files
        self.process = subprocess.Popen(
            command, cwd=self.root, env={**os.environ, "PYTHONPATH": str(self.root)}, stdout=self._log, stderr=self._log,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))) if limit else None,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"plane-guard serve exited with {self.process.returncode}; see {self.log_path}")
            try:
                client = ApiServerClient(self.port, self.ca_file, timeout=2)
                ok = client.get("/healthz")[0] == 200
                client.close()
                if ok:
                    break
            except OSError:
                time.sleep(0.1)
        threading.Thread(target=self._sample, daemon=True).start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set() and self.process.poll() is None:
            self.samples.append((time.monotonic(), self.rss()))
            self._stop.wait(0.02)

    def _status(self, key: str) -> float:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def rss(self) -> float:
        return self._status("VmRSS:")

    def peak(self, since: float) -> float:
        return max([mib for t, mib in self.samples if t >= since] + [self.rss()])

    def high_water(self) -> float:
        return self._status("VmHWM:")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def client(self, timeout: float = 10.0) -> ApiServerClient:
        return ApiServerClient(self.port, self.ca_file, timeout=timeout)

    def terminate(self) -> tuple[Any, float]:
        """SIGTERM; the exit status and the seconds it took (at most 60)."""
        started = time.monotonic()
        self.process.terminate()
        try:
            code: Any = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = "still running after 60 s"
        return code, time.monotonic() - started

    def stop(self, timeout: float = 40.0) -> int | None:
        self._stop.set()
        code = processes.stop(self.process, timeout)
        self._log.close()
        return code


def _probe(port: int, ca_file: str, out: str, stop: Any) -> None:
    """Probe process: a normal review every 100 ms on one keep-alive connection; one line per try."""
    client = ApiServerClient(port, ca_file, timeout=5)
    body = json.dumps(review(plane_pod())).encode()
    with open(out, "w") as lines:
        while not stop.is_set():
            started = time.monotonic()
            try:
                status, _, data = client.request("POST", "/mutate", body, {"Content-Type": "application/json"})
                ok = status == 200 and b'"allowed":true' in data
            except Exception:  # noqa: BLE001 - every failure is a data point
                client.close()
                ok = False
            lines.write(f"{started} {time.monotonic() - started} {int(ok)}\n")
            lines.flush()
            stop.wait(max(0.0, 0.1 - (time.monotonic() - started)))


class Probe:
    def __init__(self, server: Server, scratch: Path):
        context = multiprocessing.get_context("spawn")
        self.out = scratch / "probe.txt"
        self.stop = context.Event()
        self.process = context.Process(target=_probe, args=(server.port, str(server.ca_file), str(self.out), self.stop), daemon=True)
        self.process.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (self.out.exists() and self.out.read_text()):
            time.sleep(0.1)

    def window(self, since: float, until: float) -> tuple[int, int, float]:
        """(tries, failures, slowest seconds) between two times."""
        tries = failures = 0
        slowest = 0.0
        for line in self.out.read_text().splitlines():
            started, seconds, ok = line.split()
            if since <= float(started) <= until:
                tries += 1
                failures += ok == "0"
                slowest = max(slowest, float(seconds))
        return tries, failures, slowest

    def close(self) -> None:
        self.stop.set()
        self.process.join(timeout=10)


class Holder:
    """An event loop in a thread holding many idle connections (bounded by its callers)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.held: list = []

    def open(self, port: int, ca_file: Path | None, count: int, first_bytes: bytes = b"", seconds: float = 60) -> int:
        future = asyncio.run_coroutine_threadsafe(abuse.hold_connections(port, ca_file, count, first_bytes, seconds), self.loop)
        self.held = future.result(timeout=seconds + 10)
        return len(self.held)

    def still_open(self) -> int:
        async def count() -> int:
            await asyncio.sleep(0)
            return abuse.still_open(self.held)

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(abuse.close_all, self.held)
        time.sleep(0.5)
        self.loop.call_soon_threadsafe(self.loop.stop)


# --------------------------------------------------------------------------- report


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []
        self.rss: list[tuple[str, float]] = []
        self.probes: list[tuple[str, int, int, float]] = []
        self.lost: list[tuple[str, int]] = []
        self.noisy: list[tuple[str, dict[str, int], dict[str, int]]] = []

    def add(self, case: str, what: str, value: Any) -> None:
        self.rows.append((case, what, str(value)))
        print(f"  {case:<22} {what:<58} {value}", flush=True)

    def measured(self, case: str, server: Server, probe: Probe | None, started: float) -> None:
        peak = server.peak(started)
        self.rss.append((case, peak))
        self.add(case, "peak resident memory", f"{peak:.0f} MiB")
        if probe is not None:
            tries, failures, slowest = probe.window(started, time.monotonic())
            self.probes.append((case, tries, failures, slowest))
            self.add(case, "normal reviews meanwhile: tries / failed / slowest", f"{tries} / {failures} / {slowest:.3f} s")


def _status_of(server: Server, raw_chunks: list[bytes] | Any, seconds: float) -> tuple[str, int]:
    """Send a request (maybe huge, streamed) on a new connection: the answer's status and bytes sent."""
    try:
        with abuse.connect(server.port, server.ca_file, timeout=seconds) as sock:
            sent = abuse.send_until_closed(sock, raw_chunks, seconds)
            status, _, _ = abuse.read_answer(sock, timeout=seconds)
    except (OSError, ssl.SSLError) as exc:
        return f"failed ({type(exc).__name__})", 0
    return (str(status) if status else "closed, no answer"), sent


def _for_a_while(attack: Callable[[], Any], parallel: int, most: int = 1000) -> list[Any]:
    """``attack`` from ``parallel`` threads, again and again for ATTACK_SECONDS (at most ``most`` each)."""

    def repeatedly() -> list[Any]:
        results = []
        deadline = time.monotonic() + ATTACK_SECONDS
        while time.monotonic() < deadline and len(results) < most:
            results.append(attack())
        return results

    with ThreadPoolExecutor(parallel) as pool:
        return [result for batch in pool.map(lambda _: repeatedly(), range(parallel)) for result in batch]


def _counted(values: list[str]) -> str:
    return ", ".join(f"{values.count(v)} x {v}" for v in sorted(set(values)))


def case_headers(report: Report, server: Server, probe: Probe) -> None:
    case = "1 request heads"
    started = time.monotonic()

    def endless() -> tuple[str, int]:
        chunks = [b"POST /mutate HTTP/1.1\r\nHost: x\r\nX-Endless: ", *abuse.repeat(b"a" * 65536, 50 * MB)]
        return _status_of(server, chunks, seconds=30)

    results = _for_a_while(endless, parallel=4)
    report.add(case, "unfinished 50 MB heads, 4 at a time, 5 s: answers", _counted([r[0] for r in results]))
    report.add(case, "  MB the server took of each head (most)", f"{max(r[1] for r in results) / MB:.1f}")
    for size in (100_000, 1_000_000, 10_000_000):
        status, _ = _status_of(server, [abuse.head(headers=[("X-Value", "a" * size)])], seconds=30)
        report.add(case, f"one {size // 1000:,} KB header value: answer", status)
    status, _ = _status_of(server, [abuse.head(headers=[(f"X-H{i}", "v") for i in range(100_000)])], seconds=30)
    report.add(case, "100,000 headers: answer", status)
    report.measured(case, server, probe, started)


def _largest_review() -> bytes:
    """A review of as many minimal Plane containers as fit under the default --max-body-bytes."""
    per = len(abuse.many_containers_review(2000)) - len(abuse.many_containers_review(1000))
    count = (MAX_BODY - len(abuse.many_containers_review(1000)) - 1000) // (per // 1000) + 1000
    body = abuse.many_containers_review(count)
    while len(body) >= MAX_BODY:
        count -= 500
        body = abuse.many_containers_review(count)
    return body


def case_large_reviews(report: Report, server: Server, probe: Probe) -> None:
    case = "2 large reviews"
    body = _largest_review()
    containers = len(json.loads(body)["request"]["object"]["spec"]["containers"])

    def one() -> tuple[int | None, int, float]:
        started = time.monotonic()
        try:
            with abuse.connect(server.port, server.ca_file, timeout=60) as sock:
                sock.sendall(abuse.post("/mutate", body))
                status, _, data = abuse.read_answer(sock, timeout=60)
        except OSError:
            return None, 0, time.monotonic() - started
        return status, len(data), time.monotonic() - started

    report.add(case, "the review", f"{len(body) / 1e6:.2f} MB, {containers:,} minimal Plane containers")
    for parallel in (1, 3, 20):
        started = time.monotonic()
        results = _for_a_while(one, parallel)
        report.add(case, f"{parallel} at a time, 5 s: answers", _counted([str(r[0]) for r in results]))
        report.add(case, "  largest answer, slowest answer", f"{max(r[1] for r in results):,} B, {max(r[2] for r in results):.2f} s")
        report.measured(f"{case} x{parallel}", server, probe, started)


def case_connections(report: Report, server: Server, probe: Probe) -> None:
    case = "3 connections"

    def closed_after(first: bytes) -> str:
        try:
            with abuse.connect(server.port, server.ca_file) as sock:
                if first:
                    sock.sendall(first)
                seconds = abuse.wait_closed(sock, 40)
        except OSError as exc:
            return f"failed ({type(exc).__name__})"
        return "still open after 40 s" if seconds is None else f"closed after {seconds:.1f} s"

    stuck_body = abuse.head("POST", "/mutate", [("Content-Type", "application/json"), ("Content-Length", "5000")]) + b"{"
    with ThreadPoolExecutor(3) as pool:
        idle, partial, stuck = pool.map(closed_after, [b"", b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Ty", stuck_body])
    report.add(case, "idle connection (no request)", idle)
    report.add(case, "partial head", partial)
    report.add(case, "stuck body", stuck)
    for kind, ca_file in (("TLS", server.ca_file), ("bare TCP (no handshake)", None)):
        started = time.monotonic()
        holder = Holder()
        try:
            opened = holder.open(server.port, ca_file, 6000, seconds=60)
            time.sleep(3)
            report.add(case, f"6,000 idle {kind} connections: opened / still open after 3 s", f"{opened} / {holder.still_open()}")
            report.measured(f"{case} {kind.split()[0]}", server, probe, started)
        finally:
            holder.close()


def case_log(report: Report, server: Server, probe: Probe) -> None:
    case = "4 log"
    started = time.monotonic()
    request = review(plane_pod(), namespace="n" * 2_000_000)
    body = json.dumps(request).encode()
    client = server.client(timeout=30)
    try:
        client.request("POST", "/mutate", body, {"Content-Type": "application/json"})
    finally:
        client.close()
    time.sleep(0.5)
    report.add(case, "2,000,000-character namespace: longest log line", f"{max(len(line) for line in server.log_lines()):,} B")
    before = server.log_size()
    flood_started = time.monotonic()
    client = server.client(timeout=30)
    sent = 0
    try:
        while time.monotonic() - flood_started < 10:
            client.request("POST", "/mutate", body, {"Content-Type": "application/json"})
            sent += 1
    except OSError:
        pass
    finally:
        client.close()
    written = server.log_size() - before
    report.add(case, "one client, 10 s of such reviews: requests / log written", f"{sent} / {written / MB:.2f} MB")
    report.measured(case, server, probe, started)


def case_file_descriptors(report: Report, scratch: Path, root: Path, cert_dir: Path) -> None:
    case = "3 open-file limit"
    server = Server(root, cert_dir, scratch / "fd.log", open_files=1024).start()
    holder = Holder()
    try:
        started = time.monotonic()
        opened = holder.open(server.port, server.ca_file, 1010, seconds=60)
        time.sleep(1)
        answered = 0
        for _ in range(5):
            client = server.client(timeout=5)
            try:
                answered += client.review("/mutate", review(plane_pod()))["response"]["allowed"] is True
            except (OSError, AssertionError):
                pass
            finally:
                client.close()
        report.add(case, "limit 1024, 1,010 idle connections: opened / reviews answered", f"{opened} / {answered} of 5")
        said = sorted({json.loads(line)["msg"][:60] for line in server.log_lines() if line.startswith("{")
                       and json.loads(line)["level"] in ("warning", "error")})
        report.add(case, "warnings and errors logged", " | ".join(said) or "none")
        report.measured(case, server, None, started)
    finally:
        holder.close()
        server.stop()


def case_shutdown(report: Report, scratch: Path, root: Path, cert_dir: Path) -> None:
    case = "5 shutdown"
    server = Server(root, cert_dir, scratch / "shutdown.log").start()
    clients = [abuse.KeepAliveClient(server.port, server.ca_file) for _ in range(8)]
    for client in clients:
        client.start()
    time.sleep(1)
    code, elapsed = server.terminate()
    for client in clients:
        client.stop.set()
        client.join(timeout=30)
    server.stop()
    lost = sum(c.lost for c in clients)
    report.lost.append((case, lost))
    report.add(case, "SIGTERM, 8 keep-alive clients: answered / lost", f"{sum(c.answered for c in clients)} / {lost}")
    report.add(case, "SIGTERM, 8 keep-alive clients: exit status, seconds to exit", f"{code}, {elapsed:.1f} s")

    server = Server(root, cert_dir, scratch / "shutdown-idle.log", "--graceful-timeout", "10").start()
    with abuse.connect(server.port, server.ca_file) as idle:
        idle.sendall(abuse.head())
        abuse.read_answer(idle)
        code, elapsed = server.terminate()
    server.stop()
    report.add(case, "SIGTERM, 1 idle silent client: exit status, seconds to exit", f"{code}, {elapsed:.1f} s")


def case_certificates(report: Report, scratch: Path, root: Path) -> None:
    case = "6 certificate reload"
    volume = SecretVolume(scratch / "tls")
    first, second = certs.generate("plane-guard", "plane-guard", 30), certs.generate("plane-guard", "plane-guard", 30)
    volume.publish(first)
    server = Server(root, volume.root, scratch / "certs.log", "--cert-check-interval", "0.2")
    server.ca_file = scratch / "bundle.crt"  # what clients trust across the swap
    server.ca_file.write_bytes(first.ca_pem + second.ca_pem)
    server.start()
    try:
        stop = threading.Event()
        counts = {"requests": 0, "failures": 0}

        def load() -> None:
            client = server.client()
            pod = plane_pod()
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                if counts["requests"] % 25 == 0:
                    client.close()
                counts["requests"] += 1
                try:
                    client.review("/mutate", review(pod))
                except Exception:  # noqa: BLE001 - counted
                    counts["failures"] += 1
            client.close()

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        time.sleep(2)
        volume.publish(second)
        time.sleep(3)
        stop.set()
        thread.join(timeout=40)
        report.add(case, "swap under load: requests / failures", f"{counts['requests']} / {counts['failures']}")
        now = dt.datetime.now(dt.UTC)
        leaf = trustme.CA().issue_cert("plane-guard.plane-guard.svc", not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
        volume.publish(certs.Bundle(first.ca_pem, leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()))
        time.sleep(2)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with abuse.connect(server.port, server.ca_file, context=context) as sock:
            served = sock.getpeercert(binary_form=True)
            sock.sendall(abuse.head("GET", "/readyz"))
            ready, _, _ = abuse.read_answer(sock)
        expired = served == ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
        report.add(case, "expired certificate published: served to new clients / readyz", f"{'yes' if expired else 'no'} / {ready}")
        lines = [line for line in server.log_lines() if "reload" in line and '"level":"warning"' in line]
        report.add(case, "warning lines about the failed reload (10 checks)", len(lines))
    finally:
        server.stop()


def case_tls(report: Report, scratch: Path, root: Path, cert_dir: Path, main: Server) -> None:
    case = "7 TLS and workers"
    accepted = []
    for suite in ("ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA"):
        context = abuse.tls_context(main.ca_file)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(suite)
        try:
            abuse.connect(main.port, main.ca_file, context=context).close()
            accepted.append(suite)
        except (ssl.SSLError, OSError):
            pass
    report.add(case, "TLS 1.2 CBC suites accepted (of 4 tried)", ", ".join(accepted) or "none")
    server = Server(root, cert_dir, scratch / "workers.log", "--workers", "2").start()
    try:
        deadline = time.monotonic() + 20
        children: list[int] = []
        while time.monotonic() < deadline and len(children) < 2:
            children = [int(p) for p in Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
                        if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
            time.sleep(0.2)
        os.kill(children[0], signal.SIGKILL)
        level = "not logged within 20 s"
        while time.monotonic() < deadline + 20:
            lines = [json.loads(line) for line in server.log_lines() if "died" in line and line.startswith("{")]
            if lines:
                level = ", ".join(sorted({line["level"] for line in lines}))
                break
            time.sleep(0.2)
        report.add(case, "a worker killed (SIGKILL): level of the log line", level)
    finally:
        server.stop()


# --------------------------------------------------------------------------- one noisy address

#: The attacker's address; the API server (the probe and ApiServerSide) is 127.0.0.1.
NOISY = "127.0.0.2"
NOISY_CLIENTS = 600
NOISY_SECONDS = 20.0


class ApiServerSide(threading.Thread):
    """What kube-apiserver does meanwhile: reviews on 3 kept connections and on new ones.

    Every 0.3 s one kept connection (in turn) and one new connection each carry a review. A
    review fails when no 200 with its uid comes back, a kept connection found closed included.
    """

    def __init__(self, server: Server, seconds: float):
        super().__init__(daemon=True)
        self.server, self.seconds = server, seconds
        self.kept = {"tries": 0, "failed": 0}
        self.new = {"tries": 0, "failed": 0}

    def _review(self, client: ApiServerClient, counts: dict[str, int]) -> bool:
        counts["tries"] += 1
        request = review(plane_pod())
        try:
            ok = client.review("/mutate", request)["response"]["uid"] == request["request"]["uid"]
        except Exception:  # noqa: BLE001 - every failure is a data point
            ok = False
        counts["failed"] += not ok
        return ok

    def run(self) -> None:
        kept = [self.server.client() for _ in range(3)]
        deadline = time.monotonic() + self.seconds
        turn = 0
        while time.monotonic() < deadline:
            started = time.monotonic()
            index = turn % len(kept)
            if not self._review(kept[index], self.kept):
                kept[index].close()
                kept[index] = self.server.client()
            fresh = self.server.client()
            self._review(fresh, self.new)
            fresh.close()
            turn += 1
            time.sleep(max(0.0, 0.3 - (time.monotonic() - started)))
        for client in kept:
            client.close()

    def line(self) -> str:
        return f"kept {self.kept['failed']} of {self.kept['tries']}, new {self.new['failed']} of {self.new['tries']}"


def _noisy(server: Server, request: bytes, every: float | None) -> dict[str, int]:
    coroutine = abuse.noisy_clients(server.port, server.ca_file, NOISY_CLIENTS, NOISY_SECONDS, NOISY, request, every)
    return asyncio.run(coroutine)


def case_one_address(report: Report, server: Server, probe: Probe) -> None:
    """600 busy keep-alive clients, then 600 unfinished bodies, all from one address."""
    case = "9 one noisy address"
    attacks = (
        ("600 busy keep-alive clients (a request every 2 s)", abuse.head(), 2.0),
        ("600 unfinished bodies, reconnecting when dropped", abuse.head("POST", "/mutate", [("Content-Type", "application/json"), ("Content-Length", "50000")]) + b"{", None),
    )
    for what, request, every in attacks:
        started = time.monotonic()
        api_server = ApiServerSide(server, NOISY_SECONDS)
        api_server.start()
        counts = _noisy(server, request, every)
        api_server.join(timeout=NOISY_SECONDS + 30)
        report.add(case, f"{what}: connected / refused / dropped / answered", " / ".join(str(counts[k]) for k in ("connected", "refused", "dropped", "answered")))
        report.add(case, f"{what}: API server reviews failed", api_server.line())
        report.noisy.append((what, api_server.kept, api_server.new))
        report.measured(f"{case} {'busy' if every else 'bodies'}", server, probe, started)


def case_sighup(report: Report, scratch: Path, root: Path, cert_dir: Path) -> None:
    case = "8 SIGHUP"
    server = Server(root, cert_dir, scratch / "sighup.log").start()
    clients = [abuse.KeepAliveClient(server.port, server.ca_file) for _ in range(8)]
    for client in clients:
        client.start()
    time.sleep(1)
    for _ in range(3):
        server.process.send_signal(signal.SIGHUP)
        time.sleep(1)
    alive = server.process.poll() is None
    for client in clients:
        client.stop.set()
        client.join(timeout=30)
    server.stop()
    lost = sum(c.lost for c in clients)
    report.lost.append((case, lost))
    report.add(case, "3 x SIGHUP, one worker, 8 keep-alive clients: answered / lost", f"{sum(c.answered for c in clients)} / {lost}")
    report.add(case, "3 x SIGHUP, one worker: still serving afterwards", "yes" if alive else "NO, it exited")
    if not alive:
        report.lost.append((case + " (exited)", 1))


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.stress", description=__doc__)
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose plane-guard serve is measured (default: this one)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 16384 <= hard or (hard == resource.RLIM_INFINITY and soft < 16384):
        resource.setrlimit(resource.RLIMIT_NOFILE, (16384, hard))
    report = Report()
    print(f"plane-guard serve from {args.root} under abuse (127.0.0.1, default limits, {os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="plane-guard-stress-") as tmp:
        scratch = Path(tmp)
        cert_dir = scratch / "certs"
        certs.write_files(certs.generate("plane-guard", "plane-guard", 30), cert_dir)
        main_server = Server(args.root, cert_dir, scratch / "main.log").start()
        probe = Probe(main_server, scratch)
        try:
            time.sleep(1)
            report.add("0 idle", "resident memory after start", f"{main_server.rss():.0f} MiB")
            for run in (case_headers, case_large_reviews, case_connections, case_log):
                run(report, main_server, probe)
            case_tls(report, scratch, args.root, cert_dir, main_server)
            case_one_address(report, main_server, probe)
            report.add("all, main server", "peak resident memory (VmHWM, whole run)", f"{main_server.high_water():.0f} MiB")
            report.rss.append(("all, main server", main_server.high_water()))
        finally:
            probe.close()
            main_server.stop()
        case_file_descriptors(report, scratch, args.root, cert_dir)
        case_shutdown(report, scratch, args.root, cert_dir)
        case_certificates(report, scratch, args.root)
        case_sighup(report, scratch, args.root, cert_dir)

    worst_rss = max(report.rss, key=lambda r: r[1])
    tries = sum(p[1] for p in report.probes)
    failures = sum(p[2] for p in report.probes)
    slowest = max(report.probes, key=lambda p: p[3])
    lost = sum(count for _, count in report.lost)
    print()
    print("targets")
    print(f"  resident memory < {RSS_TARGET_MIB} MB whatever a client sends: worst {worst_rss[1]:.0f} MiB ({worst_rss[0]}) "
          f"-> {'met' if worst_rss[1] < RSS_TARGET_MIB else 'MISSED'}")
    print(f"  normal review < {LATENCY_TARGET:g} s during the attacks: {tries} tries, {failures} failed, slowest {slowest[3]:.3f} s "
          f"({slowest[0]}) -> {'met' if failures == 0 and slowest[3] < LATENCY_TARGET else 'MISSED'}")
    print(f"  no request lost on SIGTERM or SIGHUP: {lost} lost -> {'met' if lost == 0 else 'MISSED'}")
    for what, kept, new in report.noisy:
        failed, tries = kept["failed"] + new["failed"], kept["tries"] + new["tries"]
        # Busy clients: no review may fail; unfinished bodies: at least 95% answered.
        target = failed == 0 if "busy" in what else tries and (tries - failed) >= 0.95 * tries
        print(f"  one noisy address, {what}: {failed} of {tries} API server reviews failed -> {'met' if target else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
