#!/bin/bash
# Shaped like Plane's beat entrypoint: `set -e`, start-up steps, then celery beat WITHOUT exec.
# The schedule file goes to /tmp: pods with a read-only root filesystem mount an emptyDir there.
set -e
markers=${PLANE_FAKE_MARKERS:-/dev/null}
echo "beat-entrypoint pid=$$" >> "$markers"
python manage.py wait_for_db
python manage.py wait_for_migrations
# Run the processes
celery -A plane beat -l info --schedule /tmp/celerybeat-schedule
