"""The images every container test runs, built (or found by their content tag) once per session."""

from __future__ import annotations

import pytest

from tests.containers import images as test_images
from tests.pods import remove_stale


@pytest.fixture(scope="session")
def images() -> test_images.Images:
    remove_stale()
    return test_images.ensure()
