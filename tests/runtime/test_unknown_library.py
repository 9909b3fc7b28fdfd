"""A library shape the start-up hook does not know is said on stderr, never silently left unbounded.

Future versions cannot be installed, so these tests imitate them: a package ``kombu`` (and
``amqp``) of our own, later on ``PYTHONPATH`` than the hook, whose ``Producer`` and
``AbstractChannel`` take other arguments than today's. The hook must either still bound the
publish by a path that works, or state plainly, naming the version, what is not bounded.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.runtime.conftest import hook_env, plane_guard_lines, run_python


def _package(root: Path, name: str, version: str, modules: dict[str, str]) -> None:
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f'__version__ = "{version}"\n')
    for module, source in modules.items():
        (package / f"{module}.py").write_text(textwrap.dedent(source))


#: A kombu whose attempt takes its timeouts keyword-only, in another order: the bound still applies.
KEYWORD_ONLY = """
    seen = []

    class Producer:
        def publish(self, body, routing_key=None, headers=None, exchange=None, retry=False,
                    retry_policy=None, timeout=None, **properties):
            return self._publish(body, routing_key, confirm_timeout=None, timeout=timeout)

        def _publish(self, body, routing_key, *, confirm_timeout=None, timeout=None):
            seen.append((timeout, confirm_timeout))
            return "sent"
"""

#: A kombu whose attempt has no timeout argument at all.
NO_TIMEOUT = """
    class Producer:
        def publish(self, body, routing_key=None, headers=None, exchange=None, retry=False,
                    retry_policy=None, **properties):
            return self._publish(body)

        def _publish(self, body, *, deadline_at=None):
            return "sent"
"""

#: A py-amqp whose frame wait takes other arguments.
OTHER_WAIT = """
    class AbstractChannel:
        def wait(self, methods, on_frame=None, deadline=None):
            return None
"""

USE = """
import kombu.messaging as messaging
print(json.dumps({"result": messaging.Producer().publish(b"{}", routing_key="celery",
                  headers={"task": "plane.x", "id": "id-1"}, timeout=600),
                  "seen": getattr(messaging, "seen", None)}))
"""


def _run(runtime_dir: Path, tmp_path: Path, kombu_source: str, extra: str = "") -> tuple[dict, list[str]]:
    _package(tmp_path / "site", "kombu", "9.0.0", {"messaging": kombu_source})
    env = hook_env(runtime_dir, PYTHONPATH=str(tmp_path / "site"), PLANE_GUARD_PUBLISH_TIMEOUT="5")
    done = run_python("import json\n" + extra + USE, env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), plane_guard_lines(done.stderr)


def test_timeouts_found_by_name_in_a_new_signature_are_still_cut_to_the_bound(runtime_dir, tmp_path):
    answer, lines = _run(runtime_dir, tmp_path, KEYWORD_ONLY)
    assert answer["result"] == "sent"
    (timeout, confirm_timeout), = answer["seen"]
    assert 0 < timeout <= 5 and 0 < confirm_timeout <= 5, answer  # 600 and None, cut to what is left of 5 s
    assert lines == [], lines


def test_an_attempt_without_timeouts_is_said_with_the_version(runtime_dir, tmp_path):
    answer, lines = _run(runtime_dir, tmp_path, NO_TIMEOUT)
    assert answer["result"] == "sent"
    assert any("kombu 9.0.0" in line and "has no timeout or confirm_timeout argument" in line for line in lines), lines


def test_a_frame_wait_of_another_shape_is_said_and_left_alone(runtime_dir, tmp_path):
    _package(tmp_path / "site", "amqp", "7.1.0", {"abstract_channel": OTHER_WAIT})
    answer, lines = _run(runtime_dir, tmp_path, KEYWORD_ONLY, extra="import amqp.abstract_channel\n")
    assert answer["result"] == "sent"
    assert any("py-amqp 7.1.0" in line and "frame waits are not bounded" in line for line in lines), lines


def test_the_installed_libraries_raise_no_such_line(runtime_dir, tmp_path):
    """Today's kombu and py-amqp (the test venv's) are known shapes: not a word about them."""
    code = "import kombu.messaging, amqp.abstract_channel, amqp.connection\nprint('{}')"
    done = run_python(code, hook_env(runtime_dir, PLANE_GUARD_PUBLISH_TIMEOUT="5"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert plane_guard_lines(done.stderr) == []
