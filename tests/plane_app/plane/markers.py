"""What the app records for the tests: one line per step in ``PLANE_FAKE_MARKERS`` (if set)."""

import os


def record(line):
    path = os.environ.get("PLANE_FAKE_MARKERS")
    if path:
        with open(path, "a", encoding="utf-8") as markers:
            markers.write(line + "\n")
