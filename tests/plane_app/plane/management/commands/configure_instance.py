"""Stands in for Plane's ``configure_instance`` start-up step, which runs after ``register_instance``."""

import os

from django.core.management.base import BaseCommand

from plane.markers import record


class Command(BaseCommand):
    help = "Record that the step ran (Plane loads its instance configuration here)."

    def handle(self, *args, **options):
        record(f"configure_instance pid={os.getpid()}")
        self.stdout.write("instance configured")
