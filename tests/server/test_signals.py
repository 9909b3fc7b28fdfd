"""Every signal has one meaning, whatever the worker count, and none drops a request unsaid.

SIGTERM drains (test_shutdown.py). SIGHUP reads the policy again and keeps serving. SIGINT and
SIGQUIT stop at once, but a request under way still gets its answer.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.server.abuse import KeepAliveClient, connect, head, read_answer
from tests.server.harness import WebhookProcess
from tests.server.pods import plane_pod, review
from webhook.core import conventions
from webhook.core.policy import default_policy_text

SECONDS = 20.0
CLIENTS = 6


def _ready_digest(server: WebhookProcess) -> str:
    with connect(server.port, server.ca_file) as sock:
        sock.sendall(head("GET", conventions.PATH_READYZ))
        status, _, body = read_answer(sock)
    assert status == 200, body
    return json.loads(body)["policy"]


def _under_load(server: WebhookProcess, during) -> list[KeepAliveClient]:
    """Keep-alive clients reviewing without pause while ``during()`` runs; then stopped."""
    clients = [KeepAliveClient(server.port, server.ca_file, SECONDS) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    time.sleep(0.5)
    during()
    time.sleep(0.5)
    for client in clients:
        client.stop.set()
        client.join(timeout=SECONDS)
    return clients


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_loses_no_request_and_keeps_serving(tmp_path, cert_dir, workers):
    """The measured failure: SIGHUP killed a one-worker server with 8 requests in flight."""
    server = WebhookProcess(cert_dir, tmp_path / "server.log", "--workers", workers, "--drain-seconds", "1").start()
    try:

        def hang_up() -> None:
            server.process.send_signal(signal.SIGHUP)
            time.sleep(1.0 if workers == "1" else 4.0)  # two workers: each replaced, the old one drained

        clients = _under_load(server, hang_up)
        assert server.process.poll() is None, server.log()[-2000:]
        assert sum(c.lost for c in clients) == 0, [c.lost for c in clients]
        assert sum(c.answered for c in clients) > 0
        assert server.client().review("/mutate", review(plane_pod()))["response"]["allowed"] is True
        assert "SIGHUP" in server.log()
    finally:
        server.stop()


def test_sighup_reads_the_policy_again_and_refuses_a_bad_one(tmp_path, cert_dir):
    policy = tmp_path / "policy.yaml"
    policy.write_text(default_policy_text())
    server = WebhookProcess(cert_dir, tmp_path / "server.log", "--policy", str(policy)).start()
    try:
        first = _ready_digest(server)
        policy.write_text(default_policy_text().replace("notMutated: warn", "notMutated: deny"))
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _ready_digest(server) == first and time.monotonic() < deadline:
            time.sleep(0.1)
        second = _ready_digest(server)
        assert second != first

        policy.write_text("images: [this is not a policy\n")
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "not valid" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        refused = [r for r in server.log_records() if r.get("msg", "").startswith("SIGHUP: the policy file is not valid")]
        assert refused and refused[0]["level"] == "error" and refused[0]["policy"] == second
        assert _ready_digest(server) == second  # the policy in use stays
        assert server.process.poll() is None
    finally:
        server.stop()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_sigint_and_sigquit_answer_the_request_under_way(tmp_path, cert_dir, sig):
    server = WebhookProcess(cert_dir, tmp_path / "server.log").start()
    body = json.dumps(review(plane_pod())).encode()
    with connect(server.port, server.ca_file) as sock:
        sock.sendall(head("POST", conventions.PATH_MUTATE, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]))
        sock.sendall(body[:100])
        time.sleep(0.3)
        server.process.send_signal(sig)
        time.sleep(0.5)
        sock.sendall(body[100:])
        status, _, answer = read_answer(sock, timeout=10)
    code = server.process.wait(timeout=SECONDS)
    server.stop()
    assert status == 200 and json.loads(answer)["response"]["allowed"] is True
    assert code == 0
    assert f"{sig.name}: stopping" in server.log()
