"""pika through the start-up hook, on a real broker: confirms on first publish, bounded connections."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.proof import broker
from tests.runtime.conftest import hook_env, plane_guard_lines, run_python

pytestmark = pytest.mark.broker

#: Opens a connection as the app chooses, publishes once, prints what pika ended up with.
SHOW = textwrap.dedent(
    """
    import json, os, pika
    params = pika.URLParameters(os.environ["AMQP_URL"])
    if os.environ.get("APP_BLOCKED_TIMEOUT"):
        params.blocked_connection_timeout = float(os.environ["APP_BLOCKED_TIMEOUT"])
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    before = channel._delivery_confirmation
    channel.basic_publish("", "plane-guard-nowhere", b"{}")
    channel.basic_publish("", "plane-guard-nowhere", b"{}")
    print(json.dumps({
        "before": before,
        "after": channel._delivery_confirmation,
        "blocked_connection_timeout": params.blocked_connection_timeout,
        "tcp_options": params.tcp_options,
    }))
    connection.close()
    """
)


def _run(runtime_dir, **env):
    broker.require_broker()
    done = run_python(SHOW, hook_env(runtime_dir, AMQP_URL=broker.url("/"), **env))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), plane_guard_lines(done.stderr)


def test_a_guarded_channel_publishes_with_confirms_within_the_bound(runtime_dir):
    seen, lines = _run(runtime_dir, PLANE_GUARD_PIKA_CONFIRM_DELIVERY="1", PLANE_GUARD_PUBLISH_TIMEOUT="7")
    assert seen == {"before": False, "after": True, "blocked_connection_timeout": 7, "tcp_options": {"TCP_USER_TIMEOUT": 7000}}
    assert lines == ["plane-guard: pika: publisher confirms on; a publish waits at most 7 s for the broker"]


def test_the_applications_own_choices_are_kept(runtime_dir):
    seen, _ = _run(runtime_dir, PLANE_GUARD_PIKA_CONFIRM_DELIVERY="1", PLANE_GUARD_PUBLISH_TIMEOUT="7", APP_BLOCKED_TIMEOUT="30")
    assert seen["blocked_connection_timeout"] == 30.0


def test_without_the_settings_pika_is_untouched(runtime_dir):
    seen, lines = _run(runtime_dir)
    assert seen == {"before": False, "after": False, "blocked_connection_timeout": None, "tcp_options": None}
    assert lines == []
