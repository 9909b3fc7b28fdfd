"""``certs generate`` files and ``certs bootstrap`` against an API-server-like HTTP server."""

from __future__ import annotations

import base64
import datetime as dt
import os
import ssl
import stat
import subprocess
import sys

import pytest
from cryptography import x509

from tests.server.fake_apiserver import FakeApiServer
from tests.server.harness import ROOT
from webhook import certs, conventions

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
    assert dt.timedelta(days=9) < cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=10)
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


# --------------------------------------------------------------------------- bootstrap


def _webhook_configuration(kind: str, prefix: str) -> dict:
    path = "/mutate" if kind.startswith("Mutating") else "/validate"
    hooks = []
    for suffix, label in (("", "enabled"), ("audit.", "audit")):
        hook = {
            "name": f"{suffix}{prefix}.plane-guard.io",
            "admissionReviewVersions": ["v1", "v1beta1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "clientConfig": {
                "service": {"name": "plane-guard", "namespace": "plane-guard", "path": path + ("/audit" if suffix else ""), "port": 443}
            },
            "namespaceSelector": {"matchLabels": {conventions.INJECT: label}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
        }
        if kind.startswith("Mutating"):
            hook["reinvocationPolicy"] = "IfNeeded"
        hooks.append(hook)
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": "plane-guard"}, "webhooks": hooks}


@pytest.fixture
def apiserver():
    with FakeApiServer() as server:
        server.put(_webhook_configuration("MutatingWebhookConfiguration", "mutate"))
        server.put(_webhook_configuration("ValidatingWebhookConfiguration", "validate"))
        yield server


def _clients(apiserver: FakeApiServer):
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = apiserver.url
    api = client.ApiClient(configuration)
    return client.CoreV1Api(api), client.AdmissionregistrationV1Api(api)


def _run(apiserver: FakeApiServer, renew_before_days: int = 30, days: int = 365) -> dict:
    core, admission = _clients(apiserver)
    return certs.bootstrap(
        core, admission, service="plane-guard", namespace="plane-guard", secret=conventions.TLS_SECRET,
        mutating=conventions.MUTATING_WEBHOOK_CONFIGURATION, validating=conventions.VALIDATING_WEBHOOK_CONFIGURATION,
        days=days, renew_before_days=renew_before_days,
    )


def _secret(apiserver):
    secret = apiserver.get("Secret", conventions.TLS_SECRET, "plane-guard")
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}, secret


def _bundles(apiserver) -> list[list[bytes]]:
    found = []
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in apiserver.get(kind, "plane-guard")["webhooks"]:
            found.append(certs.split_pems(base64.b64decode(hook["clientConfig"]["caBundle"])))
    return found


def _norm(pem: bytes) -> bytes:
    return pem.strip()


def test_bootstrap_creates_the_secret_and_fills_every_ca_bundle(apiserver):
    done = _run(apiserver)
    assert done == {"mutating-webhook": "updated", "validating-webhook": "updated", "secret": "created"}
    data, secret = _secret(apiserver)
    assert secret["type"] == "kubernetes.io/tls"
    assert certs.secret_problem(data, "plane-guard", "plane-guard", dt.timedelta(days=30)) is None
    bundles = _bundles(apiserver)
    assert len(bundles) == 4
    assert all([_norm(p) for p in bundle] == [_norm(data["ca.crt"])] for bundle in bundles)
    # Only caBundle changed: the rest of each webhook is as applied.
    hook = apiserver.get("MutatingWebhookConfiguration", "plane-guard")["webhooks"][1]
    assert hook["clientConfig"]["service"]["path"] == "/mutate/audit" and hook["reinvocationPolicy"] == "IfNeeded"
    # The client really sent JSON patches for the configurations.
    assert ("PATCH", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/plane-guard",
            "application/json-patch+json") in apiserver.writes()


def test_bootstrap_is_idempotent(apiserver):
    _run(apiserver)
    writes = len(apiserver.writes())
    assert _run(apiserver) == {"mutating-webhook": "unchanged", "validating-webhook": "unchanged", "secret": "unchanged"}
    assert len(apiserver.writes()) == writes


def test_rotation_keeps_the_old_ca_until_it_is_replaced_twice(apiserver):
    _run(apiserver)
    first, _ = _secret(apiserver)
    writes_before = len(apiserver.writes())

    # Renew everything that expires within 400 days: the 365-day certificate is due.
    done = _run(apiserver, renew_before_days=400, days=500)
    assert done["secret"].startswith("renewed")
    second, _ = _secret(apiserver)
    assert second["ca.crt"] != first["ca.crt"]
    for bundle in _bundles(apiserver):
        assert [_norm(p) for p in bundle] == [_norm(second["ca.crt"]), _norm(first["ca.crt"])]
    # Trust was published before the new certificate: configurations first, Secret last.
    kinds = [path.rsplit("/", 2)[-2] for _, path, _ in apiserver.writes()[writes_before:]]
    assert kinds == ["mutatingwebhookconfigurations", "validatingwebhookconfigurations", "secrets"]
    # Both the old and the new serving certificates verify against the published bundle.
    bundle = b"".join(_bundles(apiserver)[0])
    for data in (first, second):
        context = ssl.create_default_context(cadata=bundle.decode())
        cert = x509.load_pem_x509_certificate(data["tls.crt"])
        issuer = next(x509.load_pem_x509_certificate(p) for p in certs.split_pems(bundle)
                      if x509.load_pem_x509_certificate(p).subject == cert.issuer)
        cert.verify_directly_issued_by(issuer)
        assert context.cert_store_stats()["x509_ca"] == 2

    _run(apiserver, renew_before_days=600, days=700)
    third, _ = _secret(apiserver)
    for bundle in _bundles(apiserver):
        assert [_norm(p) for p in bundle] == [_norm(third["ca.crt"]), _norm(second["ca.crt"])]


def test_bootstrap_repairs_a_bundle_that_lost_the_ca(apiserver):
    _run(apiserver)
    config = apiserver.get("ValidatingWebhookConfiguration", "plane-guard")
    config["webhooks"][0]["clientConfig"].pop("caBundle")
    apiserver.put(config)
    done = _run(apiserver)
    assert done == {"mutating-webhook": "unchanged", "validating-webhook": "updated", "secret": "unchanged"}
    data, _ = _secret(apiserver)
    assert all(_norm(bundle[0]) == _norm(data["ca.crt"]) for bundle in _bundles(apiserver))


def test_bootstrap_command_with_a_kubeconfig(apiserver, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(apiserver.kubeconfig())
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    env["KUBECONFIG"] = str(kubeconfig)
    command = [sys.executable, "-m", "webhook.cli", "certs", "bootstrap"]
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "secret=created" in first.stdout
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "secret=unchanged" in again.stdout


def test_bootstrap_command_without_webhook_configurations(tmp_path):
    with FakeApiServer() as empty:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(empty.kubeconfig())
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
        env["KUBECONFIG"] = str(kubeconfig)
        result = subprocess.run([sys.executable, "-m", "webhook.cli", "certs", "bootstrap"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "apply the plane-guard manifests first" in result.stderr
        assert empty.writes() == []
