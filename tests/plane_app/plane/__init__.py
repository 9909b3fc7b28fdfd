"""Like Plane's ``plane`` package: importing it creates the Celery app."""

from .celery import app as celery_app

__all__ = ("celery_app",)
