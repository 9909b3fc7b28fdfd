"""Every publish that is not a plain success leaves one JSON line, and a start-up step survives the bound.

The Plane-shaped app's ``manage.py register_instance`` publishes ``instance_traces.delay()`` with
no try/except, as Plane's does; under a real RabbitMQ memory alarm the guarded publish reaches
the bound. In a start-up step it goes on (exit 0, a ``continued`` line); in any other process it
raises (a ``raised`` line). The alarm is broker-wide: each is held for a few seconds and always
cleared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tests.proof import broker
from tests.runtime.conftest import APP_DIR, base_env, hook_env

BOUND = 3
STEPS = json.dumps([r"(^|/)manage\.py(\s|$)"])


def publish_lines(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith('{"plane_guard":"publish"')]


def summaries(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith('{"plane_guard":"publish-summary"')]


def _guarded_env(runtime_dir, vhost, **extra):
    return hook_env(
        runtime_dir,
        AMQP_URL=vhost.url(),
        CELERY_CONFIRM_PUBLISH="1",
        CELERY_TASK_PUBLISH_RETRY="1",
        PLANE_GUARD_PUBLISH_TIMEOUT=str(BOUND),
        PLANE_GUARD_WORKLOAD="plane-api-wl",
        PLANE_GUARD_POD="plane-api-wl-abc-12345",
        **extra,
    )


def _run_during_alarm(argv: list[str], env: dict[str, str], hold: float) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``argv`` while a memory alarm holds for ``hold`` seconds; (its result, seconds it took)."""
    done: list[subprocess.CompletedProcess] = []
    started = time.monotonic()
    seconds: list[float] = []

    def run() -> None:
        done.append(subprocess.run(argv, env=env, cwd=APP_DIR, capture_output=True, text=True, timeout=120))
        seconds.append(time.monotonic() - started)

    with broker.memory_alarm():
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(hold)
        finished_during_alarm = not thread.is_alive()
    thread.join(120)
    assert done, "the process never finished"
    assert finished_during_alarm, f"the process still ran when the alarm cleared after {hold}s: an unbounded wait"
    return done[0], seconds[0]


@pytest.mark.broker
@pytest.mark.root
def test_a_start_up_step_goes_on_past_the_bound_and_says_so(runtime_dir, vhost):
    env = _guarded_env(runtime_dir, vhost, PLANE_GUARD_STARTUP_STEPS=STEPS)
    argv = [sys.executable, "manage.py", "register_instance", "signature"]
    done, seconds = _run_during_alarm(argv, env, hold=BOUND + 12)
    assert done.returncode == 0, done.stderr[-3000:]
    assert BOUND - 0.5 <= seconds < BOUND + 8, seconds
    lines = publish_lines(done.stderr)
    assert [line["outcome"] for line in lines] == ["continued"], done.stderr[-3000:]
    line = lines[0]
    assert line["task"] == "plane.bgtasks.instance_traces" and line["id"]
    assert line["workload"] == "plane-api-wl" and line["pod"] == "plane-api-wl-abc-12345"
    assert line["bound_s"] == BOUND and line["waited_s"] >= BOUND - 0.5 and line["library"] == "kombu"
    assert line["v"] == 1 and line["error"] and "amqp://" not in done.stderr
    summary = summaries(done.stderr)
    assert len(summary) == 1 and summary[0]["counts"]["continued"] == 1 and summary[0]["published"] == 1


@pytest.mark.broker
@pytest.mark.root
def test_outside_a_start_up_step_the_same_publish_raises_with_a_line(runtime_dir, vhost):
    env = _guarded_env(runtime_dir, vhost, PLANE_GUARD_STARTUP_STEPS=json.dumps([r"manage\.py\s+collectstatic"]))
    argv = [sys.executable, "manage.py", "register_instance", "signature"]
    done, seconds = _run_during_alarm(argv, env, hold=BOUND + 12)
    assert done.returncode != 0, "the publish must raise where the process is not a start-up step"
    assert "OperationalError" in done.stderr or "PublishTimeout" in done.stderr
    lines = publish_lines(done.stderr)
    assert [line["outcome"] for line in lines] == ["raised"]
    assert lines[0]["task"] == "plane.bgtasks.instance_traces"
    assert summaries(done.stderr)[0]["counts"]["raised"] == 1


