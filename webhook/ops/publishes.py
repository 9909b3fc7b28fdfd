"""``plane-guard publishes``: the publishes that raised, may be lost, or were slow, read from logs.

plane-guard's start-up hook, inside each guarded Plane process, writes one JSON line on stderr for
every publish that was not a plain success, and a summary when a process that published exits
(``webhook/runtime/python/plane_guard_hooks/accounting.py`` writes them; schema version 1)::

    {"plane_guard":"publish","v":1,"outcome":"raised","library":"kombu","task":...,"pod":...,"pid":7,...}
    {"plane_guard":"publish-summary","v":1,"published":1520,"counts":{"late":3,...},"dropped":0,...}

This command reads such lines from ``kubectl logs`` output (files, or stdin), whatever prefix
comes before the JSON (``kubectl --prefix`` or ``--timestamps``, CRI or podman log files, Docker's
json-file lines), and counts them per workload and pod. Every other line is ignored.

Per process (pod, container from the ``[pod/NAME/CONTAINER]`` prefix when there is one, and pid),
a summary's counts are the truth: they include the events whose lines the hook's rate limit
dropped. Without a summary, the event lines are counted, and the lines they say were dropped
(their ``dropped`` field) are ``unreported``: their outcome is unknown. How many publishes a
process made is known only from its summary.

Standard library only. Memory is bounded: the input is read line by line, a line longer than
``MAX_LINE_BYTES`` is skipped (and counted as unreadable when it carries a plane-guard line), and
at most ``MAX_PROCESSES`` processes and ``MAX_TASKS`` task names are told apart. Every value taken
from the input is cut to ``MAX_CHARS`` characters and stripped of escape sequences, control
characters and spaces before it is printed, so a log line cannot forge the output.

Exit 0: nothing raised or may be lost. 1: a publish raised, continued past its bound, stayed
unconfirmed, has an outcome this command does not know, or lines went unreported. 2: bad usage
or an unreadable file (a message on stderr, nothing on stdout).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

#: Version of the ``-o json`` object.
SCHEMA = 1
#: Highest version of the log lines this command knows; a higher one is read by its known keys.
LINE_VERSION = 1
OUTCOMES = ("late", "retried", "raised", "continued", "unconfirmed")
#: Outcomes whose publish raised or may be lost (any outcome this command does not know, too).
LOSS = ("raised", "continued", "unconfirmed")
MAX_CHARS = 63
MAX_LINE_BYTES = 1 << 20
MAX_PROCESSES = 50_000
MAX_TASKS = 10_000
#: Distinct unknown outcome names kept apart; the rest are counted as ``OTHER_OUTCOME``.
MAX_OUTCOME_NAMES = 20
TOP_TASKS = 10
#: Row and task that collect what comes after a cap is hit.
OVERFLOW = "(others)"
OTHER_OUTCOME = "(other)"
EMPTY_HINT = (
    "plane-guard writes a line only for a publish that was not a plain success (late, retried, raised, "
    "continued, unconfirmed), and a summary when a process that published exits, and only in the pods it "
    "guards (plane-guard status lists them)"
)

MARKER = re.compile(r'\{\s*"plane_guard"\s*:')
KUBECTL_PREFIX = re.compile(r"\s*\[pod/([^/\]\s]+)/([^\]\s]*)\]")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z\Z")
#: ANSI/VT escape sequences: CSI (colours, cursor moves; also its 8-bit form), OSC (titles, hyperlinks), two-byte escapes.
ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[ -~]?)|\x9b[0-?]*[ -/]*[@-~]?")
_DECODER = json.JSONDecoder()


class PublishesError(Exception):
    """An input that cannot be read: exit 2 with this message."""


@dataclass(frozen=True)
class Options:
    """What to read (paths; ``-`` is stdin; none: stdin) and how to print it (``table`` or ``json``)."""

    files: tuple[str, ...] = ()
    output: str = "table"


def clean(value: Any, limit: int = MAX_CHARS) -> str:
    """``value`` as one safe, short token: escape sequences removed, other control or invisible
    characters as ``?``, whitespace as ``_``, cut to ``limit`` characters (ending ``...``)."""
    text = ESCAPES.sub("", str(value)[: limit * 8])
    text = "".join(c if c.isprintable() and not c.isspace() else "_" if c.isspace() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _name(value: Any) -> str | None:
    """A name from a line (workload, pod, task): a non-empty string, cleaned; else None."""
    return clean(value) if isinstance(value, str) and value else None


def _count(value: Any) -> int | None:
    """A count from a line: an int of 0 or more (not a bool); else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass
