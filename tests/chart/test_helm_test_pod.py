"""The ``helm test`` pod's check, run here as the pod runs it: its command line, taken from the
rendered chart, against a real ``plane-guard serve`` over TLS, with the pod's environment
pointed at the local server (as the Service would route it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chart.support import CHART, template
from tests.server.harness import ROOT, WebhookProcess


def _certs(out: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "certs", "generate", "--out", str(out), "--days", "2", "--ip", "127.0.0.1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("helm-test")
    process = WebhookProcess(_certs(work / "certs"), work / "server.log").start()
    try:
        yield process
    finally:
        process.stop()


def _test_pod(values: tuple = ()) -> dict:
    (pod,) = [d for d in template(*values) if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    return pod


def _run(pod: dict, url: str, ca_file: Path) -> subprocess.CompletedProcess[str]:
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WEBHOOK_URL"] == "https://plane-guard.plane-guard.svc:443"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    assert env["CA_FILE"] == f"{mount['mountPath']}/ca.crt"
    env.update(WEBHOOK_URL=url, CA_FILE=str(ca_file), PATH=os.environ["PATH"])
    command = container["command"]
    assert command[0] == "python3"
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=60)


def test_the_test_pod_sees_the_webhook_answer(server: WebhookProcess) -> None:
    done = _run(_test_pod(), f"https://127.0.0.1:{server.port}", server.ca_file)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "GET /readyz: 200" in done.stdout and "POST /mutate: 200, allowed=True" in done.stdout
    assert done.stdout.rstrip().endswith("plane-guard answers")
    # It reached the real server: the review is in the decision log.
    assert any(d.get("pod") == "helm-test" for d in server.decisions())


def test_the_test_pod_fails_on_a_certificate_from_another_ca(server: WebhookProcess, tmp_path: Path) -> None:
    other = _certs(tmp_path / "other")
    done = _run(_test_pod(), f"https://127.0.0.1:{server.port}", other / "ca.crt")
    assert done.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in done.stderr


def test_the_test_pod_fails_when_nothing_answers(tmp_path: Path) -> None:
    ca = _certs(tmp_path / "certs") / "ca.crt"
    done = _run(_test_pod(), "https://127.0.0.1:1", ca)
    assert done.returncode != 0 and "Connection refused" in done.stderr


def test_the_test_pod_mounts_only_the_ca_and_fits_the_restricted_profile() -> None:
    pod = _test_pod((CHART / "ci" / "existing-secret-values.yaml",))
    (volume,) = pod["spec"]["volumes"]
    assert volume["secret"]["secretName"] == "my-webhook-tls" and volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert pod["spec"]["automountServiceAccountToken"] is False
    (container,) = pod["spec"]["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True and pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
