"""``plane-guard publishes``: the lines of plane-guard's hook read back from logs.

The exit codes, files, stdin and what reaches the terminal are checked on the real command in its
own process (``.venv/bin/plane-guard publishes``); the counting rules directly on ``Tally``.
Fixture logs are in tests/fixtures/publishes/.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from webhook.ops import publishes
from webhook.ops.publishes import MAX_CHARS, MAX_LINE_BYTES, OVERFLOW, Options, Tally, as_json, as_table, clean

PLANE_GUARD = Path(sys.executable).parent / "plane-guard"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "publishes"
KUBECTL = FIXTURES / "kubectl-prefix-timestamps.log"
SUMMARY = FIXTURES / "summary-wins.log"
RUNTIMES = FIXTURES / "runtimes.log"
API_A, API_B = "plane-api-wl-5d9b7d44b9-27khd", "plane-api-wl-5d9b7d44b9-8xq2m"
WORKER = "plane-worker-wl-6bf99c7c4f-mb6bc"


def run(*args: str, stdin: str | bytes = b"") -> subprocess.CompletedProcess:
    """``plane-guard publishes ARGS`` as a user runs it, from the venv's console script."""
    assert PLANE_GUARD.exists(), f"{PLANE_GUARD}: run make venv"
    result = subprocess.run(
        [str(PLANE_GUARD), "publishes", *args],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True, timeout=120, check=False,
    )
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    assert "Traceback" not in result.stderr, result.stderr
    return result


def event(outcome: str = "raised", **fields) -> str:
    line = {"plane_guard": "publish", "v": 1, "outcome": outcome, "library": "kombu", "task": "plane.bgtasks.t",
            "id": "1", "exchange": "", "routing_key": "celery", "waited_s": 10.0, "attempts": 1, "bound_s": 10.0,
            "error": None, "workload": "plane-api-wl", "pod": API_A, "pid": 8, "ts": "2026-12-04T17:30:00.123Z"}
    return json.dumps({**line, **fields}, separators=(",", ":"))


def summary(published: int = 10, pid: int = 8, pod: str = API_A, **counts) -> str:
    line = {"plane_guard": "publish-summary", "v": 1, "published": published,
            "counts": {**dict.fromkeys(publishes.OUTCOMES, 0), **counts}, "dropped": 0,
            "workload": "plane-api-wl", "pod": pod, "pid": pid, "ts": "2026-12-04T17:35:00.000Z"}
    return json.dumps(line, separators=(",", ":"))


def tally(*lines: str, **limits) -> Tally:
    counted = Tally(**limits)
    counted.read(io.BytesIO("".join(line + "\n" for line in lines).encode()))
    return counted


def pods(result_or_report) -> dict[str, dict]:
    data = json.loads(result_or_report.stdout) if hasattr(result_or_report, "stdout") else as_json(result_or_report)
    return {row["pod"]: row for row in data["pods"]}


# --------------------------------------------------------------------------- reading real log shapes


def test_kubectl_prefix_and_timestamps_table_and_exit_1():
    result = run(str(KUBECTL))
    assert result.returncode == 1, result
    lines = result.stdout.splitlines()
    assert lines[0] == "publish lines: 4 events, 0 summaries, 2026-12-04T17:30:01.199Z to 2026-12-04T17:31:19.870Z"
    header = lines[2].split()
    assert header == ["WORKLOAD", "POD", "PUBLISHED", "LATE", "RETRIED", "RAISED", "CONTINUED", "UNCONFIRMED", "UNREPORTED"]
    rows = {line.split()[1]: line.split() for line in lines[3:5]}
    assert rows[API_A] == ["plane-api-wl", API_A, "-", "1", "0", "1", "0", "0", "0"]
    # the pod of lines whose "pod" is null comes from kubectl's [pod/NAME/CONTAINER] prefix
    assert rows[API_B] == ["plane-api-wl", API_B, "-", "0", "1", "1", "0", "0", "0"]
    assert lines[5].split() == ["TOTAL", "2", "pods", "-", "1", "1", "2", "0", "0", "0"]
    assert lines[7] == "needs attention: 2 raised (the caller got an error)"
    assert lines[-1].split() == ["2", "0", "0", "kombu", "plane.bgtasks.issue_activities_task.issue_activity"]
    assert result.stderr == ""


