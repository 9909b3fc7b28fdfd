"""The proof (``make proof``) as tests: the chart-shaped Plane pods, mutated by the webhook's core,
played by podman on the host network against the real RabbitMQ, with the black hole in nftables.

The scenarios run once per module (about two minutes); each test asserts one claim on the results.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.proof import broker, checks
from tests.proof.scenarios import PUBLISH_BOUND, Result, run_all

pytestmark = [pytest.mark.broker, pytest.mark.root, pytest.mark.containers]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results() -> list[Result]:
    return run_all()


def _one(results: list[Result], scenario: str, config: str) -> Result:
    return next(r for r in results if r.scenario == scenario and r.config == config)


def test_table_lines_have_the_promised_form(results):
    pattern = re.compile(
        r"^scenario=[a-z0-9-]+ config=(baseline|guarded) returned_ok=\d+ arrived=\d+ lost=\d+ "
        r"raised=\d+ max_delay_s=\d+\.\d dup=\d+( ready=[01] restarts=\d+ ready_after_s=(\d+\.\d|-))?$"
    )
    shutdown = re.compile(r"^scenario=worker-shutdown config=(baseline|guarded) started=\d+ done=\d+ lost=\d+ exit_s=\d+\.\d$")
    assert all(pattern.match(r.line()) or shutdown.match(r.line()) for r in results), [r.line() for r in results]
    assert [r.line() for r in results if r.scenario == "alarm-at-start" and "ready=" not in r.line()] == []
    assert checks.check_every_scenario_ran(results) == []


def test_guarded_pods_lose_nothing_and_never_fail_a_request(results):
    assert checks.check_no_guarded_loss(results) == []
    assert checks.check_guarded_never_raised(results) == []
    assert all(r.returned_ok > 0 for r in results if not r.own_line)


def test_a_guarded_api_pod_starts_during_a_broker_alarm(results):
    assert checks.check_alarm_at_start(results) == []
    guarded = _one(results, "alarm-at-start", "guarded")
    assert guarded.line_fields["ready"] == 1 and guarded.line_fields["restarts"] == 0
    assert guarded.details["alarm_s"] >= 40


def test_a_rollout_lets_the_running_celery_task_finish(results):
    assert checks.check_worker_shutdown(results) == []
    baseline, guarded = _one(results, "worker-shutdown", "baseline"), _one(results, "worker-shutdown", "guarded")
    assert baseline.line_fields["lost"] >= 1 and guarded.line_fields["lost"] == 0
    assert float(guarded.line_fields["exit_s"]) < float(baseline.line_fields["exit_s"])


def test_every_raised_publish_is_one_line_and_the_report_agrees(results):
    assert checks.check_publish_lines(results) == []
    assert _one(results, "blocked", "guarded").details["publish_lines"]["raised"] >= 1


def test_the_baseline_loses_tasks_in_the_black_hole(results):
    assert checks.check_baseline_reproduces_loss(results) == []
    baseline = _one(results, "black-hole", "baseline")
    assert baseline.raised == 0, "the loss must be silent: every delay() returned"


def test_a_blocked_broker_holds_a_guarded_publish_no_longer_than_the_bound(results):
    assert checks.check_blocked_publish_is_bounded(results) == []
    baseline, guarded = _one(results, "blocked", "baseline"), _one(results, "blocked", "guarded")
    # Unguarded: every delay() returns at once, the message only buffered. It arrives once the
    # alarm clears, unless the process exits first (the baseline's gunicorn rotates after 5
    # requests): then it is lost without a word (test_publish_accounting shows that case alone).
    assert baseline.raised == 0 and baseline.max_delay_s < PUBLISH_BOUND / 2, baseline.line()
    assert guarded.lost == 0 and guarded.raised >= 1  # guarded: loud at the bound, never silent


def test_pika_publishes_of_the_outbox_poller_are_guarded(results):
    baseline, guarded = _one(results, "pika-black-hole", "baseline"), _one(results, "pika-black-hole", "guarded")
    assert baseline.lost > 0 and baseline.raised == 0  # silent: every basic_publish returned
    assert guarded.lost == 0 and guarded.raised >= 1  # the confirm never came: raised, kept, sent again
    assert guarded.arrived == guarded.returned_ok == len({p.marker for p in guarded.publishes})


def test_rotation_follows_the_pod_not_the_hard_coded_command_line(results):
    assert checks.check_rotation(results) == []


def test_the_images_entrypoint_still_runs_every_step(results):
    assert checks.check_entrypoint_steps(results) == []


def test_sigterm_reaches_gunicorn_and_stops_it_cleanly(results):
    assert checks.check_exec_semantics(results) == []


def test_the_start_up_hook_applied_the_celery_settings_in_api_and_worker(results):
    assert checks.check_hook_applied(results) == []


def test_the_broker_shows_the_merged_heartbeat(results):
    assert checks.check_heartbeats(results) == []


def test_no_log_contains_the_broker_password(results):
    assert checks.check_no_password_in_logs(results) == []


def test_without_podman_the_proof_says_what_to_install_and_exits_2(tmp_path):
    """Only the broker's and nftables' tools on PATH: the proof stops before starting anything."""
    for tool in (broker.RABBITMQCTL, broker.NFT, "ss"):
        (tmp_path / Path(tool).name).symlink_to(shutil.which(tool))
    done = subprocess.run([sys.executable, "-m", "tests.proof"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, "PATH": str(tmp_path)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "proof: cannot run:" in done.stderr and "apt-get install podman" in done.stderr, done.stderr
    assert "scenario=" not in done.stdout
