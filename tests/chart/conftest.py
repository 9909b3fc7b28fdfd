"""The tests in tests/chart need the real helm: marked ``helm`` here, skipped (naming helm and
``make helm``) by tests/conftest.py where there is none. test_prerequisite.py, which checks how
helm is found and installed, needs none."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if HERE in path.parents and path.name != "test_prerequisite.py":
            item.add_marker(pytest.mark.helm)
