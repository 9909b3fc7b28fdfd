"""Fixtures: certificates, and plane-guard servers (enforce, audit, deny policy, tight limits) for the session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.harness import WebhookProcess
from webhook.core.policy import default_policy_text
from webhook.ops import certs


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    certs.write_files(certs.generate("plane-guard", "plane-guard", 30), out)
    return out


def _start(tmp_path_factory: pytest.TempPathFactory, cert_dir: Path, name: str, *extra: str):
    logs = tmp_path_factory.mktemp(name)
    server = WebhookProcess(cert_dir, logs / "server.log", *extra).start()
    return server


@pytest.fixture(scope="session")
def enforce_server(tmp_path_factory, cert_dir):
    server = _start(tmp_path_factory, cert_dir, "enforce")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def audit_server(tmp_path_factory, cert_dir):
    server = _start(tmp_path_factory, cert_dir, "audit", "--mode", "audit")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def deny_policy(tmp_path_factory) -> Path:
    text = default_policy_text()
    for rule in ("notMutated", "gunicornMaxRequestsOutOfBounds", "amqpHeartbeatDisabled"):
        assert f"{rule}: warn" in text
        text = text.replace(f"{rule}: warn", f"{rule}: deny")
    text = text.replace("unknownAmqpQueryKey: warn", "unknownAmqpQueryKey: audit")
    path = tmp_path_factory.mktemp("policy") / "deny.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def deny_server(tmp_path_factory, cert_dir, deny_policy):
    server = _start(tmp_path_factory, cert_dir, "deny", "--policy", str(deny_policy))
    yield server
    server.stop()


@pytest.fixture
def client(enforce_server):
    client = enforce_server.client()
    yield client
    client.close()


#: Connection limits small enough to hit quickly in a test.
TIGHT = (
    "--max-header-bytes", "4096", "--max-headers", "20",
    "--header-timeout", "1", "--body-timeout", "1", "--idle-timeout", "1",
)


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory, cert_dir):
    """A server of its own per test module, with TIGHT limits."""
    server = _start(tmp_path_factory, cert_dir, "tight", *TIGHT)
    yield server
    server.stop()
