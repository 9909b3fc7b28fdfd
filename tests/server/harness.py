"""Real servers and a kube-apiserver-like client for the server tests.

``WebhookProcess`` runs ``plane-guard serve`` exactly as the container does (a subprocess, real
uvicorn, real TLS on 127.0.0.1). ``ApiServerClient`` behaves like kube-apiserver calling a
webhook: it trusts only the caBundle, verifies the certificate for the Service DNS name it
sends as SNI while connecting to an IP, and keeps its connection alive between calls.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests import processes
from webhook.ops import certs

ROOT = Path(__file__).resolve().parents[2]
SNI = "plane-guard.plane-guard.svc"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _SNIConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 while verifying the certificate for the Service name (SNI)."""

    def __init__(self, port: int, context: ssl.SSLContext, timeout: float):
        super().__init__("127.0.0.1", port, context=context, timeout=timeout)
        self._context = context

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        # Go's net/http (kube-apiserver) sets TCP_NODELAY; http.client sends headers and body
        # in two writes, which without it costs a delayed-ACK round trip (~40 ms) per request.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(raw, server_hostname=SNI)


class ApiServerClient:
    """One keep-alive connection, reopened only when the server closed it."""

    def __init__(self, port: int, ca_file: str | Path, timeout: float = 10.0):
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.timeout = timeout
        self.connections_opened = 0
        self._conn: _SNIConnection | None = None

    def _connection(self) -> _SNIConnection:
        if self._conn is None:
            self._conn = _SNIConnection(self.port, self.context, self.timeout)
            self._conn.connect()
            self.connections_opened += 1
        return self._conn

    def peer_fingerprint(self) -> str:
        """SHA-256 of the certificate the server presented on the current connection."""
        conn = self._connection()
        return hashlib.sha256(conn.sock.getpeercert(binary_form=True)).hexdigest()

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):
            self.close()
            raise
        if response.getheader("connection", "").lower() == "close" or response.will_close:
            self.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def review(self, path: str, review: dict[str, Any]) -> dict[str, Any]:
        """POST an AdmissionReview the way the API server does; the decoded answer."""
        status, headers, data = self.request(
            "POST", path, json.dumps(review).encode(), {"Content-Type": "application/json", "Accept": "application/json"}
        )
        assert status == 200, (status, data[:500])
        assert headers["content-type"].startswith("application/json")
        return json.loads(data)

    def get(self, path: str) -> tuple[int, bytes]:
        status, _, data = self.request("GET", path)
        return status, data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def decode_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


class WebhookProcess:
    """``plane-guard serve`` in a subprocess on a free loopback port."""

    def __init__(
        self,
        cert_dir: Path,
        log_path: Path,
        *extra: str,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        open_files: int | None = None,
    ):
        self.open_files = open_files  # an RLIMIT_NOFILE for the server (soft and hard)
        self.port = free_port()
        self.ca_file = cert_dir / "ca.crt"
        self.log_path = log_path
        self.args = [
            sys.executable, "-m", "webhook.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--cert-file", str(cert_file or cert_dir / "tls.crt"), "--key-file", str(key_file or cert_dir / "tls.key"),
            # No drain on stop unless a test asks for one: stopping the session's servers stays quick.
            *(() if "--drain-seconds" in extra else ("--drain-seconds", "0")),
            *extra,
        ]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> WebhookProcess:
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.args, cwd=ROOT, stdout=self._log, stderr=self._log, env={**os.environ, "PYTHONPATH": str(ROOT)},
            preexec_fn=self._limit_open_files if self.open_files else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"plane-guard serve exited {self.process.returncode}: {self.log()[-2000:]}")
            try:
                client = ApiServerClient(self.port, self.ca_file, timeout=2)
                status, _ = client.get("/healthz")
                client.close()
                if status == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"plane-guard serve did not answer within {timeout} s: {self.log()[-2000:]}")

    def _limit_open_files(self) -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def client(self) -> ApiServerClient:
        return ApiServerClient(self.port, self.ca_file)

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def limit_hits(self, limit: str) -> float:
        """``plane_guard_limit_hits_total`` for one limit, read from /metrics."""
        client = self.client()
        try:
            text = client.get("/metrics")[1].decode()
        finally:
            client.close()
        return metric_samples(text, "plane_guard_limit_hits_total").get(labels(limit=limit), 0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def decisions(self) -> list[dict[str, Any]]:
        return [record for record in self.log_records() if record.get("logger") == "plane_guard.decision"]

    def decision(self, uid: str, timeout: float = 5.0) -> dict[str, Any]:
        """The decision line for ``uid`` (written just after the answer: waited for, bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [d for d in self.decisions() if d.get("uid") == uid]
            if found or time.monotonic() > deadline:
                assert found, f"no decision logged for {uid}"
                return found[-1]
            time.sleep(0.05)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        code = processes.stop(self.process)
        self._log.close()
        return code


def labels(**pairs: str) -> str:
    """Canonical label key used by ``metric_samples``: ``labels(a="x", b="y")``."""
    return ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))


def metric_samples(text: str, name: str) -> dict[str, float]:
    """``{labels(...): value}`` for one metric name in the Prometheus text format."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            inner = key[len(name):].strip("{}")
            pairs = sorted(p for p in inner.split(",") if p)  # our label values hold no commas
            found[",".join(pairs)] = float(value)
    return found


class InProcessServer:
    """uvicorn in a thread with an app object: for faults that cannot be caused from outside."""

    def __init__(self, app: Any, cert_dir: Path):
        import uvicorn

        from webhook.serve import tls

        self.port = free_port()
        self.ca_file = cert_dir / "ca.crt"
        certificate = tls.ServingCertificate(str(cert_dir / "tls.crt"), str(cert_dir / "tls.key"))
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, ssl_certfile=str(cert_dir / "tls.crt"), ssl_keyfile=str(cert_dir / "tls.key"),
            ssl_context_factory=lambda config, default: certificate.base, loop="asyncio", http="httptools",
            lifespan="off", log_config=None, access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("in-process server did not start")
            time.sleep(0.05)
        return self

    def client(self) -> ApiServerClient:
        return ApiServerClient(self.port, self.ca_file)

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class SecretVolume:
    """The layout kubelet gives a Secret volume: files -> ``..data`` -> a timestamped directory."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir()
        self.generation = 0

    def publish(self, bundle: certs.Bundle) -> Path:
        self.generation += 1
        target = self.root / f"..2026_11_26_{self.generation:02d}"
        target.mkdir()
        for name, data in (("ca.crt", bundle.ca_pem), ("tls.crt", bundle.cert_pem), ("tls.key", bundle.key_pem)):
            (target / name).write_bytes(data)
        staging = self.root / "..data_tmp"
        staging.symlink_to(target.name)
        os.replace(staging, self.root / "..data")  # atomic swap, as kubelet does
        for name in ("ca.crt", "tls.crt", "tls.key"):
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        return target
