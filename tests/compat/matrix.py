"""The combinations ``make compat`` checks, and how their results are printed.

Kept free of any I/O so ``test_matrix.py`` can hold the list to its axes in ``make test``: a
combination dropped from here (or a version axis no combination covers any more) fails that test
instead of silently shrinking what the matrix proves.

Every library of a combination is pinned to an exact version: pip may not pick another, and the
table shows what ``pip freeze`` found installed, not what was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The libraries of a combination, in table order; each is installed as ``name==version``.
LIBRARIES = ("celery", "kombu", "amqp", "pika", "gunicorn", "uvicorn")
#: The checks, in table order (``checks.py`` runs them).
CHECKS = ("confirms", "bounded", "black-hole", "rotation-off", "pika-confirms")
OK, FAIL, NA = "ok", "FAIL", "n/a"
RAN, NOT_INSTALLABLE, SKIPPED = "ran", "not installable", "skipped"
#: Plane pins uvicorn 0.29.0 and runs gunicorn with ``uvicorn.workers.UvicornWorker``.
PLANE_UVICORN = "0.29.0"


@dataclass(frozen=True)
class Combo:
    """One row of the matrix. ``fallback`` runs instead when pip cannot install this one."""

    name: str
    python: str
    celery: str
    kombu: str
    amqp: str
    pika: str
    gunicorn: str
    uvicorn: str = PLANE_UVICORN
    fallback: Combo | None = None
    why: str = ""

    @property
    def pins(self) -> dict[str, str]:
        return {library: getattr(self, library) for library in LIBRARIES}

    def requirements(self) -> list[str]:
        return [f"{library}=={version}" for library, version in self.pins.items()]

    def key(self, python_version: str) -> str:
        """The cache key of its virtual environment: the interpreter's full version and every pin."""
        return "-".join([f"py{python_version}", *(f"{lib}{version}" for lib, version in self.pins.items())])


#: What Plane resolves today (plane-backend README in ../shared/context, measured 2026-12-04): celery is
#: pinned, kombu and amqp are whatever pip picks.
PLANE_TODAY = Combo(
    "plane-today",
    "3.12",
    "5.4.0",
    "5.7.0",
    "5.4.2",
    "1.3.2",
    "23.0.0",
    why="what pip resolves for Plane's requirements today",
)

COMBOS: tuple[Combo, ...] = (
    PLANE_TODAY,
    Combo("kombu-5.4", "3.12", "5.4.0", "5.4.2", "5.2.0", "1.3.2", "22.0.0", why="the kombu the tests pin"),
    Combo("kombu-5.5", "3.12", "5.4.0", "5.5.4", "5.3.1", "1.4.4", "23.0.0", why="confirm_timeout appears"),
    Combo("kombu-5.6", "3.12", "5.4.0", "5.6.2", "5.4.2", "1.4.4", "22.0.0"),
    Combo(
        "today-amqp-5.3",
        "3.12",
        "5.4.0",
        "5.7.0",
        "5.3.1",
        "1.4.4",
        "23.0.0",
        why="an operator who pins py-amqp 5.3 on top of today's resolution",
        fallback=Combo("kombu-5.6-amqp-5.3", "3.12", "5.4.0", "5.6.2", "5.3.1", "1.4.4", "23.0.0"),
    ),
    Combo("celery-5.5", "3.12", "5.5.3", "5.5.4", "5.3.1", "1.3.2", "23.0.0", why="latest celery 5.5"),
    Combo("celery-5.6", "3.12", "5.6.3", "5.6.2", "5.4.2", "1.4.4", "23.0.0", why="latest celery 5.6"),
    Combo("py3.11-today", "3.11", "5.4.0", "5.7.0", "5.4.2", "1.3.2", "23.0.0"),
    Combo("py3.11-oldest", "3.11", "5.4.0", "5.4.2", "5.2.0", "1.3.2", "22.0.0"),
    Combo("py3.13-today", "3.13", "5.4.0", "5.7.0", "5.4.2", "1.4.4", "23.0.0"),
    Combo("py3.13-celery-5.6", "3.13", "5.6.3", "5.6.2", "5.2.0", "1.3.2", "22.0.0"),
    Combo("newest", "3.13", "5.7.0", "5.7.0", "5.4.2", "1.4.4", "27.0.1", why="the next versions Plane may resolve"),
)

