"""The images the container tests run: both plane-guard images and a Plane-shaped app image.

All are built offline by ``tools.images`` on the same Debian base and tagged by content, so a
test run after the first only looks them up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tools import images as build

HERE = Path(__file__).resolve().parent
APP_DIR = HERE.parent / "plane_app"
APP_DOCKERFILE = HERE / "plane-app.Dockerfile"
#: What the app image installs, by name, from pyproject.toml (uvicorn from the project's own list).
APP_PACKAGES = ("Django", "celery", "kombu", "gunicorn", "pika")


@dataclass(frozen=True)
class Images:
    full: str
    runtime: str
    app: str


def app_build(base: str) -> build.Build:
    requirements = [*build.project_requirements("test", APP_PACKAGES), *build.project_requirements(names=("uvicorn",))]
    return build.Build("plane-guard-test-app", dockerfile=APP_DOCKERFILE, context=APP_DIR,
                       build_args={"BASE_IMAGE": base}, requirements=requirements)


def ensure() -> Images:
    """Build what is missing (podman), return the content tags."""
    tool = "podman"
    base = build.debian_base(tool)
    product = {kind: b.ensure(tool) for kind, b in build.plane_guard_builds(base).items()}
    return Images(full=product["full"], runtime=product["runtime"], app=app_build(base).ensure(tool))
