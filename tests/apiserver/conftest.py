"""The real control plane, one per test session, and plane-guard installed in it.

Every test in this directory is marked ``apiserver`` (``pytest -m apiserver`` runs exactly
them). Without the envtest binaries they skip, and the reason says how to get them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import install, plane
from tests.apiserver.cluster import ControlPlane, find_assets
from tests.apiserver.stored import NAMESPACES
from tests.install.conftest import render
from tests.server.harness import WebhookProcess
from webhook.core.policy import Policy, load_policy

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.apiserver)


_STARTED: list[ControlPlane] = []


def pytest_terminal_summary(terminalreporter) -> None:
    for cluster in _STARTED:
        terminalreporter.write_line(f"tests/apiserver: {cluster.describe_timings()}, {cluster.server}")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory):
    """etcd + kube-apiserver (+ kube-controller-manager when available), stopped at session end."""
    assets, reason = find_assets()
    if assets is None:
        pytest.skip(reason)
    cluster = ControlPlane(assets, tmp_path_factory.mktemp("control-plane")).start()
    _STARTED.append(cluster)
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Installation:
    """overlays/self-signed as applied, and the local ``plane-guard serve`` its webhooks call."""

    documents: list[dict[str, Any]]
    server: WebhookProcess
    base_url: str
    ca_bundle: str
    policy_file: Path
    policy: Policy


@pytest.fixture(scope="session")
def installed(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("plane-guard")
    documents = render("overlays/self-signed")
    policy_file = work / "policy.yaml"
    policy_file.write_text(install.policy_text(documents))
    with install.local_webhook(work, documents, policy_file, days=30) as local:
        control_plane.kubectl("apply", "-f", "-", input=install.stream(local.documents))
        for mode, name in NAMESPACES.items():
            control_plane.create_namespace(name, {"plane-guard.io/inject": mode} if mode else None)
            control_plane.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts", plane.service_account())
        yield Installation(local.documents, local.server, local.base_url, local.ca_bundle, policy_file, load_policy(policy_file))
