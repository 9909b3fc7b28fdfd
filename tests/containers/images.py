"""The images the container tests run: both plane-guard images and a Plane-shaped app image.

All are built offline by ``tools.images`` on the same Debian base and tagged by content, so a
test run after the first only looks them up. ``musl_app()`` is the same app on a base shaped
like Plane's ``python:3.12.10-alpine``: CPython and bash built against musl, busybox, no glibc
(``musl-python.Dockerfile``, built from Debian's musl toolchain and source packages).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tools import images as build

HERE = Path(__file__).resolve().parent
APP_DIR = HERE.parent / "plane_app"
APP_DOCKERFILE = HERE / "plane-app.Dockerfile"
MUSL_DOCKERFILE = HERE / "musl-python.Dockerfile"
#: The Debian base that builds the musl image (musl-gcc, gcc, make, perl for OpenSSL, kernel headers).
MUSL_TOOLCHAIN = ("gcc", "make", "libc6-dev", "linux-libc-dev", "musl-tools", "perl", "pkg-config", "bzip2",
                  "xz-utils", "binutils")
#: Debian source packages whose upstream tarballs the musl image builds, with the CPython of the
#: Debian base (python3.11 on bookworm).
MUSL_SOURCES = ("zlib", "libffi", "openssl", "bash")
#: What the app image installs, by name, from pyproject.toml (uvicorn from the project's own list).
APP_PACKAGES = ("Django", "celery", "kombu", "gunicorn", "pika")


@dataclass(frozen=True)
class Images:
    full: str
    runtime: str
    app: str


def app_build(base: str, name: str = "plane-guard-test-app") -> build.Build:
    requirements = [*build.project_requirements("test", APP_PACKAGES), *build.project_requirements(names=("uvicorn",))]
    return build.Build(name, dockerfile=APP_DOCKERFILE, context=APP_DIR,
                       build_args={"BASE_IMAGE": base}, requirements=requirements)


def ensure() -> Images:
    """Build what is missing (podman), return the content tags."""
    tool = "podman"
    base = build.debian_base(tool)
    product = {kind: b.ensure(tool) for kind, b in build.plane_guard_builds(base).items()}
    return Images(full=product["full"], runtime=product["runtime"], app=app_build(base).ensure(tool))


def musl_build(tool: str = "podman") -> build.Build:
    """The Alpine-shaped base: CPython, bash, zlib, libffi and OpenSSL built against musl, busybox."""
    base = build.debian_base(tool)
    python = f"python{build.interpreter(tool, base).version}"
    return build.Build("plane-guard-test-musl-base", dockerfile=MUSL_DOCKERFILE, context=HERE,
                       include=[MUSL_DOCKERFILE.name],
                       build_args={"TOOLCHAIN_IMAGE": build.debian_base(tool, MUSL_TOOLCHAIN), "BUSYBOX_IMAGE": base},
                       contexts={"sources": build.debian_sources((python, *MUSL_SOURCES))})


def musl_app() -> str:
    """The app image (same Dockerfile and app; musllinux wheels) on the musl base; its content tag."""
    tool = "podman"
    return app_build(musl_build(tool).ensure(tool), name="plane-guard-test-app-musl").ensure(tool)
