"""The app's Celery tasks. The worker appends a line per executed task to ``PLANE_FAKE_TASK_LOG``:
``<task id> <marker> <pid>`` when it is done (and ``<task id> start:<marker> <pid>`` when a slow
task starts), so tests count by task id what ran, what finished, and what ran twice."""

import os
import time

from celery import shared_task


def _log(task_id, marker):
    path = os.environ.get("PLANE_FAKE_TASK_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, f"{task_id} {marker} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


@shared_task(name="plane.bgtasks.export_task")
def export_task(marker):
    """What the API's views publish."""
    _log(export_task.request.id, marker)
    return marker


@shared_task(name="plane.bgtasks.instance_traces")
def instance_traces():
    """What ``manage.py register_instance`` publishes at start, as Plane's does."""
    _log(instance_traces.request.id, "instance-traces")


@shared_task(name="plane.bgtasks.slow_task")
def slow_task(marker, seconds):
    """A task that takes a while (an export): a stop in the middle of it shows whether it finishes."""
    _log(slow_task.request.id, f"start:{marker}")
    time.sleep(float(seconds))
    _log(slow_task.request.id, marker)
