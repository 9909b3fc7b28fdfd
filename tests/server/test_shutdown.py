"""SIGTERM: readiness turns false, every connection is closed after an answer (none dropped), exit 0."""

from __future__ import annotations

import json
import time

from tests.server.abuse import KeepAliveClient, connect, head, read_answer, wait_closed
from tests.server.harness import WebhookProcess
from webhook.core import conventions

DRAIN = 2.0
CLIENTS = 8
MAX_SECONDS = 20.0


def test_sigterm_under_keep_alive_load_loses_no_request(tmp_path, cert_dir):
    server = WebhookProcess(cert_dir, tmp_path / "server.log", "--drain-seconds", str(DRAIN)).start()
    clients = [KeepAliveClient(server.port, server.ca_file, MAX_SECONDS) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    time.sleep(0.5)
    server.process.terminate()
    code = server.process.wait(timeout=MAX_SECONDS)
    for client in clients:
        client.stop.set()
        client.join(timeout=MAX_SECONDS)
    server.stop()

    assert code == 0
    assert sum(c.lost for c in clients) == 0, [c.lost for c in clients]
    assert all(c.answered > 0 and c.closes > 0 for c in clients)  # each was told to close, none was cut
    log = server.log()
    assert "Finished server process" in log
    uids = [d["uid"] for d in server.decisions()]
    assert len(uids) == sum(c.answered for c in clients)  # every decision line flushed before exit


def test_readiness_is_false_while_draining(tmp_path, cert_dir):
    server = WebhookProcess(cert_dir, tmp_path / "server.log", "--drain-seconds", "3").start()
    try:
        with connect(server.port, server.ca_file) as pooled:
            pooled.sendall(head())
            assert read_answer(pooled)[0] == 200
            server.process.terminate()
            deadline = time.monotonic() + 5
            while True:
                with connect(server.port, server.ca_file) as probe:
                    probe.sendall(head("GET", conventions.PATH_READYZ))
                    status, headers, body = read_answer(probe)
                if status == 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert status == 503 and "draining" in json.loads(body)["problems"][0]
            assert headers["connection"] == "close"
            # The pooled connection was not dropped: its next request is answered, with close.
            pooled.sendall(head())
            status, headers, _ = read_answer(pooled)
            assert status == 200 and headers["connection"] == "close"
        assert server.process.wait(timeout=MAX_SECONDS) == 0
    finally:
        server.stop()


def test_an_idle_silent_client_does_not_hold_up_the_exit(tmp_path, cert_dir):
    """The measured case: one idle keep-alive client made the shutdown wait the full grace period."""
    server = WebhookProcess(cert_dir, tmp_path / "server.log", "--drain-seconds", "1", "--graceful-timeout", "60").start()
    with connect(server.port, server.ca_file) as idle:
        idle.sendall(head())
        assert read_answer(idle)[0] == 200
        started = time.monotonic()
        server.process.terminate()  # the client never answers the TLS close_notify
        code = server.process.wait(timeout=MAX_SECONDS)
        elapsed = time.monotonic() - started
        assert wait_closed(idle, seconds=5) is not None
    server.stop()
    assert code == 0
    assert elapsed < 30, f"exit took {elapsed:.1f} s with --graceful-timeout 60"


def test_a_second_sigterm_ends_the_drain(tmp_path, cert_dir):
    server = WebhookProcess(cert_dir, tmp_path / "server.log", "--drain-seconds", "60").start()
    server.process.terminate()
    time.sleep(0.5)
    server.process.terminate()
    assert server.process.wait(timeout=MAX_SECONDS) == 0
    server.stop()


def test_the_deployment_gives_the_whole_shutdown_its_time():
    """preStop, drain, graceful timeout and the TLS close fit in terminationGracePeriodSeconds."""
    import yaml

    from tests.server.harness import ROOT
    from webhook import cli
    from webhook.serve.connections import TLS_SHUTDOWN_TIMEOUT

    deployment = yaml.safe_load((ROOT / "manifests" / "base" / "deployment.yaml").read_text())
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    args = cli._parser().parse_args([*container["command"][1:], *container["args"]])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + args.drain_seconds + args.graceful_timeout + TLS_SHUTDOWN_TIMEOUT
    assert args.drain_seconds > 0
    assert needed < spec["terminationGracePeriodSeconds"]