class Process:
    """One process's lines. A summary closes what came before it (a pid reused later starts anew)."""

    summaries: int = 0
    published: int = 0
    closed: Counter = field(default_factory=Counter)  # the summaries' counts
    open: Counter = field(default_factory=Counter)  # event lines since the last summary
    open_lines: int = 0
    unreported: int = 0  # lines dropped since the last summary
    pooled: bool = False  # the overflow process: its summaries' counts are not taken

    def event(self, outcome: str, dropped: int) -> None:
        self.open[outcome] += 1
        self.open_lines += 1
        self.unreported += dropped

    def summary(self, published: int, counts: Counter) -> None:
        self.summaries += 1
        self.published += published
        if not self.pooled:
            self.closed.update(counts)
            self.open.clear()
            self.open_lines = 0
            self.unreported = 0

    @property
    def instances(self) -> int:
        return self.summaries + (1 if self.open_lines or self.unreported else 0)


@dataclass
class Row:
    """Counts of one (workload, pod), or the totals."""

    workload: str | None
    pod: str | None
    processes: int = 0
    summarized: int = 0
    published: int = 0
    counts: Counter = field(default_factory=Counter)
    unreported: int = 0

    def add(self, process: Process) -> None:
        self.processes += process.instances
        self.summarized += process.summaries
        self.published += process.published
        self.counts.update(process.closed)
        self.counts.update(process.open)
        self.unreported += process.unreported

    def merge(self, row: Row) -> None:
        self.processes += row.processes
        self.summarized += row.summarized
        self.published += row.published
        self.counts.update(row.counts)
        self.unreported += row.unreported

    def published_text(self) -> str:
        """The number published: ``-`` with no summary, ``N+`` when some processes had none."""
        if not self.summarized:
            return "-"
        return str(self.published) + ("+" if self.summarized < self.processes else "")

    def as_json(self, outcomes: Iterable[str]) -> dict[str, Any]:
        return {
            "processes": self.processes,
            "summaries": self.summarized,
            "published": self.published if self.summarized else None,
            "published_complete": bool(self.summarized) and self.summarized == self.processes,
            "counts": {name: self.counts[name] for name in outcomes},
            "unreported": self.unreported,
        }


@dataclass(frozen=True)
class Task:
    """A task name (kombu), or for a publish without one (pika) its library, exchange and routing key."""

    task: str | None
    library: str | None
    exchange: str | None
    routing_key: str | None

    def label(self) -> str:
        if self.task is not None:
            return self.task
        if self.exchange is None and self.routing_key is None:
            return "-"
        return f'exchange "{self.exchange or ""}" routing key "{self.routing_key or ""}"'


