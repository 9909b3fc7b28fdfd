"""Plane-shaped settings: the broker comes only from ``AMQP_URL``, as in Plane's settings module.

No CELERY_TASK_PUBLISH_RETRY, CELERY_BROKER_POOL_LIMIT or transport options here, so the only
way a pod can change them is plane-guard's start-up hook.
"""

import os

SECRET_KEY = "plane-guard-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["plane"]
DATABASES = {}
USE_TZ = True
TIME_ZONE = "UTC"

AMQP_URL = os.environ.get("AMQP_URL")
CELERY_BROKER_URL = AMQP_URL
CELERY_TIMEZONE = TIME_ZONE
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["application/json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_IMPORTS = ("plane.bgtasks",)

# Like Plane's periodic tasks: only a beat process sends them.
CELERY_BEAT_SCHEDULE = {
    "periodic-export": {"task": "plane.bgtasks.export_task", "schedule": 2.0, "args": ("beat",)},
}
