"""The task the API publishes. The worker appends each executed task id to ``PLANE_FAKE_TASK_LOG``."""

import os

from celery import shared_task


@shared_task(name="plane.bgtasks.export_task")
def export_task(marker):
    path = os.environ.get("PLANE_FAKE_TASK_LOG")
    if path:
        task_id = export_task.request.id
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, f"{task_id} {marker} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
    return marker
