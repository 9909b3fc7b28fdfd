#!/bin/bash
# Shaped like Plane's enterprise API entrypoint: a step of its own, then the same start as the
# community one (exec, so gunicorn stays the container's process).
set -e
markers=${PLANE_FAKE_MARKERS:-/dev/null}
echo "ee-entrypoint-start pid=$$" >> "$markers"
exec ./bin/docker-entrypoint-api.sh
