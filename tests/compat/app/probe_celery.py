"""Publishes ``export_task.delay()`` on request, in a process of its own, and answers with one JSON line.

Commands on stdin: ``publish MARKER`` (answer: ok, task id, seconds, the error's type and text) and
``quit``. The connection stays open between commands, as in a web worker, so the broker can be
asked about its channels and the network can black-hole it.
"""

import json
import sys
import time

from compat_app.tasks import export_task


def main():
    for line in sys.stdin:
        command, _, marker = line.strip().partition(" ")
        if command == "quit":
            break
        started = time.monotonic()
        try:
            task = export_task.delay(marker)
            answer = {"ok": True, "id": task.id}
        except Exception as exc:  # noqa: BLE001 (whatever the library raises is the answer)
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        answer["seconds"] = round(time.monotonic() - started, 3)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
