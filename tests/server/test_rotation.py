"""Certificate rotation under load: the files change like a Secret volume, no request fails."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.server.harness import ApiServerClient, SecretVolume, WebhookProcess
from tests.server.pods import plane_pod, review
from webhook.ops import certs

MAX_SECONDS = 20.0
MAX_REQUESTS = 6000


def _fingerprint(cert_pem: bytes) -> str:
    return hashlib.sha256(x509.load_pem_x509_certificate(cert_pem).public_bytes(Encoding.DER)).hexdigest()


class Load:
    """Requests without pause on a keep-alive connection, reconnecting every 25 requests."""

    def __init__(self, port: int, bundle_file: Path):
        self.client = ApiServerClient(port, bundle_file, timeout=10)
        self.failures: list[str] = []
        self.requests = 0
        self.seen: list[str] = []  # certificate fingerprints, one per connection
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.deadline = time.monotonic() + MAX_SECONDS

    def _run(self) -> None:
        pod = plane_pod()
        while not self.stop.is_set() and self.requests < MAX_REQUESTS and time.monotonic() < self.deadline:
            if self.requests % 25 == 0:
                self.client.close()
                try:
                    self.seen.append(self.client.peer_fingerprint())
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    self.failures.append(f"handshake: {exc!r}")
                    continue
            request = review(pod)
            self.requests += 1
            try:
                answer = self.client.review("/mutate", request)
                if answer["response"]["uid"] != request["request"]["uid"] or not answer["response"]["allowed"]:
                    self.failures.append("wrong answer")
            except Exception as exc:  # noqa: BLE001
                self.failures.append(repr(exc))
        self.client.close()

    def wait_for(self, fingerprint: str) -> bool:
        while time.monotonic() < self.deadline and self.thread.is_alive():
            if fingerprint in self.seen:
                return True
            time.sleep(0.05)
        return fingerprint in self.seen


@pytest.fixture
def rotation(tmp_path):
    volume = SecretVolume(tmp_path / "tls")
    first = certs.generate("plane-guard", "plane-guard", 30)
    second = certs.generate("plane-guard", "plane-guard", 30)
    third = certs.generate("plane-guard", "plane-guard", 30)
    volume.publish(first)
    # What bootstrap publishes before a swap: every CA the server may present.
    bundle_file = tmp_path / "bundle.crt"
    bundle_file.write_bytes(first.ca_pem + second.ca_pem + third.ca_pem)
    (volume.root / "bundle.crt").write_bytes(bundle_file.read_bytes())
    server = WebhookProcess(
        volume.root, tmp_path / "server.log", "--cert-check-interval", "0.2",
        cert_file=volume.root / "tls.crt", key_file=volume.root / "tls.key",
    )
    server.ca_file = bundle_file
    server.start()
    yield server, volume, bundle_file, (first, second, third)
    server.stop()


def test_secret_volume_swap_under_load(rotation):
    server, volume, bundle_file, (first, second, _) = rotation
    load = Load(server.port, bundle_file)
    load.thread.start()
    assert load.wait_for(_fingerprint(first.cert_pem))
    time.sleep(0.5)
    volume.publish(second)
    assert load.wait_for(_fingerprint(second.cert_pem)), "new handshakes never saw the new certificate"
    time.sleep(0.5)  # keep going after the swap
    load.stop.set()
    load.thread.join(timeout=MAX_SECONDS)

    assert load.failures == []
    assert load.requests > 50
    index = load.seen.index(_fingerprint(second.cert_pem))
    assert set(load.seen[index:]) == {_fingerprint(second.cert_pem)}  # no going back
    client = server.client()
    try:
        ready = client.get("/readyz")
        assert ready[0] == 200 and b'"reloads":1' in ready[1]
    finally:
        client.close()


def test_half_written_pair_is_not_used(rotation):
    """cert-manager style in-place writes: certificate first, key a moment later."""
    server, volume, bundle_file, (first, _, third) = rotation
    load = Load(server.port, bundle_file)
    load.thread.start()
    assert load.wait_for(_fingerprint(first.cert_pem))
    current = volume.root / "..data"
    (current / "tls.crt").write_bytes(third.cert_pem)  # the key still belongs to the first pair
    time.sleep(1.0)  # five checks with a mismatched pair
    client = server.client()
    try:
        assert client.peer_fingerprint() == _fingerprint(first.cert_pem)
        assert b"does not match the certificate; still serving the previous certificate" in client.get("/readyz")[1]
    finally:
        client.close()
    (current / "tls.key").write_bytes(third.key_pem)
    assert load.wait_for(_fingerprint(third.cert_pem))
    load.stop.set()
    load.thread.join(timeout=MAX_SECONDS)
    assert load.failures == []


def test_clients_without_sni_also_get_the_new_certificate(tmp_path):
    """kubelet probes connect by IP and send no SNI; the swap must reach them too."""
    import socket
    import ssl

    from webhook.serve.tls import ServingCertificate

    first, second = certs.generate("plane-guard", "plane-guard", 5), certs.generate("plane-guard", "plane-guard", 5)
    certs.write_files(first, tmp_path)
    serving = ServingCertificate(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept(count: int) -> None:
        for _ in range(count):
            conn, _ = listener.accept()
            with conn:
                try:
                    with serving.base.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1)
                except (OSError, ssl.SSLError):
                    pass

    thread = threading.Thread(target=accept, args=(2,), daemon=True)
    thread.start()

    def presented() -> str:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:  # no server_hostname: no SNI
                der = tls.getpeercert(binary_form=True)
                tls.send(b"x")
        return hashlib.sha256(der).hexdigest()

    try:
        assert presented() == _fingerprint(first.cert_pem)
        certs.write_files(second, tmp_path)
        assert serving.check() is True
        assert presented() == _fingerprint(second.cert_pem)
    finally:
        thread.join(timeout=10)
        listener.close()


def _leaf(not_before: dt.datetime, not_after: dt.datetime) -> tuple[bytes, bytes]:
    """A pair (certificate, key) for the Service name, valid only between the two times."""
    leaf = trustme.CA().issue_cert("plane-guard.plane-guard.svc", not_before=not_before, not_after=not_after)
    return leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes()


def _reload_warnings(server: WebhookProcess) -> list[dict]:
    return [r for r in server.log_records() if r.get("msg", "").startswith("certificate reload failed")]


@pytest.mark.parametrize(
    "window, reason",
    [
        ((-30, -1), "expired at"),  # days from now
        ((2, 30), "not valid before"),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_a_certificate_outside_its_validity_is_never_switched_to(rotation, window, reason):
    server, volume, _, (first, _, _) = rotation
    now = dt.datetime.now(dt.UTC)
    cert, key = _leaf(now + dt.timedelta(days=window[0]), now + dt.timedelta(days=window[1]))
    volume.publish(certs.Bundle(ca_pem=first.ca_pem, cert_pem=cert, key_pem=key))
    time.sleep(1.5)  # several checks (--cert-check-interval 0.2)
    client = server.client()
    try:
        assert client.peer_fingerprint() == _fingerprint(first.cert_pem)
        status, body = client.get("/readyz")
        assert status == 200 and reason.encode() in body
    finally:
        client.close()
    warnings = _reload_warnings(server)
    assert len(warnings) == 1, warnings  # once, not on every check
    assert warnings[0]["level"] == "warning" and reason in warnings[0]["reason"]


def test_a_mismatched_pair_is_logged_once_then_a_good_pair_is_used(rotation):
    server, volume, bundle_file, (first, second, third) = rotation
    mixed = certs.Bundle(ca_pem=second.ca_pem, cert_pem=second.cert_pem, key_pem=third.key_pem)
    volume.publish(mixed)
    time.sleep(1.0)
    warnings = _reload_warnings(server)
    assert len(warnings) == 1 and "does not match" in warnings[0]["reason"]
    volume.publish(second)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        client = server.client()
        try:
            if client.peer_fingerprint() == _fingerprint(second.cert_pem):
                break
        finally:
            client.close()
        time.sleep(0.1)
    else:
        raise AssertionError("the good pair was never used")
    assert len(_reload_warnings(server)) == 1
