"""A task that, like Plane's exports and notifications, is only ever published with ``delay()``."""

from compat_app.celery import app


@app.task(name="compat_app.tasks.export_task")
def export_task(marker):
    return marker
