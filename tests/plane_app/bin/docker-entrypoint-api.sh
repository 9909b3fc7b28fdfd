#!/bin/bash
# Shaped like Plane's API entrypoint (apps/api/bin/docker-entrypoint-api.sh): `set -e`, start-up
# steps run by Django's manage.py, one of which (register_instance) publishes a Celery task with
# no try/except, then `exec gunicorn` with hard-coded rotation (5 here, so tests see it quickly).
set -e
markers=${PLANE_FAKE_MARKERS:-/dev/null}
echo "entrypoint-start pid=$$" >> "$markers"
python manage.py wait_for_db
python manage.py wait_for_migrations

# As Plane does: a machine signature from what the host says about itself.
SIGNATURE=$(echo "$(hostname)$(cat /proc/cpuinfo)" | sha256sum | awk '{print $1}')
export MACHINE_SIGNATURE=$SIGNATURE
python manage.py register_instance "$MACHINE_SIGNATURE"

python manage.py configure_instance
echo "exec gunicorn pid=$$" >> "$markers"
exec gunicorn -w "${GUNICORN_WORKERS:-1}" -k uvicorn.workers.UvicornWorker \
  plane.asgi:application \
  --bind 127.0.0.1:"${PORT:-8000}" \
  --max-requests 5 \
  --max-requests-jitter 0 \
  --access-logfile -
