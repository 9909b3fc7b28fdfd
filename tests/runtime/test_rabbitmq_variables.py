"""The heartbeat and confirms hold whatever way the app builds its broker URL.

Plane's settings use ``AMQP_URL`` when it is set, else a URL built from ``RABBITMQ_HOST``,
``_PORT``, ``_USER``, ``_PASSWORD`` and ``_VHOST`` (an enterprise chart branch blanks
``AMQP_URL``; the password then comes from a Secret). The Plane-shaped app mirrors that; here a
container with only the ``RABBITMQ_*`` variables runs through the wrapper, as a guarded pod
does, against the real broker, which shows what it negotiated.
"""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from tests.containers.plane import channels
from tests.pods import wait_for
from tests.proof import broker
from tests.runtime.conftest import APP_DIR, base_env

pytestmark = [pytest.mark.broker, pytest.mark.root]

HEARTBEAT = 60
#: Publishes one task, says so, and keeps its connection until stdin closes.
PUBLISH_AND_HOLD = textwrap.dedent(
    """
    import sys
    from plane.bgtasks import export_task
    export_task.delay("rabbitmq-variables")
    print("published", flush=True)
    sys.stdin.read()
    """
)


def _guarded_env(vhost, **extra):
    """What a guarded pod's container has: the policy's variables from the webhook, RABBITMQ_* from
    a Secret, and no AMQP_URL."""
    return base_env(
        RABBITMQ_HOST=broker.HOST,
        RABBITMQ_PORT=str(broker.PORT),
        RABBITMQ_USER=broker.USER,
        RABBITMQ_PASSWORD=broker.PASSWORD,
        RABBITMQ_VHOST=vhost.name,
        PLANE_GUARD_AMQP_HEARTBEAT=str(HEARTBEAT),
        PLANE_GUARD_AMQP_HEARTBEAT_EXISTING="keep",
        PLANE_GUARD_AMQP_URL_VAR="AMQP_URL",
        PLANE_GUARD_DEFAULT_CELERY_CONFIRM_PUBLISH="1",
        PLANE_GUARD_DEFAULT_CELERY_TASK_PUBLISH_RETRY="1",
        PLANE_GUARD_PUBLISH_TIMEOUT="10",
        **extra,
    )


def _publish_and_inspect(runtime_dir, vhost, env) -> tuple[list[int], list[dict], str]:
    """Run the publisher through the wrapper; (connection heartbeats, channels, stderr)."""
    process = subprocess.Popen(
        ["/bin/sh", str(runtime_dir / "entrypoint.sh"), "python3", "-c", PUBLISH_AND_HOLD],
        env=env, cwd=APP_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout.readline().strip() == "published", process.stderr.read() if process.poll() else ""
        connections = wait_for(vhost.connections, timeout=15, interval=0.3, what="the publisher's connection")
        found = wait_for(lambda: channels(vhost), timeout=15, interval=0.3, what="the publisher's channel")
        _, stderr = process.communicate("", timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    return [c.timeout for c in connections], found, stderr


def test_a_url_built_from_rabbitmq_variables_gets_the_heartbeat_and_confirms(runtime_dir, vhost):
    timeouts, found, stderr = _publish_and_inspect(runtime_dir, vhost, _guarded_env(vhost))
    assert timeouts and all(t == HEARTBEAT for t in timeouts), timeouts
    assert found and all(c["confirm"] for c in found), found
    assert f"AMQP heartbeat {HEARTBEAT} s on connections the app builds itself" in stderr
    assert f":{broker.PASSWORD}@" not in stderr


def test_without_plane_guard_the_same_container_has_no_heartbeat(vhost):
    """The baseline: the same variables, no wrapper, no hook: kombu's 0 switches heartbeats off."""
    env = base_env(RABBITMQ_HOST=broker.HOST, RABBITMQ_PORT=str(broker.PORT), RABBITMQ_USER=broker.USER,
                   RABBITMQ_PASSWORD=broker.PASSWORD, RABBITMQ_VHOST=vhost.name)
    process = subprocess.Popen(
        ["python3", "-c", PUBLISH_AND_HOLD], env=env, cwd=APP_DIR, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout.readline().strip() == "published"
        connections = wait_for(vhost.connections, timeout=15, interval=0.3, what="the publisher's connection")
        found = channels(vhost)
    finally:
        process.kill()
        process.wait(timeout=10)
    assert [c.timeout for c in connections] == [0] * len(connections)
    assert found and not any(c["confirm"] for c in found)


def test_an_amqp_url_in_the_container_is_left_to_the_wrapper(runtime_dir, vhost):
    """With AMQP_URL set, the wrapper merges the heartbeat into it; the hook does nothing more."""
    env = _guarded_env(vhost, AMQP_URL=vhost.url("heartbeat=30"))
    timeouts, _, stderr = _publish_and_inspect(runtime_dir, vhost, env)
    assert timeouts and all(t == 30 for t in timeouts), timeouts  # existingHeartbeat: keep
    assert "connections the app builds itself" not in stderr
