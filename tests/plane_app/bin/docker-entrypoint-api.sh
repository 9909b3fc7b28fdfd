#!/bin/bash
# Shaped like Plane's API entrypoint: pre-start steps, then gunicorn with hard-coded rotation.
set -e
markers=${PLANE_FAKE_MARKERS:-/dev/null}
echo "entrypoint-start pid=$$" >> "$markers"
python manage.py wait_for_db
echo "register_instance" >> "$markers"
echo "exec gunicorn pid=$$" >> "$markers"
exec gunicorn -w "${GUNICORN_WORKERS:-1}" -k uvicorn.workers.UvicornWorker \
  plane.asgi:application \
  --bind 127.0.0.1:"${PORT:-8000}" \
  --max-requests 5 \
  --max-requests-jitter 0 \
  --access-logfile -
