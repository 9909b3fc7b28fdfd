"""A Plane-shaped application for ``make compat``; like Plane's ``plane`` package it exposes its Celery app."""

from compat_app.celery import app as celery_app

__all__ = ["celery_app"]
