#!/bin/bash
# Shaped like Plane's beat entrypoint. The schedule file goes to /tmp: pods with a read-only root
# filesystem mount an emptyDir there.
set -e
markers=${PLANE_FAKE_MARKERS:-/dev/null}
echo "beat-entrypoint pid=$$" >> "$markers"
exec celery -A plane beat -l info --schedule /tmp/celerybeat-schedule
