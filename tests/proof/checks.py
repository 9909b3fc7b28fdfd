"""What the proof's results must show; shared by ``python -m tests.proof`` and the tests.

Each check returns a message when it fails. Besides "guarded lost nothing", the baseline must
reproduce the problem (otherwise a guarded 0 proves nothing) and the evidence that the guarded
pods really ran through plane-guard (wrapper, hook, heartbeat on the broker) must be there.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from tests.proof.broker import PASSWORD
from tests.proof.scenarios import (
    IDLE_HEARTBEAT,
    PUBLISH_BOUND,
    ROTATION_REQUESTS,
    SHUTDOWN_TASKS,
    WORKER_GRACE,
    Result,
)

ENTRYPOINT_STEPS = (
    "entrypoint-start",
    "wait_for_db",
    "wait_for_migrations",
    "register_instance",
    "register_instance-published",
    "configure_instance",
    "exec",
    "image-sitecustomize",
)
#: Seconds of machine noise allowed on top of "no later than the baseline plus the bound".
START_SLACK = 3.0
CELERY_HOOK_LINE = (
    "plane-guard: Celery app 'plane': applied CELERY_TASK_PUBLISH_RETRY, CELERY_BROKER_POOL_LIMIT, CELERY_CONFIRM_PUBLISH"
)
PIKA_HOOK_LINE = "plane-guard: pika: publisher confirms on"
#: Scenarios where a guarded publish is meant to raise: past the bound, or a lost connection the
#: outbox retries. Everywhere else a guarded publish must never fail.
LOUD_BY_DESIGN = ("blocked", "pika-black-hole")
POLICY_HEARTBEAT = 60
_LIMIT_LINE = re.compile(r"Maximum request limit of (\d+) exceeded")


def _find(results: list[Result], scenario: str, config: str) -> Result | None:
    return next((r for r in results if r.scenario == scenario and r.config == config), None)


def check_no_guarded_loss(results: list[Result]) -> list[str]:
    return [f"{r.line()}: guarded lost tasks" for r in results if r.config == "guarded" and r.lost]


def check_guarded_never_raised(results: list[Result]) -> list[str]:
    return [
        f"{r.line()}: {r.raised} guarded requests failed"
        for r in results
        if r.config == "guarded" and r.raised and r.scenario not in LOUD_BY_DESIGN
    ]


def check_blocked_publish_is_bounded(results: list[Result]) -> list[str]:
    """Under the alarm the guarded publish raises at the bound (not later), and waits for a short one."""
    guarded = _find(results, "blocked", "guarded")
    if guarded is None:
        return []
    failures = []
    if guarded.max_delay_s > PUBLISH_BOUND + 1:
        failures.append(f"{guarded.line()}: a publish took {guarded.max_delay_s:.1f}s, more than the bound {PUBLISH_BOUND}s + 1s")
    if guarded.raised == 0:
        failures.append(f"{guarded.line()}: no publish reached the bound, so the alarm did not block anything")
    short = [p for p in guarded.publishes if p.marker == "blocked-short"]
    if not (short and short[0].ok):
        failures.append(f"{guarded.line()}: the publish started just before the alarm cleared did not succeed")
    return failures


def check_every_scenario_ran(results: list[Result]) -> list[str]:
    from tests.proof.scenarios import OWN_WORKER, SCENARIOS

    wanted = [(name, config) for name, _, configs in (*SCENARIOS, *OWN_WORKER) for config in configs]
    return [f"scenario={n} config={c} did not run" for n, c in wanted if _find(results, n, c) is None]


def check_baseline_reproduces_loss(results: list[Result]) -> list[str]:
    failures = []
    for scenario in ("black-hole", "pika-black-hole"):
        baseline = _find(results, scenario, "baseline")
        if baseline is not None and baseline.lost == 0:
            failures.append(f"{baseline.line()}: the baseline did not lose anything, so the black hole was not reproduced")
    return failures


def check_rotation(results: list[Result]) -> list[str]:
    """Rotation happens at the pod's limit (read from uvicorn's own log line), or not at all.

    uvicorn checks the limit on a 0.1 s tick, so on a busy machine a worker may serve one request
    past it; the PID runs are therefore checked for "never earlier than the limit", and the limit
    itself is taken from the "Maximum request limit of N exceeded" line.
    """
    expected = {
        ("gunicorn-rotation", "baseline"): 5,
        ("gunicorn-rotation", "guarded"): None,
        ("gunicorn-rotation-at-3", "guarded"): 3,
    }
    failures = []
    for (scenario, config), limit in expected.items():
        result = _find(results, scenario, config)
        if result is None:
            continue
        runs = result.details.get("pid_runs") or []
        limits = sorted({int(n) for n in _LIMIT_LINE.findall(result.logs.get("api", ""))})
        if limit is None:
            if runs != [ROTATION_REQUESTS] or limits:
                failures.append(f"{result.line()}: rotation must be off, but PIDs ran {runs} and uvicorn logged limits {limits}")
            continue
        if limits != [limit] or len(runs) < 2 or any(run < limit for run in runs[:-1]):
            failures.append(f"{result.line()}: expected rotation at {limit}; PIDs ran {runs}, uvicorn logged limits {limits}")
    return failures


def check_entrypoint_steps(results: list[Result]) -> list[str]:
    failures = []
    for result in (r for r in results if "api" in r.logs):
        steps = [line.split()[0] for line in result.logs.get("api_markers", "").splitlines() if line.strip()]
        missing = [step for step in ENTRYPOINT_STEPS if step not in steps]
        if missing:
            failures.append(f"{result.line()}: the API entrypoint's steps {missing} did not run")
    return failures


def check_exec_semantics(results: list[Result]) -> list[str]:
    """SIGTERM stops the API pod cleanly. Baseline: gunicorn's master is the container's PID 1 (the
    entrypoint exec'd it). Guarded: PID 1 is plane-guard's supervisor, which forwarded the signal."""
    failures = []
    for r in (r for r in results if "api" in r.logs):
        pid1 = str(r.details.get("container_pid1", ""))
        if r.config == "baseline":
            right_pid1 = r.details.get("gunicorn_is_container_pid") is True
        else:
            right_pid1 = "supervisor.py" in pid1 and r.details.get("gunicorn_is_container_pid") is False
        if not right_pid1 or r.details.get("api_exit_code") != 0:
            failures.append(
                f"{r.line()}: container PID 1 {pid1!r} (gunicorn master: {r.details.get('gunicorn_is_container_pid')}), "
                f"exit code after SIGTERM: {r.details.get('api_exit_code')}"
            )
    return failures


def check_alarm_at_start(results: list[Result]) -> list[str]:
    """Guarded: ready with 0 restarts, no later than the baseline plus the bound, and the start-up
    publish delivered or reported by a line."""
    baseline, guarded = _find(results, "alarm-at-start", "baseline"), _find(results, "alarm-at-start", "guarded")
    if guarded is None:
        return []
    fields = guarded.line_fields
    failures = []
    if fields.get("ready") != 1 or fields.get("restarts") != 0:
        failures.append(f"{guarded.line()}: a guarded API pod must start during a broker alarm, without restarts")
    if baseline is not None and baseline.line_fields.get("ready") == 1 and fields.get("ready") == 1:
        limit = float(baseline.line_fields["ready_after_s"]) + PUBLISH_BOUND + START_SLACK
        if float(fields["ready_after_s"]) > limit:
            failures.append(f"{guarded.line()}: ready later than the baseline plus the bound ({limit:.1f}s)")
    ids = guarded.details.get("startup_task_ids") or []
    reported = {line.get("id") for line in publish_lines(guarded.logs.get("api", "")) if line.get("outcome") == "continued"}
    if not ids:
        failures.append(f"{guarded.line()}: register_instance never got past its publish")
    elif not guarded.details.get("startup_task_delivered") and not set(ids) <= reported:
        failures.append(f"{guarded.line()}: the start-up task was neither delivered nor reported by a line")
    return failures


def check_worker_shutdown(results: list[Result]) -> list[str]:
    """Baseline: SIGKILL interrupts a task (the loss). Guarded: the running task finishes, no new one
    starts, the rest stay queued, and the pod exits well before the grace period."""
    failures = []
    baseline, guarded = _find(results, "worker-shutdown", "baseline"), _find(results, "worker-shutdown", "guarded")
    if baseline is not None and baseline.line_fields.get("lost", 0) < 1:
        failures.append(f"{baseline.line()}: the baseline did not lose the interrupted task, so the problem was not reproduced")
    if guarded is not None:
        fields, details = guarded.line_fields, guarded.details
        if fields.get("lost") != 0 or fields.get("started") != fields.get("done"):
            failures.append(f"{guarded.line()}: a guarded stop must let the running task finish")
        if float(fields.get("exit_s", WORKER_GRACE)) > WORKER_GRACE / 2:
            failures.append(f"{guarded.line()}: the guarded worker waited for the grace period ({WORKER_GRACE}s)")
        if details.get("left_queued") != SHUTDOWN_TASKS - int(fields.get("started", 0)):
            failures.append(f"{guarded.line()}: {details.get('left_queued')} tasks left queued, expected every task not started")
        if details.get("exit_code") != 0:
            failures.append(f"{guarded.line()}: exit code {details.get('exit_code')}, expected Celery's 0")
    return failures


def publish_lines(log: str) -> list[dict[str, Any]]:
    """The start-up hook's per-publish JSON lines in a container log."""
    found = []
    for line in log.splitlines():
        start = line.find('{"plane_guard":"publish"')
        if start >= 0:
            try:
                found.append(json.loads(line[start:]))
            except ValueError:
                continue
    return found


def publishes_report(log: str) -> tuple[int, dict[str, Any]]:
    """``plane-guard publishes -o json`` on a log, as an operator runs it: (exit code, report)."""
    done = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "publishes", "-o", "json"],
        input=log, capture_output=True, text=True, timeout=60,
    )
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        return done.returncode, {}


