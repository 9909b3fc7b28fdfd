"""TLS: AEAD suites only on TLS 1.2, an optional client certificate, and a worker's death reported as an error."""

from __future__ import annotations

import json
import os
import signal
import ssl
import time
from pathlib import Path

import pytest
import trustme

from tests.server.abuse import connect, head, post, read_answer
from tests.server.harness import WebhookProcess
from tests.server.pods import plane_pod, review
from webhook.core import conventions

CBC_SUITES = ["ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA"]
AEAD_SUITES = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"]


def _tls12(ca_file: Path, suite: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.set_ciphers(suite)
    except ssl.SSLError:
        pytest.skip(f"this OpenSSL cannot offer {suite}")
    return context


@pytest.mark.parametrize("suite", CBC_SUITES)
def test_tls12_cbc_suites_are_refused(enforce_server, suite):
    with pytest.raises(ssl.SSLError):
        connect(enforce_server.port, enforce_server.ca_file, context=_tls12(enforce_server.ca_file, suite)).close()


@pytest.mark.parametrize("suite", AEAD_SUITES)
def test_tls12_aead_suites_are_served(enforce_server, suite):
    with connect(enforce_server.port, enforce_server.ca_file, context=_tls12(enforce_server.ca_file, suite)) as sock:
        assert sock.version() == "TLSv1.2" and sock.cipher()[0] == suite
        sock.sendall(head())
        assert read_answer(sock)[0] == 200


def test_tls13_is_served(enforce_server):
    with connect(enforce_server.port, enforce_server.ca_file) as sock:
        assert sock.version() == "TLSv1.3"


@pytest.fixture(scope="module")
def client_ca(tmp_path_factory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("client-ca") / "ca.crt"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, cert_dir, client_ca):
    server = WebhookProcess(cert_dir, tmp_path_factory.mktemp("mtls") / "server.log", "--client-ca-file", str(client_ca[1])).start()
    yield server
    server.stop()


def _with_client_certificate(server: WebhookProcess, ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    ca.issue_cert("kube-apiserver").configure_cert(context)
    return context


def _mutate(sock: ssl.SSLSocket) -> tuple[int | None, bytes]:
    sock.sendall(post(conventions.PATH_MUTATE, json.dumps(review(plane_pod())).encode()))
    status, _, body = read_answer(sock)
    return status, body


def test_admission_requires_a_client_certificate(mtls_server):
    with connect(mtls_server.port, mtls_server.ca_file) as sock:
        status, body = _mutate(sock)
    assert status == 403 and "--client-ca-file" in json.loads(body)["message"]


def test_a_client_certificate_from_the_ca_is_accepted(mtls_server, client_ca):
    context = _with_client_certificate(mtls_server, client_ca[0])
    with connect(mtls_server.port, mtls_server.ca_file, context=context) as sock:
        status, body = _mutate(sock)
    assert status == 200 and json.loads(body)["response"]["allowed"] is True


def test_a_client_certificate_from_another_ca_fails_the_handshake(mtls_server):
    context = _with_client_certificate(mtls_server, trustme.CA())
    try:
        with connect(mtls_server.port, mtls_server.ca_file, context=context) as sock:
            # TLS 1.3: the server's verdict on a client certificate arrives after the client's handshake.
            status, _ = _mutate(sock)
    except (ssl.SSLError, ConnectionError):
        status = None
    assert status is None


def test_probes_need_no_client_certificate(mtls_server):
    """The kubelet has no client certificate: health and readiness stay open."""
    for path in (conventions.PATH_HEALTHZ, conventions.PATH_READYZ):
        with connect(mtls_server.port, mtls_server.ca_file) as sock:
            sock.sendall(head("GET", path))
            assert read_answer(sock)[0] == 200


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pytest.skip("needs /proc/<pid>/task/<pid>/children (Linux)")


def test_a_dead_worker_is_reported_as_an_error(tmp_path, cert_dir):
    server = WebhookProcess(cert_dir, tmp_path / "server.log", "--workers", "2").start()
    try:
        deadline = time.monotonic() + 20
        workers: list[int] = []
        while time.monotonic() < deadline:
            workers = [p for p in _children(server.process.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
            if len(workers) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        while time.monotonic() < deadline + 10:
            died = [r for r in server.log_records() if r.get("msg", "").startswith("a worker process died")]
            if died:
                break
            time.sleep(0.2)
        assert died and died[0]["level"] == "error" and died[0]["exit_code"] == -signal.SIGKILL
        client = server.client()
        try:
            assert client.get(conventions.PATH_HEALTHZ)[0] == 200
        finally:
            client.close()
    finally:
        assert server.stop() == 0