class Tally:
    """Reads lines and counts them; ``report()`` gives what to print."""

    def __init__(self, max_processes: int = MAX_PROCESSES, max_tasks: int = MAX_TASKS) -> None:
        self.max_processes = max_processes
        self.max_tasks = max_tasks
        self.processes: dict[tuple[str | None, str | None, str | None, int | None], Process] = {}
        self.tasks: dict[Task, Counter] = {}
        self.unknown_outcomes: set[str] = set()
        self.events = 0
        self.summaries = 0
        self.unreadable = 0
        self.too_long = 0
        self.newer_versions: set[int] = set()
        self.first: str | None = None
        self.last: str | None = None
        self.processes_capped = False
        self.tasks_capped = False

    # ------------------------------------------------------------------ reading

    def read(self, stream: IO[bytes]) -> None:
        """Every line of a binary stream, one at a time (a line is at most ``MAX_LINE_BYTES``)."""
        while True:
            line = stream.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                marked = b"plane_guard" in line
                while line and not line.endswith(b"\n"):
                    line = stream.readline(MAX_LINE_BYTES)
                if marked:
                    self.unreadable += 1
                    self.too_long += 1
                continue
            self.feed(line)

    def feed(self, line: bytes | str) -> None:
        """One log line: counted when it carries a plane-guard publish line, else ignored."""
        if isinstance(line, bytes):
            if b"plane_guard" not in line:
                return
            line = line.decode("utf-8", "replace")
        elif "plane_guard" not in line:
            return
        if line.lstrip().startswith('{"log":'):  # Docker's json-file driver: the line is a string in it
            try:
                wrapped = json.loads(line)
            except (ValueError, RecursionError):
                wrapped = None
            if isinstance(wrapped, dict) and isinstance(wrapped.get("log"), str):
                line = wrapped["log"]
        prefix = KUBECTL_PREFIX.match(line)  # type: ignore[arg-type]
        found = False
        for attempt, marker in enumerate(MARKER.finditer(line)):  # type: ignore[arg-type]
            found = True
            if attempt == 3:
                break
            try:
                value, _ = _DECODER.raw_decode(line, marker.start())  # type: ignore[arg-type]
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict):
                if not self._take(value, prefix.group(1) if prefix else None, prefix.group(2) if prefix else None):
                    self.unreadable += 1
                return
        if found:
            self.unreadable += 1

    def _take(self, line: dict[str, Any], prefix_pod: str | None, container: str | None) -> bool:
        """Count one decoded line; False when it is a publish line that cannot be read."""
        kind = line.get("plane_guard")
        if kind not in ("publish", "publish-summary"):
            return True  # another kind of plane-guard line: not this command's
        version = _count(line.get("v"))
        if not version:
            return False
        if version > LINE_VERSION and len(self.newer_versions) < 10:
            self.newer_versions.add(version)
        if kind == "publish":
            outcome = line.get("outcome")
            if not isinstance(outcome, str) or not outcome:
                return False
            self._seen(line.get("ts"))
            self.events += 1
            name = self._outcome(outcome)
            process = self._process(line, prefix_pod, container)
            process.event(name, _count(line.get("dropped")) or 0)
            if name not in ("late", "retried"):
                self._task(line)[name] += 1
            return True
        published, counts = _count(line.get("published")), line.get("counts")
        if published is None or not isinstance(counts, dict):
            return False
        parsed: Counter = Counter()
        for outcome, value in counts.items():
            number = _count(value)
            if number is None or not outcome:
                return False
            if number:
                parsed[self._outcome(outcome)] += number
        self._seen(line.get("ts"))
        self.summaries += 1
        self._process(line, prefix_pod, container).summary(published, parsed)
        return True

    def _seen(self, ts: Any) -> None:
        if isinstance(ts, str) and TIMESTAMP.match(ts):
            self.first = ts if self.first is None or ts < self.first else self.first
            self.last = ts if self.last is None or ts > self.last else self.last

    def _outcome(self, outcome: str) -> str:
        if outcome in OUTCOMES:
            return outcome
        name = clean(outcome)
        if name in self.unknown_outcomes:
            return name
        if len(self.unknown_outcomes) < MAX_OUTCOME_NAMES:
            self.unknown_outcomes.add(name)
            return name
        self.unknown_outcomes.add(OTHER_OUTCOME)
        return OTHER_OUTCOME

    def _process(self, line: dict[str, Any], prefix_pod: str | None, container: str | None) -> Process:
        pid = line.get("pid")
        key = (
            _name(line.get("workload")),
            _name(line.get("pod")) or _name(prefix_pod),
            _name(container),
            pid if isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 1 << 32 else None,
        )
        process = self.processes.get(key)
        if process is None:
            if len(self.processes) >= self.max_processes:
                self.processes_capped = True
                key = (OVERFLOW, OVERFLOW, None, None)
                process = self.processes.get(key)
            if process is None:
                process = self.processes[key] = Process(pooled=key[0] == OVERFLOW and key[1] == OVERFLOW)
        return process

    def _task(self, line: dict[str, Any]) -> Counter:
        task = _name(line.get("task"))
        library = _name(line.get("library"))
        key = Task(task, library, None, None) if task else Task(
            None, library,
            clean(line["exchange"]) if isinstance(line.get("exchange"), str) else None,
            clean(line["routing_key"]) if isinstance(line.get("routing_key"), str) else None,
        )
        counts = self.tasks.get(key)
        if counts is None:
            if len(self.tasks) >= self.max_tasks:
                self.tasks_capped = True
                key = Task(OVERFLOW, None, None, None)
                counts = self.tasks.get(key)
            if counts is None:
                counts = self.tasks[key] = Counter()
        return counts

    # ------------------------------------------------------------------ the report

    def report(self) -> Report:
        rows: dict[tuple[str | None, str | None], Row] = {}
        for (workload, pod, _, _), process in self.processes.items():
            rows.setdefault((workload, pod), Row(workload, pod)).add(process)
        ordered = sorted(rows.values(), key=lambda r: (r.workload == OVERFLOW, r.workload or "", r.pod or ""))
        totals = Row(None, None)
        for row in ordered:
            totals.merge(row)
        unknown = sorted(name for name in self.unknown_outcomes if totals.counts[name])
        tasks = sorted(self.tasks.items(), key=lambda item: (-sum(item[1].values()), item[0].label(), item[0].library or ""))
        return Report(ordered, totals, [(task, counts) for task, counts in tasks if sum(counts.values())],
                      unknown, self.events, self.summaries, self.unreadable, self.first, self.last, self.notes())

    def notes(self) -> list[str]:
        """What the reader should know about the input itself (printed on stderr)."""
        notes = []
        if self.unreadable:
            longer = f", {self.too_long} of them longer than {MAX_LINE_BYTES} bytes" if self.too_long else ""
            notes.append(
                f"{self.unreadable} plane-guard publish line(s) could not be read (not JSON, cut short, or missing "
                f"their outcome or counts{longer}) and are not counted: check that the logs are whole "
                "(no --limit-bytes, no line cut by a log shipper)"
            )
        if self.newer_versions:
            versions = ", ".join(str(v) for v in sorted(self.newer_versions))
            notes.append(f"lines of schema version {versions}, newer than this command reads ({LINE_VERSION}), "
                         "were read by the keys it knows: upgrade plane-guard to read them fully")
        if self.processes_capped:
            notes.append(f"more than {self.max_processes} processes: the lines of the others are counted together "
                         f"in the row {OVERFLOW} (their event lines only)")
        if self.tasks_capped:
            notes.append(f"more than {self.max_tasks} tasks: the others are counted together as {OVERFLOW}")
        return notes