def check_publish_lines(results: list[Result]) -> list[str]:
    """Every guarded publish that raised or was late is exactly one line, and ``plane-guard
    publishes`` on the pod's log reports the scenario's counts and exits 1."""
    failures = []
    for scenario, log_name in (("blocked", "api"), ("pika-black-hole", "poller")):
        result = _find(results, scenario, "guarded")
        if result is None:
            continue
        log = result.logs.get(log_name, "")
        lines = publish_lines(log)
        raised = [line for line in lines if line.get("outcome") == "raised"]
        late = [line for line in lines if line.get("outcome") == "late"]
        if len(raised) != result.raised:
            failures.append(f"{result.line()}: {len(raised)} raised lines for {result.raised} raised publishes")
        ids = [line.get("id") for line in raised + late if line.get("id")]
        if len(ids) != len(set(ids)):
            failures.append(f"{result.line()}: a publish has more than one line")
        clearly_late = sum(1 for p in result.publishes if p.ok and p.seconds > 1.5)
        if len(late) < clearly_late:
            failures.append(f"{result.line()}: {clearly_late} publishes took over 1.5 s, only {len(late)} late lines")
        code, report = publishes_report(log)
        counts = (report.get("totals") or {}).get("counts") or {}
        if code != 1 or counts.get("raised") != result.raised:
            failures.append(
                f"{result.line()}: plane-guard publishes exited {code} and counted raised={counts.get('raised')}"
            )
        result.details["publish_lines"] = {"raised": len(raised), "late": len(late), "report_exit": code}
    return failures


