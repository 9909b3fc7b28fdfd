"""Shaped like Plane's ``register_instance``: it ends by publishing ``instance_traces.delay()`` with
no try/except, so under the entrypoint's ``set -e`` a publish that raises stops the container."""

import os

from django.core.management.base import BaseCommand

from plane.bgtasks import instance_traces
from plane.markers import record


class Command(BaseCommand):
    help = "Register this instance, then send the instance traces task."

    def add_arguments(self, parser):
        parser.add_argument("machine_signature", type=str)

    def handle(self, *args, **options):
        record(f"register_instance pid={os.getpid()}")
        result = instance_traces.delay()
        record(f"register_instance-published task={result.id}")
        self.stdout.write("instance registered")
