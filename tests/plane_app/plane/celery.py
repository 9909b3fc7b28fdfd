"""The Celery app, configured the way Plane configures it."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "plane.settings")

app = Celery("plane")
app.config_from_object("django.conf:settings", namespace="CELERY")
