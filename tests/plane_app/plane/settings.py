"""Plane-shaped settings: the broker is ``AMQP_URL`` when set, else a URL built from the
``RABBITMQ_*`` variables, as in Plane's settings module.

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

RABBITMQ_HOST = os.environ.get("RABBITMQ_HOST", "localhost")
RABBITMQ_PORT = os.environ.get("RABBITMQ_PORT", "5672")
RABBITMQ_USER = os.environ.get("RABBITMQ_USER", "guest")
RABBITMQ_PASSWORD = os.environ.get("RABBITMQ_PASSWORD", "guest")
RABBITMQ_VHOST = os.environ.get("RABBITMQ_VHOST", "/")
AMQP_URL = os.environ.get("AMQP_URL")

if AMQP_URL:
    CELERY_BROKER_URL = AMQP_URL
else:
    CELERY_BROKER_URL = f"amqp://{RABBITMQ_USER}:{RABBITMQ_PASSWORD}@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{RABBITMQ_VHOST}"
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

# Plane's worker runs the default prefork pool; one process keeps the test machine quiet.
CELERY_WORKER_CONCURRENCY = int(os.environ.get("PLANE_FAKE_CONCURRENCY") or 1)
