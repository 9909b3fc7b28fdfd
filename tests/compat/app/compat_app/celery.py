"""The Celery app, configured the way Plane configures it: from a settings module, namespace ``CELERY``."""

from celery import Celery

app = Celery("compat")
app.config_from_object("compat_app.settings", namespace="CELERY")
