"""``python -m tests.proof`` (``make proof``): the silent-loss table from Plane pods in podman and a
real broker.

Prints one line per scenario and configuration, then the checks. Exit 0 only if every guarded
line has lost=0 and every check passed (the baseline must reproduce the loss, or a guarded 0
proves nothing); 1 otherwise; 2 when a required part (broker, nft, root, podman, the images) is
missing and cannot be made here. Missing images are built first, as ``make image`` builds them.
"""

from __future__ import annotations

import sys
import time

from tests.proof import broker
from tests.proof.checks import evaluate
from tests.proof.scenarios import Result, run_all
from tools import images


def _report(result: Result) -> None:
    print(result.line(), flush=True)
    for line in result.detail_lines():
        print(f"    {line}", flush=True)


def main() -> int:
    started = time.monotonic()
    try:
        results = run_all(_report)
    except (broker.Unavailable, images.Unavailable) as exc:
        print(f"proof: cannot run: {exc}", file=sys.stderr)
        return 2
    except images.BuildError as exc:
        print(f"proof: cannot run: the images did not build: {exc}", file=sys.stderr)
        return 2
    failures = evaluate(results)
    print(f"checks: {'all passed' if not failures else f'{len(failures)} failed'} ({time.monotonic() - started:.0f}s)")
    for failure in failures:
        print(f"  FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
