"""Shared fixtures: the runtime installed by the real ``plane-guard runtime install`` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
PLANE_GUARD = str(VENV_BIN / "plane-guard")
APP_DIR = Path(__file__).resolve().parents[1] / "plane_app"

#: POSIX shells the wrapper must run under; busybox is exercised where it is installed.
SHELLS = [pytest.param(["/bin/dash"], id="dash")]
_NO_BUSYBOX = pytest.mark.skip(reason="busybox is not installed (apt-get install busybox)")
SHELLS.append(pytest.param(["busybox", "sh"], id="busybox", marks=() if shutil.which("busybox") else _NO_BUSYBOX))


def base_env(**extra: str) -> dict[str, str]:
    """A container-like environment: the venv first on PATH, nothing else inherited."""
    env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime as the init container leaves it (installed by the CLI, not by a Python call)."""
    target = tmp_path_factory.mktemp("runtime") / "plane-guard"
    done = subprocess.run([PLANE_GUARD, "runtime", "install", str(target)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture(params=SHELLS)
def shell(request: pytest.FixtureRequest) -> list[str]:
    return request.param


def hook_env(runtime_dir: Path, **extra: str) -> dict[str, str]:
    """The environment a Python process has after the wrapper: the hook first on PYTHONPATH."""
    image_path = extra.pop("PYTHONPATH", "")
    path = f"{runtime_dir / 'python'}" + (f":{image_path}" if image_path else "")
    return base_env(PYTHONPATH=path, **extra)


def run_python(code: str, env: dict[str, str], cwd: Path | str = APP_DIR, args: list[str] | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, *(args or []), "-c", code], env=env, cwd=str(cwd), capture_output=True, text=True, timeout=timeout
    )


def plane_guard_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("plane-guard:")]


@pytest.fixture
def vhost():
    """A vhost of the test's own on the real broker (its queues and connections go with it)."""
    from tests.proof import broker

    broker.require_broker()
    created = broker.VHost("plane-guard-runtime")
    yield created
    created.delete()
