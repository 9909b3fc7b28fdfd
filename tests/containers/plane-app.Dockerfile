# syntax=docker/dockerfile:1
# A Plane-shaped backend image for the container tests (built by tests/containers/images.py):
# Debian's python3 with Django, Celery, gunicorn, uvicorn and pika from a wheelhouse, and the
# test app (the build context, tests/plane_app, copied whole) in /code as in Plane's image, so
# ./bin/docker-entrypoint-*.sh are the entrypoints the chart-shaped pods name.
ARG BASE_IMAGE=python:3.12.12-slim-bookworm

# ---- wheelhouse: replaced with --build-context wheelhouse=DIR (wheels and requirements.txt).
FROM scratch AS wheelhouse

FROM ${BASE_IMAGE} AS builder
ARG PIP_NO_INDEX=1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_FIND_LINKS=/wheelhouse
COPY --from=wheelhouse / /wheelhouse/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r /wheelhouse/requirements.txt

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/code/image_python \
    DJANGO_SETTINGS_MODULE=plane.settings
COPY --from=builder /opt/venv /opt/venv
WORKDIR /code
COPY . /code/
CMD ["./bin/docker-entrypoint-api.sh"]
