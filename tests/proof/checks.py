"""What the proof's results must show; shared by ``python -m tests.proof`` and the tests.

Each check returns a message when it fails. Besides "guarded lost nothing", the baseline must
reproduce the problem (otherwise a guarded 0 proves nothing) and the evidence that the guarded
pods really ran through plane-guard (wrapper, hook, heartbeat on the broker) must be there.
"""

from __future__ import annotations

import re
from typing import Callable

from tests.proof.broker import PASSWORD
from tests.proof.scenarios import IDLE_HEARTBEAT, PUBLISH_BOUND, ROTATION_REQUESTS, Result

ENTRYPOINT_STEPS = ("entrypoint-start", "wait_for_db", "register_instance", "exec", "image-sitecustomize")
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
    from tests.proof.scenarios import SCENARIOS

    wanted = [(name, config) for name, _, configs in SCENARIOS for config in configs]
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
    """The container's PID is gunicorn's master (the wrapper exec'd), and SIGTERM stopped it cleanly."""
    return [
        f"{r.line()}: gunicorn master is the container PID: {r.details.get('gunicorn_is_container_pid')}, "
        f"exit code after SIGTERM: {r.details.get('api_exit_code')}"
        for r in results
        if "api" in r.logs and (r.details.get("gunicorn_is_container_pid") is not True or r.details.get("api_exit_code") != 0)
    ]


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
    check_hook_applied,
    check_heartbeats,
    check_no_password_in_logs,
)


def evaluate(results: list[Result]) -> list[str]:
    return [failure for check in CHECKS for failure in check(results)]