def test_container_runtime_prefixes_docker_json_and_spaced_json():
    report = tally(*RUNTIMES.read_text().splitlines()).report()
    rows = pods(report)
    assert set(rows) == {"plane-beat-worker-wl-7b4cd64577-rj2f5", "plane-webhook-consumer-wl-5c6d7e8f9-q2w3e", WORKER}
    assert rows["plane-beat-worker-wl-7b4cd64577-rj2f5"]["counts"] == {
        "late": 1, "retried": 1, "raised": 0, "continued": 0, "unconfirmed": 0}  # CRI line and Docker json-file line
    assert rows[WORKER]["counts"]["late"] == 1  # journald prefix, whitespace inside the JSON
    # a pika publish has no task: it is named by exchange and routing key
    (task, counts), = report.tasks
    assert (task.library, task.label(), counts["unconfirmed"]) == ("pika", 'exchange "plane.webhooks" routing key "webhook.send"', 1)
    assert report.unreadable == 0


def test_same_pid_in_two_containers_of_one_pod_are_two_processes():
    a = "[pod/p-1/api] " + summary(published=5, pid=1, pod="p-1", raised=1)
    b = "[pod/p-1/sidecar] " + event("late", pid=1, pod=None)
    row = pods(tally(b, a).report())["p-1"]  # one process, the summary would replace the event line
    assert (row["processes"], row["counts"]["raised"], row["counts"]["late"], row["published"]) == (2, 1, 1, 5)
    assert row["published_complete"] is False


# --------------------------------------------------------------------------- counting rules


