"""The wrapper and ``environment.py`` with busybox as the whole userland, as on Plane's Alpine image.

``test_entrypoint.py`` runs the wrapper under ``busybox sh`` with the host's GNU tools still on
PATH. Here PATH holds nothing but a directory of busybox applet links and a directory with
``python3``: a GNU-only command anywhere on the wrapper's path would be missing or busybox's.
What the application then sees (arguments, environment, the supervisor as its parent, the
wrapper's messages) must be what it sees under dash with the GNU tools.

``PLANE_GUARD_TEST_PYTHON3`` names another interpreter to be that ``python3``, e.g. a CPython
built against musl (README, "Plane's image shape"): environment.py and the supervisor then run
on it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.runtime.conftest import base_env

BUSYBOX = shutil.which("busybox")
PYTHON3 = os.environ.get("PLANE_GUARD_TEST_PYTHON3") or sys.executable
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed (apt-get install busybox)")

PASSWORD = "s3cr%40t-pw"
URL = f"amqp://plane:{PASSWORD}@rabbit.plane.svc:5672/plane"
#: The application: what it was given and who its parent is.
SHOW = (
    "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ),"
    " 'ppid': os.getppid()}))"
)
#: Settings as the webhook passes them (see environment.py), and a URL from a Secret.
SETTINGS = {
    "AMQP_URL": URL,
    "PLANE_GUARD_AMQP_HEARTBEAT": "60",
    "PLANE_GUARD_DEFAULT_GUNICORN_MAX_REQUESTS": "0",
    "PLANE_GUARD_OVERRIDE_CELERY_CONFIRM_PUBLISH": "true",
    "CELERY_CONFIRM_PUBLISH": "false",
    "PLANE_GUARD_DEFAULT_GUNICORN_WORKERS": "4",
    "GUNICORN_WORKERS": "2",
}
ARGS = ["--bind", "0.0.0.0:8000", "two words", "", "*", "$HOME", "'quoted'", 'a"b']


@pytest.fixture(scope="module")
def busybox_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PATH for an Alpine-like userland: busybox's applets, then a directory with only python3."""
    root = tmp_path_factory.mktemp("busybox-userland")
    applets, python = root / "bin", root / "python"
    applets.mkdir()
    python.mkdir()
    names = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, timeout=30, check=True).stdout.split()
    for name in names:
        (applets / name).symlink_to(BUSYBOX)
    (python / "python3").symlink_to(PYTHON3)
    return f"{applets}:{python}"


def _env(path: str, **extra: str) -> dict[str, str]:
    return {"PATH": path, "LANG": "C.UTF-8", "HOME": "/tmp", **SETTINGS, **extra}


def _run(shell: list[str], runtime_dir: Path, env: dict[str, str], command: list[str]):
    process = subprocess.Popen([*shell, str(runtime_dir / "entrypoint.sh"), *command], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.pid, process.returncode, out, err


def _seen(shell, runtime_dir, env):
    pid, code, out, err = _run(shell, runtime_dir, env, ["python3", "-I", "-c", SHOW, *ARGS])
    assert code == 0, err
    return pid, json.loads(out), err


def test_path_holds_only_busybox_and_python3(busybox_path):
    """The userland the other tests run in: the tools the wrapper could reach are busybox's."""
    for name in ("sh", "cat", "env", "awk", "sed", "grep", "readlink", "sha256sum", "hostname"):
        found = shutil.which(name, path=busybox_path)
        assert found and os.path.realpath(found) == os.path.realpath(BUSYBOX), (name, found)
    for gnu_only in ("bash", "dash", "gawk", "mawk", "perl", "python"):
        assert shutil.which(gnu_only, path=busybox_path) is None, gnu_only


def test_the_application_sees_what_it_sees_under_dash_with_gnu_tools(runtime_dir, busybox_path):
    bb_pid, bb, bb_err = _seen(["sh"], runtime_dir, _env(busybox_path))
    dash_pid, dash, dash_err = _seen(["/bin/dash"], runtime_dir, _env(base_env()["PATH"]))

    assert bb["argv"] == dash["argv"] == ARGS
    # The supervisor took the wrapper's PID (exec) and the application is its child.
    assert bb["ppid"] == bb_pid and dash["ppid"] == dash_pid
    # environment.py's exports, eval'd by busybox sh, are dash's (PATH and SHLVL, which busybox
    # sh exports as bash does, aside).
    shells_own = {"PATH", "SHLVL"}
    assert {k: v for k, v in bb["env"].items() if k not in shells_own} == {
        k: v for k, v in dash["env"].items() if k not in shells_own
    }
    env = bb["env"]
    assert env["AMQP_URL"] == f"{URL}?heartbeat=60"
    assert env["GUNICORN_MAX_REQUESTS"] == "0"  # policy default, the container had none
    assert env["GUNICORN_WORKERS"] == "2"  # the container's own value kept
    assert env["CELERY_CONFIRM_PUBLISH"] == "true"  # policy override
    assert env["PYTHONPATH"] == str(runtime_dir / "python")
    # Same messages, none with the password; nothing "not found" under busybox.
    lines = [line for line in bb_err.splitlines() if line.startswith("plane-guard:")]
    assert lines == [line for line in dash_err.splitlines() if line.startswith("plane-guard:")]
    assert any("GUNICORN_MAX_REQUESTS: set to 0" in line for line in lines), lines
    assert PASSWORD not in bb_err and "not found" not in bb_err, bb_err


def test_environment_py_alone_under_the_busybox_userland(runtime_dir, busybox_path):
    """environment.py as the wrapper runs it (python3 -I), its stdout eval'd by busybox sh."""
    script = f'eval "$(python3 -I {runtime_dir}/environment.py)" && printf "%s\\n" "$AMQP_URL" "$GUNICORN_MAX_REQUESTS"'
    done = subprocess.run(["sh", "-c", script], env=_env(busybox_path), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{URL}?heartbeat=60", "0"]


def test_sigterm_reaches_a_command_the_busybox_script_did_not_exec(runtime_dir, busybox_path, tmp_path):
    """Plane's worker entrypoint shape (the command runs below a shell that waits for it), with the
    shell being busybox's: the supervisor forwards SIGTERM to the command, which decides the exit."""
    app = tmp_path / "app.py"
    app.write_text(
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: os._exit(0))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
        "os._exit(1)\n"
    )
    entry = tmp_path / "entry.sh"
    entry.write_text(f"set -e\npython3 {app}\necho after\n")
    process = subprocess.Popen(["sh", str(runtime_dir / "entrypoint.sh"), "sh", str(entry)], env=_env(busybox_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert out.strip() == "after" and elapsed < 5, (out, elapsed)
    assert "SIGTERM forwarded to" in err and "(python3)" in err, err
