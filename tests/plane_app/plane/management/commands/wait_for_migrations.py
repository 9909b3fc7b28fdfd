"""Stands in for Plane's ``wait_for_migrations`` start-up step (no database here: it only records)."""

import os

from django.core.management.base import BaseCommand

from plane.markers import record


class Command(BaseCommand):
    help = "Record that the step ran (Plane waits until every migration is applied)."

    def handle(self, *args, **options):
        record(f"wait_for_migrations pid={os.getpid()}")
        self.stdout.write("migrations applied")
