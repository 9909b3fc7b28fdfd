"""A long-running worker for the supervisor tests: records every signal it gets in a file.

SIGTERM makes it exit with ``APP_EXIT`` (0); every other forwarded signal is recorded and it goes
on. ``--orphan`` double-forks a process that outlives its parent briefly and exits, leaving a
zombie to whoever it was reparented to. Without a SIGTERM it exits 1 after ``APP_SECONDS`` (60).
"""

import os
import signal
import sys
import time

MARKERS = os.environ["PLANE_FAKE_MARKERS"]
RECORDED = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTTIN", "SIGTTOU")


def record(line: str) -> None:
    with open(MARKERS, "a") as handle:
        handle.write(line + "\n")


def on_signal(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    record(f"app got {name}")
    if name == "SIGTERM":
        os._exit(int(os.environ.get("APP_EXIT", "0")))


for name in RECORDED:
    signal.signal(getattr(signal, name), on_signal)

if "--orphan" in sys.argv:
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            record(f"orphan pid={os.getpid()}")
            time.sleep(0.5)
            record(f"orphan ppid={os.getppid()} exiting")
            os._exit(0)
        os._exit(0)
    os.waitpid(middle, 0)

record(f"app pid={os.getpid()} ppid={os.getppid()}")
deadline = time.monotonic() + float(os.environ.get("APP_SECONDS", "60"))
while time.monotonic() < deadline:
    time.sleep(0.1)
record("app timed out")
sys.exit(1)
