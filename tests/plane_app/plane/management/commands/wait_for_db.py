"""Stands in for Plane's pre-start management commands: proves a Django step ran before gunicorn."""

import os

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Record that the pre-start step ran (Plane waits for its database here)."

    def handle(self, *args, **options):
        path = os.environ.get("PLANE_FAKE_MARKERS")
        if path:
            with open(path, "a", encoding="utf-8") as markers:
                markers.write(f"wait_for_db pid={os.getpid()}\n")
        self.stdout.write("database available")
