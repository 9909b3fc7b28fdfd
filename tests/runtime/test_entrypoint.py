"""The wrapper ``entrypoint.sh`` under dash and busybox sh: exec semantics, URL merge, PYTHONPATH."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.runtime.conftest import base_env

PASSWORD = "s3cr%40t-pw"
URL = f"amqp://plane:{PASSWORD}@rabbit.plane.svc:5672/plane"
SHOW = "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ), 'pid': os.getpid()}))"


def _wrap(shell, runtime_dir, command, env, cwd=None, timeout=30):
    return subprocess.run(
        [*shell, str(runtime_dir / "entrypoint.sh"), *command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _show(shell, runtime_dir, env, args=(), cwd=None):
    """Run a Python child through the wrapper and return (what it saw, the wrapper's stderr)."""
    done = _wrap(shell, runtime_dir, ["/usr/bin/python3", "-I", "-c", SHOW, *args], env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_no_command_is_exit_64_with_a_message(shell, runtime_dir):
    done = _wrap(shell, runtime_dir, [], base_env())
    assert done.returncode == 64
    assert "got no command to run" in done.stderr
    assert "entrypoint.sh <original command>" in done.stderr


@pytest.mark.parametrize("code", [0, 3, 77, 255])
def test_exit_code_is_the_applications(shell, runtime_dir, code):
    done = _wrap(shell, runtime_dir, ["/bin/sh", "-c", f"exit {code}"], base_env())
    assert done.returncode == code


def test_missing_command_is_127_like_the_runtime_would_report(shell, runtime_dir):
    done = _wrap(shell, runtime_dir, ["./no-such-entrypoint.sh"], base_env())
    assert done.returncode in (126, 127)
    assert "no-such-entrypoint.sh" in done.stderr


def test_arguments_pass_through_unchanged(shell, runtime_dir):
    args = ["--bind", "0.0.0.0:8000", "two words", "", "*", "$HOME", "'quoted'", 'a"b', "--max-requests=1200"]
    seen, _ = _show(shell, runtime_dir, base_env(), args)
    assert seen["argv"] == args


def test_exec_keeps_the_pid_and_sigterm_reaches_the_app(shell, runtime_dir, tmp_path):
    """The supervisor keeps the wrapper's PID; the app, its child, gets kubelet's SIGTERM and decides the exit code."""
    app = tmp_path / "app.py"
    app.write_text(
        "import os, signal, sys, time\n"
        "def stop(signum, frame):\n"
        "    os.write(1, f'got {signal.Signals(signum).name}\\n'.encode())\n"
        "    os._exit(42)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ppid', os.getppid(), flush=True)\n"
        "time.sleep(30)\n"
        "sys.exit(1)\n"
    )
    process = subprocess.Popen(
        [*shell, str(runtime_dir / "entrypoint.sh"), "/usr/bin/python3", str(app)],
        env=base_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline().split()
        assert first == ["ppid", str(process.pid)], first
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 42
        assert process.stdout.readline().strip() == "got SIGTERM"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_heartbeat_is_merged_into_a_url_from_a_secret_without_printing_it(shell, runtime_dir):
    env = base_env(AMQP_URL=URL, PLANE_GUARD_AMQP_HEARTBEAT="60", PLANE_GUARD_AMQP_HEARTBEAT_EXISTING="keep")
    seen, stderr = _show(shell, runtime_dir, env)
    assert seen["env"]["AMQP_URL"] == URL + "?heartbeat=60"
    assert "heartbeat added" in stderr
    assert PASSWORD not in stderr and "rabbit.plane.svc" not in stderr


@pytest.mark.parametrize(
    ("url", "existing", "expected"),
    [
        (URL + "?connect_timeout=10", "keep", URL + "?connect_timeout=10&heartbeat=30"),
        (URL + "?heartbeat=10", "keep", URL + "?heartbeat=10"),
        (URL + "?heartbeat=10", "replace", URL + "?heartbeat=30"),
        (URL + "?heartbeat=abc", "keep", URL + "?heartbeat=30"),
        ("redis://redis:6379/0", "keep", "redis://redis:6379/0"),
    ],
)
def test_merge_follows_the_shared_url_rules(shell, runtime_dir, url, existing, expected):
    env = base_env(AMQP_URL=url, PLANE_GUARD_AMQP_HEARTBEAT="30", PLANE_GUARD_AMQP_HEARTBEAT_EXISTING=existing)
    seen, stderr = _show(shell, runtime_dir, env)
    assert seen["env"]["AMQP_URL"] == expected
    assert PASSWORD not in stderr


def test_other_url_variable(shell, runtime_dir):
    env = base_env(BROKER_URL=URL, AMQP_URL="amqp://untouched//", PLANE_GUARD_AMQP_HEARTBEAT="45")
    env["PLANE_GUARD_AMQP_URL_VAR"] = "BROKER_URL"
    seen, _ = _show(shell, runtime_dir, env)
    assert seen["env"]["BROKER_URL"] == URL + "?heartbeat=45"
    assert seen["env"]["AMQP_URL"] == "amqp://untouched//"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PLANE_GUARD_AMQP_HEARTBEAT": "60"}, "AMQP_URL is not set in this container"),
        ({"PLANE_GUARD_AMQP_HEARTBEAT": "60", "AMQP_URL": ""}, "AMQP_URL is not set in this container"),
        ({"PLANE_GUARD_AMQP_HEARTBEAT": "soon", "AMQP_URL": URL}, "keeping AMQP_URL as it is"),
        (
            {"PLANE_GUARD_AMQP_HEARTBEAT": "60", "PLANE_GUARD_AMQP_HEARTBEAT_EXISTING": "merge", "AMQP_URL": URL},
            "keeping AMQP_URL",
        ),
        (
            {"PLANE_GUARD_AMQP_HEARTBEAT": "60", "AMQP_URL": URL, "PLANE_GUARD_AMQP_URL_VAR": "X;touch /tmp/pg-pwned"},
            "not a variable name",
        ),
    ],
)
def test_unusable_settings_keep_the_url_and_still_start_the_app(shell, runtime_dir, env, message):
    seen, stderr = _show(shell, runtime_dir, base_env(**env))
    assert seen["env"].get("AMQP_URL") == env.get("AMQP_URL")
    assert message in stderr
    assert PASSWORD not in stderr
    assert not Path("/tmp/pg-pwned").exists()


def test_no_python_on_path_keeps_the_url(shell, runtime_dir, tmp_path):
    env = base_env(AMQP_URL=URL, PLANE_GUARD_AMQP_HEARTBEAT="60")
    env["PATH"] = str(tmp_path)
    seen, stderr = _show(shell if shell[0].startswith("/") else ["/bin/busybox", "sh"], runtime_dir, env)
    assert seen["env"]["AMQP_URL"] == URL
    assert "no python3 or python on PATH" in stderr


def test_nothing_to_merge_without_the_heartbeat_setting(shell, runtime_dir):
    seen, stderr = _show(shell, runtime_dir, base_env(AMQP_URL=URL))
    assert seen["env"]["AMQP_URL"] == URL
    assert stderr == ""


@pytest.mark.parametrize(
    ("image_path", "expected_tail"),
    [(None, ""), ("", ""), ("/app/lib", ":/app/lib"), ("/a:/b", ":/a:/b")],
)
def test_pythonpath_puts_the_hook_first_and_keeps_the_images(shell, runtime_dir, image_path, expected_tail):
    env = base_env() if image_path is None else base_env(PYTHONPATH=image_path)
    seen, _ = _show(shell, runtime_dir, env)
    assert seen["env"]["PYTHONPATH"] == f"{runtime_dir / 'python'}{expected_tail}"


def test_wrapping_twice_does_not_repeat_the_hook(shell, runtime_dir):
    entry = str(runtime_dir / "entrypoint.sh")
    done = _wrap(shell, runtime_dir, [*shell, entry, "/usr/bin/python3", "-I", "-c", SHOW], base_env(PYTHONPATH="/app"))
    assert json.loads(done.stdout)["env"]["PYTHONPATH"] == f"{runtime_dir / 'python'}:/app"


def test_relative_invocation_gives_an_absolute_hook_path(shell, runtime_dir):
    seen, _ = _show_relative(shell, runtime_dir)
    assert seen["env"]["PYTHONPATH"] == str(runtime_dir / "python")


def _show_relative(shell, runtime_dir):
    done = subprocess.run(
        [*shell, "./entrypoint.sh", "/usr/bin/python3", "-I", "-c", SHOW],
        env=base_env(),
        cwd=runtime_dir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_wrapper_leaves_no_variables_of_its_own(shell, runtime_dir):
    env = base_env(AMQP_URL=URL, PLANE_GUARD_AMQP_HEARTBEAT="60", py="image-value", dir="/image")
    seen, _ = _show(shell, runtime_dir, env)
    added = set(seen["env"]) - set(env)
    assert added <= {"PYTHONPATH", "PWD", "SHLVL", "_"}, added
    assert seen["env"]["py"] == "image-value" and seen["env"]["dir"] == "/image"


def test_merge_then_exec_of_a_trivial_command_succeeds(shell, runtime_dir):
    """The start-up cost itself is measured by ``make bench``, not asserted here."""
    env = base_env(AMQP_URL=URL, PLANE_GUARD_AMQP_HEARTBEAT="60")
    done = _wrap(shell, runtime_dir, ["/bin/true"], env)
    assert done.returncode == 0 and PASSWORD not in done.stderr
