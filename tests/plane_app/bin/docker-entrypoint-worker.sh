#!/bin/bash
# Shaped like Plane's worker entrypoint: `set -e`, start-up steps, then celery WITHOUT exec, so
# bash stays the container's PID 1 (and, having no SIGTERM handler, ignores the kubelet's SIGTERM).
set -e
markers=${PLANE_FAKE_MARKERS:-/dev/null}
echo "worker-entrypoint pid=$$" >> "$markers"
python manage.py wait_for_db
python manage.py wait_for_migrations
# Run the processes
celery -A plane worker -l info
