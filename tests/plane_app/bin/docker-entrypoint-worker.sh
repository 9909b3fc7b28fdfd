#!/bin/bash
# Shaped like Plane's worker entrypoint (a solo pool keeps the test machine quiet).
set -e
markers=${PLANE_FAKE_MARKERS:-/dev/null}
echo "worker-entrypoint pid=$$" >> "$markers"
exec celery -A plane worker -l info -P solo --without-gossip --without-mingle
