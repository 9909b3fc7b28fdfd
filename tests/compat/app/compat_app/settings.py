"""Plane-shaped settings: the broker comes only from ``AMQP_URL``, as in Plane's settings module.

No publish retry, pool limit, heartbeat or transport options here, so whatever ``make compat``
sees of them was put there by the start-up hook.
"""

import os

AMQP_URL = os.environ.get("AMQP_URL")
CELERY_BROKER_URL = AMQP_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["application/json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_IMPORTS = ("compat_app.tasks",)