@dataclass
class Report:
    rows: list[Row]
    totals: Row
    tasks: list[tuple[Task, Counter]]
    unknown_outcomes: list[str]
    events: int
    summaries: int
    unreadable: int
    first: str | None
    last: str | None
    notes: list[str]

    @property
    def outcomes(self) -> list[str]:
        return [*OUTCOMES, *self.unknown_outcomes]

    def attention(self) -> list[str]:
        """One short phrase per reason to look: empty when nothing raised or may be lost (exit 0)."""
        counts, found = self.totals.counts, []
        if counts["raised"]:
            found.append(f"{counts['raised']} raised (the caller got an error)")
        for outcome in ("continued", "unconfirmed"):
            if counts[outcome]:
                found.append(f"{counts[outcome]} {outcome} (may be lost)")
        found += [f"{counts[name]} with unknown outcome {name}" for name in self.unknown_outcomes]
        if self.totals.unreported:
            found.append(f"{self.totals.unreported} unreported (lines dropped by the rate limit, in processes "
                         "without a summary: outcome unknown)")
        return found

    def verdict(self) -> str:
        if not self.events and not self.summaries:
            unreadable = f" ({self.unreadable} unreadable)" if self.unreadable else ""
            return f"no plane-guard publish lines found{unreadable}: {EMPTY_HINT}"
        attention = self.attention()
        if attention:
            return "needs attention: " + "; ".join(attention)
        slow = [f"{self.totals.counts[o]} {o}" for o in ("late", "retried") if self.totals.counts[o]]
        return "nothing raised or may be lost" + (
            f" ({', '.join(slow)}: confirmed, but the broker was slow or the connection was replaced)" if slow else "")


