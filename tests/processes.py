"""Stopping the real processes the tests start (servers, control planes, apps)."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, timeout: float = 15.0) -> int | None:
    """SIGTERM, up to ``timeout`` seconds to exit, then SIGKILL; the exit code (None if unknown)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    return process.returncode
