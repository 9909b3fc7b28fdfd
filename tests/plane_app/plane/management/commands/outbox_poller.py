"""Stands in for Plane's outbox poller: events waiting in an outbox are published, and marked sent
only when ``basic_publish`` returned; a failed publish stays in the outbox and is tried again.

The outbox is a directory (``PLANE_FAKE_OUTBOX``) of ``<id>.event`` files, as rows in Plane's
table; a sent event becomes ``<id>.sent``. Each attempt is recorded in ``PLANE_FAKE_MARKERS``.
"""

import os
import time
from pathlib import Path

from django.core.management.base import BaseCommand

from plane.event_stream.publisher import EventPublisher
from plane.markers import record as _record


class Command(BaseCommand):
    help = "Publish the outbox's pending events to RabbitMQ."

    def handle(self, *args, **options):
        outbox = Path(os.environ["PLANE_FAKE_OUTBOX"])
        publisher = EventPublisher()
        _record(f"outbox-poller pid={os.getpid()}")
        self.stdout.write("outbox poller ready", ending="\n")
        self.stdout.flush()
        while True:
            pending = sorted(outbox.glob("*.event"))
            for event in pending:
                started = time.monotonic()
                try:
                    publisher.publish(event.stem, "issue.created", event.read_bytes())
                except Exception as exc:
                    seconds = time.monotonic() - started
                    _record(f"failed {event.stem} {seconds:.2f} {type(exc).__name__}")
                    publisher.reset()
                    break
                event.rename(event.with_suffix(".sent"))
                _record(f"sent {event.stem} {time.monotonic() - started:.2f}")
            time.sleep(0.1)
