#!/bin/bash
# Shaped like Plane's worker and beat entrypoints: set -e, start-up steps, then the worker
# WITHOUT exec, so bash stays the container's process. The worker command is the arguments.
set -e
markers=${PLANE_FAKE_MARKERS:-/dev/null}
echo "entrypoint pid=$$" >> "$markers"
python3 -c "import sys" # a start-up step, like `python manage.py wait_for_db`
echo "starting worker" >> "$markers"
"$@"
echo "worker exited 0" >> "$markers"
