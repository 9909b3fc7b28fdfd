"""``python -m tests.proof`` (``make proof``): the silent-loss table from real pods and a real broker.

Prints one line per scenario and configuration, then the checks. Exit 0 only if every guarded
line has lost=0 and every check passed (the baseline must reproduce the loss, or a guarded 0
proves nothing); 1 otherwise; 2 when a required part (broker, nft, root) is missing.
"""

from __future__ import annotations

import sys
import time

from tests.proof import broker
from tests.proof.checks import evaluate
from tests.proof.scenarios import Result, run_all


def _report(result: Result) -> None:
    print(result.line(), flush=True)
    for line in result.detail_lines():
        print(f"    {line}", flush=True)


def main() -> int:
    started = time.monotonic()
    try:
        results = run_all(_report)
    except broker.Unavailable as exc:
        print(f"proof: cannot run: {exc}", file=sys.stderr)
        return 2
    failures = evaluate(results)
    print(f"checks: {'all passed' if not failures else f'{len(failures)} failed'} ({time.monotonic() - started:.0f}s)")
    for failure in failures:
        print(f"  FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