def test_summary_wins_over_event_lines_and_dropped_lines_are_unreported():
    result = run(str(SUMMARY), "-o", "json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    row = pods(result)[WORKER]
    # pid 7: 3 lines (4 more dropped), then its summary: 6 raised and 2 late are the truth;
    # pid 7 again after its summary (a new process): 1 continued; pid 12: 1 unconfirmed, 2 dropped lines
    assert row["counts"] == {"late": 2, "retried": 0, "raised": 6, "continued": 1, "unconfirmed": 1}
    assert (row["processes"], row["summaries"], row["published"], row["unreported"]) == (3, 1, 500, 2)
    assert row["published_complete"] is False
    tasks = {t["task"]: t["counts"] for t in data["tasks"]}
    assert tasks == {"plane.bgtasks.webhook_task.send_webhook": {"raised": 2, "continued": 0, "unconfirmed": 1},
                     "plane.bgtasks.instance_task.register_instance": {"raised": 0, "continued": 1, "unconfirmed": 0}}
    assert data["reasons"] == ["6 raised (the caller got an error)", "1 continued (may be lost)", "1 unconfirmed (may be lost)",
                               "2 unreported (lines dropped by the rate limit, in processes without a summary: outcome unknown)"]
    table = run(str(SUMMARY))
    assert table.stdout.splitlines()[3].split()[2] == "500+"  # some processes left no summary


def test_dropped_lines_without_a_summary_need_attention_and_a_summary_settles_them():
    late = event("late", dropped=7)
    open_report = tally(late).report()
    assert (open_report.totals.unreported, open_report.attention()) == (
        7, ["7 unreported (lines dropped by the rate limit, in processes without a summary: outcome unknown)"])
    settled = tally(late, summary(published=40, late=8)).report()
    assert (settled.totals.unreported, settled.totals.counts["late"], settled.attention()) == (0, 8, [])
    assert settled.verdict() == "nothing raised or may be lost (8 late: confirmed, but the broker was slow or the connection was replaced)"


def test_newer_schema_is_read_by_known_keys_with_one_note():
    lines = [event("raised", v=2, new_field={"x": 1}, pod=f"p-{n}") for n in range(3)]
    result = run("-o", "json", stdin="\n".join(lines) + "\n")
    assert result.returncode == 1
    assert json.loads(result.stdout)["totals"]["counts"]["raised"] == 3
    assert result.stderr.count("schema version 2, newer than this command reads (1)") == 1
    assert len(result.stderr.splitlines()) == 1


def test_unknown_outcome_counted_under_its_name_and_needs_attention():
    result = run(stdin=event("late") + "\n" + event("vanished", task="plane.bgtasks.v") + "\n")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[2].split()[-2:] == ["VANISHED", "UNREPORTED"]
    assert lines[3].split()[-2:] == ["1", "0"]
    assert "needs attention: 1 with unknown outcome vanished" in lines
    assert lines[-1].split() == ["0", "0", "0", "1", "kombu", "plane.bgtasks.v"]


def test_other_plane_guard_kinds_and_other_lines_are_ignored():
    report = tally('{"plane_guard":"hook","v":1,"message":"ready"}', "plane_guard is a word in a sentence", "").report()
    assert (report.events, report.summaries, report.unreadable) == (0, 0, 0)


# --------------------------------------------------------------------------- broken and hostile input


def test_broken_lines_are_counted_in_one_note_never_quoted():
    broken = [
        '{"plane_guard":"publish","v":1,"outcome":"raised","task":"SECRET-TOKEN-1"',  # cut short
        '[pod/p/c] {"plane_guard":"publish","v":"one","outcome":"raised","task":"SECRET-TOKEN-2"}',  # bad v
        '{"plane_guard":"publish","v":1,"task":"SECRET-TOKEN-3"}',  # no outcome
        '{"plane_guard":"publish-summary","v":1,"published":3,"counts":{"raised":"SECRET-TOKEN-4"}}',
        '{"plane_guard":"publish","v":1,"x":' + "[" * 200_000 + "]" * 200_000 + "}",  # deeper than json can go
    ]
    result = run("-o", "json", stdin="\n".join([*broken, event("late")]) + "\n")
    assert result.returncode == 0, result
    data = json.loads(result.stdout)
    assert (data["unreadable_lines"], data["totals"]["counts"]["late"], data["attention"]) == (5, 1, False)
    assert result.stderr.count("\n") == 1 and "5 plane-guard publish line(s) could not be read" in result.stderr
    assert "SECRET" not in result.stderr + result.stdout


def test_a_line_longer_than_the_cap_is_skipped_and_the_next_one_read():
    huge = '{"plane_guard":"publish","v":1,"outcome":"raised","task":"' + "x" * (MAX_LINE_BYTES + 10) + '"}'
    plain = "y" * (MAX_LINE_BYTES * 2)
    counted = tally(huge, plain, event("late"))
    assert (counted.unreadable, counted.too_long, counted.events) == (1, 1, 1)
    assert f"longer than {MAX_LINE_BYTES} bytes" in counted.notes()[0]


HOSTILE_POD = "\x1b[2J\x1b[31mevil\npod\rTOTAL   9 pods   999\x1b]0;owned\x07\u202e\x9b31m"
HOSTILE_TASK = "\x1b[1A\nneeds attention: none" + "A" * 200_000


def hostile_input() -> str:
    return "\n".join([
        event("raised", pod=HOSTILE_POD, workload="w\tx\x00y\u2028z", task=HOSTILE_TASK),
        event("\x1b[32mfine\x1b[0m\nnothing", pod="q" * 200_000, task="t"),
        "[pod/\x1b[31mred/c] " + event("continued", pod=None, library="\x1b]8;;http://x\x07link"),
    ]) + "\n"


def assert_safe(text: str) -> None:
    for char in text:
        assert char == "\n" or (char.isprintable() and unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp")), repr(char)


def test_hostile_values_cannot_forge_the_table():
    result = run(stdin=hostile_input())
    assert result.returncode == 1
    assert_safe(result.stdout)
    assert_safe(result.stderr)
    lines = result.stdout.splitlines()
    # title, blank, header, 3 pods, TOTAL, blank, verdict, blank, task title, task header, 3 tasks
    assert len(lines) == 15, lines
    assert [line.split()[:2] for line in lines[3:7]] == [
        ["plane-api-wl", "q" * 60 + "..."], ["plane-api-wl", "red"], ["w_x?y_z", "evil_pod_TOTAL___9_pods___999?"], ["TOTAL", "3"]]
    assert max(len(token) for token in result.stdout.split()) <= MAX_CHARS
    assert "evil_pod_TOTAL___9_pods___999" in result.stdout and "needs attention: none" not in result.stdout
    assert len(result.stdout) < 5_000


def test_hostile_values_are_clean_in_json_too():
    result = run("-o", "json", stdin=hostile_input())
    assert result.returncode == 1
    assert "\\u001b" not in result.stdout and "\\n" not in result.stdout and len(result.stdout) < 10_000
    data = json.loads(result.stdout)

    def strings(value):
        if isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)
        elif isinstance(value, str):
            yield value

    for text in strings({key: data[key] for key in ("pods", "tasks", "totals")}):
        assert_safe(text)
        assert len(text) <= MAX_CHARS
    assert {row["pod"] for row in data["pods"]} == {clean(HOSTILE_POD), "q" * 60 + "...", "red"}
    assert "fine_nothing" in data["totals"]["counts"]


def test_clean():
    assert clean("\x1b[31mred\x1b[0m") == "red"
    assert clean("a b\nc\td") == "a_b_c_d"
    assert clean("x\x00\x7f\x85\u200b\u202ey") == "x??_??y"  # NEL is a line break: whitespace
    assert clean("\x9b31mred") == "red"
    assert clean("\x1b]0;title\x07ok") == "ok"
    assert clean("z" * 100) == "z" * 60 + "..."
    assert clean("plane-api-wl-5d9b7d44b9-27khd") == "plane-api-wl-5d9b7d44b9-27khd"


def test_caps_on_processes_and_tasks_pool_the_rest():
    lines = [event("raised", pod=f"p-{n}", task=f"t{n}") for n in range(5)]
    counted = tally(*lines, summary(published=3, pod="p-4", pid=8, raised=9), max_processes=2, max_tasks=2)
    report = counted.report()
    rows = pods(report)
    assert set(rows) == {"p-0", "p-1", OVERFLOW}
    # the pooled row counts the event lines of the rest, not their summaries' counts
    assert (rows[OVERFLOW]["counts"]["raised"], rows[OVERFLOW]["published"]) == (3, 3)
    assert report.totals.counts["raised"] == 5
    assert {task.label() for task, _ in report.tasks} == {"t0", "t1", OVERFLOW}
    assert len(report.notes) == 2 and "more than 2 processes" in report.notes[0]


def test_distinct_unknown_outcomes_are_capped():
    report = tally(*(event(f"odd{n}") for n in range(publishes.MAX_OUTCOME_NAMES + 5))).report()
    assert len(report.unknown_outcomes) == publishes.MAX_OUTCOME_NAMES + 1
    assert report.totals.counts[publishes.OTHER_OUTCOME] == 5


# --------------------------------------------------------------------------- output and exit codes


def test_empty_input_exits_0_with_a_hint():
    result = run(stdin="just\nsome\nlogs\n")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("no plane-guard publish lines found: plane-guard writes a line only for a publish")
    assert "plane-guard status" in result.stdout and result.stdout.count("\n") == 1
    assert run().returncode == 0


def test_json_schema():
    result = run(str(KUBECTL), "-o", "json")
    data = json.loads(result.stdout)
    assert set(data) == {"schema", "attention", "verdict", "reasons", "pods", "tasks", "totals", "lines", "unreadable_lines", "notes"}
    assert (data["schema"], data["attention"], data["unreadable_lines"], data["notes"]) == (1, True, 0, [])
    assert [(p["workload"], p["pod"]) for p in data["pods"]] == [("plane-api-wl", API_A), ("plane-api-wl", API_B)]
    row_keys = {"processes", "summaries", "published", "published_complete", "counts", "unreported"}
    assert all(set(p) == {"workload", "pod", *row_keys} for p in data["pods"]) and set(data["totals"]) == row_keys
    assert data["totals"]["counts"] == {"late": 1, "retried": 1, "raised": 2, "continued": 0, "unconfirmed": 0}
    assert data["totals"]["published"] is None
    assert data["tasks"] == [{"task": "plane.bgtasks.issue_activities_task.issue_activity", "library": "kombu",
                              "exchange": None, "routing_key": None,
                              "counts": {"raised": 2, "continued": 0, "unconfirmed": 0}}]
    assert data["lines"] == {"events": 4, "summaries": 0, "first": "2026-12-04T17:30:01.199Z", "last": "2026-12-04T17:31:19.870Z"}
    empty = json.loads(run("-o", "json").stdout)
    assert (empty["pods"], empty["attention"], empty["totals"]["processes"]) == ([], False, 0)


def test_exit_0_when_only_late_retried_or_clean_summaries():
    result = run(stdin="\n".join([event("late"), event("retried"), summary(published=90, pid=3)]) + "\n")
    assert result.returncode == 0, result
    assert result.stdout.splitlines()[-1] == ("nothing raised or may be lost (1 late, 1 retried: confirmed, "
                                              "but the broker was slow or the connection was replaced)")
    assert result.stdout.splitlines()[3].split()[2] == "90+"


@pytest.mark.parametrize("lines", [
    [event("raised")], [event("continued")], [event("unconfirmed")], [event("gone")], [event("late", dropped=1)],
    [summary(unconfirmed=1)],
])
def test_exit_1_for_each_reason(lines):
    assert run(stdin="\n".join(lines) + "\n").returncode == 1


@pytest.mark.parametrize("args", [["/nonexistent/plane.log"], ["-o", "yaml"], ["--bogus"], ["."]])
def test_exit_2_bad_usage_or_unreadable_file_prints_nothing_on_stdout(args):
    result = run(*args, stdin=event("raised") + "\n")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip()


def test_unreadable_file_says_what_to_do_even_after_a_good_one():
    result = run(str(KUBECTL), "/nonexistent/plane.log")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("plane-guard publishes: cannot read /nonexistent/plane.log: No such file or directory; "
                                    "name a readable log file, or pipe the logs in: kubectl logs")


def test_files_and_stdin_together():
    result = run(str(KUBECTL), "-", str(RUNTIMES), "-o", "json", stdin=SUMMARY.read_text())
    data = json.loads(result.stdout)
    assert len(data["pods"]) == 5
    # the worker pod appears in stdin (summary-wins) and in runtimes.log (pid 31)
    assert pods(result)[WORKER]["counts"]["late"] == 3
    assert data["lines"]["events"] == 4 + 5 + 4 and data["lines"]["summaries"] == 1


def test_a_terminal_on_stdin_without_files_is_bad_usage():
    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    out, err = io.StringIO(), io.StringIO()
    assert publishes.publishes_command(Options(), stdin=Terminal(), stdout=out, stderr=err) == 2
    assert out.getvalue() == "" and "no input: pipe the logs in" in err.getvalue()
    assert publishes.publishes_command(Options(("-",)), stdin=Terminal(event("late").encode()), stdout=out, stderr=err) == 0


def test_table_in_process_matches_the_command():
    out = io.StringIO()
    code = publishes.publishes_command(Options((str(KUBECTL),)), stdout=out, stderr=io.StringIO())
    assert (code, out.getvalue()) == (1, as_table(tally(*KUBECTL.read_text().splitlines()).report()))
    assert out.getvalue() == run(str(KUBECTL)).stdout
