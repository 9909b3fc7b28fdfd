"""``certs generate``: the files, their names and addresses.

``certs bootstrap`` runs against a real kube-apiserver, under the real RBAC, in
``tests/apiserver/test_certs_bootstrap.py``.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import ssl
import stat
import subprocess
import sys

from cryptography import x509

from tests.server.harness import ROOT

NAMES = [
    "plane-guard",
    "plane-guard.plane-guard",
    "plane-guard.plane-guard.svc",
    "plane-guard.plane-guard.svc.cluster.local",
]


def _generate(out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "webhook.cli", "certs", "generate", "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def test_generate_writes_a_ca_and_a_serving_pair(tmp_path):
    result = _generate(tmp_path / "certs", "--days", "10")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "certs"
    assert stat.S_IMODE(os.stat(out / "tls.key").st_mode) == 0o600
    ca_pem = (out / "ca.crt").read_bytes()
    assert base64.b64decode(result.stdout.strip()) == ca_pem

    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sans == NAMES
    assert dt.timedelta(days=9) < cert.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(days=10)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    # The pair loads as a server identity.
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(out / "tls.crt", out / "tls.key")


def test_generate_for_another_service(tmp_path):
    assert _generate(tmp_path, "--service", "guard", "--namespace", "ops").returncode == 0
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "guard.ops.svc" in sans


def test_generate_refuses_to_overwrite_without_force(tmp_path):
    assert _generate(tmp_path).returncode == 0
    before = (tmp_path / "tls.key").read_bytes()
    refused = _generate(tmp_path)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert (tmp_path / "tls.key").read_bytes() == before
    forced = _generate(tmp_path, "--force")
    assert forced.returncode == 0 and (tmp_path / "tls.key").read_bytes() != before


def test_generate_with_ip_addresses_for_a_webhook_reached_by_url(tmp_path):
    result = _generate(tmp_path, "--ip", "127.0.0.1", "--ip", "::1")
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == NAMES
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    # kube-apiserver calling https://127.0.0.1 with this certificate: tests/apiserver.


def test_generate_refuses_a_bad_ip(tmp_path):
    result = _generate(tmp_path, "--ip", "localhost")
    assert result.returncode == 2 and "--ip 'localhost' is not an IPv4 or IPv6 address" in result.stderr
    assert not (tmp_path / "tls.key").exists()
