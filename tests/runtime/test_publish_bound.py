"""A publish waits for a blocked broker at most the policy's bound, on a real RabbitMQ memory alarm.

The Plane-shaped app publishes with ``delay()`` through the start-up hook, in a process of its
own; the test raises the broker's memory alarm around the publish. The alarm is broker-wide, so
each is held only for a few seconds and always cleared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest

from tests.proof import broker
from tests.runtime.conftest import APP_DIR, hook_env

pytestmark = [pytest.mark.broker, pytest.mark.root]

#: Reads "publish <marker>" lines and answers each with one JSON line.
PUBLISHER = textwrap.dedent(
    """
    import json, sys, time
    from plane.bgtasks import export_task
    for line in sys.stdin:
        started = time.monotonic()
        try:
            task = export_task.delay(line.split()[1])
            result = {"ok": True, "id": task.id}
        except Exception as exc:
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.monotonic() - started, 2)
        print(json.dumps(result), flush=True)
    """
)


class Publisher:
    """The app in a process of its own, publishing on request."""

    def __init__(self, runtime_dir, vhost, **env):
        self.process = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER],
            env=hook_env(runtime_dir, AMQP_URL=vhost.url(), CELERY_CONFIRM_PUBLISH="1", **env),
            cwd=APP_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def publish(self, marker: str, timeout: float = 60) -> dict:
        self.process.stdin.write(f"publish {marker}\n")
        self.process.stdin.flush()
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not answer or not answer[0]:
            raise AssertionError(f"no answer within {timeout}s: {self.process.stderr.read() if self.process.poll() is not None else ''}")
        return json.loads(answer[0])

    def close(self) -> str:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.process.stderr.read()


def _publish_during_alarm(publisher: Publisher, marker: str, hold: float) -> dict:
    """Publish under the alarm; the alarm is cleared ``hold`` seconds after the publish started."""
    result: list[dict] = []
    with broker.memory_alarm():
        worker = threading.Thread(target=lambda: result.append(publisher.publish(marker)), daemon=True)
        worker.start()
        worker.join(hold)
    worker.join(60)
    assert result, "the publish never answered"
    return result[0]


def test_past_the_bound_delay_raises_and_a_short_alarm_only_delays_it(runtime_dir, vhost):
    publisher = Publisher(runtime_dir, vhost, PLANE_GUARD_PUBLISH_TIMEOUT="5")
    try:
        assert publisher.publish("warm-up")["ok"]
        blocked = _publish_during_alarm(publisher, "long-alarm", hold=10)
        assert blocked["ok"] is False
        assert "did not confirm the publish within 5 s" in blocked["error"]
        assert 4.5 <= blocked["seconds"] < 10, blocked  # raised at the bound, while the alarm still held

        brief = _publish_during_alarm(publisher, "short-alarm", hold=0.5)
        # Blocked until the alarm cleared (well within the bound), then confirmed.
        assert brief["ok"] is True and brief["seconds"] >= 0.4, brief
        assert publisher.publish("after")["ok"]
    finally:
        stderr = publisher.close()
    assert "a publish waits at most 5 s for the broker" in stderr


def test_without_a_bound_confirms_wait_for_the_whole_alarm(runtime_dir, vhost):
    """What the bound fixes: with confirms alone, delay() returns only when the alarm is over."""
    publisher = Publisher(runtime_dir, vhost)
    try:
        assert publisher.publish("warm-up")["ok"]
        blocked = _publish_during_alarm(publisher, "long-alarm", hold=6)
        assert blocked["ok"] is True and blocked["seconds"] >= 6, blocked
    finally:
        publisher.close()
