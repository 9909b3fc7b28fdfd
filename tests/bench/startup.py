"""Start-up cost of the runtime in a Plane container: the wrapper's URL merge and the hook.

Measured as the median wall time of whole processes (bounded number of runs), next to the same
process without plane-guard, so "costs nothing measurable" is a number, not a belief.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from webhook.runtime import install

RUNS = 15
URL = "amqp://plane:bench-password@rabbit:5672/plane"


def _median_ms(command: list[str], env: dict[str, str]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure() -> list[tuple[str, float, float]]:
    """(what, without plane-guard ms, with plane-guard ms) for each start-up path."""
    with tempfile.TemporaryDirectory(prefix="plane-guard-startup-") as scratch:
        runtime = Path(scratch) / "plane-guard"
        install(runtime)
        base = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": scratch, "AMQP_URL": URL}
        wrapper = ["/bin/sh", str(runtime / "entrypoint.sh")]
        hook = {**base, "PYTHONPATH": str(runtime / "python")}
        python = [sys.executable, "-c", "pass"]
        celery = [sys.executable, "-c", "import celery.app.base"]
        return [
            ("wrapper, no URL merge (/bin/true)", _median_ms(["/bin/true"], base), _median_ms([*wrapper, "/bin/true"], base)),
            (
                "wrapper + URL merge (/bin/true)",
                _median_ms(["/bin/true"], base),
                _median_ms([*wrapper, "/bin/true"], {**base, "PLANE_GUARD_AMQP_HEARTBEAT": "60"}),
            ),
            ("python -c pass, hook on PYTHONPATH", _median_ms(python, base), _median_ms(python, hook)),
            ("python importing Celery, hook patches it", _median_ms(celery, base), _median_ms(celery, hook)),
        ]


def report() -> list[str]:
    title = f"start-up (median of {RUNS} runs)"
    lines = [f"{title:<40} | without ms | with ms | added ms"]
    for what, without, with_ in measure():
        lines.append(f"{what:<40} | {without:>10.1f} | {with_:>7.1f} | {with_ - without:>8.1f}")
    return lines
