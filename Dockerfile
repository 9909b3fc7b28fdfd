# syntax=docker/dockerfile:1
# plane-guard images, both from this file:
#
#   docker build -t ghcr.io/plane-guard/plane-guard:0.1.0 .
#     the admission webhook (`plane-guard serve`), the certificate bootstrap Job
#     (`plane-guard certs bootstrap`) and `plane-guard runtime install` (the default, last stage);
#   docker build --target runtime -t ghcr.io/plane-guard/plane-guard-runtime:0.1.0 .
#     only `plane-guard runtime install DIR`: the init container put into Plane pods, so what every
#     node pulls for them (a static busybox and the runtime files, no Python).
#
# Offline, without a registry: `make image` passes a Debian base of its own as BASE_IMAGE and
# BUSYBOX_IMAGE, wheels downloaded beforehand as the `wheelhouse` build context, and PIP_NO_INDEX=1.

ARG BASE_IMAGE=python:3.12.12-slim-bookworm
# Any image with a static busybox at /bin/busybox.
ARG BUSYBOX_IMAGE=busybox:1.37.0-musl

# ---- wheelhouse: empty, unless the build replaces it with --build-context wheelhouse=DIR.
FROM scratch AS wheelhouse

# ---- builder: build the project wheel and install it with its dependencies into /opt/venv.
FROM ${BASE_IMAGE} AS builder

# 1 (offline): install only from the wheelhouse, never from an index.
ARG PIP_NO_INDEX=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_FIND_LINKS=/wheelhouse

COPY --from=wheelhouse / /wheelhouse/

# Pinned build tools; the wheel is built without build isolation so these are the ones used.
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir pip==26.3 setuptools==84.2.1 wheel==0.48.0

WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps the rest out of the context).
# webhook/ carries the package data too: core/*.yaml, runtime/*.sh, runtime/python/*.py.
COPY pyproject.toml README.md ./
COPY webhook/ ./webhook/

# Every dependency ships binary wheels for amd64 and arm64: no compiler is needed here either.
# The runtime files are staged by the real `plane-guard runtime install`, for the runtime stage.
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist . \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir pip==26.3 \
 && /opt/venv/bin/pip install --no-cache-dir /dist/*.whl \
 && /opt/venv/bin/plane-guard --version \
 && /opt/venv/bin/plane-guard runtime install /opt/plane-guard-runtime

# ---- busybox: the static copier of the runtime image.
FROM ${BUSYBOX_IMAGE} AS busybox

# ---- runtime: the init container's image. Nothing but busybox, the files and the command.
FROM scratch AS runtime

LABEL org.opencontainers.image.title="plane-guard-runtime" \
      org.opencontainers.image.description="Init container of plane-guard: copies the runtime into Plane pods" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/bin
COPY --from=busybox /bin/busybox /bin/busybox
COPY --from=builder /opt/plane-guard-runtime/ /usr/share/plane-guard/runtime/
COPY images/runtime/plane-guard /bin/plane-guard

USER 10001:10001
ENTRYPOINT ["plane-guard"]

# ---- final: the Python base (no compilers) plus the venv; nothing else.
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="plane-guard" \
      org.opencontainers.image.description="Admission webhook that stops Plane from silently losing Celery tasks" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=builder /opt/venv /opt/venv

# Numeric, so that Kubernetes' runAsNonRoot can check it without a passwd lookup.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8443

ENTRYPOINT ["plane-guard"]
CMD ["serve"]