@pytest.mark.broker
@pytest.mark.root
def test_unguarded_a_start_up_step_that_exits_during_an_alarm_loses_its_task_without_a_word(vhost):
    """The baseline the ``continued`` line answers. Unguarded, the publish only reaches the socket
    buffer: the step returns at once and exits, its connection closes while the broker reads
    nothing, and the task is gone, with nothing on stderr. (The same holds for any unguarded
    process that exits during an alarm: a gunicorn worker rotating, a pod stopping.)"""
    vhost.bind_queue("celery", "celery", exchange_type="direct", routing_key="celery")
    env = base_env(AMQP_URL=vhost.url())
    argv = [sys.executable, "manage.py", "register_instance", "signature"]
    calm = subprocess.run(argv, env=env, cwd=APP_DIR, capture_output=True, text=True, timeout=60)
    assert calm.returncode == 0, calm.stderr[-3000:]
    assert len(vhost.drain("celery")) == 1, "without an alarm the task must arrive: the comparison below needs it"
    done, seconds = _run_during_alarm(argv, env, hold=6)
    assert done.returncode == 0 and seconds < 3, (seconds, done.stderr[-3000:])
    deadline = time.monotonic() + 5  # the alarm is over: whatever the broker still holds is routed by now
    while vhost.queue_depth() == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert vhost.queue_depth() == 0, "the task published during the alarm arrived after all"
    assert publish_lines(done.stderr) == [] and "Error" not in done.stderr


PUBLISH_TWICE = textwrap.dedent(
    """
    import sys, time
    from plane.bgtasks import export_task
    export_task.delay("first")
    print("published", flush=True)
    sys.stdin.readline()
    export_task.delay("second")
    """
)


@pytest.mark.broker
@pytest.mark.root
def test_a_late_confirm_and_a_retry_on_a_new_connection_are_each_one_line(runtime_dir, vhost):
    env = _guarded_env(runtime_dir, vhost)
    # Late: the broker holds the publish for 2 s, then confirms it.
    process = subprocess.Popen(
        [sys.executable, "-c", PUBLISH_TWICE], env=env, cwd=APP_DIR, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout.readline().strip() == "published"
        with broker.memory_alarm():
            process.stdin.write("go\n")
            process.stdin.flush()
            time.sleep(2)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    lines = publish_lines(stderr)
    assert [line["outcome"] for line in lines] == ["late"], stderr[-3000:]
    assert 1.0 < lines[0]["waited_s"] < BOUND and lines[0]["task"] == "plane.bgtasks.export_task"

    # Retried: the broker closed the connection between two publishes.
    process = subprocess.Popen(
        [sys.executable, "-c", PUBLISH_TWICE], env=env, cwd=APP_DIR, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout.readline().strip() == "published"
        vhost.close_all_connections()
        time.sleep(0.5)
        _, stderr = process.communicate("go\n", timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    outcomes = [line["outcome"] for line in publish_lines(stderr)]
    assert outcomes == ["retried"], stderr[-3000:]
    assert publish_lines(stderr)[0]["attempts"] >= 2
    assert summaries(stderr)[0]["published"] == 2


LEDGER = textwrap.dedent(
    """
    import sys
    from plane_guard_hooks import accounting
    fields = {"task": "t", "id": None, "exchange": "", "routing_key": "celery"}
    for _ in range(int(sys.argv[1])):
        accounting.record("raised", "kombu", fields, 10.0, bound=10, error="OperationalError")
    accounting.start("pika", {"task": None, "id": "event-1", "exchange": "plane.event_stream", "routing_key": "x"})
    """
)


def test_lines_are_rate_limited_and_the_summary_counts_everything(runtime_dir):
    done = subprocess.run(
        [sys.executable, "-c", LEDGER, "50"], env=hook_env(runtime_dir), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = publish_lines(done.stderr)
    raised = [line for line in lines if line["outcome"] == "raised"]
    # A burst of 20 lines, then about one a second: the loop takes far less than a second.
    assert 20 <= len(raised) <= 22, len(raised)
    unconfirmed = [line for line in lines if line["outcome"] == "unconfirmed"]
    assert len(unconfirmed) <= 1
    summary = summaries(done.stderr)
    assert len(summary) == 1
    assert summary[0]["counts"]["raised"] == 50 and summary[0]["counts"]["unconfirmed"] == 1
    shown = len(raised) + len(unconfirmed)
    assert summary[0]["dropped"] == 51 - shown
    assert summary[0]["published"] == 1  # only start() counts a publish; record() alone reports one
    dropped_field = sum(line.get("dropped", 0) for line in lines)
    assert dropped_field <= summary[0]["dropped"]


def test_an_unusable_startup_steps_value_is_ignored_with_a_line(runtime_dir):
    code = "from plane_guard_hooks import accounting; print(accounting.is_startup_step())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=hook_env(runtime_dir, PLANE_GUARD_STARTUP_STEPS="[unclosed"),
        capture_output=True, text=True, timeout=60,
    )
    assert done.stdout.strip() == "False"
    assert "ignoring PLANE_GUARD_STARTUP_STEPS" in done.stderr and "[unclosed" not in done.stderr