#: What the list must cover (issue 17): axis -> versions (a version covers itself and its patch releases).
REQUIRED = {
    "python": ("3.11", "3.12", "3.13"),
    "kombu with celery 5.4.0": ("5.4", "5.5", "5.6", "5.7"),
    "celery": ("5.4.0", "5.5", "5.6"),
    "amqp": ("5.2", "5.3", "5.4"),
    "pika": ("1.3", "1.4"),
    "gunicorn": ("22", "23"),
}


def effective(combos: tuple[Combo, ...] = COMBOS) -> list[Combo]:
    """The combinations that can be counted on to run: a primary that declares a fallback may not install."""
    return [combo.fallback or combo for combo in combos]


def _covers(version: str, wanted: str) -> bool:
    return version == wanted or version.startswith(wanted + ".")


def covered(combos: list[Combo]) -> dict[str, set[str]]:
    """For each axis of ``REQUIRED``, the wanted versions some combination covers."""
    seen: dict[str, set[str]] = {axis: set() for axis in REQUIRED}
    for combo in combos:
        values = {
            "python": combo.python,
            "kombu with celery 5.4.0": combo.kombu if combo.celery == "5.4.0" else "",
            "celery": combo.celery,
            "amqp": combo.amqp,
            "pika": combo.pika,
            "gunicorn": combo.gunicorn,
        }
        for axis, wanted in REQUIRED.items():
            seen[axis].update(w for w in wanted if values[axis] and _covers(values[axis], w))
    return seen


def gaps(combos: tuple[Combo, ...] = COMBOS) -> list[str]:
    """What ``REQUIRED`` asks for that no effective combination covers, one line each."""
    seen = covered(effective(combos))
    return [f"{axis} {w}" for axis, wanted in REQUIRED.items() for w in wanted if w not in seen[axis]]


# ---------------------------------------------------------------------------------------------
# Results and the table


@dataclass
class Row:
    """One printed row: a combination that ran, could not be installed, or was skipped."""

    combo: Combo
    status: str
    #: ``python`` and every library: as installed (``pip freeze``) when it ran, else as asked.
    versions: dict[str, str]
    results: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    #: Why each check that did not pass failed (printed under the table).
    details: dict[str, str] = field(default_factory=dict)
    #: What the hook said about this combination that deserves a reader's eye (a patch it left out).
    notes: list[str] = field(default_factory=list)
    #: Every ``plane-guard:`` line of its processes (``--verbose`` prints them).
    said: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status == RAN and any(self.results.get(check, FAIL) == FAIL for check in CHECKS)


def requested(combo: Combo, python_version: str | None = None) -> dict[str, str]:
    return {"python": python_version or combo.python, **combo.pins}


HEADERS = ("combo", "python", *LIBRARIES, *CHECKS)


def table(rows: list[Row]) -> str:
    """Aligned columns; a row that did not run says why in place of its check columns."""
    cells = []
    for row in rows:
        front = [row.combo.name, row.versions.get("python", ""), *(row.versions.get(lib, "") for lib in LIBRARIES)]
        if row.status == RAN:
            cells.append([*front, *(row.results.get(check, FAIL) for check in CHECKS)])
        else:
            cells.append([*front, f"{row.status}: {row.reason}" if row.reason else row.status])
    widths = [len(header) for header in HEADERS]
    for line in cells:
        for index, cell in enumerate(line[:-1]):  # a row's last cell is never padded
            widths[index] = max(widths[index], len(cell))
    text = []
    for line in [list(HEADERS), *cells]:
        padded = [cell.ljust(widths[index]) for index, cell in enumerate(line[:-1])]
        text.append("  ".join([*padded, line[-1]]).rstrip())
    return "\n".join(text)


def last_line(rows: list[Row]) -> str:
    """``combos=N failed=M``: N counts the rows that ran; not installable and skipped ones are neither."""
    ran = [row for row in rows if row.status == RAN]
    return f"combos={len(ran)} failed={sum(row.failed for row in ran)}"


def exit_code(rows: list[Row]) -> int:
    return 1 if any(row.failed for row in rows) else 0
