"""The matrix definition and its output, checked in ``make test`` (fast, no network, no broker).

The heavy part (``make compat``) runs only on request; what keeps it honest between runs is this:
the list cannot lose an axis of issue 17 or the versions Plane resolves today without a test
failing, and the table and last line keep the shape scripts and the README rely on.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.compat import envs, matrix
from tests.compat.matrix import COMBOS, FAIL, NA, NOT_INSTALLABLE, OK, PLANE_TODAY, RAN, SKIPPED, Combo, Row

REPO = Path(__file__).resolve().parents[2]


def test_every_axis_of_the_issue_is_covered():
    assert matrix.gaps() == []


def test_a_dropped_axis_is_reported():
    """The guard itself works: removing the kombu 5.5 row leaves a gap that names it."""
    without = tuple(
        c for c in COMBOS if not c.kombu.startswith("5.5.") and not (c.fallback or c).kombu.startswith("5.5.")
    )
    assert "kombu with celery 5.4.0 5.5" in matrix.gaps(without)


def test_a_primary_that_may_not_install_does_not_count_its_fallback_does():
    primary = Combo("x", "3.12", "5.4.0", "5.7.0", "5.3.1", "1.4.4", "23.0.0")
    fallback = Combo("y", "3.12", "5.4.0", "5.6.2", "5.2.0", "1.4.4", "23.0.0")
    seen = matrix.covered(matrix.effective((dataclasses.replace(primary, fallback=fallback),)))
    assert "5.2" in seen["amqp"] and "5.3" not in seen["amqp"]


def test_at_least_ten_combinations_run_and_names_and_venvs_are_distinct():
    runs = matrix.effective()
    assert len(runs) >= 10
    everything = [*COMBOS, *(c.fallback for c in COMBOS if c.fallback)]
    assert len({c.name for c in everything}) == len(everything)
    assert len({c.key("3.12.1") for c in everything if c.python == "3.12"}) == sum(
        c.python == "3.12" for c in everything
    )


def test_what_plane_resolves_today_is_in_the_list():
    assert PLANE_TODAY in COMBOS and PLANE_TODAY.fallback is None
    assert (PLANE_TODAY.python, PLANE_TODAY.celery, PLANE_TODAY.amqp) == ("3.12", "5.4.0", "5.4.2")
    assert PLANE_TODAY.kombu.startswith("5.7.")
    assert (PLANE_TODAY.gunicorn, PLANE_TODAY.uvicorn) == ("23.0.0", "0.29.0")


def test_every_library_is_pinned_to_one_exact_version():
    for combo in [*COMBOS, *(c.fallback for c in COMBOS if c.fallback)]:
        assert combo.python in ("3.11", "3.12", "3.13"), combo.name
        assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in combo.pins.values()), combo
        assert combo.requirements() == [f"{lib}=={combo.pins[lib]}" for lib in matrix.LIBRARIES]


# ---------------------------------------------------------------------------------------------
# Output


def _row(name: str, status: str = RAN, results: dict[str, str] | None = None, reason: str = "") -> Row:
    combo = dataclasses.replace(PLANE_TODAY, name=name)
    versions = matrix.requested(combo, "3.12.1")
    return Row(combo, status, versions, results=results or dict.fromkeys(matrix.CHECKS, OK), reason=reason)


def test_the_table_has_one_aligned_row_per_combination_and_says_why_one_did_not_run():
    rows = [
        _row("plane-today"),
        _row("broken", results={**dict.fromkeys(matrix.CHECKS, OK), "bounded": FAIL, "pika-confirms": NA}),
        _row("today-amqp-5.3", NOT_INSTALLABLE, {}, "kombu 5.7.0 depends on amqp>=5.4.2; instead: kombu-5.6-amqp-5.3"),
        _row("py3.13-today", SKIPPED, {}, "Python 3.13 is not installed"),
    ]
    lines = matrix.table(rows).splitlines()
    assert lines[0].split() == ["combo", "python", *matrix.LIBRARIES, *matrix.CHECKS]
    assert len(lines) == 1 + len(rows)
    assert lines[1].split() == [
        "plane-today",
        "3.12.1",
        "5.4.0",
        "5.7.0",
        "5.4.2",
        "1.3.2",
        "23.0.0",
        "0.29.0",
        *["ok"] * 5,
    ]
    assert lines[2].split()[-5:] == ["ok", "FAIL", "ok", "ok", "n/a"]
    for header in ("python", "kombu", "confirms", "bounded", "pika-confirms"):
        column = lines[0].index(header)
        assert all(line[column - 2 : column] == "  " for line in lines[:3]), header
    assert lines[3].endswith("not installable: kombu 5.7.0 depends on amqp>=5.4.2; instead: kombu-5.6-amqp-5.3")
    assert lines[3].index("not installable") == lines[0].index("confirms")
    assert lines[4].endswith("skipped: Python 3.13 is not installed")
    assert matrix.last_line(rows) == "combos=2 failed=1"
    assert matrix.exit_code(rows) == 1


def test_the_last_line_counts_only_what_ran():
    assert matrix.last_line([_row("a"), _row("b")]) == "combos=2 failed=0"
    assert matrix.exit_code([_row("a"), _row("b", SKIPPED, {}, "no Python")]) == 0
    assert matrix.last_line([_row("a", NOT_INSTALLABLE, {}, "conflict")]) == "combos=0 failed=0"
    assert _row("missing-check", results={"confirms": OK}).failed, "a check without a verdict is a failure"


PIP_CONFLICT = """\
INFO: pip is looking at multiple versions of kombu to determine which version is compatible with other requirements.
ERROR: Cannot install amqp==5.3.1 and kombu==5.7.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    The user requested amqp==5.3.1
    kombu 5.7.0 depends on amqp>=5.4.2

To fix this you could try to:
1. loosen the range of package versions you've specified

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
"""


def test_pips_reason_is_one_short_line():
    assert envs.pip_reason(PIP_CONFLICT) == "kombu 5.7.0 depends on amqp>=5.4.2"
    assert envs.pip_reason("ERROR: No matching distribution found for pika==9.9.9\n").startswith("No matching")


def test_the_freeze_is_read_with_pips_names():
    assert envs.parse_freeze("Celery==5.4.0\npython_dateutil==2.9.0\n-e git+x#egg=y\n") == {
        "celery": "5.4.0",
        "python-dateutil": "2.9.0",
    }


def test_a_missing_prerequisite_exits_2_and_names_it(tmp_path):
    env = {**os.environ, "RABBITMQ_BIN": str(tmp_path / "no-rabbitmq")}
    done = subprocess.run(
        [sys.executable, "-m", "tests.compat", "--cache", str(tmp_path / "cache")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "RabbitMQ is missing" in done.stderr or "needs root" in done.stderr
    assert not (tmp_path / "cache").exists()
