"""The real control plane, one per test session, for every test in this directory.

Every test here is marked ``apiserver`` (``pytest -m apiserver`` runs exactly them). Without
the envtest binaries they skip, and the reason says how to get them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.apiserver.cluster import ControlPlane, find_assets

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.apiserver)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory):
    """etcd + kube-apiserver (+ kube-controller-manager when available), stopped at session end."""
    assets, reason = find_assets()
    if assets is None:
        pytest.skip(reason)
    plane = ControlPlane(assets, tmp_path_factory.mktemp("control-plane")).start()
    try:
        yield plane
    finally:
        plane.stop()
