"""Stands in for Plane's pre-start management commands: proves a Django step ran before the server."""

import os

from django.core.management.base import BaseCommand

from plane.markers import record


class Command(BaseCommand):
    help = "Record that the pre-start step ran (Plane waits for its database here)."

    def handle(self, *args, **options):
        record(f"wait_for_db pid={os.getpid()}")
        self.stdout.write("database available")
