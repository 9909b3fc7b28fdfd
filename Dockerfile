# syntax=docker/dockerfile:1
# plane-guard image: the admission webhook (`plane-guard serve`), the certificate bootstrap Job
# (`plane-guard certs bootstrap`) and the init container that copies the runtime into Plane pods
# (`plane-guard runtime install`) all run from this one image.
#
#   docker build -t ghcr.io/plane-guard/plane-guard:0.1.0 .

# ---- builder: build the project wheel and install it with its dependencies into /opt/venv.
FROM python:3.12.12-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Pinned build tools; the wheel is built without build isolation so these are the ones used.
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir pip==26.3 setuptools==84.2.1 wheel==0.48.0

WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps the rest out of the context).
# webhook/ carries the package data too: *.yaml, runtime/*.sh, runtime/python/*.py.
COPY pyproject.toml README.md ./
COPY webhook/ ./webhook/

# Every dependency ships binary wheels for amd64 and arm64: no compiler is needed here either.
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir pip==26.3 \
 && /opt/venv/bin/pip install --no-cache-dir /dist/*.whl \
 && /opt/venv/bin/plane-guard --version

# ---- final: the slim Python image (no compilers) plus the venv; nothing else.
FROM python:3.12.12-slim-bookworm

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
