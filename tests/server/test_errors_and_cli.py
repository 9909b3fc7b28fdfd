"""An internal error never blocks a pod (unless --on-error deny); serve refuses bad start-up input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.server.harness import ROOT, InProcessServer, labels, metric_samples
from tests.server.pods import plane_pod, review
from webhook.core import conventions
from webhook.core.admission import INTERNAL_ERROR_WARNING
from webhook.core.policy import default_policy
from webhook.serve.app import Settings, create_app


def _broken_core(pod, policy, **_):
    raise KeyError("a plane-guard bug")


@pytest.mark.parametrize("path", [conventions.PATH_MUTATE, conventions.PATH_VALIDATE])
def test_internal_error_admits_the_pod_with_a_warning(cert_dir, path):
    app = create_app(Settings(), default_policy(), mutate=_broken_core, validate=_broken_core)
    with InProcessServer(app, cert_dir) as server:
        client = server.client()
        webhook = path.strip("/")
        before = metric_samples(client.get("/metrics")[1].decode(), "plane_guard_internal_errors_total")
        request = review(plane_pod())
        response = client.review(path, request)["response"]
        assert response == {"uid": request["request"]["uid"], "allowed": True, "warnings": [INTERNAL_ERROR_WARNING]}
        after = metric_samples(client.get("/metrics")[1].decode(), "plane_guard_internal_errors_total")
        assert after[labels(webhook=webhook)] == before.get(labels(webhook=webhook), 0) + 1
        assert client.get("/healthz")[0] == 200
        client.close()


def test_a_bug_outside_the_core_also_admits_the_pod(cert_dir):
    app = create_app(Settings(), default_policy())

    def broken_decide(*args):
        raise RuntimeError("bug in the decision plumbing")

    app.admission_endpoint.admission.decide = broken_decide
    with InProcessServer(app, cert_dir) as server:
        client = server.client()
        request = review(plane_pod())
        response = client.review(conventions.PATH_MUTATE, request)["response"]
        assert response == {"uid": request["request"]["uid"], "allowed": True, "warnings": [INTERNAL_ERROR_WARNING]}
        client.close()


def test_on_error_deny(cert_dir):
    app = create_app(Settings(on_error="deny"), default_policy(), mutate=_broken_core)
    with InProcessServer(app, cert_dir) as server:
        client = server.client()
        response = client.review(conventions.PATH_MUTATE, review(plane_pod(), "admission.k8s.io/v1beta1"))["response"]
        assert response["allowed"] is False
        assert response["status"]["code"] == 500
        assert "--on-error deny" in response["status"]["message"]
        client.close()


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "webhook.cli", "serve", "--host", "127.0.0.1", "--port", "1", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def test_serve_refuses_a_bad_policy(cert_dir, tmp_path):
    bad = tmp_path / "policy.yaml"
    bad.write_text("apiVersion: plane-guard.io/v1\nkind: Policy\nroles: {}\nbogus: 1\n")
    result = _serve("--policy", str(bad), "--cert-file", str(cert_dir / "tls.crt"), "--key-file", str(cert_dir / "tls.key"))
    assert result.returncode == 2
    assert "invalid policy" in result.stderr and "bogus" in result.stderr


def test_serve_refuses_missing_certificates(tmp_path):
    result = _serve("--cert-file", str(tmp_path / "tls.crt"), "--key-file", str(tmp_path / "tls.key"))
    assert result.returncode == 2
    assert "plane-guard certs generate" in result.stderr


def test_serve_refuses_a_mismatched_key(cert_dir, tmp_path):
    from webhook.ops import certs

    other = tmp_path / "other"
    certs.write_files(certs.generate("plane-guard", "plane-guard", 1), other)
    result = _serve("--cert-file", str(cert_dir / "tls.crt"), "--key-file", str(other / "tls.key"))
    assert result.returncode == 2
    assert "matching PEM pair" in result.stderr
