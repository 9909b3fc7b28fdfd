"""Interpreters by version, and one cached virtual environment per combination.

A venv lives in ``.compat/venvs/<key>`` (the key names the interpreter's full version and every
pin) and is reused once its ``freeze.txt`` exists, so only the first run downloads anything. A
combination pip cannot resolve is remembered next to it (``<key>.not-installable``, pip's reason).
Delete ``.compat/`` to start over.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.compat.matrix import Combo

PYENV_ROOT = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv"))
PIP_TIMEOUT = 900
#: pip's words for "the index could not be reached", as opposed to "no such combination".
_NETWORK = re.compile(
    r"(NewConnectionError|Max retries exceeded|Temporary failure in name resolution|"
    r"Could not fetch URL|ConnectTimeout|Network is unreachable)"
)


_running: set[subprocess.Popen] = set()
_lock = threading.Lock()


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run`` whose process ``kill_running`` can end (installs run in threads; Ctrl-C ends them)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    with _lock:
        _running.add(process)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        raise
    finally:
        with _lock:
            _running.discard(process)
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def kill_running() -> None:
    """End the venv and pip processes still running (the run was interrupted)."""
    with _lock:
        running = list(_running)
    for process in running:
        _kill(process)


class NotInstallable(Exception):
    """pip cannot resolve the combination; the message is pip's reason in one short line."""


class IndexUnreachable(Exception):
    """pip could not reach the package index: a missing prerequisite, not a property of the combination."""


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # the full version, e.g. 3.12.1


def _version_of(path: str) -> str | None:
    try:
        done = subprocess.run(
            [path, "-c", "import sys, venv, ensurepip; print('.'.join(map(str, sys.version_info[:3])))"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_python(minor: str) -> Interpreter | None:
    """The newest installed Python ``minor`` (e.g. "3.12") that has ``venv`` and ``ensurepip``: pyenv's, then PATH."""
    candidates = sorted(
        glob.glob(str(PYENV_ROOT / "versions" / f"{minor}.*" / "bin" / f"python{minor}")),
        key=lambda p: [int(x) if x.isdigit() else -1 for x in Path(p).parents[1].name.split(".")],
        reverse=True,
    )
    on_path = shutil.which(f"python{minor}")
    if on_path and "/shims/" not in on_path:
        candidates.append(on_path)
    for path in candidates:
        version = _version_of(path)
        if version and (version == minor or version.startswith(minor + ".")):
            return Interpreter(path, version)
    return None


def pip_reason(output: str) -> str:
    """pip's resolution failure in one short line: the first "X depends on Y" it gives, else its last error."""
    lines = [line.strip() for line in output.splitlines()]
    for line in lines:
        if " depends on " in line:
            return line
    for line in reversed(lines):
        if line.startswith("ERROR:"):
            return line[len("ERROR:") :].strip()[:200]
    return (lines[-1] if lines else "pip failed")[:200]


def freeze(venv: Path) -> dict[str, str]:
    done = _run([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all"], timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"pip freeze failed in {venv}: {done.stderr.strip()[-300:]}")
    return parse_freeze(done.stdout)


def parse_freeze(text: str) -> dict[str, str]:
    """``name==version`` lines, names normalised (lower case, ``-``) as pip compares them."""
    found = {}
    for line in text.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def ensure_venv(cache: Path, combo: Combo, python: Interpreter) -> tuple[Path, dict[str, str], bool]:
    """The combination's venv, built unless cached: (its path, ``pip freeze``, whether it was built now).

    Raises ``NotInstallable`` (pip's reason) or ``IndexUnreachable``.
    """
    key = combo.key(python.version)
    venv = cache / "venvs" / key
    refused = cache / "venvs" / f"{key}.not-installable"
    if refused.exists():
        raise NotInstallable(refused.read_text().strip())
    stamp = venv / "freeze.txt"
    if stamp.exists() and (venv / "bin" / "python").exists():
        return venv, parse_freeze(stamp.read_text()), False
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    created = _run([python.path, "-m", "venv", str(venv)], timeout=300)
    if created.returncode != 0:
        raise RuntimeError(f"python -m venv failed: {created.stderr.strip()[-300:]}")
    done = _run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-input",
            "--disable-pip-version-check",
            *combo.requirements(),
        ],
        timeout=PIP_TIMEOUT,
    )
    if done.returncode != 0:
        output = done.stdout + done.stderr
        shutil.rmtree(venv, ignore_errors=True)
        if "ResolutionImpossible" in output or "conflicting dependencies" in output:
            reason = pip_reason(output)
            refused.write_text(reason + "\n")
            raise NotInstallable(reason)
        if _NETWORK.search(output):
            raise IndexUnreachable(f"pip could not reach the package index: {pip_reason(output)}")
        raise RuntimeError(f"pip install failed: {pip_reason(output)}")
    installed = freeze(venv)
    stamp.write_text("".join(f"{name}=={version}\n" for name, version in sorted(installed.items())))
    return venv, installed, True