def as_json(report: Report) -> dict[str, Any]:
    outcomes = report.outcomes
    return {
        "schema": SCHEMA,
        "attention": bool(report.attention()),
        "verdict": report.verdict(),
        "reasons": report.attention(),
        "pods": [{"workload": row.workload, "pod": row.pod, **row.as_json(outcomes)} for row in report.rows],
        "tasks": [
            {
                "task": task.task,
                "library": task.library,
                "exchange": task.exchange,
                "routing_key": task.routing_key,
                "counts": {name: counts[name] for name in outcomes if name not in ("late", "retried")},
            }
            for task, counts in report.tasks
        ],
        "totals": report.totals.as_json(outcomes),
        "lines": {"events": report.events, "summaries": report.summaries, "first": report.first, "last": report.last},
        "unreadable_lines": report.unreadable,
        "notes": report.notes,
    }


def _columns(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows]


def _plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else words or word + 's'}"


def as_table(report: Report) -> str:
    if not report.events and not report.summaries:
        return report.verdict() + "\n"
    extra = [name.upper() for name in report.unknown_outcomes]
    header = ["WORKLOAD", "POD", "PUBLISHED", *(o.upper() for o in OUTCOMES), *extra, "UNREPORTED"]

    def cells(row: Row, workload: str, pod: str) -> list[str]:
        return [workload, pod, row.published_text(), *(str(row.counts[o]) for o in report.outcomes), str(row.unreported)]

    table = [header, *(cells(row, row.workload or "-", row.pod or "-") for row in report.rows)]
    table.append(cells(report.totals, "TOTAL", _plural(len(report.rows), "pod")))
    span = f", {report.first} to {report.last}" if report.first else ""
    lines = [f"publish lines: {_plural(report.events, 'event')}, {_plural(report.summaries, 'summary', 'summaries')}{span}", "",
             *_columns(table, set(range(2, len(header)))), "", report.verdict()]
    if report.tasks:
        loss = [*LOSS, *report.unknown_outcomes]
        shown = report.tasks[:TOP_TASKS]
        more = f", the first {TOP_TASKS} of {len(report.tasks)}" if len(report.tasks) > TOP_TASKS else ""
        lines += ["", f"tasks whose publishes raised or may be lost (from the event lines{more}):"]
        rows = [[*(name.upper() for name in loss), "LIBRARY", "TASK"]]
        rows += [[*(str(counts[name]) for name in loss), task.library or "-", task.label()] for task, counts in shown]
        lines += _columns(rows, set(range(len(loss))))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the command


def _open(path: str) -> IO[bytes]:
    try:
        return open(path, "rb")  # closed by gather
    except OSError as error:
        raise PublishesError(f"cannot read {path}: {error.strerror or error}; name a readable log file, or pipe the "
                             "logs in: kubectl logs -n plane -l app.name=plane-plane-api --prefix | plane-guard publishes") from None


def gather(options: Options, stdin: IO[bytes]) -> Tally:
    """Read every input in order; PublishesError when a file cannot be read."""
    tally = Tally()
    streams = [None if path == "-" else _open(path) for path in options.files] or [None]
    try:
        for path, stream in zip(options.files or ("-",), streams):
            try:
                tally.read(stdin if stream is None else stream)
            except OSError as error:
                raise PublishesError(f"cannot read {'stdin' if stream is None else path}: "
                                     f"{error.strerror or error}") from None
    finally:
        for stream in streams:
            if stream is not None:
                stream.close()
    return tally


def publishes_command(options: Options, stdin: IO[bytes] | None = None, stdout: IO[str] | None = None,
                      stderr: IO[str] | None = None) -> int:
    """Print the report (table or JSON); exit 1 when a publish raised or may be lost, 2 when nothing could be read."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    if options.output not in ("table", "json"):
        print(f"plane-guard publishes: unknown output {clean(options.output)!r}: use table or json", file=stderr)
        return 2
    if not options.files and stdin.isatty():
        print("plane-guard publishes: no input: pipe the logs in (kubectl logs -n plane -l app.name=plane-plane-api "
              "--prefix --since 1h | plane-guard publishes) or name log files (- for stdin)", file=stderr)
        return 2
    try:
        tally = gather(options, stdin)
    except PublishesError as error:
        print(f"plane-guard publishes: {error}", file=stderr)
        return 2
    report = tally.report()
    for note in report.notes:
        print(f"plane-guard publishes: note: {note}", file=stderr)
    if options.output == "json":
        stdout.write(json.dumps(as_json(report), indent=2) + "\n")
    else:
        stdout.write(as_table(report))
    return 1 if report.attention() else 0
