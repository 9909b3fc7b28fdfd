"""Skip, naming the missing tool, the tests whose real parts are not on this machine.

Markers (declared in pyproject.toml): ``broker``, ``root``, ``containers``, ``promtool`` and ``helm``; what
each needs is in ``tools/prerequisites.py``, which ``make test`` runs first to install what it can.
"""

from __future__ import annotations

import pytest

from tools import prerequisites

MARKERS = ("broker", "root", "containers", "promtool", "helm")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons: dict[str, str | None] = {}
    for item in items:
        for marker in MARKERS:
            if item.get_closest_marker(marker) is None:
                continue
            if marker not in reasons:
                reasons[marker] = prerequisites.skip_reason(marker)
            if reasons[marker]:
                item.add_marker(pytest.mark.skip(reason=reasons[marker]))
                break
