#!/bin/bash
# Shaped like Plane's outbox poller entrypoint.
set -e
exec python manage.py outbox_poller
