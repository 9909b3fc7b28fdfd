"""A Celery app for the supervisor's warm-shutdown test: one slow task that records its start and end."""

import os
import time

from celery import Celery

app = Celery("pg_supervisor", broker=os.environ["PG_BROKER_URL"])
app.conf.update(
    task_default_queue=os.environ["PG_QUEUE"],
    broker_connection_retry_on_startup=True,
)


@app.task(name="pg_supervisor.slow")
def slow(number: int, seconds: float) -> int:
    with open(os.environ["PLANE_FAKE_MARKERS"], "a") as handle:
        handle.write(f"task {number} start pid={os.getpid()}\n")
    time.sleep(seconds)
    with open(os.environ["PLANE_FAKE_MARKERS"], "a") as handle:
        handle.write(f"task {number} done\n")
    return number
