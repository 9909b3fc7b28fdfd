"""plane-guard: an admission webhook that hardens Plane pods against silent Celery task loss."""

__version__ = "0.1.0"