def check_hook_applied(results: list[Result]) -> list[str]:
    failures = []
    for result in (r for r in results if "poller" in r.logs):
        confirms = PIKA_HOOK_LINE in result.logs["poller"]
        if result.config == "guarded" and not confirms:
            failures.append(f"{result.line()}: the outbox poller did not report pika publisher confirms")
        if result.config == "baseline" and "plane-guard:" in result.logs["poller"]:
            failures.append(f"{result.line()}: plane-guard output in a baseline pod")
    for result in (r for r in results if "api" in r.logs):
        applied = CELERY_HOOK_LINE in result.logs.get("api", "")
        worker_applied = CELERY_HOOK_LINE in result.logs.get("worker", "")
        if result.config == "guarded" and not (applied and worker_applied):
            failures.append(
                f"{result.line()}: the start-up hook did not report its Celery settings (api {applied}, worker {worker_applied})"
            )
        if result.config == "baseline" and ("plane-guard:" in result.logs.get("api", "")):
            failures.append(f"{result.line()}: plane-guard output in a baseline pod")
    return failures


def check_heartbeats(results: list[Result]) -> list[str]:
    expected = {
        ("broker-close-churn", "baseline"): ("api_heartbeat", [0]),
        ("broker-close-churn", "guarded"): ("api_heartbeat", [POLICY_HEARTBEAT]),
        ("idle-past-heartbeat", "guarded"): ("api_heartbeat", [IDLE_HEARTBEAT]),
    }
    failures = []
    for (scenario, config), (key, value) in expected.items():
        result = _find(results, scenario, config)
        if result is not None and result.details.get(key) != value:
            failures.append(f"{result.line()}: broker shows {key}={result.details.get(key)}, expected {value}")
    guarded = _find(results, "broker-close-churn", "guarded")
    if guarded is not None:
        worker = guarded.details.get("worker_heartbeat") or []
        if not worker or any(t != POLICY_HEARTBEAT for t in worker):
            failures.append(f"{guarded.line()}: worker connections negotiated {worker}, expected all {POLICY_HEARTBEAT}")
    idle = _find(results, "idle-past-heartbeat", "guarded")
    if idle is not None and idle.details.get("broker_closed_idle_connection") is not True:
        failures.append(f"{idle.line()}: the broker did not close the idle connection, so the scenario did not happen")
    return failures


def check_no_password_in_logs(results: list[Result]) -> list[str]:
    needle = f":{PASSWORD}@"
    return [
        f"{result.line()}: the {name} log contains the broker password"
        for result in results
        for name, text in result.logs.items()
        if needle in text
    ]


CHECKS: tuple[Callable[[list[Result]], list[str]], ...] = (
    check_every_scenario_ran,
    check_no_guarded_loss,
    check_guarded_never_raised,
    check_blocked_publish_is_bounded,
    check_baseline_reproduces_loss,
    check_rotation,
    check_entrypoint_steps,
    check_exec_semantics,
    check_alarm_at_start,
    check_worker_shutdown,
    check_publish_lines,
    check_hook_applied,
    check_heartbeats,
    check_no_password_in_logs,
)


def evaluate(results: list[Result]) -> list[str]:
    return [failure for check in CHECKS for failure in check(results)]
